//! Issue 11, processes: what happens after the gate admitted an Exec. Against a real
//! host agent and a real `atp serve` (and the busybox TCG guest where the guest's process
//! model matters): no stale-pid kill, deadlines and `max_bytes` that hold with nobody
//! reading and across detach/attach, parked execs that hold no agent handles, audited
//! exits, env entries that cannot steer the wrapper, and owners compared by (auth, id).
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{Daemon, drain_exec, sh_request};
use ocloudview_atp::{
    pb::{
        Argv, ExecAttachRequest, ExecCancelRequest, ExecEvent, ExecRequest, exec_event::Event,
        exec_request::Command, guest_agent_client::GuestAgentClient,
    },
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Streaming, transport::Channel};

/// A daemon for `agent` whose only policy plugin allows everything, attaching `limits`
/// (a Rhai map literal) to Exec decisions; `extra` goes before the guest table.
async fn daemon_with_limits(
    agent: &HostAgent,
    limits: &str,
    extra: &str,
) -> (Daemon, tempfile::TempDir) {
    let plugins = tempfile::Builder::new()
        .prefix("atp-sec-exec-policy.")
        .tempdir()
        .unwrap();
    std::fs::write(
        plugins.path().join("50-test.rhai"),
        format!(
            "fn authorize(req) {{\n  if req.rpc == \"Exec\" {{ return allow(\"test\").with({limits}); }}\n  allow(\"test\")\n}}\n"
        ),
    )
    .unwrap();
    let d = common::daemon_for(
        agent,
        &format!(
            "{extra}\n[policy]\ndir = \"{}\"\ndefault = \"deny\"\n",
            plugins.path().display()
        ),
    )
    .await;
    (d, plugins)
}

