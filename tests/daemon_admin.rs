//! The typed admin RPCs through `atp serve` with the shipped policies, against real agents:
//! the host agent (its blocklist answers COMMAND_DISABLED), ONE busybox TCG guest (freeze
//! state, a thaw at the deadline after the client vanished, a thaw at daemon shutdown,
//! SSH keys, time sync, policy denial) and ONE Debian 12 guest (a real ext4 freeze that
//! stops a writer, passwords through Debian's chpasswd). Guests boot one after the other.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "tree_copy/bed.rs"]
mod bed;
#[path = "tree_copy/cases.rs"]
mod cases;
mod common;

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ocloudview_atp::{
    pb::{
        AddAuthorizedKeysRequest, FsFreezeRequest, FsFreezeStatusRequest, FsThawRequest,
        GetAuthorizedKeysRequest, RemoveAuthorizedKeysRequest, SetUserPasswordRequest,
        SyncTimeRequest, guest_agent_client::GuestAgentClient,
    },
    qga::{AgentClient, commands::FsfreezeStatus},
    testbed::{BootOptions, DebianBootOptions, DebianImage, HostAgent, QemuGuest},
    transport::socket::SocketTransport,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

type Client = GuestAgentClient<InterceptedService<Channel, Bearer>>;

/// Sends a bearer token.
#[derive(Clone)]
struct Bearer(&'static str);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let v = format!("Bearer {}", self.0).parse().unwrap();
        req.metadata_mut().insert("authorization", v);
        Ok(req)
    }
}

/// An ed25519 public key (`ssh-keygen -lf` prints FP for it).
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";
const FP: &str = "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU";
const PASSWORD: &str = "Corr3ct-h0rse-battery!";

fn sha_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `atp serve` with the shipped policies (default deny), its audit log at `audit`,
/// tokens for an admin and an ops caller, and the guest `g` at `socket`.
async fn daemon(socket: &Path, audit: &Path) -> common::Daemon {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    common::Daemon::start(
        &[],
        &format!(
            "[[server.tokens]]\nsha256 = \"{}\"\nidentity = \"alice\"\nroles = [\"admin\"]\n\n\
             [[server.tokens]]\nsha256 = \"{}\"\nidentity = \"olga\"\nroles = [\"ops\"]\n\n\
             [policy]\ndir = \"{policies}\"\ndefault = \"deny\"\n\n\
             [audit]\npath = \"{}\"\n\n\
             [[guests]]\nname = \"g\"\nsocket = \"{}\"\n",
            sha_hex("admin-token"),
            sha_hex("ops-token"),
            audit.display(),
            socket.display()
        ),
    )
    .await
}

fn read(audit: &Path) -> String {
    std::fs::read_to_string(audit).unwrap_or_default()
}

async fn client(d: &common::Daemon, token: &'static str) -> Client {
    GuestAgentClient::with_interceptor(common::grpc_channel(&d.socket).await, Bearer(token))
}

