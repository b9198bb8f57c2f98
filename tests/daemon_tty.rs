//! Terminal sessions through the daemon (ExecInteractive with `tty`), against a real host
//! qemu-ga, with an audit log and a policy: typed lines run in a shell on a terminal,
//! resize and signal reach it, its status is the session's; the session is recorded as an
//! asciicast v2 file whose path and SHA-256 the outcome record carries (input only when
//! the policy asks); a policy's idle time ends a quiet session; a client that goes away
//! hangs the terminal up; one session's backlog (stdin nobody reads, output nobody reads)
//! does not stall other callers of the same guest; a daemon killed mid-session leaves no
//! shell behind once its lease runs out, and the next session works. Then a recorded
//! terminal session in the busybox TCG guest.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use ocloudview_atp::{
    pb::{
        Argv, ExecInput, ExecRequest, TerminalSize, exec_event::Event, exec_input::Msg,
        exec_request::Command,
    },
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Streaming;

/// Everything allowed; `IDLE` in a shell line gets a 1.5 s idle limit, `RECIN` input
/// recording.
const POLICY: &str = r#"fn authorize(req) {
    if req.rpc == "ExecInteractive" && req.exec.args.len() > 1 && req.exec.args[1].contains("IDLE") {
        return allow("test").with(#{ idle_timeout_ms: 1500 });
    }
    if req.rpc == "ExecInteractive" && req.exec.args.len() > 1 && req.exec.args[1].contains("RECIN") {
        return allow("test").with(#{ record_input: true });
    }
    allow("test")
}
"#;

struct Setup {
    agent: HostAgent,
    d: common::Daemon,
    _plugins: tempfile::TempDir,
}

async fn setup() -> Setup {
    let agent = HostAgent::start().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("50-test.rhai"), POLICY).unwrap();
    let body = format!(
        "[policy]\ndir = \"{}\"\ndefault = \"deny\"\n\n[audit]\npath = \"audit.log\"\n",
        plugins.path().display()
    );
    let d = common::daemon_for(&agent, &body).await;
    Setup {
        agent,
        d,
        _plugins: plugins,
    }
}

/// A terminal session running `argv` at 30x100: the input sender and the event stream
/// (after `Started`).
async fn open(
    d: &common::Daemon,
    argv: &[&str],
) -> (
    mpsc::Sender<ExecInput>,
    Streaming<ocloudview_atp::pb::ExecEvent>,
) {
    let (tx, s, _) = open_id(d, argv).await;
    (tx, s)
}

/// [`open`], with the exec id.
async fn open_id(
    d: &common::Daemon,
    argv: &[&str],
) -> (
    mpsc::Sender<ExecInput>,
    Streaming<ocloudview_atp::pb::ExecEvent>,
    String,
) {
    let (tx, rx) = mpsc::channel(16);
    let start = ExecRequest {
        domain: "host".into(),
        command: Some(Command::Argv(Argv {
            path: argv[0].into(),
            args: argv[1..].iter().map(|a| (*a).to_owned()).collect(),
        })),
        tty: true,
        tty_size: Some(TerminalSize {
            rows: 30,
            cols: 100,
        }),
        ..Default::default()
    };
    tx.send(ExecInput {
        msg: Some(Msg::Start(start)),
    })
    .await
    .unwrap();
    let mut c = d.client().await;
    let mut s = c
        .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let id = match s.message().await.unwrap().unwrap().event.unwrap() {
        Event::Started(st) => st.exec_id,
        other => panic!("expected Started, got {other:?}"),
    };
    (tx, s, id)
}

