//! Every RPC of `atp serve` on a real distribution: the Debian 12 guest as a libvirt domain
//! (`lab/atp-dd`, Debian's agent) and through its second channel (`direct`, the image's
//! own agent unit). Exec (live output, stdin, env, cwd, a timeout killing a process tree
//! under systemd, cancel, attach), ReadFile/WriteFile (large, atomic, modes and owners),
//! GetGuestInfo with every section filled, AgentCommand, tasks (one really restarts nginx),
//! `atp sh -it` driven through tmux (bash line editing, top, vi, less, resize, Ctrl-C/Z),
//! `atp sh -it --user carol` (her login shell), Exec as a user (`run_as`), and a
//! `block-rpcs` list in Debian's qemu-ga.conf. One guest, one test.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;
#[path = "daemon_debian/run_as.rs"]
mod run_as;
#[path = "daemon_debian/terminal.rs"]
mod terminal;

use std::{collections::HashMap, time::Instant};

use common::{ExecOutcome, drain_exec, sh_request};
use ocloudview_atp::{
    pb::{
        AgentCommandRequest, ExecCancelRequest, GetAgentInfoRequest, GetGuestInfoRequest,
        GetOsInfoRequest, ListDomainsRequest, ListTasksRequest, PingRequest, ReadFileRequest,
        RunTaskRequest, WriteFileHeader, WriteFileRequest, WriteMode, exec_event::Event,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    testbed::{DEBIAN_HOSTNAME, DebianImage, LibvirtSession, qga_conf_blocking},
};
use sha2::{Digest, Sha256};
use tonic::{Request, service::interceptor::InterceptedService, transport::Channel};

type Client = GuestAgentClient<InterceptedService<Channel, Admin>>;

/// Sends the admin token: RunTask's plugin allows restart_service for role admin only.
#[derive(Clone)]
struct Admin;

impl tonic::service::Interceptor for Admin {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", "Bearer admin-token".parse().unwrap());
        Ok(req)
    }
}

const LV: &str = "lab/atp-dd";

