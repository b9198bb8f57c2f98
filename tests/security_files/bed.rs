//! The test bed of `security_files`: a real host agent, `atp serve` with the shipped
//! policies and token callers for roles, this test's own directories, and an
//! unprivileged attacker process.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use ocloudview_atp::{
    pb::{
        ReadFileRequest, WriteFileHeader, WriteFileRequest, WriteMode,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Status, service::interceptor::InterceptedService, transport::Channel};

use super::common;

pub type Client = GuestAgentClient<InterceptedService<Channel, Token>>;

#[derive(Clone)]
pub struct Token(&'static str);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(req)
    }
}

pub fn token_entry(token: &str, identity: &str, roles: &[&str]) -> String {
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[server.tokens]]\nsha256 = \"{hex}\"\nidentity = \"{identity}\"\nroles = {roles:?}\n")
}

/// The agent, a daemon with the shipped policies, and this test's directories:
/// `read/` (read_paths), `drop/` (write_paths), `outside/` (neither); all 0755.
pub struct Bed {
    _agent: HostAgent,
    pub d: common::Daemon,
    root: tempfile::TempDir,
    pub audit: PathBuf,
}

impl Bed {
    pub async fn start() -> Bed {
        let agent = HostAgent::start().unwrap();
        let root = tempfile::Builder::new()
            .prefix("atp-secfiles.")
            .tempdir()
            .unwrap();
        for sub in ["", "read", "drop", "outside"] {
            let p = root.path().join(sub);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let audit = root.path().join("audit.jsonl");
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let config = format!(
            "{}{}{}\n[policy]\ndir = \"{}\"\ndefault = \"deny\"\n[policy.settings]\nread_paths = [\"{r}/read/\"]\nwrite_paths = [\"{r}/drop/\"]\n\n[audit]\npath = \"{}\"\n\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            token_entry("admin-token", "bob", &["admin"]),
            token_entry("ops-token", "alice", &["ops"]),
            token_entry("dev-token", "carol", &[]),
            policies.display(),
            audit.display(),
            agent.socket().display(),
            r = root.path().display(),
        );
        let d = common::Daemon::start(&[], &config).await;
        Bed {
            _agent: agent,
            d,
            root,
            audit,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub async fn client(&self, token: &'static str) -> Client {
        GuestAgentClient::with_interceptor(common::grpc_channel(&self.d.socket).await, Token(token))
    }
}

pub fn header(path: &Path, mode: WriteMode, permissions: Option<u32>) -> WriteFileHeader {
    WriteFileHeader {
        domain: "host".into(),
        path: path.display().to_string(),
        mode: mode as i32,
        permissions,
        ..Default::default()
    }
}

pub async fn upload(c: &mut Client, h: WriteFileHeader, data: &[u8]) -> Result<u64, Status> {
    let mut msgs = vec![WriteFileRequest {
        msg: Some(Msg::Header(h)),
    }];
    msgs.extend(data.chunks(64 << 10).map(|ch| WriteFileRequest {
        msg: Some(Msg::Data(ch.to_vec())),
    }));
    c.write_file(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner().bytes_written)
}

/// Like [`upload`], one 1 MiB message every 20 ms: an upload that is surely under way
/// for a while.
pub async fn upload_paced(c: &mut Client, h: WriteFileHeader, data: &[u8]) -> Result<u64, Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let chunks: Vec<Vec<u8>> = data.chunks(1 << 20).map(<[u8]>::to_vec).collect();
    let feeder = tokio::spawn(async move {
        let _ = tx
            .send(WriteFileRequest {
                msg: Some(Msg::Header(h)),
            })
            .await;
        for ch in chunks {
            // Pacing, not synchronisation: keeps the upload under way for a while.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if tx
                .send(WriteFileRequest {
                    msg: Some(Msg::Data(ch)),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let res = c
        .write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner().bytes_written);
    feeder.abort();
    res
}

pub async fn read(c: &mut Client, path: &Path) -> Result<Vec<u8>, Status> {
    let mut s = c
        .read_file(ReadFileRequest {
            domain: "host".into(),
            path: path.display().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(ch) = s.message().await? {
        out.extend(ch.data);
        if ch.eof {
            break;
        }
    }
    Ok(out)
}

/// (mode & 0o7777, uid, gid)
pub fn meta(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

pub fn file(p: &Path, content: &str, mode: u32, owner: Option<u32>) {
    std::fs::write(p, content).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some(id) = owner {
        std::os::unix::fs::chown(p, Some(id), Some(id)).unwrap();
    }
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// `sh -c SCRIPT attacker ARGS...` as uid/gid 65534 with no groups, stdout to `log`;
/// returns once the script runs (it logs `READY` first).
pub async fn attacker(script: &str, args: &[&Path], log: &Path) -> Child {
    let script = format!("echo READY\n{script}");
    let child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
            &script,
            "attacker",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    crate::common::eventually(
        || std::fs::read_to_string(log).is_ok_and(|l| l.starts_with("READY")),
        "the attacker script runs",
    )
    .await;
    child
}

/// Stops an attacker through its stop file (bounded), then by its own pid.
pub fn stop(mut child: Child, stop_file: &Path) {
    std::fs::write(stop_file, "").unwrap();
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
