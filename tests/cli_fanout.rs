//! `atp exec --guests PATTERN`: one command on every matching guest, against the real
//! daemon with three host agents as three direct guests (`web-1`, `web-2`, `db-1`): output
//! lines prefixed with their guest, each guest decided and audited on its own (a policy
//! denies `web-2`), a non-zero exit when any failed, and `--max-errors` stopping new
//! guests.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use assert_cmd::Command;
use ocloudview_atp::testbed::HostAgent;

struct Fleet {
    _agents: Vec<HostAgent>,
    _plugins: tempfile::TempDir,
    audit: std::path::PathBuf,
    d: common::Daemon,
}

/// Three host agents as three guests; `web-2` is denied by policy.
async fn fleet() -> Fleet {
    let agents: Vec<HostAgent> = (0..3).map(|_| HostAgent::start().unwrap()).collect();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(
        plugins.path().join("10-fleet.rhai"),
        "fn authorize(req) {\n\
         if req.domain.name == \"web-2\" { return deny(\"web-2 is frozen\"); }\n\
         allow(\"fleet test\")\n}\n",
    )
    .unwrap();
    let audit = plugins.path().join("audit.jsonl");
    let mut body = String::new();
    for (name, a) in ["web-1", "web-2", "db-1"].iter().zip(&agents) {
        body.push_str(&format!(
            "[[guests]]\nname = \"{name}\"\nsocket = \"{}\"\n\n",
            a.socket().display()
        ));
    }
    body.push_str(&format!(
        "[policy]\ndir = \"{}\"\ndefault = \"deny\"\n\n[audit]\npath = \"{}\"\n",
        plugins.path().display(),
        audit.display()
    ));
    let d = common::Daemon::start(&[], &body).await;
    Fleet {
        _agents: agents,
        _plugins: plugins,
        audit,
        d,
    }
}

fn atp(f: &Fleet) -> Command {
    let mut c = Command::cargo_bin("atp").unwrap();
    c.env("ATP_SERVER", format!("unix://{}", f.d.socket.display()))
        .env_remove("ATP_TOKEN");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_prefixes_lines_decides_each_guest_and_fails_if_any_failed() {
    let f = fleet().await;
    // Only the matching guests, each line prefixed, partial last lines completed.
    let out = atp(&f)
        .args([
            "exec",
            "--guests",
            "web-1",
            "--",
            "sh",
            "-c",
            "echo a; printf b; echo e >&2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "web-1: a\nweb-1: b\n");
    assert!(
        text(&out.stderr).contains("web-1: e\n"),
        "{}",
        text(&out.stderr)
    );

    let out = atp(&f)
        .args([
            "exec",
            "--guests",
            "*",
            "--max-concurrency",
            "2",
            "--",
            "echo",
            "hi",
        ])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["db-1: hi", "web-1: hi"], "web-2 is denied");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("3 guests: 2 ok, 1 failed, 0 not run"),
        "{stderr}"
    );
    assert!(
        stderr.contains("web-2: denied") && stderr.contains("web-2 is frozen"),
        "{stderr}"
    );

    // Each guest's request was decided and recorded on its own.
    let log = std::fs::read_to_string(&f.audit).unwrap();
    for g in ["web-1", "web-2", "db-1"] {
        let decisions = log
            .lines()
            .filter(|l| {
                l.contains("\"kind\":\"decision\"") && l.contains(&format!("\"domain\":\"{g}\""))
            })
            .count();
        assert!(decisions >= 1, "no decision record for {g}");
    }

    // A failing program counts as a failure too; no guest matches: its own exit code.
    let out = atp(&f)
        .args(["exec", "--guests", "db-*", "--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("db-1: exit 3"),
        "{}",
        text(&out.stderr)
    );
    atp(&f)
        .args(["exec", "--guests", "nothing-*", "--", "true"])
        .assert()
        .code(68);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_errors_stops_starting_new_guests() {
    let f = fleet().await;
    // One at a time, in name order (db-1, web-1, web-2): db-1 fails, which is more than
    // the 0 errors allowed, so web-1 and web-2 are never started.
    let out = atp(&f)
        .args([
            "exec",
            "--guests",
            "*",
            "--max-concurrency",
            "1",
            "--max-errors",
            "0",
            "--",
            "sh",
            "-c",
            "exit 1",
        ])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("3 guests: 0 ok, 1 failed, 2 not run"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not run (--max-errors reached): web-1, web-2"),
        "{stderr}"
    );
}