fn reason(st: &Status) -> String {
    st.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

async fn status(c: &mut Client) -> ocloudview_atp::pb::FsFreezeStatusResponse {
    c.fs_freeze_status(FsFreezeStatusRequest { domain: "g".into() })
        .await
        .unwrap()
        .into_inner()
}

fn freeze(deadline_s: u32) -> FsFreezeRequest {
    FsFreezeRequest {
        domain: "g".into(),
        thaw_deadline_s: deadline_s,
        ..Default::default()
    }
}

/// Runs `script` in the guest with the admin client; its stdout (it must succeed).
async fn out(d: &common::Daemon, script: &str) -> String {
    let mut a = client(d, "admin-token").await;
    let o = common::drain_exec(
        a.exec(common::sh_request("g", script))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(
        o.exited.as_ref().and_then(|x| x.exit_code),
        Some(0),
        "{script}: {o:?}"
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `atp --server DAEMON --token admin-token ARGS` with `stdin`: exit code, stdout,
/// stderr.
fn atp(d: &common::Daemon, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let server = format!("unix://{}", d.socket.display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["--server", &server, "--token", "admin-token"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn admin_operations_on_real_agents() {
    common::init_logging();
    host_agent_blocks_them().await;
    busybox_guest().await;
    debian_guest().await;
}

/// The host agent blocks every admin command (`-b`): COMMAND_DISABLED, and nothing frozen.
async fn host_agent_blocks_them() {
    let agent = HostAgent::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(agent.socket(), &dir.path().join("audit.jsonl")).await;
    let mut c = client(&d, "admin-token").await;
    let st = c.fs_freeze(freeze(5)).await.unwrap_err();
    assert_eq!(
        (st.code(), reason(&st).as_str()),
        (Code::FailedPrecondition, "COMMAND_DISABLED"),
        "{st:?}"
    );
    let st = c
        .sync_time(SyncTimeRequest { domain: "g".into() })
        .await
        .unwrap_err();
    assert_eq!(reason(&st), "COMMAND_DISABLED", "{st:?}");
    let st = c
        .set_user_password(SetUserPasswordRequest {
            domain: "g".into(),
            username: "nobody".into(),
            password: PASSWORD.into(),
            crypted: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&st), "COMMAND_DISABLED", "{st:?}");
    assert!(!st.message().contains(PASSWORD));
    // The CLI reads the password from stdin, never argv.
    let (code, stdout, err) = atp(&d, &["passwd", "--password-stdin", "g", "nobody"], PASSWORD);
    assert_eq!(code, 1, "{stdout}{err}");
    assert!(err.contains("disabled") && !err.contains(PASSWORD), "{err}");
}

async fn busybox_guest() {
    let image = common::image().await;
    let guest = QemuGuest::boot(&image, BootOptions::default())
        .await
        .unwrap();
    eprintln!("busybox guest: agent after {:.2?}", guest.boot_time());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let d = daemon(&guest.agent_socket(), &audit).await;
    let mut admin = client(&d, "admin-token").await;

    // Policy: role ops gets none of them, and nothing reaches the guest.
    let mut ops = client(&d, "ops-token").await;
    let st = ops.fs_freeze(freeze(5)).await.unwrap_err();
    assert_eq!(
        (st.code(), reason(&st).as_str()),
        (Code::PermissionDenied, "POLICY_DENIED")
    );
    let st = ops
        .sync_time(SyncTimeRequest { domain: "g".into() })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(!status(&mut admin).await.frozen);

    // A required deadline.
    let st = admin.fs_freeze(freeze(0)).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);

    // The rootfs is a tmpfs: nothing freezable, and qemu-ga then stays thawed (and the
    // daemon keeps no deadline for it). The freeze itself is tested on Debian's ext4.
    let r = admin.fs_freeze(freeze(60)).await.unwrap().into_inner();
    assert_eq!(r.frozen, 0);
    let s = status(&mut admin).await;
    assert!(!s.frozen && s.thaw_deadline_unix_ms.is_none(), "{s:?}");

    ssh_keys(&mut admin, &audit).await;
    time_sync(&d, &mut admin).await;

    // The same through the CLI.
    let keyfile = dir.path().join("id.pub");
    std::fs::write(&keyfile, format!("# mine\n{KEY}\n")).unwrap();
    let keyfile = keyfile.to_str().unwrap();
    let (code, stdout, err) = atp(&d, &["ssh-key", "add", "g", "root", keyfile], "");
    assert_eq!(
        (code, stdout.trim()),
        (0, format!("added {FP}").as_str()),
        "{err}"
    );
    let (code, stdout, err) = atp(&d, &["ssh-key", "ls", "g", "root"], "");
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains(&format!("{FP} me@host")), "{stdout}");
    let (code, _, err) = atp(&d, &["ssh-key", "rm", "g", "root", keyfile], "");
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = atp(&d, &["time-sync", "g"], "");
    assert!(
        code == 0 && stdout.contains("clock set from the host"),
        "{stdout}{err}"
    );
    let (code, stdout, err) = atp(&d, &["freeze-status", "g"], "");
    assert_eq!((code, stdout.trim()), (0, "g: thawed"), "{err}");

    drop(d);
}

async fn ssh_keys(c: &mut Client, audit: &Path) {
    let user = || "root".to_owned();
    // Invalid keys never reach a policy or the guest.
    let st = c
        .add_authorized_keys(AddAuthorizedKeysRequest {
            domain: "g".into(),
            username: user(),
            keys: vec![format!("{KEY}\nssh-rsa AAAA")],
            reset: false,
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    let r = c
        .add_authorized_keys(AddAuthorizedKeysRequest {
            domain: "g".into(),
            username: user(),
            keys: vec![KEY.into()],
            reset: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.fingerprints, vec![FP.to_owned()]);
    let got = c
        .get_authorized_keys(GetAuthorizedKeysRequest {
            domain: "g".into(),
            username: user(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.keys.iter().any(|k| k == KEY), "{got:?}");
    assert!(got.fingerprints.iter().any(|f| f == FP), "{got:?}");
    c.remove_authorized_keys(RemoveAuthorizedKeysRequest {
        domain: "g".into(),
        username: user(),
        keys: vec![KEY.into()],
    })
    .await
    .unwrap();
    let got = c
        .get_authorized_keys(GetAuthorizedKeysRequest {
            domain: "g".into(),
            username: user(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.keys.iter().any(|k| k == KEY), "{got:?}");
    // The audit log has the fingerprint, never the key.
    let audit = read(audit);
    assert!(audit.contains(FP));
    assert!(
        !audit.contains("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    );
}

async fn time_sync(d: &common::Daemon, c: &mut Client) {
    out(d, "date -s '2017-07-14 02:40:00' >/dev/null").await;
    let r = c
        .sync_time(SyncTimeRequest { domain: "g".into() })
        .await
        .unwrap()
        .into_inner();
    let off = r.offset_before_ms.unwrap();
    assert!(off < -200_000_000_000, "guest was years behind: {r:?}");
    let guest: u64 = out(d, "date +%s").await.trim().parse().unwrap();
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(guest.abs_diff(host) <= 5, "guest {guest}, host {host}");
}

async fn debian_guest() {
    let image = tokio::task::spawn_blocking(DebianImage::ensure)
        .await
        .unwrap()
        .expect("Debian image build failed (run scripts/setup.sh)");
    let guest = QemuGuest::boot_debian(&image, DebianBootOptions::default())
        .await
        .unwrap();
    eprintln!("Debian guest: agent after {:.2?}", guest.boot_time());
    // The same boot first serves the directory-tree cases that depend on the guest's tools
    // (GNU tar, which opens files with O_NOFOLLOW, GNU stat, dash as /bin/sh), with their
    // own daemon and policy; it lets go of the agent before the admin daemon connects.
    trees_on_debian(&guest.agent_socket()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut d = daemon(&guest.agent_socket(), &audit).await;
    let mut c = client(&d, "admin-token").await;

    // A writer appends a timestamp every 0.1 s to the ext4 root; a freeze stops it.
    out(
        &d,
        "rm -f /root/ticks; setsid sh -c 'while sleep 0.1; do date +%s.%N >> /root/ticks; done' \
         </dev/null >/dev/null 2>&1 & echo $! > /root/ticks.pid",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Freeze on a client that then vanishes: the agent refuses most commands until thawed,
    // and the daemon thaws at the deadline.
    let t0 = Instant::now();
    {
        let mut gone = client(&d, "admin-token").await;
        let r = gone.fs_freeze(freeze(3)).await.unwrap().into_inner();
        assert!(r.frozen >= 1, "the ext4 root is freezable: {r:?}");
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            (now_ms + 1_000..=now_ms + 3_500).contains(&r.thaw_deadline_unix_ms),
            "{r:?}"
        );
    } // the channel is dropped here
    let s = status(&mut c).await;
    assert!(s.frozen && s.thaw_deadline_unix_ms.is_some(), "{s:?}");
    assert_eq!(s.frozen_by, "alice");
    // While frozen: a second freeze and an exec are refused with FS_FROZEN.
    let st = c.fs_freeze(freeze(5)).await.unwrap_err();
    assert_eq!(
        (st.code(), reason(&st).as_str()),
        (Code::FailedPrecondition, "FS_FROZEN"),
        "{st:?}"
    );
    let err = match c.exec(common::sh_request("g", "true")).await {
        Ok(s) => common::drain_exec(s.into_inner()).await.error,
        Err(st) => Some(st),
    };
    let st = err.expect("an exec while frozen must fail");
    assert_eq!(reason(&st), "FS_FROZEN", "{st:?}");
    // The deadline thaws it, though nobody asked.
    loop {
        if !status(&mut c).await.frozen {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not thawed by the deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(2_500),
        "thawed before the deadline"
    );
    let s = status(&mut c).await;
    assert!(
        s.thaw_deadline_unix_ms.is_none() && s.frozen_by.is_empty(),
        "{s:?}"
    );
    common::eventually(
        || {
            let a = read(&audit);
            a.contains("\"kind\":\"daemon\"") && a.contains("\"why\":\"deadline\"")
        },
        "the audit record of the thaw at the deadline",
    )
    .await;

    // An explicit thaw ends a freeze (and its deadline).
    c.fs_freeze(freeze(60)).await.unwrap();
    assert!(status(&mut c).await.frozen);
    let r = c
        .fs_thaw(FsThawRequest { domain: "g".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.thawed >= 1, "{r:?}");
    let s = status(&mut c).await;
    assert!(!s.frozen && s.thaw_deadline_unix_ms.is_none(), "{s:?}");

    let ticks = out(&d, "kill $(cat /root/ticks.pid); cat /root/ticks").await;
    let t: Vec<f64> = ticks.lines().filter_map(|l| l.parse().ok()).collect();
    let gap = t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        gap >= 2.0,
        "the writer never blocked (largest gap {gap:.2} s in {} ticks)",
        t.len()
    );

    // The same through the CLI.
    let (code, stdout, err) = atp(&d, &["freeze", "g", "--deadline", "30s"], "");
    assert!(code == 0 && stdout.contains("frozen"), "{stdout}{err}");
    let (code, stdout, err) = atp(&d, &["freeze-status", "g"], "");
    assert!(
        code == 0 && stdout.contains("frozen by alice"),
        "{stdout}{err}"
    );
    let (code, _, err) = atp(&d, &["freeze", "g", "--deadline", "30s"], "");
    assert_eq!(code, 75, "FS_FROZEN is worth a retry: {err}");
    let (code, stdout, err) = atp(&d, &["thaw", "g"], "");
    assert!(code == 0 && stdout.contains("thawed"), "{stdout}{err}");

    // Passwords: Debian's chpasswd sets the shadow hash; a crypted one is set verbatim.
    let shadow = async |d: &common::Daemon| out(d, "grep '^root:' /etc/shadow | cut -d: -f2").await;
    let before = shadow(&d).await;
    c.set_user_password(SetUserPasswordRequest {
        domain: "g".into(),
        username: "root".into(),
        password: PASSWORD.into(),
        crypted: false,
    })
    .await
    .unwrap();
    let after = shadow(&d).await;
    assert_ne!(before, after);
    assert!(after.starts_with('$'), "{after}");
    let hash = "$6$atpsalt$4b7tPTCz7cMSPRQtyX8Fx8KfdYe8lJtXrXPBnZAklYsj4HiMtRk0Z5Bq0WbH3hQm7Pw7tSeP0zq1V3kP2mTgD.";
    c.set_user_password(SetUserPasswordRequest {
        domain: "g".into(),
        username: "root".into(),
        password: hash.into(),
        crypted: true,
    })
    .await
    .unwrap();
    assert_eq!(shadow(&d).await.trim(), hash);
    let (code, _, err) = atp(
        &d,
        &["passwd", "--password-stdin", "g", "root"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(shadow(&d).await.trim() != hash);
    let st = c
        .set_user_password(SetUserPasswordRequest {
            domain: "g".into(),
            username: "no-such-user".into(),
            password: PASSWORD.into(),
            crypted: false,
        })
        .await
        .unwrap_err();
    assert!(!st.message().contains(PASSWORD), "{st:?}");
    // Neither the password nor its base64 is in the audit log; that one was given is.
    let log = read(&audit);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    assert!(!log.contains(PASSWORD) && !log.contains(&b64) && !log.contains("atpsalt"));
    assert!(log.contains("\"password_given\":true"));

    // Daemon shutdown thaws what it froze.
    c.fs_freeze(freeze(600)).await.unwrap();
    assert!(status(&mut c).await.frozen);
    assert!(d.terminate().success());
    let t = SocketTransport::new(guest.agent_socket());
    let agent = AgentClient::new(t.clone());
    assert_eq!(
        agent.fsfreeze_status().await.unwrap(),
        FsfreezeStatus::Thawed
    );
    t.close().await;
    assert!(read(&audit).contains("\"why\":\"shutdown\""));
}

/// Issue 15 item 1 on a real distribution: the directory tree cases of `tree_copy` that
/// depend on the guest's tools: `atp cp -r` both ways, ListDir, overwrite, the guest's
/// hostile trees, a file swapped for a link while it is pulled, and a guest without `tar`.
/// The daemon-side rules (the client's hostile trees, policies) do not depend on the guest
/// and run only in `tree_copy`.
async fn trees_on_debian(agent: &Path) {
    use cases::*;
    let bed = bed::Bed::start(agent).await;
    let mut admin = bed.client("admin-token").await;
    bed::sh(&mut admin, "mkdir -p /data && chmod 755 /data").await;
    let tar = bed::sh(&mut admin, "tar --version | head -n 1").await;
    assert!(tar.contains("GNU tar"), "{tar}");
    round_trip(&bed, &mut admin).await;
    listing(&bed, &mut admin).await;
    overwrite(&mut admin).await;
    hostile_guest(&bed, &mut admin).await;
    swapped_while_pulled(&mut admin).await;
    no_tar(&mut admin).await;
    bed::no_stage_left(&mut admin).await;
}
