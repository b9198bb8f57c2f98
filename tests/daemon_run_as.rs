//! Exec and interactive sessions as a guest user (ExecRequest `user`, `group`, `login`),
//! through the daemon, against a real host qemu-ga (util-linux `setpriv`; user `nobody`,
//! harmless) and in the busybox TCG guest (BusyBox `su`; a user `alice` added at test
//! time): `id` says the user (by name and by uid) and its group, `login` gives its
//! environment and home, a group is chosen where the tool allows it (and refused clearly
//! where it does not), streamed stdin and a terminal work as the user (the PTY is the
//! user's), a cancelled program dies although it runs as another user (the verified kill
//! runs as root), an unknown user or group fails clearly, and malformed names are refused
//! before the policy. In the guest, the shipped policies run role `ops`'s programs as
//! `nobody` unless the request names another non-root user, and never as root.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::Duration;

use common::{ExecOutcome, drain_exec};
use ocloudview_atp::{
    pb::{
        Argv, ExecCancelRequest, ExecInput, ExecRequest, TerminalSize, exec_event::Event,
        exec_input::Msg, exec_request::Command, guest_agent_client::GuestAgentClient,
    },
    testbed::{BootOptions, HostAgent, QemuGuest},
};
use tonic::{Code, transport::Channel};

/// Everything allowed, except that a policy that saw a malformed user would deny: the
/// daemon must refuse those before the policy runs.
const POLICY: &str = r#"fn authorize(req) {
    if req.exec != () && req.exec.user.contains(";") { return deny("the policy saw a malformed user"); }
    allow("test")
}
"#;

/// Where the cases run and what they expect there.
struct Target {
    domain: &'static str,
    user: &'static str,
    uid: &'static str,
    group: &'static str,
    home: &'static str,
    /// Where `login` starts: the home, or `/` when it cannot be entered (the host's
    /// `nobody` has `/nonexistent`).
    login_dir: &'static str,
    /// The guest can choose a group (setpriv/runuser; BusyBox su cannot).
    group_tool: bool,
}