/// Types a line printing the shell's pid and reads it back (the typed line's own echo
/// does not match: the quotes split the marker).
async fn shell_pid(
    tx: &mpsc::Sender<ExecInput>,
    s: &mut Streaming<ocloudview_atp::pb::ExecEvent>,
) -> u32 {
    send(tx, Msg::Stdin(b"echo \"p\"\"id=$$.\"\n".to_vec())).await;
    let mut out = String::new();
    for _ in 0..50 {
        out = until(s, "pid=").await;
        if let Some(rest) = out.rsplit("pid=").next()
            && let Some((n, _)) = rest.split_once('.')
            && let Ok(pid) = n.parse()
        {
            return pid;
        }
    }
    panic!("no pid in {out:?}");
}

async fn send(tx: &mpsc::Sender<ExecInput>, m: Msg) {
    tx.send(ExecInput { msg: Some(m) }).await.unwrap();
}

/// Reads until the output contains `needle` (bounded).
async fn until(s: &mut Streaming<ocloudview_atp::pb::ExecEvent>, needle: &str) -> String {
    let mut out = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = s.message().await.unwrap() {
            match ev.event.unwrap() {
                Event::Stdout(d) => {
                    out.extend(d);
                    if String::from_utf8_lossy(&out).contains(needle) {
                        return true;
                    }
                }
                Event::Exited(x) => panic!("exited {x:?} before {needle:?}"),
                _ => {}
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no {needle:?} within 30 s; output {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads to the exit: (exit code, signal).
async fn exit(s: &mut Streaming<ocloudview_atp::pb::ExecEvent>) -> (Option<i32>, Option<i32>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = s.message().await.unwrap() {
            if let Event::Exited(x) = ev.event.unwrap() {
                return (x.exit_code, x.signal);
            }
        }
        panic!("no exit");
    })
    .await
    .expect("no exit within 30 s")
}

/// The ExecInteractive outcome records so far.
fn outcomes(d: &common::Daemon) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(d.dir.path().join("audit.log")).unwrap_or_default();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "outcome" && r["rpc"] == "ExecInteractive")
        .collect()
}

