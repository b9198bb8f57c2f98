//! The test bed of the directory tree tests (issue 15): a daemon with the shipped
//! policies and token callers in front of one guest, and the client-side helpers
//! (push/pull through gRPC, `atp cp`, local trees and their snapshots).
// Each test binary uses what its cases need.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use ocloudview_atp::pb::{
    EntryKind, PullTreeRequest, PushTreeHeader, PushTreeRequest, TreeEntry, TreeSummary,
    guest_agent_client::GuestAgentClient, pull_tree_response::Msg as PullMsg,
    push_tree_request::Msg,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Status, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt as _;

#[derive(Clone)]
pub struct Token(pub &'static str);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(req)
    }
}

pub type Client = GuestAgentClient<InterceptedService<Channel, Token>>;

pub fn token_entry(token: &str, identity: &str, roles: &[&str]) -> String {
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[server.tokens]]\nsha256 = \"{hex}\"\nidentity = \"{identity}\"\nroles = {roles:?}\n")
}

pub struct Bed {
    pub d: crate::common::Daemon,
    pub local: tempfile::TempDir,
}

impl Bed {
    /// A daemon with the shipped policies (admin and role-less tokens; read_paths
    /// `/data/`) in front of the guest `tcg` at `socket`, and a local temp dir.
    pub async fn start(socket: &Path) -> Bed {
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let config = format!(
            "{}{}\n[policy]\ndir = \"{}\"\ndefault = \"deny\"\n[policy.settings]\nread_paths = [\"/data/\"]\n\n[[guests]]\nname = \"tcg\"\nsocket = \"{}\"\n",
            token_entry("admin-token", "bob", &["admin"]),
            token_entry("dev-token", "carol", &[]),
            policies.display(),
            socket.display(),
        );
        let d = crate::common::Daemon::start(&[], &config).await;
        let local = tempfile::Builder::new()
            .prefix("atp-tree.")
            .tempdir()
            .unwrap();
        Bed { d, local }
    }

    pub async fn client(&self, token: &'static str) -> Client {
        GuestAgentClient::with_interceptor(
            crate::common::grpc_channel(&self.d.socket).await,
            Token(token),
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.local.path().join(rel)
    }

    /// `atp cp` as the admin; returns (success, stderr).
    pub fn cp(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_atp"))
            .arg("--server")
            .arg(format!("unix://{}", self.d.socket.display()))
            .args(["--token", "admin-token"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + String::from_utf8_lossy(&out.stdout).as_ref(),
        )
    }
}

/// Runs `script` in the guest (as the admin), which must succeed; returns stdout.
pub async fn sh(c: &mut Client, script: &str) -> String {
    let s = c
        .exec(crate::common::sh_request("tcg", script))
        .await
        .unwrap()
        .into_inner();
    let o = crate::common::drain_exec(s).await;
    let exit = o.exited.unwrap();
    assert_eq!(
        exit.exit_code,
        Some(0),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn reason(st: &Status) -> String {
    st.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

pub fn file(p: &Path, data: &[u8], mode: u32, mtime: i64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(p, mtime);
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// What a local tree holds: relative path → (kind, mode, mtime, content or link target).
pub fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let (kind, body) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            ('d', Vec::new())
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            ('l', t.to_string_lossy().as_bytes().to_vec())
        } else if ft.is_file() {
            ('f', std::fs::read(&p).unwrap())
        } else {
            ('p', Vec::new())
        };
        // A link's own mode and mtime are not carried (modes mean nothing on Linux links).
        let (mode, mtime) = if kind == 'l' {
            (0, 0)
        } else {
            (m.mode() & 0o7777, m.mtime())
        };
        out.insert(rel, (kind, mode, mtime, body));
    }
    out
}

/// No staging directory of ours is left in the guest's /data.
pub async fn no_stage_left(c: &mut Client) {
    let left = sh(c, "ls -a /data | grep '^\\.atp-' || true").await;
    assert_eq!(left, "", "staging directories left in /data");
}

pub fn entry(path: &str, kind: EntryKind, size: u64, target: &str) -> TreeEntry {
    TreeEntry {
        path: path.into(),
        kind: kind as i32,
        mode: 0o644,
        mtime: 1_500_000_000,
        size,
        target: target.into(),
        ..Default::default()
    }
}

/// Pushes `entries` (each with its data) to `path`, announcing `summary` (or the true one).
pub async fn push(
    c: &mut Client,
    path: &str,
    entries: Vec<Sent>,
    summary: Option<TreeSummary>,
    flags: (bool, bool),
) -> Result<ocloudview_atp::pb::PushTreeResponse, Status> {
    let mut truth = TreeSummary::default();
    for (e, _) in &entries {
        truth.entries += 1;
        truth.bytes += e.size;
        truth.largest = truth.largest.max(e.size);
    }
    let mut msgs = vec![PushTreeRequest {
        msg: Some(Msg::Header(PushTreeHeader {
            domain: "tcg".into(),
            path: path.into(),
            summary: Some(summary.unwrap_or(truth)),
            overwrite: flags.0,
            allow_special: flags.1,
        })),
    }];
    for (e, data) in entries {
        msgs.push(PushTreeRequest {
            msg: Some(Msg::Entry(e)),
        });
        if !data.is_empty() {
            msgs.push(PushTreeRequest {
                msg: Some(Msg::Data(data)),
            });
        }
    }
    c.push_tree(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// An entry as a client sends it, with its data.
pub type Sent = (TreeEntry, Vec<u8>);

pub async fn pull(c: &mut Client, path: &str, allow_special: bool) -> Result<Vec<PullMsg>, Status> {
    let mut s = c
        .pull_tree(PullTreeRequest {
            domain: "tcg".into(),
            path: path.into(),
            allow_special,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m.msg.unwrap());
    }
    Ok(out)
}

pub trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}
