//! Shared helpers for the integration tests. Every test talks to real processes started
//! through `ocloudview_atp::testbed`; a missing prerequisite fails the test.
// Helpers panic on a failed setup step: that is how a test reports a missing component.
#![allow(dead_code, clippy::unwrap_used)]

pub mod metrics;

use std::{path::Path, sync::Once, time::Duration};

use ocloudview_atp::{pb::guest_agent_client::GuestAgentClient, testbed::GuestImage};
use tonic::transport::{Channel, Endpoint, Uri};

/// Logs to the test's captured output; `ATP_LOG=debug` for more.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("ATP_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The cached guest image (built on first use).
pub async fn image() -> GuestImage {
    tokio::task::spawn_blocking(GuestImage::ensure)
        .await
        .unwrap()
        .expect("guest image build failed (run scripts/setup.sh)")
}

/// A gRPC client over a UNIX socket, retried until the daemon listens (bounded).
pub async fn grpc_client(socket: &Path) -> GuestAgentClient<Channel> {
    GuestAgentClient::new(grpc_channel(socket).await)
}

/// A channel over a UNIX socket, retried until the daemon listens (bounded).
pub async fn grpc_channel(socket: &Path) -> Channel {
    let path = socket.to_owned();
    for _ in 0..200 {
        if path.exists() {
            let p = path.clone();
            let ch = Endpoint::try_from("http://localhost")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await;
            if let Ok(ch) = ch {
                return ch;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon never listened on {}", socket.display());
}

/// `atp serve` running as a real process, with its config and socket in a temp dir.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Daemon {
    /// Writes `[server] listen` for a UNIX socket (plus `extra_listen`) followed by `body`,
    /// starts `atp serve --config`, and waits until it answers health checks.
    pub async fn start(extra_listen: &[String], body: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("atp-daemon.")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("atp.sock");
        let mut listen = vec![format!("\"unix://{}\"", socket.display())];
        listen.extend(extra_listen.iter().map(|l| format!("\"{l}\"")));
        let config = format!("[server]\nlisten = [{}]\n\n{body}", listen.join(", "));
        let path = dir.path().join("atp.toml");
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir,
            socket,
            child: Some(child),
        };
        let _ = grpc_client(&d.socket).await;
        d
    }

    pub async fn client(&self) -> GuestAgentClient<Channel> {
        grpc_client(&self.socket).await
    }

    /// The daemon's process id (for /proc measurements and `prlimit`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and returns the exit status (bounded wait).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        for _ in 0..200 {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("daemon did not stop within 10 s of SIGTERM");
    }
}

impl Daemon {
    /// Sends SIGKILL (a crash: nothing is cleaned up) and reaps the process.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts `atp serve` again on the same config (after `terminate` or `kill_hard`)
    /// and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon still runs");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("atp.toml"))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let _ = grpc_client(&self.socket).await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Ping request for `domain`.
pub fn ping(domain: &str) -> ocloudview_atp::pb::PingRequest {
    ocloudview_atp::pb::PingRequest {
        domain: domain.into(),
    }
}

/// Where each file descriptor of process `pid` points.
pub fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Polls `cond` for up to 10 s (the cleanup it waits for runs in the background).
pub async fn eventually(cond: impl FnMut() -> bool, what: &str) {
    eventually_within(Duration::from_secs(10), cond, what).await;
}

/// Polls `cond` every 20 ms until it holds; fails the test if it does not within `limit`
/// (for waits whose bound is itself what the test checks).
pub async fn eventually_within(limit: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// ExecAttach to `exec_id` once the daemon has parked it: retried (bounded: 10 s) while
/// it is still attached to the client that left (FAILED_PRECONDITION).
pub async fn attach_when_parked(
    c: &mut GuestAgentClient<Channel>,
    exec_id: &str,
) -> tonic::Streaming<ocloudview_atp::pb::ExecEvent> {
    let t0 = std::time::Instant::now();
    loop {
        let req = ocloudview_atp::pb::ExecAttachRequest {
            exec_id: exec_id.to_owned(),
        };
        match c.exec_attach(req).await {
            Ok(s) => return s.into_inner(),
            Err(st)
                if st.code() == tonic::Code::FailedPrecondition
                    && t0.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(st) => panic!("ExecAttach {exec_id}: {st:?}"),
        }
    }
}

/// What an Exec stream delivered.
#[derive(Debug, Default)]
pub struct ExecOutcome {
    pub exec_id: String,
    pub pid: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exited: Option<ocloudview_atp::pb::ExecExited>,
    pub error: Option<tonic::Status>,
}

/// Reads an exec event stream to its end.
pub async fn drain_exec(mut s: tonic::Streaming<ocloudview_atp::pb::ExecEvent>) -> ExecOutcome {
    use ocloudview_atp::pb::exec_event::Event;
    let mut out = ExecOutcome::default();
    loop {
        match s.message().await {
            Ok(Some(ev)) => match ev.event.unwrap() {
                Event::Started(st) => {
                    out.exec_id = st.exec_id;
                    out.pid = st.pid;
                }
                Event::Stdout(d) => out.stdout.extend(d),
                Event::Stderr(d) => out.stderr.extend(d),
                Event::Exited(x) => out.exited = Some(x),
            },
            Ok(None) => return out,
            Err(st) => {
                out.error = Some(st);
                return out;
            }
        }
    }
}

/// An Exec request running `script` with `/bin/sh -c`.
pub fn sh_request(domain: &str, script: &str) -> ocloudview_atp::pb::ExecRequest {
    ocloudview_atp::pb::ExecRequest {
        domain: domain.into(),
        command: Some(ocloudview_atp::pb::exec_request::Command::Argv(
            ocloudview_atp::pb::Argv {
                path: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
            },
        )),
        ..Default::default()
    }
}

/// Runs `script` with `/bin/sh -c` in `domain` and reads its events to the end.
pub async fn run_sh(c: &mut GuestAgentClient<Channel>, domain: &str, script: &str) -> ExecOutcome {
    drain_exec(
        c.exec(sh_request(domain, script))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
}

/// A daemon serving one host agent as guest `host`.
pub async fn daemon_for(agent: &ocloudview_atp::testbed::HostAgent, extra: &str) -> Daemon {
    Daemon::start(
        &[],
        &format!(
            "{extra}\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await
}