/// Waits for the outcome record of the session whose recording holds `marker`.
async fn recording_with(d: &common::Daemon, marker: &str) -> (serde_json::Value, String) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        for r in outcomes(d) {
            let path = r["recording"]["path"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Ok(text) = std::fs::read_to_string(&path)
                && text.contains(marker)
            {
                return (r, text);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no outcome record with a recording holding {marker:?}");
}

fn events(text: &str, kind: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e[1] == kind)
        .map(|e| e[2].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_on_a_terminal_is_driven_and_recorded() {
    let t = setup().await;
    let (tx, mut s) = open(&t.d, &["/bin/sh"]).await;
    send(&tx, Msg::Stdin(b"echo $((6*7))x\n".to_vec())).await;
    until(&mut s, "42x").await;
    send(
        &tx,
        Msg::Resize(TerminalSize {
            rows: 40,
            cols: 120,
        }),
    )
    .await;
    send(&tx, Msg::Stdin(b"stty size\n".to_vec())).await;
    until(&mut s, "40 120").await;
    // A signal reaches the foreground job; the shell survives it.
    send(&tx, Msg::Stdin(b"sleep 60\n".to_vec())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&tx, Msg::Signal(2)).await;
    send(&tx, Msg::Stdin(b"echo after-$?\n".to_vec())).await;
    until(&mut s, "after-130").await;
    send(&tx, Msg::Stdin(b"exit 5\n".to_vec())).await;
    assert_eq!(exit(&mut s).await.0, Some(5), "the shell's status");

    let (rec, text) = recording_with(&t.d, "42x").await;
    assert_eq!(rec["status"], "OK");
    assert_eq!(rec["exit_code"], 5);
    let path = rec["recording"]["path"].as_str().unwrap();
    assert!(
        path.starts_with(&t.d.dir.path().join("sessions").display().to_string()),
        "recorded beside the audit log: {path}"
    );
    assert_eq!(
        rec["recording"]["sha256"].as_str().unwrap(),
        format!("{:x}", Sha256::digest(text.as_bytes())),
        "the outcome record carries the file's SHA-256"
    );
    assert_eq!(rec["recording"]["complete"], true);
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            header["version"].clone(),
            header["width"].clone(),
            header["height"].clone()
        ),
        (2.into(), 100.into(), 30.into())
    );
    assert!(events(&text, "r").contains(&"120x40".to_owned()), "{text}");
    assert!(
        events(&text, "i").is_empty(),
        "input is not recorded by default"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A policy may ask for the input too.
    let (tx, mut s) = open(&t.d, &["/bin/sh", "-c", "echo RECIN; cat"]).await;
    until(&mut s, "RECIN").await;
    send(&tx, Msg::Stdin(b"typed-in\n".to_vec())).await;
    until(&mut s, "typed-in").await;
    send(&tx, Msg::Eof(true)).await;
    exit(&mut s).await;
    let (_, text) = recording_with(&t.d, "typed-in").await;
    assert!(
        events(&text, "i").concat().contains("typed-in"),
        "input recorded when asked: {text}"
    );
    drop(t.agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_end_and_a_client_that_leaves_hangs_up() {
    let t = setup().await;
    // The policy's idle limit (1.5 s) ends a session nobody types into.
    let (_tx, mut s) = open(&t.d, &["/bin/sh", "-c", "echo IDLE; exec sleep 60"]).await;
    until(&mut s, "IDLE").await;
    let t0 = Instant::now();
    let (code, signal) = exit(&mut s).await;
    assert!(
        signal.is_some() || code.is_some_and(|c| c >= 128),
        "killed: {code:?} {signal:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "ended by the idle limit, not by sleep"
    );
    let (rec, _) = recording_with(&t.d, "IDLE").await;
    assert!(
        rec["message"]
            .as_str()
            .unwrap_or_default()
            .contains("idle_timeout_ms"),
        "{rec}"
    );

    // A client that goes away: the terminal hangs up and the shell is gone.
    let (tx, mut s) = open(&t.d, &["/bin/sh"]).await;
    let pid = shell_pid(&tx, &mut s).await;
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(s);
    drop(tx);
    common::eventually_within(
        Duration::from_secs(15),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the shell hung up after its client left",
    )
    .await;
    drop(t.agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sessions_backlog_does_not_stall_other_callers() {
    let t = setup().await;
    // Stdin nobody reads (a writer blocked on a full pipe)...
    let (tx, _s1, id1) = open_id(&t.d, &["/bin/sh", "-c", "exec sleep 120"]).await;
    let feeding = tokio::spawn(async move {
        for _ in 0..16 {
            if tx
                .send(ExecInput {
                    msg: Some(Msg::Stdin(vec![b'x'; 128 << 10])),
                })
                .await
                .is_err()
            {
                return None;
            }
        }
        Some(tx)
    });
    // ... and output nobody reads.
    let (_tx2, _s2, id2) = open_id(&t.d, &["/bin/sh", "-c", "exec yes flood"]).await;
    let mut c = t.d.client().await;
    for _ in 0..5 {
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), c.ping(common::ping("host")))
            .await
            .expect("a Ping stalled behind another session's backlog")
            .unwrap();
        eprintln!("Ping beside two backlogged sessions: {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let other = common::run_sh(&mut c, "host", "echo fine").await;
    assert_eq!(other.exited.and_then(|x| x.exit_code), Some(0));
    assert!(String::from_utf8_lossy(&other.stdout).contains("fine"));
    feeding.abort();
    for id in [id1, id2] {
        let killed = c
            .exec_cancel(ocloudview_atp::pb::ExecCancelRequest { exec_id: id })
            .await
            .unwrap()
            .into_inner()
            .killed;
        assert!(killed, "the backlogged session was still running");
    }
    drop(t.agent);
}

/// Counts the guest's streamed-stdin helpers (holders and pumps) by their full command
/// lines (`ps` cuts them short, before the marker).
const STDIN_HELPERS: &str = r#"n=0
for f in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' <"$f" 2>/dev/null | grep -q -e '[a]tp-stdin' -e '[a]tp-pump'; then n=$((n + 1)); fi
done
echo $n"#;

/// In the busybox TCG guest (its agent on virtio-serial, as in production: a host qemu-ga
/// in unix-listen mode can die of SIGPIPE when its client is killed mid-reply, which says
/// nothing about the daemon).
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_session_leaves_no_shell_behind() {
    let image = common::image().await;
    let guest = ocloudview_atp::testbed::QemuGuest::boot(
        &image,
        ocloudview_atp::testbed::BootOptions::default(),
    )
    .await
    .unwrap();
    let config = format!(
        "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        guest.agent_socket().display()
    );
    let d = common::Daemon::start(&[], &config).await;
    let (tx, mut s) = open(&d, &["/bin/sh"]).await;
    let pid = shell_pid(&tx, &mut s).await;
    let mut c = d.client().await;
    let o = common::run_sh(&mut c, "host", STDIN_HELPERS).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "2",
        "the session's holder and pump are found while it runs"
    );
    // SIGKILL: no cleanup of any kind from the daemon.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(d);
    let t0 = Instant::now();
    // A new daemon watches the guest (it knows nothing of the old session).
    let d2 = common::Daemon::start(&[], &config).await;
    let mut c = d2.client().await;
    let probe = format!("test -d /proc/{pid} && echo alive || echo gone");
    loop {
        let o = common::run_sh(&mut c, "host", &probe).await;
        if String::from_utf8_lossy(&o.stdout).contains("gone") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the shell is still there {:?} after the daemon was killed",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("shell gone {:?} after the daemon was killed", t0.elapsed());
    let o = common::run_sh(&mut c, "host", STDIN_HELPERS).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "no holder or pump left"
    );
    // The next session works.
    let (tx, mut s) = open(&d2, &["/bin/sh", "-c", "echo next-ok"]).await;
    until(&mut s, "next-ok").await;
    assert_eq!(exit(&mut s).await.0, Some(0));
    drop(tx);
}

/// The same through the daemon on the busybox TCG guest (its direct socket): a shell on a
/// terminal, resize, signal, EOF ending it, and the recording with its SHA-256.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_in_the_busybox_guest_is_recorded() {
    let image = common::image().await;
    let guest = ocloudview_atp::testbed::QemuGuest::boot(
        &image,
        ocloudview_atp::testbed::BootOptions::default(),
    )
    .await
    .unwrap();
    let d = common::Daemon::start(
        &[],
        &format!(
            "[audit]\npath = \"audit.log\"\n\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            guest.agent_socket().display()
        ),
    )
    .await;
    let (tx, mut s) = open(&d, &["/bin/sh"]).await;
    send(&tx, Msg::Stdin(b"echo busybox-$((6*7))\n".to_vec())).await;
    until(&mut s, "busybox-42").await;
    send(
        &tx,
        Msg::Resize(TerminalSize {
            rows: 50,
            cols: 132,
        }),
    )
    .await;
    send(&tx, Msg::Stdin(b"stty size\n".to_vec())).await;
    until(&mut s, "50 132").await;
    send(&tx, Msg::Stdin(b"sleep 60\n".to_vec())).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    send(&tx, Msg::Signal(2)).await;
    send(&tx, Msg::Stdin(b"echo after-$?\n".to_vec())).await;
    until(&mut s, "after-130").await;
    // EOF at the prompt: the shell exits, status 0.
    send(&tx, Msg::Eof(true)).await;
    assert_eq!(exit(&mut s).await.0, Some(0));
    let (rec, text) = recording_with(&d, "busybox-42").await;
    assert_eq!(
        rec["recording"]["sha256"].as_str().unwrap(),
        format!("{:x}", Sha256::digest(text.as_bytes()))
    );
    assert!(events(&text, "r").contains(&"132x50".to_owned()), "{text}");
    assert!(events(&text, "o").concat().contains("after-130"), "{text}");
}