fn is_running(pid: i64) -> bool {
    // The host agent reaps its children: a gone program has no /proc entry.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

/// Reads events until `Started`; returns its exec id and pid.
async fn started(s: &mut Streaming<ExecEvent>) -> (String, i64) {
    loop {
        if let Some(Event::Started(st)) = s.message().await.unwrap().unwrap().event {
            return (st.exec_id, st.pid);
        }
    }
}

/// A client with small HTTP/2 windows, so that one which stops reading stalls the daemon
/// soon (the default windows would absorb megabytes first).
async fn small_window_client(socket: &Path) -> GuestAgentClient<Channel> {
    let p = socket.to_owned();
    let ch = tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .initial_stream_window_size(16_384)
        .initial_connection_window_size(16_384)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .unwrap();
    GuestAgentClient::new(ch)
}

/// Follows an exec to its end; while the daemon has not yet noticed that an earlier
/// client left (FAILED_PRECONDITION, EXEC_ATTACHED), asks again (bounded).
async fn attach(c: &mut GuestAgentClient<Channel>, id: &str) -> common::ExecOutcome {
    drain_exec(common::attach_when_parked(c, id).await).await
}

/// Cancels an exec, then follows it to its end, which removes its guest directory.
async fn cancel(c: &mut GuestAgentClient<Channel>, id: &str) -> bool {
    let k = c
        .exec_cancel(ExecCancelRequest {
            exec_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let _ = attach(c, id).await;
    k.killed
}

fn detached(script: &str) -> ExecRequest {
    let mut r = sh_request("host", script);
    r.detach = true;
    r
}

/// Makes the next process this test spawns get `pid` (steering the kernel's next-pid
/// hint, retried while other processes race for it). The victim is ours: `sleep 60`.
fn spawn_with_pid(pid: i64) -> std::process::Child {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        if i64::from(child.id()) == pid {
            return child;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    panic!("could not get pid {pid} for the victim");
}

#[tokio::test]
async fn cancel_after_the_exit_never_kills_whatever_holds_the_pid_now() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let o = drain_exec(c.exec(detached("exit 0")).await.unwrap().into_inner()).await;
    common::eventually(|| !is_running(o.pid), "the exec's program exits").await;
    // Someone else's process now holds the pid (root's, in a real guest).
    let mut victim = spawn_with_pid(o.pid);
    let k = c
        .exec_cancel(ExecCancelRequest {
            exec_id: o.exec_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Not synchronisation: time for a wrong kill to land, to show none did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        alive,
        "ExecCancel killed the process that reused pid {}",
        o.pid
    );
    assert!(!k.killed, "ExecCancel of an exited program says killed");
    let end = attach(&mut c, &o.exec_id).await;
    let x = end.exited.unwrap();
    assert_eq!((x.exit_code, x.timed_out), (Some(0), false));
}

#[tokio::test]
async fn the_policy_deadline_holds_without_a_reader() {
    let agent = HostAgent::start().unwrap();
    let (d, _p) = daemon_with_limits(&agent, "#{ timeout_ms: 2000 }", "").await;
    let mut c = d.client().await;

    // Detached: killed at ~2 s with nobody attached.
    let o = drain_exec(c.exec(detached("sleep 6")).await.unwrap().into_inner()).await;
    common::eventually_within(
        Duration::from_millis(3500),
        || !is_running(o.pid),
        "a detached exec killed at its 2 s limit",
    )
    .await;
    let x = attach(&mut c, &o.exec_id).await.exited.unwrap();
    assert!(
        x.timed_out && x.signal == Some(9) && x.exit_code.is_none(),
        "{x:?}"
    );
    assert!(
        x.duration_ms < 4000,
        "killed only after {} ms",
        x.duration_ms
    );

    // A client that stops reading does not extend it (output keeps coming meanwhile).
    let mut slow = small_window_client(&d.socket).await;
    let mut s = slow
        .exec(sh_request(
            "host",
            "while :; do head -c 65536 /dev/zero; sleep 0.05; done",
        ))
        .await
        .unwrap()
        .into_inner();
    let (id, pid) = started(&mut s).await;
    common::eventually_within(
        Duration::from_millis(4000),
        || !is_running(pid),
        "a program with a stalled reader killed at its 2 s limit",
    )
    .await;
    drop(s);
    let _ = attach(&mut c, &id).await; // take the rest, so its guest directory goes

    // A program that exits on its own (code 0) before anyone looks did not time out.
    let mut r = detached("sleep 1");
    r.timeout_ms = 1500;
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    // Not synchronisation: nobody looks until well past the 1.5 s deadline.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let x = attach(&mut c, &o.exec_id).await.exited.unwrap();
    assert_eq!((x.exit_code, x.signal, x.timed_out), (Some(0), None, false));
}

#[tokio::test]
async fn max_bytes_binds_the_exec_across_detach_and_attach() {
    let agent = HostAgent::start().unwrap();
    let (d, _p) = daemon_with_limits(&agent, "#{ max_bytes: 100, timeout_ms: 30000 }", "").await;
    let mut c = d.client().await;
    // 9,000 bytes in 30-byte pieces, then a long sleep.
    let script =
        "i=0; while [ $i -lt 300 ]; do printf '%030d' 0; sleep 0.05; i=$((i+1)); done; sleep 30";

    // Read the first piece, leave, attach again: one budget for both streams.
    let mut s = c
        .exec(sh_request("host", script))
        .await
        .unwrap()
        .into_inner();
    let (id, _) = started(&mut s).await;
    let mut first = 0;
    while first == 0 {
        if let Some(Event::Stdout(d)) = s.message().await.unwrap().unwrap().event {
            first = d.len();
        }
    }
    drop(s);
    let rest = drain_exec(common::attach_when_parked(&mut c, &id).await).await;
    let x = rest.exited.unwrap();
    assert!(
        first + rest.stdout.len() <= 100,
        "{first} + {} bytes came through a 100-byte limit",
        rest.stdout.len()
    );
    assert_eq!(x.signal, Some(9), "{x:?}");
    assert!(x.stdout_truncated && !x.timed_out, "{x:?}");

    // Detached from the start: killed by its output size while nobody reads.
    let o = drain_exec(c.exec(detached(script)).await.unwrap().into_inner()).await;
    common::eventually_within(
        Duration::from_millis(3500),
        || !is_running(o.pid),
        "a detached exec killed for its byte budget",
    )
    .await;
    let end = attach(&mut c, &o.exec_id).await;
    assert!(end.stdout.len() <= 100, "{} bytes", end.stdout.len());
    assert_eq!(end.exited.unwrap().signal, Some(9));
}

#[tokio::test]
async fn a_parked_exec_holds_no_agent_handles() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "[limits]\nstream_idle_timeout_ms = 1000\n").await;
    let mut c = d.client().await;
    // The agent's handles on exec output files (it also keeps a pidfd per child).
    let output_handles = || {
        common::fd_targets(agent.pid().unwrap())
            .iter()
            .filter(|t| t.starts_with("/tmp/.atp-exec-"))
            .count()
    };

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(drain_exec(c.exec(detached("sleep 30")).await.unwrap().into_inner()).await);
    }
    // And one whose client left mid-stream.
    let mut s = c
        .exec(sh_request("host", "echo hi; sleep 30"))
        .await
        .unwrap()
        .into_inner();
    let (left, _) = started(&mut s).await;
    let _ = s.message().await;
    drop(s);
    // And one whose client stopped reading (steady output, nobody takes it).
    let mut slow = small_window_client(&d.socket).await;
    let mut stalled = slow
        .exec(sh_request(
            "host",
            "while :; do head -c 16384 /dev/zero; sleep 0.05; done",
        ))
        .await
        .unwrap()
        .into_inner();
    let (slow, _) = started(&mut stalled).await;
    // Detached after limits.stream_idle_timeout_ms: another client may take it over.
    let mut taken = common::attach_when_parked(&mut c, &slow).await;
    assert!(
        matches!(
            taken.message().await.unwrap().unwrap().event,
            Some(Event::Stdout(_))
        ),
        "the stalled exec was not resumed by ExecAttach"
    );
    drop(taken);
    // Every one of the six is parked now (the stalled one again, its taker gone).
    common::eventually(
        || output_handles() == 0,
        "six parked execs hold no agent handles",
    )
    .await;
    drop(stalled);
    assert!(cancel(&mut c, &slow).await);
    for o in &ids {
        assert!(cancel(&mut c, &o.exec_id).await);
    }
    assert!(cancel(&mut c, &left).await);
}

#[tokio::test]
async fn a_detached_exec_s_exit_is_audited() {
    let agent = HostAgent::start().unwrap();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let d = common::daemon_for(
        &agent,
        &format!("[audit]\npath = \"{}\"\n", audit.display()),
    )
    .await;
    let mut c = d.client().await;
    let o = drain_exec(
        c.exec(detached("sleep 1; exit 7"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let mut found = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        found = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["rpc"] == "Exec" && e["kind"] == "outcome" && !e["exit_code"].is_null());
        if found.is_some() {
            break;
        }
    }
    let e = found.expect("no outcome record with the detached exec's exit code");
    assert_eq!(e["exit_code"], 7, "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("detached"),
        "{e}"
    );
    assert!(!is_running(o.pid));
    let _ = attach(&mut c, &o.exec_id).await; // so that its guest directory goes
}

/// A directory the test owns with an executable `name` that prints `planted`.
fn planted(name: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("atp-planted.")
        .tempdir()
        .unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, "#!/bin/dash\necho planted\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn env_entries_are_identifiers_and_apply_to_the_program_only() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    let mut c = d.client().await;

    for bad in [
        "BASH_FUNC_echo%%=() { id; }",
        "BASH_FUNC_x()=() { id; }",
        "A-B=1",
        "1X=1",
        "=x",
    ] {
        let mut r = sh_request("host", "echo ran");
        r.env = vec![bad.into()];
        let st = c.exec(r).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{bad:?}: {st:?}");
    }

    // PATH points at a planted `sh`; IFS, ENV and the wrapper's own variable names are
    // set too. The exact program runs, and it sees the caller's values.
    let plant = planted("sh");
    let r = ExecRequest {
        domain: "host".into(),
        command: Some(Command::Argv(Argv {
            path: "sh".into(),
            args: vec![
                "-c".into(),
                "echo \"$PATH|$GREETING|$p|$x|$c|$e|$i|$k|$m\"".into(),
            ],
        })),
        env: vec![
            format!("PATH={}", plant.path().display()),
            "c=/".into(),
            "e=E".into(),
            "IFS=/".into(),
            format!("ENV={}/sh", plant.path().display()),
            "GREETING=hi".into(),
            "p=/tmp/nowhere".into(),
            "x=/tmp/nowhere".into(),
            "k=99".into(),
            "i=I".into(),
            "m=M".into(),
        ],
        ..Default::default()
    };
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "{}|hi|/tmp/nowhere|/tmp/nowhere|/|E|I|99|M\n",
            plant.path().display()
        ),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
}

#[derive(Clone)]
struct Bearer(&'static str);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(req)
    }
}

