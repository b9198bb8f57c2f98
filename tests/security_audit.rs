//! Issue 11, audit and exposure items, against a real daemon and host agent: anonymous
//! denials cannot fill the audit disk, records are bounded whatever the caller sends,
//! AgentCommand secrets never reach the log, a log cut while the daemon was stopped is
//! refused at start and caught by `atp audit verify`, and callers never see host paths.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{path::Path, process::Command};

use common::Daemon;
use ocloudview_atp::{
    pb::{
        AgentCommandRequest, Argv, ExecRequest, exec_request, guest_agent_client::GuestAgentClient,
    },
    testbed::HostAgent,
};
use tonic::Code;

fn policies() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .display()
        .to_string()
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn atp(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// 100 anonymous requests of a megabyte of control characters each: before, every one
/// was recorded in full (six bytes per character), 44 of them filled 32 MB.
#[tokio::test]
async fn anonymous_denials_cannot_fill_the_audit_disk() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "insecure = true\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n\
             [policy]\ndir = \"{}\"\n[audit]\npath = \"audit.jsonl\"\nanonymous_denials_per_minute = 5\n",
            agent.socket().display(),
            policies()
        ),
    )
    .await;
    let mut tcp = GuestAgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let junk = "\u{1}".repeat(1000);
    for _ in 0..100 {
        let req = ExecRequest {
            domain: "host".into(),
            command: Some(exec_request::Command::Argv(Argv {
                path: "/bin/true".into(),
                args: vec![junk.clone(); 1000],
            })),
            ..Default::default()
        };
        let st = tcp.exec(req).await.unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    }
    drop(tcp);
    let d = stop(d).await;
    let all = records(&d.dir.path().join("audit.jsonl"));
    let size = std::fs::metadata(d.dir.path().join("audit.jsonl"))
        .unwrap()
        .len();
    assert!(size < 200_000, "audit log is {size} bytes");
    let anonymous: Vec<_> = all
        .iter()
        .filter(|r| r["caller"]["auth"] == "none" && r["kind"] == "decision")
        .collect();
    assert_eq!(
        anonymous.len(),
        5,
        "only the budget's worth recorded one by one"
    );
    let summary: Vec<_> = all.iter().filter(|r| r["kind"] == "suppressed").collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0]["extra"]["suppressed"], 95);
    let args = &anonymous[0]["summary"]["exec"]["args"];
    assert_eq!(args[32]["cut_items"], 1000, "{args}");
    assert_eq!(args[0]["len"], 1000, "{args}");
    let (code, out) = atp(&[
        "audit",
        "verify",
        d.dir.path().join("audit.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
}

/// Stops a daemon (SIGTERM, bounded) and hands it back for its directory.
async fn stop(mut d: Daemon) -> Daemon {
    tokio::task::spawn_blocking(move || {
        let st = d.terminate();
        assert!(st.success(), "{st:?}");
        d
    })
    .await
    .unwrap()
}

/// Denied raw agent commands keep their argument names and sizes, never their secrets.
#[tokio::test]
async fn agent_command_secrets_never_reach_the_log() {
    let agent = HostAgent::start().unwrap();
    let d = Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n[policy]\ndir = \"{}\"\n[audit]\npath = \"audit.jsonl\"\n",
            agent.socket().display(),
            policies()
        ),
    )
    .await;
    let mut c = d.client().await;
    let cases = [
        (
            "guest-exec",
            r#"{"path":"/bin/true","env":["API_KEY=s3cr3t-env-value"],"input-data":"c2VjcmV0LXN0ZGlu"}"#,
        ),
        (
            "guest-file-write",
            r#"{"handle":1,"buf-b64":"c2VjcmV0LWZpbGUtZGF0YQ=="}"#,
        ),
        (
            "guest-set-user-password",
            r#"{"username":"root","password":"c2VjcmV0LXBhc3N3b3Jk","crypted":false}"#,
        ),
    ];
    for (command, args) in cases {
        let st = c
            .agent_command(AgentCommandRequest {
                domain: "host".into(),
                command: command.into(),
                arguments_json: args.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    }
    let d = stop(d).await;
    let text = std::fs::read_to_string(d.dir.path().join("audit.jsonl")).unwrap();
    for secret in [
        "s3cr3t-env-value",
        "c2VjcmV0LXN0ZGlu",
        "c2VjcmV0LWZpbGUtZGF0YQ==",
        "c2VjcmV0LXBhc3N3b3Jk",
    ] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }
    assert!(text.contains("API_KEY=<16 bytes redacted>"), "{text}");
    assert!(
        text.contains(r#""buf-b64":{"len":24,"redacted":true}"#)
            || text.contains(r#""buf-b64":{"redacted":true,"len":24}"#),
        "{text}"
    );
}

/// A log whose last records were cut while the daemon was stopped: the chain alone still
/// verifies, but the daemon refuses to continue it (exit 65) and `atp audit verify`
/// catches it through the head file or an exported `atp audit head`.
#[tokio::test]
async fn a_log_cut_while_stopped_is_caught() {
    let agent = HostAgent::start().unwrap();
    let body = format!(
        "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n[policy]\ndir = \"{}\"\n[audit]\npath = \"audit.jsonl\"\n",
        agent.socket().display(),
        policies()
    );
    let d = Daemon::start(&[], &body).await;
    let mut c = d.client().await;
    for _ in 0..3 {
        c.ping(common::ping("host")).await.unwrap();
    }
    drop(c);
    let d = stop(d).await;
    let log = d.dir.path().join("audit.jsonl");
    let log_s = log.to_str().unwrap();
    let (code, exported) = atp(&["audit", "head", log_s]);
    assert_eq!(code, Some(0), "{exported}");
    let exported = exported.trim().to_owned();
    assert!(exported.starts_with("6:"), "{exported}");
    // Cut the last two records (one request's decision and outcome).
    let text = std::fs::read_to_string(&log).unwrap();
    let keep: Vec<&str> = text.lines().take(4).collect();
    std::fs::write(&log, format!("{}\n", keep.join("\n"))).unwrap();
    let (code, out) = atp(&["audit", "verify", log_s]);
    assert_eq!(code, Some(65), "the head file catches it: {out}");
    assert!(out.contains("seq 6"), "{out}");
    let head = format!("{log_s}.head");
    std::fs::remove_file(&head).unwrap();
    let (code, out) = atp(&["audit", "verify", log_s, "--head", &exported]);
    assert_eq!(code, Some(65), "the exported head catches it: {out}");
    let (code, out) = atp(&["audit", "verify", log_s]);
    assert_eq!(
        code,
        Some(0),
        "without any head the cut is invisible: {out}"
    );
    // Restore the head file: the daemon then refuses to continue the cut log.
    std::fs::write(
        &head,
        format!("{{\"seq\":6,\"hash\":\"{}\"}}\n", &exported[2..]),
    )
    .unwrap();
    let config = d.dir.path().join("atp.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("seq 4") && err.contains("seq 6"), "{err}");
}

/// A failing audit sink refuses requests without telling callers where the log lives.
#[tokio::test]
async fn callers_never_see_the_audit_path() {
    let agent = HostAgent::start().unwrap();
    let d = Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n[policy]\ndir = \"{}\"\n[audit]\npath = \"/dev/full\"\n",
            agent.socket().display(),
            policies()
        ),
    )
    .await;
    let mut c = d.client().await;
    let st = c.ping(common::ping("host")).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(!st.message().contains("/dev/full"), "{}", st.message());
    // Nor an agent socket path.
    let gone = Daemon::start(
        &[],
        "[[guests]]\nname = \"gone\"\nsocket = \"/nonexistent/atp-secret-dir/qga.sock\"\n",
    )
    .await;
    let mut c = gone.client().await;
    let st = c.ping(common::ping("gone")).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(!st.message().contains("atp-secret-dir"), "{}", st.message());
}

/// A raw AgentCommand with a duplicate key: qemu-ga cannot parse such a request and
/// answers without an id, which used to drop the connection and fail every other
/// caller's request in flight with it. Arguments are now re-encoded before sending.
#[tokio::test]
async fn odd_agent_command_arguments_do_not_break_other_callers() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    let mut pinger = d.client().await;
    let pings = tokio::spawn(async move {
        for _ in 0..200 {
            pinger.ping(common::ping("host")).await.unwrap();
        }
    });
    let mut c = d.client().await;
    for _ in 0..20 {
        let r = c
            .agent_command(AgentCommandRequest {
                domain: "host".into(),
                command: "guest-get-time".into(),
                arguments_json: r#"{"x":1,"x":2}"#.into(),
                ..Default::default()
            })
            .await;
        let st = r.unwrap_err();
        assert_ne!(st.code(), Code::Unavailable, "{st:?}");
        assert!(
            st.message().contains("'x'"),
            "the agent's own complaint: {st:?}"
        );
    }
    pings.await.unwrap();
}