fn req(domain: &str, user: &str, argv: &[&str]) -> ExecRequest {
    ExecRequest {
        domain: domain.into(),
        command: Some(Command::Argv(Argv {
            path: argv[0].into(),
            args: argv[1..].iter().map(|a| (*a).to_owned()).collect(),
        })),
        user: user.into(),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

async fn run(c: &mut GuestAgentClient<Channel>, r: ExecRequest) -> ExecOutcome {
    let what = format!("{r:?}");
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    assert!(o.error.is_none(), "{what}: {:?}", o.error);
    o
}

/// Runs `r` and returns its stdout, asserting exit 0.
async fn out(c: &mut GuestAgentClient<Channel>, r: ExecRequest) -> String {
    let o = run(c, r).await;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.exited.as_ref().and_then(|x| x.exit_code),
        Some(0),
        "stdout {text:?} stderr {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

/// The status `r` is refused with (before any event).
async fn refused(c: &mut GuestAgentClient<Channel>, r: ExecRequest) -> tonic::Status {
    match c.exec(r).await {
        Err(st) => st,
        Ok(s) => {
            let o = drain_exec(s.into_inner()).await;
            let what = format!("{o:?}");
            o.error
                .unwrap_or_else(|| panic!("expected a refusal, got {what}"))
        }
    }
}

/// An ExecInteractive session of `r`, fed `input` then EOF (unless a terminal: then the
/// program ends by itself); returns everything it printed and its exit code.
async fn interactive(
    c: &mut GuestAgentClient<Channel>,
    r: ExecRequest,
    input: &[u8],
) -> (String, Option<i32>) {
    let tty = r.tty;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(ExecInput {
        msg: Some(Msg::Start(r)),
    })
    .await
    .unwrap();
    if !input.is_empty() {
        tx.send(ExecInput {
            msg: Some(Msg::Stdin(input.to_vec())),
        })
        .await
        .unwrap();
    }
    if !tty {
        tx.send(ExecInput {
            msg: Some(Msg::Eof(true)),
        })
        .await
        .unwrap();
    }
    let s = c
        .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let o = tokio::time::timeout(Duration::from_secs(60), drain_exec(s))
        .await
        .expect("session did not end in 60 s");
    drop(tx);
    assert!(o.error.is_none(), "{:?}", o.error);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o.exited.and_then(|x| x.exit_code),
    )
}

async fn exercise(d: &common::Daemon, t: &Target) {
    let mut c = d.client().await;
    let dom = t.domain;

    // Who the program is, by name and by uid; its group.
    assert_eq!(
        out(&mut c, req(dom, t.user, &["id", "-un"])).await.trim(),
        t.user
    );
    assert_eq!(
        out(&mut c, req(dom, t.uid, &["id", "-un"])).await.trim(),
        t.user
    );
    assert_eq!(
        out(&mut c, req(dom, t.user, &["id", "-gn"])).await.trim(),
        t.group
    );
    // Without a user, still root.
    assert_eq!(out(&mut c, req(dom, "", &["id", "-u"])).await.trim(), "0");

    // A chosen primary group.
    let mut g = req(dom, t.user, &["id", "-gn"]);
    g.group = "0".into();
    if t.group_tool {
        assert_eq!(out(&mut c, g).await.trim(), "root");
    } else {
        let st = refused(&mut c, g).await;
        assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
        assert!(st.message().contains("BusyBox su"), "{st:?}");
    }

    // The login environment and home.
    let mut l = req(
        dom,
        t.user,
        &["/bin/sh", "-c", r#"echo "$HOME|$USER|$LOGNAME|$(pwd)""#],
    );
    l.login = true;
    assert_eq!(
        out(&mut c, l.clone()).await.trim(),
        format!("{}|{}|{}|{}", t.home, t.user, t.user, t.login_dir)
    );
    // A working directory given wins over the home.
    l.cwd = "/tmp".into();
    assert_eq!(
        out(&mut c, l).await.trim(),
        format!("{}|{}|{}|/tmp", t.home, t.user, t.user)
    );

    // Unknown user or group: a clear refusal before anything runs.
    let st = refused(&mut c, req(dom, "nosuchuser", &["id"])).await;
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(st.message().contains("no such user in the guest"), "{st:?}");
    let mut ng = req(dom, t.user, &["id"]);
    ng.group = "nosuchgroup".into();
    let st = refused(&mut c, ng).await;
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(
        st.message().contains("no such group in the guest"),
        "{st:?}"
    );

    // Malformed names never reach the policy (which would deny) nor the guest.
    for bad in ["Bad;Name", "a b", "x:y", "-r"] {
        let st = refused(&mut c, req(dom, bad, &["id"])).await;
        assert_eq!(st.code(), Code::InvalidArgument, "{bad}: {st:?}");
    }
    let mut bg = req(dom, "", &["id"]);
    bg.group = "root".into();
    assert_eq!(refused(&mut c, bg).await.code(), Code::InvalidArgument);
    let mut bg = req(dom, t.user, &["id"]);
    bg.group = "wheel;x".into();
    assert_eq!(refused(&mut c, bg).await.code(), Code::InvalidArgument);
    let mut nl = req(dom, "", &["id"]);
    nl.login = true;
    assert_eq!(refused(&mut c, nl).await.code(), Code::InvalidArgument);

    // Streamed stdin, read by the user's program.
    let (text, code) = interactive(
        &mut c,
        req(dom, t.user, &["/bin/sh", "-c", "id -un; cat; exit 4"]),
        b"hello stdin\n",
    )
    .await;
    assert_eq!(
        (text.as_str(), code),
        (format!("{}\nhello stdin\n", t.user).as_str(), Some(4))
    );

    // A terminal as the user: the PTY has the asked size and is the user's (writable by
    // name), and the program's status is the session's.
    let mut tr = req(
        dom,
        t.user,
        &[
            "/bin/sh",
            "-c",
            "id -un; stty size; echo OPENED-BY-NAME >\"$(tty)\" && exit 3",
        ],
    );
    tr.tty = true;
    tr.tty_size = Some(TerminalSize {
        rows: 30,
        cols: 100,
    });
    let (text, code) = interactive(&mut c, tr, b"").await;
    assert!(text.contains(t.user), "{text:?}");
    assert!(text.contains("30 100"), "{text:?}");
    assert!(text.contains("OPENED-BY-NAME"), "{text:?}");
    assert_eq!(code, Some(3), "{text:?}");

    // ExecCancel kills the user's program: the verified kill runs as root.
    let mut s = c
        .exec(req(
            dom,
            t.user,
            &["/bin/sh", "-c", "echo up; exec sleep 60"],
        ))
        .await
        .unwrap()
        .into_inner();
    let id = match s.message().await.unwrap().unwrap().event.unwrap() {
        Event::Started(st) => st.exec_id,
        other => panic!("expected Started, got {other:?}"),
    };
    // Wait for the program to be the user's sleep before cancelling.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("up") {
        match s.message().await.unwrap().unwrap().event.unwrap() {
            Event::Stdout(d) => seen.extend(d),
            Event::Stderr(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let killed = c
        .exec_cancel(ExecCancelRequest {
            exec_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .killed;
    assert!(killed, "{}: the user's program was not killed", t.domain);
    let rest = drain_exec(s).await;
    let x = rest.exited.unwrap();
    assert_eq!(x.signal, Some(9), "{x:?}");
}

async fn daemon(guest: &str, socket: &std::path::Path, extra: &str) -> common::Daemon {
    common::Daemon::start(
        &[],
        &format!(
            "{extra}\n[[guests]]\nname = \"{guest}\"\nsocket = \"{}\"\n",
            socket.display()
        ),
    )
    .await
}

fn test_policy() -> (tempfile::TempDir, String) {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("50-test.rhai"), POLICY).unwrap();
    let body = format!(
        "[policy]\ndir = \"{}\"\ndefault = \"deny\"\n",
        plugins.path().display()
    );
    (plugins, body)
}

#[tokio::test]
async fn as_nobody_on_the_host_agent() {
    let agent = HostAgent::start().unwrap();
    let (_plugins, body) = test_policy();
    let d = daemon("host", agent.socket(), &body).await;
    exercise(
        &d,
        &Target {
            domain: "host",
            user: "nobody",
            uid: "65534",
            group: "nogroup",
            home: "/nonexistent",
            login_dir: "/",
            group_tool: true,
        },
    )
    .await;
}

#[tokio::test]
async fn as_a_user_in_the_busybox_guest_and_the_ops_default() {
    let image = common::image().await;
    let guest = QemuGuest::boot(&image, BootOptions::default())
        .await
        .unwrap();
    let (_plugins, body) = test_policy();
    let d = daemon("tcg", &guest.agent_socket(), &body).await;
    let mut c = d.client().await;
    // The guest's users, added as root; an `uptime` first on the fixed PATH that says who
    // runs it (the shipped policies let role ops run `uptime`).
    let setup = common::run_sh(
        &mut c,
        "tcg",
        r#"set -e
echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >>/etc/passwd
echo 'alice:x:1000:' >>/etc/group
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>/etc/passwd
echo 'nogroup:x:65534:' >>/etc/group
mkdir -p /home/alice /usr/local/bin && chown 1000:1000 /home/alice
printf '#!/bin/sh\nexec id -un\n' >/usr/local/bin/uptime && chmod 755 /usr/local/bin/uptime"#,
    )
    .await;
    assert_eq!(
        setup.exited.and_then(|x| x.exit_code),
        Some(0),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    exercise(
        &d,
        &Target {
            domain: "tcg",
            user: "alice",
            uid: "1000",
            group: "alice",
            home: "/home/alice",
            login_dir: "/home/alice",
            group_tool: false,
        },
    )
    .await;

    // The shipped policies, the test's own uid as role ops (one daemon at a time: the
    // agent's socket serves one client).
    drop(c);
    let mut d = d;
    d.terminate();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let ops = daemon(
        "tcg",
        &guest.agent_socket(),
        &format!(
            "[[server.unix_roles]]\nuid = {}\nroles = [\"ops\"]\n\n[policy]\ndir = \"{shipped}\"\ndefault = \"deny\"\n\n[audit]\npath = \"audit.log\"\n",
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
        ),
    )
    .await;
    let mut c = ops.client().await;
    assert_eq!(
        out(&mut c, req("tcg", "", &["uptime"])).await.trim(),
        "nobody"
    );
    assert_eq!(
        out(&mut c, req("tcg", "alice", &["uptime"])).await.trim(),
        "alice"
    );
    for root in ["root", "0", "00"] {
        let st = refused(&mut c, req("tcg", root, &["uptime"])).await;
        assert_eq!(st.code(), Code::PermissionDenied, "{root}: {st:?}");
    }
    let mut g = req("tcg", "alice", &["uptime"]);
    g.group = "root".into();
    assert_eq!(refused(&mut c, g).await.code(), Code::PermissionDenied);
    // The decision records name the default user the policy set.
    let log = std::fs::read_to_string(ops.dir.path().join("audit.log")).unwrap();
    let run_as: Vec<(String, String)> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "decision" && r["rpc"] == "Exec" && r["decision"] == "allow")
        .map(|r| {
            let s = &r["summary"];
            let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (field(&s["exec"]["user"]), field(&s["run_as"]))
        })
        .collect();
    // (requested user, recorded default) of the allowed decisions.
    assert_eq!(
        run_as,
        [
            (String::new(), "nobody".to_owned()),
            ("alice".to_owned(), String::new())
        ]
    );
}