fn shipped_baseline(into: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/00-baseline.rhai");
    std::fs::copy(src, into.join("00-baseline.rhai")).unwrap();
}

#[tokio::test]
async fn a_token_named_uid0_does_not_own_roots_unix_execs() {
    let agent = HostAgent::start().unwrap();
    let hex: String = Sha256::digest(b"uid0-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = format!(
        "[[server.tokens]]\nsha256 = \"{hex}\"\nidentity = \"uid:0\"\nroles = [\"admin\"]\n"
    );
    let (d, plugins) = daemon_with_limits(&agent, "#{ timeout_ms: 60000 }", &tokens).await;
    shipped_baseline(plugins.path());
    // The plugin directory is read at start: restart with the baseline in place.
    drop(d);
    let d = common::daemon_for(
        &agent,
        &format!(
            "{tokens}\n[policy]\ndir = \"{}\"\ndefault = \"deny\"\n",
            plugins.path().display()
        ),
    )
    .await;
    let mut root = d.client().await;
    let o = drain_exec(root.exec(detached("sleep 30")).await.unwrap().into_inner()).await;
    assert!(!o.exec_id.is_empty(), "{:?}", o.error);

    let ch = common::grpc_channel(&d.socket).await;
    let mut token = GuestAgentClient::with_interceptor(ch, Bearer("uid0-token"));
    let st = token
        .exec_attach(ExecAttachRequest {
            exec_id: o.exec_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "attach: {st:?}");
    let st = token
        .exec_cancel(ExecCancelRequest {
            exec_id: o.exec_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "cancel: {st:?}");
    assert!(is_running(o.pid));

    // Its real owner still can.
    assert!(cancel(&mut root, &o.exec_id).await);
}

#[tokio::test]
async fn execs_per_caller_is_bounded() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "[limits]\nexecs_per_caller = 2\n").await;
    let mut c = d.client().await;
    let a = drain_exec(c.exec(detached("sleep 30")).await.unwrap().into_inner()).await;
    let b = drain_exec(c.exec(detached("sleep 30")).await.unwrap().into_inner()).await;
    let st = c.exec(detached("sleep 30")).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("limits.execs_per_caller"), "{st:?}");
    for o in [&a, &b] {
        assert!(cancel(&mut c, &o.exec_id).await);
    }
    // Ended execs no longer count.
    common::eventually(|| !is_running(a.pid) && !is_running(b.pid), "cancelled").await;
    let t0 = Instant::now();
    let o = loop {
        match c.exec(sh_request("host", "echo ok")).await {
            Ok(s) => break drain_exec(s.into_inner()).await,
            Err(st)
                if st.code() == Code::ResourceExhausted
                    && t0.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(st) => panic!("ended execs still count: {st:?}"),
        }
    };
    assert_eq!(o.stdout, b"ok\n");
}
