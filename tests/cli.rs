//! The `atp` client commands against the real daemon and a real host agent: exit codes,
//! `cp` both ways with equal hashes, no progress output when not on a terminal, and a
//! one-line error with its own exit code for each kind of failure.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use assert_cmd::Command;
use ocloudview_atp::testbed::HostAgent;
use sha2::{Digest, Sha256};

fn atp(d: &common::Daemon) -> Command {
    let mut c = Command::cargo_bin("atp").unwrap();
    c.env("ATP_SERVER", format!("unix://{}", d.socket.display()))
        .env_remove("ATP_TOKEN");
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_follow_the_guest_program() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    atp(&d)
        .args([
            "exec",
            "host",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .assert()
        .code(3)
        .stdout("out\n")
        .stderr("err\n");
    atp(&d).args(["sh", "host", "exit 0"]).assert().code(0);
    atp(&d)
        .args(["sh", "host", "kill -9 $$"])
        .assert()
        .code(128 + 9);
    atp(&d)
        .args([
            "exec",
            "-e",
            "GREETING=hi",
            "host",
            "--",
            "sh",
            "-c",
            "echo $GREETING",
        ])
        .assert()
        .success()
        .stdout("hi\n");
    // As another user (the host agent's nobody: harmless), with a group and its login
    // environment.
    atp(&d)
        .args(["exec", "--user", "nobody", "host", "--", "id", "-un"])
        .assert()
        .success()
        .stdout("nobody\n");
    atp(&d)
        .args([
            "exec",
            "-u",
            "nobody",
            "--group",
            "0",
            "--login",
            "--cwd",
            "/",
            "host",
            "--",
            "sh",
            "-c",
            "echo $USER $HOME $(id -gn)",
        ])
        .assert()
        .success()
        .stdout("nobody /nonexistent root\n");
    atp(&d)
        .args(["exec", "-i", "host", "--", "cat"])
        .write_stdin("piped")
        .assert()
        .success()
        .stdout("piped");
    atp(&d).args(["ping", "host"]).assert().success();
    let out = atp(&d)
        .args(["osinfo", "host", "--output", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["machine"], std::env::consts::ARCH);
    let out = atp(&d)
        .args(["ls", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["name"], "host");
    assert_eq!(v[0]["agent_connected"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_round_trip_has_equal_hashes_and_no_progress_when_piped() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 17)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let guest = agent.dir().join("up.bin");
    atp(&d)
        .args([
            "cp",
            src.to_str().unwrap(),
            &format!("host:{}", guest.display()),
        ])
        .assert()
        .success()
        .stdout("")
        .stderr(""); // no progress bar: stderr is not a terminal
    assert_eq!(
        Sha256::digest(std::fs::read(&guest).unwrap()),
        Sha256::digest(&data)
    );
    let back = local.path().join("back.bin");
    atp(&d)
        .args([
            "cp",
            &format!("host:{}", guest.display()),
            back.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stderr("");
    assert_eq!(
        Sha256::digest(std::fs::read(&back).unwrap()),
        Sha256::digest(&data)
    );
    // Into a directory: the file keeps its name.
    atp(&d)
        .args([
            "cp",
            &format!("host:{}", guest.display()),
            local.path().to_str().unwrap(),
        ])
        .assert()
        .success();
    assert!(local.path().join("up.bin").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_failure_has_one_line_and_its_own_exit_code() {
    let agent = HostAgent::start().unwrap();
    let token = "right-token";
    let hex: String = Sha256::digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let port = common::free_port();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let d = common::Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[[server.tokens]]\nsha256 = \"{hex}\"\nidentity = \"ci\"\nroles = [\"ops\"]\n[policy]\ndir = \"{}\"\n[policy.settings]\nread_paths = [\"{}/\"]\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            policies.display(),
            agent.dir().display(),
            agent.socket().display()
        ),
    )
    .await;
    let tcp = format!("127.0.0.1:{port}");
    // `atp --server TCP --token TOKEN ARGS...`
    let atp_as = |token: &str, args: &[&str]| {
        Command::cargo_bin("atp")
            .unwrap()
            .args(["--server", &tcp, "--token", token])
            .args(args)
            .output()
            .unwrap()
    };
    let one_line = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        e
    };
    // Unreachable server.
    let o = Command::cargo_bin("atp")
        .unwrap()
        .args(["--server", "unix:///nonexistent/atp.sock", "ping", "host"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69));
    assert!(one_line(&o).contains("is `atp serve` running?"));
    // Bad token.
    let o = atp_as("wrong", &["ping", "host"]);
    assert_eq!(o.status.code(), Some(67));
    assert!(one_line(&o).contains("--token"));
    // Unknown guest.
    let o = atp_as(token, &["ping", "nope"]);
    assert_eq!(o.status.code(), Some(68));
    assert!(one_line(&o).contains("atp ls"));
    // Denied by policy, with the policy's reason.
    let o = atp_as(token, &["exec", "host", "--", "rm", "-rf", "/tmp/x"]);
    assert_eq!(o.status.code(), Some(77));
    let e = one_line(&o);
    assert!(
        e.contains("denied") && e.contains("ops may not run rm"),
        "{e}"
    );
    // Missing local file.
    let o = atp_as(token, &["cp", "/nonexistent/file", "host:/tmp/x"]);
    assert_eq!(o.status.code(), Some(66));
    assert!(one_line(&o).contains("/nonexistent/file"));
    // Missing file in the guest (the read itself is allowed by read_paths): not an
    // unknown guest.
    let missing = format!("host:{}/atp-no-such-file", agent.dir().display());
    let o = atp_as(token, &["cp", &missing, "/tmp/atp-cli-never-written"]);
    assert_eq!(o.status.code(), Some(66));
    let e = one_line(&o);
    assert!(e.contains("in the guest") && !e.contains("atp ls"), "{e}");
    // Allowed by the shipped plugins: ops may ping over TCP with the token.
    let o = atp_as(token, &["ping", "host"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(d);
}

#[test]
fn completions_are_generated() {
    let out = Command::cargo_bin("atp")
        .unwrap()
        .args(["completions", "bash"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("_atp()"));
}
