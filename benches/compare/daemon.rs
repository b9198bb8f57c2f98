//! The daemon under test: `atp serve` as a child process, and its resident set size.

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use ocloudview_atp::pb::guest_agent_client::GuestAgentClient;
use tonic::transport::{Endpoint, Uri};

use crate::{Grpc, MIB};

/// `atp serve` in its own temp dir, killed on drop.
pub(crate) struct Daemon {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub(crate) fn start(body: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("atp-bench.").tempdir()?;
        let cfg = dir.path().join("atp.toml");
        let sock = dir.path().join("atp.sock");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = [\"unix://{}\"]\n\n{body}",
                sock.display()
            ),
        )?;
        let child = Command::new(env!("CARGO_BIN_EXE_atp"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("ATP_LOG", "error")
            // As deploy/atp.service runs it (the daemon's memory: see there).
            .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
            .spawn()
            .context("atp serve")?;
        Ok(Self {
            child,
            sock,
            _dir: dir,
        })
    }

    /// A new connection (its own HTTP/2 channel), retried until the daemon listens.
    pub(crate) async fn client(&self) -> Result<Grpc> {
        for _ in 0..200 {
            let p = self.sock.clone();
            if let Ok(ch) = Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await
            {
                return Ok(GuestAgentClient::new(ch)
                    .max_decoding_message_size(64 * MIB)
                    .max_encoding_message_size(64 * MIB));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("daemon did not listen on {}", self.sock.display())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
