//! The cross-language proof: the Python client in `examples/python` (stubs generated from
//! `proto/` with grpcio-tools on first use) calls Ping, Exec (server stream), WriteFile
//! (client stream) and ReadFile (server stream) on the real `atp serve` in front of a real
//! host qemu-ga — over the UNIX socket, and over TCP with a bearer token — and reads the
//! machine-readable reason (`google.rpc.ErrorInfo`) of failed calls: GUEST_NOT_FOUND for
//! an unknown guest, POLICY_DENIED (naming the plugin) for a guest a policy denies.
//! Over the UNIX socket the channels use gRPC's defaults (no `grpc.default_authority`).
//! Needs `.venv` from `scripts/setup.sh`; without it the tests fail, never skip.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{path::Path, process::Output, time::Duration};

use common::{Daemon, daemon_for};
use ocloudview_atp::testbed::HostAgent;
use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `examples/python/<script> <args>` with the repo's venv; bounded, output echoed.
async fn python(script: &str, args: &[&str]) -> Output {
    let root = Path::new(ROOT);
    let interpreter = root.join(".venv/bin/python");
    assert!(
        interpreter.exists(),
        "{} is missing: run scripts/setup.sh (it creates the venv with \
         examples/python/requirements.txt)",
        interpreter.display()
    );
    let script = root.join("examples/python").join(script);
    let child = tokio::process::Command::new(&interpreter)
        .arg(&script)
        .args(args)
        .current_dir(root)
        // Generated stubs are cached with the other test artefacts (keyed by the .proto).
        .env(
            "ATP_PYTHON_GEN_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-gen"),
        )
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran for more than 300 s", script.display()))
        .unwrap();
    eprintln!(
        "$ {} {} {}\n--- stdout\n{}--- stderr\n{}--- {}",
        interpreter.display(),
        script.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

#[tokio::test]
async fn python_client_over_the_unix_socket() {
    let agent = HostAgent::start().unwrap();
    // A policy that denies pinging `forbidden` and allows everything else.
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("10-python-ci.rhai"),
        "fn authorize(req) {\n\
         if req.domain.name == \"forbidden\" { deny(\"forbidden is off limits\") }\n\
         else { allow(\"the python client test\") }\n}\n",
    )
    .unwrap();
    let d = daemon_for(
        &agent,
        &format!("[policy]\ndir = \"{}\"\n", policies.path().display()),
    )
    .await;
    let server = format!("unix://{}", d.socket.display());
    let dir = agent.dir().display().to_string();
    let out = python(
        "test_atp_client.py",
        &["--server", &server, "--dir", &dir, "--denied", "forbidden"],
    )
    .await;
    assert!(
        out.status.success(),
        "test_atp_client.py failed ({}); its output is above",
        out.status
    );
    // The bytes really landed in the agent's directory.
    assert_eq!(
        std::fs::metadata(agent.dir().join("py.bin")).unwrap().len(),
        3 << 20
    );
}

/// Over the UNIX socket the client's channel runs with gRPC's defaults: C-core derives
/// `:authority` `tmp%2F...sock` from the socket path (the test above), grpc-go and
/// grpcurl `-unix` send the path itself (this test). Both were refused by the HTTP/2 server
/// as malformed before the daemon rewrote them (`server/authority.rs`).
#[tokio::test]
async fn python_client_over_the_unix_socket_with_a_path_as_authority() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let server = format!("unix://{}", d.socket.display());
    let dir = agent.dir().display().to_string();
    let path = d.socket.display().to_string();
    let out = python(
        "test_atp_client.py",
        &["--server", &server, "--dir", &dir, "--authority", &path],
    )
    .await;
    assert!(
        out.status.success(),
        "test_atp_client.py failed ({}); its output is above",
        out.status
    );
}

#[tokio::test]
async fn python_client_over_tcp_with_a_bearer_token() {
    let agent = HostAgent::start().unwrap();
    let token = "python-ci-token";
    let digest: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let port = common::free_port();
    let _d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[[server.tokens]]\nsha256 = \"{digest}\"\nidentity = \"python-ci\"\n\n\
             [[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await;
    let server = format!("127.0.0.1:{port}");

    // Without the token the daemon refuses the caller: the token is what lets it in.
    let out = python("atp_client.py", &["--server", &server, "ping", "host"]).await;
    assert!(!out.status.success());
    // The code, and the reason the daemon gives in the status details.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED: ")
            && String::from_utf8_lossy(&out.stderr).contains("[UNAUTHENTICATED"),
        "expected UNAUTHENTICATED, with that reason, without a token"
    );
    let out = python(
        "atp_client.py",
        &["--server", &server, "--token", token, "ping", "host"],
    )
    .await;
    assert!(out.status.success(), "ping with the token failed");

    let dir = agent.dir().display().to_string();
    let out = python(
        "test_atp_client.py",
        &["--server", &server, "--token", token, "--dir", &dir],
    )
    .await;
    assert!(
        out.status.success(),
        "test_atp_client.py over TCP failed ({}); its output is above",
        out.status
    );
}