async fn sh(c: &mut Client, domain: &str, script: &str) -> ExecOutcome {
    drain_exec(
        c.exec(sh_request(domain, script))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
}

/// Runs `script`, which must succeed; its stdout.
async fn out(c: &mut Client, domain: &str, script: &str) -> String {
    let o = sh(c, domain, script).await;
    assert_eq!(
        o.exited.as_ref().and_then(|x| x.exit_code),
        Some(0),
        "{script}: {o:?}"
    );
    String::from_utf8(o.stdout).unwrap()
}

async fn upload(c: &mut Client, header: WriteFileHeader, data: &[u8]) -> Vec<u8> {
    let mut msgs = vec![WriteFileRequest {
        msg: Some(Msg::Header(header)),
    }];
    msgs.extend(data.chunks(1 << 20).map(|d| WriteFileRequest {
        msg: Some(Msg::Data(d.to_vec())),
    }));
    c.write_file(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner()
        .sha256
}

async fn download(c: &mut Client, domain: &str, path: &str) -> (Vec<u8>, Vec<u8>) {
    let req = ReadFileRequest {
        domain: domain.into(),
        path: path.into(),
        ..Default::default()
    };
    let mut s = c.read_file(req).await.unwrap().into_inner();
    let mut data = Vec::new();
    loop {
        let ch = s.message().await.unwrap().unwrap();
        data.extend_from_slice(&ch.data);
        if ch.eof {
            return (data, ch.sha256);
        }
    }
}

fn header(domain: &str, path: &str, permissions: Option<u32>) -> WriteFileHeader {
    WriteFileHeader {
        domain: domain.into(),
        path: path.into(),
        mode: WriteMode::Create as i32,
        permissions,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_rpc_on_debian() {
    common::init_logging();
    let image = tokio::task::spawn_blocking(DebianImage::ensure)
        .await
        .unwrap()
        .expect("Debian image build failed (run scripts/setup.sh)");
    let session = LibvirtSession::start().await.unwrap();
    let dom = session
        .create_debian_domain("atp-dd", &image)
        .await
        .unwrap();
    eprintln!("libvirt domain: agent after {:.2?}", dom.boot_time());

    // Only the tasks plugin: restart_service is defined there; the rest defaults to allow.
    let policies = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies/40-tasks.rhai"),
        policies.path().join("40-tasks.rhai"),
    )
    .unwrap();
    let token: String = Sha256::digest(b"admin-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let d = common::Daemon::start(
        &[],
        &format!(
            "[[server.tokens]]\nsha256 = \"{token}\"\nidentity = \"root\"\nroles = [\"admin\"]\n\n\
             [policy]\ndir = \"{}\"\ndefault = \"allow\"\n\n\
             [audit]\npath = \"audit.log\"\n\n\
             [[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n\n\
             [[guests]]\nname = \"direct\"\nsocket = \"{}\"\n",
            policies.path().display(),
            session.uri(),
            dom.direct_socket().display()
        ),
    )
    .await;
    let mut c = GuestAgentClient::with_interceptor(common::grpc_channel(&d.socket).await, Admin);

    // ListDomains, Ping, GetOsInfo on both paths.
    let list = c
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap()
        .into_inner();
    let found: Vec<_> = list
        .domains
        .iter()
        .map(|d| (d.name.as_str(), d.agent_connected))
        .collect();
    assert!(
        found.contains(&(LV, true)) && found.contains(&("direct", true)),
        "{found:?}"
    );
    for domain in [LV, "direct"] {
        c.ping(PingRequest {
            domain: domain.into(),
        })
        .await
        .unwrap();
        let os = c
            .get_os_info(GetOsInfoRequest {
                domain: domain.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
    }

    exec(&mut c).await;
    exec_cancel_and_attach(&d).await;
    run_as::run_as(&mut c).await;
    files(&mut c).await;
    guest_info(&mut c).await;

    // AgentCommand: a raw command the typed RPCs do not cover.
    let r = c
        .agent_command(AgentCommandRequest {
            domain: LV.into(),
            command: "guest-get-time".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ns: u64 = r.return_json.trim().parse().unwrap();
    assert!(ns > 1_700_000_000_000_000_000, "{}", r.return_json);

    // RunTask restart_service unit=nginx: nginx really restarts (a new main pid).
    let main_pid = "systemctl show -P MainPID nginx";
    let before = out(&mut c, LV, main_pid).await;
    let o = drain_exec(
        c.run_task(RunTaskRequest {
            domain: LV.into(),
            task: "restart_service".into(),
            params: HashMap::from([("unit".to_string(), "nginx".to_string())]),
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(
        o.exited.as_ref().and_then(|x| x.exit_code),
        Some(0),
        "{o:?}"
    );
    let after = out(&mut c, LV, main_pid).await;
    assert_ne!(before.trim(), "0");
    assert_ne!(after.trim(), "0", "nginx not running after the restart");
    assert_ne!(before, after, "nginx's main pid did not change");
    let tasks = c
        .list_tasks(ListTasksRequest { domain: LV.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(tasks.tasks.iter().any(|t| t.name == "restart_service"));

    // A terminal session typed into through tmux (`atp sh -it`).
    terminal::atp_sh_it(
        &d.socket,
        &d.dir.path().join("audit.log"),
        LV,
        "admin-token",
    )
    .await;
    terminal::atp_sh_it_as(&d.socket, LV, "admin-token", "carol").await;

    block_rpcs(&mut c).await;
    drop(dom);
}

/// ExecCancel kills a running exec; ExecAttach resumes one whose client left.
async fn exec_cancel_and_attach(d: &common::Daemon) {
    let mut c = d.client().await;
    let mut s = c
        .exec(common::sh_request(LV, "sleep 300"))
        .await
        .unwrap()
        .into_inner();
    let id = started(&mut s).await;
    let r = c
        .exec_cancel(ExecCancelRequest { exec_id: id })
        .await
        .unwrap()
        .into_inner();
    assert!(r.killed);
    let x = drain_exec(s).await.exited.unwrap();
    assert!(x.exit_code != Some(0), "{x:?}");

    let mut s = c
        .exec(common::sh_request(LV, "sleep 2; echo done"))
        .await
        .unwrap()
        .into_inner();
    let id = started(&mut s).await;
    drop(s);
    let o = drain_exec(common::attach_when_parked(&mut c, &id).await).await;
    assert_eq!(o.stdout, b"done\n");
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
}

async fn started(s: &mut tonic::Streaming<ocloudview_atp::pb::ExecEvent>) -> String {
    loop {
        if let Some(Event::Started(st)) = s.message().await.unwrap().unwrap().event {
            return st.exec_id;
        }
    }
}

/// Debian blocks nothing by default; a `block-rpcs` list in `/etc/qemu/qemu-ga.conf`
/// disables commands, which GetAgentInfo shows and the daemon refuses with
/// FAILED_PRECONDITION. Done on the direct channel's agent, restarted through libvirt's.
async fn block_rpcs(c: &mut Client) {
    let info = |c: &mut Client, domain: &'static str| {
        let mut c = c.clone();
        async move {
            c.get_agent_info(GetAgentInfoRequest {
                domain: domain.into(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let enabled = |i: &ocloudview_atp::pb::GetAgentInfoResponse, name: &str| {
        i.supported_commands
            .iter()
            .find(|x| x.name == name)
            .unwrap()
            .enabled
    };
    let before = info(c, "direct").await;
    assert!(before.version.starts_with("7.2"), "{}", before.version);
    assert!(enabled(&before, "guest-get-time") && enabled(&before, "guest-exec"));
    let conf = qga_conf_blocking(&["guest-get-time", "guest-set-time"]);
    out(
        c,
        LV,
        &format!(
            "mkdir -p /etc/qemu && printf '%s' '{conf}' >/etc/qemu/qemu-ga.conf && systemctl restart atp-qga-direct"
        ),
    )
    .await;
    // The old agent is gone; the daemon re-syncs with the new one.
    let t0 = Instant::now();
    let after = loop {
        let i = info(c, "direct").await;
        if !enabled(&i, "guest-get-time") {
            break i;
        }
        assert!(t0.elapsed().as_secs() < 60, "block-rpcs never applied");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(!enabled(&after, "guest-set-time") && enabled(&after, "guest-exec"));
    let st = c
        .agent_command(AgentCommandRequest {
            domain: "direct".into(),
            command: "guest-get-time".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
}

async fn exec(c: &mut Client) {
    // Live output: the first line arrives long before the exit.
    let t0 = Instant::now();
    let mut s = c
        .exec(sh_request(LV, "for i in 1 2 3; do echo $i; sleep 1; done"))
        .await
        .unwrap()
        .into_inner();
    let (mut first, mut exit) = (None, None);
    while let Some(ev) = s.message().await.unwrap() {
        match ev.event.unwrap() {
            Event::Stdout(_) => {
                first.get_or_insert(t0.elapsed());
            }
            Event::Exited(x) => exit = Some((t0.elapsed(), x)),
            _ => {}
        }
    }
    let (exit_at, x) = exit.unwrap();
    assert_eq!(x.exit_code, Some(0));
    let first = first.unwrap();
    assert!(
        first + std::time::Duration::from_millis(1500) < exit_at,
        "{first:?} {exit_at:?}"
    );

    // stdin, env, cwd; and the environment systemd gives the agent's children.
    let mut r = sh_request(
        LV,
        "cat; echo \"FOO=$FOO\"; pwd; echo \"PATH=$PATH\"; echo \"HOME=${HOME-unset}\"",
    );
    r.stdin = b"from stdin\n".to_vec();
    r.env = vec!["FOO=bar baz".into()];
    r.cwd = "/etc/nginx".into();
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(
        &lines[..3],
        ["from stdin", "FOO=bar baz", "/etc/nginx"],
        "{text}"
    );
    assert!(
        lines[3].contains("/usr/sbin") && lines[3].contains("/usr/bin"),
        "{text}"
    );
    eprintln!("exec environment under systemd: {} {}", lines[3], lines[4]);

    // A timeout kills the whole tree, orphaned background children included.
    let mut r = sh_request(LV, "sleep 311 & (sleep 312 &) ; sh -c 'sleep 313' & wait");
    r.timeout_ms = 2000;
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    let x = o.exited.unwrap();
    assert!(x.timed_out, "{x:?}");
    let left = out(
        c,
        LV,
        "for i in $(seq 50); do pgrep -f 'sleep 31[123]' >/dev/null || break; sleep 0.1; done; pgrep -af 'sleep 31[123]' || true",
    )
    .await;
    assert_eq!(left, "", "processes left after the timeout");
}

async fn files(c: &mut Client) {
    // Large round trips on both channels, checksums equal.
    let data: Vec<u8> = (0..(6 << 20) + 77)
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = Sha256::digest(&data).to_vec();
    for (domain, path) in [(LV, "/var/tmp/lv.bin"), ("direct", "/var/tmp/direct.bin")] {
        let t0 = Instant::now();
        let mut h = header(domain, path, None);
        h.expected_sha256 = digest.clone();
        assert_eq!(upload(c, h, &data).await, digest);
        let w = t0.elapsed();
        let (back, sum) = download(c, domain, path).await;
        assert_eq!(sum, digest);
        assert!(back == data, "{domain}: data differs");
        eprintln!(
            "{domain}: 6 MiB write {w:.2?}, read {:.2?}",
            t0.elapsed() - w
        );
    }

    // Modes and owners: a new file 0644 root; an atomic replace keeps mode and owner
    // (a real user of the distribution, www-data); `permissions` is honoured.
    out(
        c,
        LV,
        "mkdir -p /srv/s && echo old >/srv/s/conf && chown www-data:www-data /srv/s/conf && chmod 640 /srv/s/conf",
    )
    .await;
    upload(c, header(LV, "/srv/s/conf", None), b"replaced\n").await;
    upload(c, header(LV, "/srv/s/new", None), b"new\n").await;
    upload(c, header(LV, "/srv/s/run.sh", Some(0o750)), b"#!/bin/sh\n").await;
    let st = out(
        c,
        LV,
        "cd /srv/s && stat -c '%n %a %U %G' conf new run.sh && cat conf && ls -a | tr '\\n' ' '",
    )
    .await;
    assert_eq!(
        st,
        "conf 640 www-data www-data\nnew 644 root root\nrun.sh 750 root root\nreplaced\n. .. conf new run.sh ",
        "no temp file may be left either"
    );
}

async fn guest_info(c: &mut Client) {
    // A real login (utmp entry) so that the users section has someone: root logged in on
    // a pty by login(1), kept open by a fifo; both run as their own systemd units.
    out(
        c,
        LV,
        "mkfifo /run/atp-login.fifo && \
         systemd-run -q --unit atp-login-hold sh -c 'exec sleep 600 >/run/atp-login.fifo' && \
         systemd-run -q --unit atp-login sh -c 'exec script -q -c \"login -f root\" /dev/null </run/atp-login.fifo' && \
         for i in $(seq 100); do who | grep -q root && break; sleep 0.1; done; who",
    )
    .await;
    let info = c
        .get_guest_info(GetGuestInfoRequest { domain: LV.into() })
        .await
        .unwrap()
        .into_inner();
    eprintln!("GetGuestInfo on Debian: {info:?}");
    assert!(info.unavailable.is_empty(), "{:?}", info.unavailable);
    assert_eq!(info.hostname.as_deref(), Some(DEBIAN_HOSTNAME));
    assert_eq!(info.timezone.as_deref(), Some("UTC"));
    assert_eq!(info.vcpus_online, Some(2));
    assert!(
        info.users
            .iter()
            .any(|u| u.user == "root" && u.login_time > 0.0),
        "{:?}",
        info.users
    );
    let root = info
        .filesystems
        .iter()
        .find(|f| f.mountpoint == "/")
        .unwrap();
    assert_eq!((root.name.as_str(), root.r#type.as_str()), ("vda", "ext4"));
    assert!(
        root.total_bytes.unwrap() > 1 << 30 && root.used_bytes.unwrap() > 100 << 20,
        "{root:?}"
    );
    assert!(
        info.interfaces
            .iter()
            .any(|i| i.name == "lo" && i.ip_addresses.iter().any(|a| a.starts_with("127.0.0.1"))),
        "{:?}",
        info.interfaces
    );
    assert!(
        info.disks
            .iter()
            .any(|d| d.name == "/dev/vda" && !d.partition),
        "{:?}",
        info.disks
    );
}
