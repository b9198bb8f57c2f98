//! SIGTERM in the middle of a 64 MiB ReadFile: exit 0, handles closed, the audit outcome
//! written.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    common::{self, daemon_for, ping},
    helpers::{bounded, read_req, stream_error},
};
use ocloudview_atp::testbed::HostAgent;
use tonic::Code;

#[tokio::test]
async fn sigterm_mid_read_exits_zero_closes_handles_and_audits_the_outcome() {
    common::init_logging();
    bounded(Duration::from_secs(60), "SIGTERM test", async {
        let agent = HostAgent::start().unwrap();
        let idle = agent.open_files().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let audit = tmp.path().join("audit.jsonl");
        let mut d = daemon_for(
            &agent,
            &format!(
                "shutdown_grace_ms = 2000\n\n[audit]\npath = \"{}\"\n",
                audit.display()
            ),
        )
        .await;
        let mut c = d.client().await;
        c.ping(ping("host")).await.unwrap();
        let connected = agent.open_files().unwrap();
        let big = agent.dir().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();

        let mut s = c
            .read_file(read_req("host", &big.display().to_string(), 1 << 20))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..2 {
            assert!(!s.message().await.unwrap().unwrap().eof);
        }
        let during = agent.open_files().unwrap();
        eprintln!("agent fds: idle {idle}, connected {connected}, reading {during}");
        assert!(during > connected, "the read holds no agent handle?");

        let started = Instant::now();
        let mut term = tokio::task::spawn_blocking(move || {
            let st = d.terminate();
            (st, started.elapsed(), d)
        });
        let (st, more) =
            stream_error(&mut s, Duration::from_secs(10), "ReadFile after SIGTERM").await;
        eprintln!(
            "stream ended {:?} after SIGTERM ({more} buffered chunks first): {:?} {}",
            started.elapsed(),
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        let (status, took, d) = bounded(Duration::from_secs(15), "daemon exit", &mut term)
            .await
            .unwrap();
        eprintln!("daemon exited {took:?} after SIGTERM: {status:?}");
        assert!(status.success(), "{status:?}");
        assert!(
            took < Duration::from_millis(2000),
            "exit took {took:?}, grace is 2 s"
        );
        assert!(!d.socket.exists(), "socket file left behind");
        common::eventually(
            || agent.open_files().unwrap() <= idle,
            "agent back to its idle open files (read handle and connection closed)",
        )
        .await;

        // The audit trail: the read's decision, then its outcome.
        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let decision = lines
            .iter()
            .find(|l| l["kind"] == "decision" && l["rpc"] == "ReadFile")
            .unwrap_or_else(|| panic!("no ReadFile decision in the audit log:\n{text}"));
        let id = decision["request_id"].as_str().unwrap();
        let outcome = lines
            .iter()
            .find(|l| l["kind"] == "outcome" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no outcome record for ReadFile {id}:\n{text}"));
        eprintln!("audit outcome of the read: {outcome}");
        assert_eq!(outcome["status"], "UNAVAILABLE", "{outcome}");
        let out = Command::new(env!("CARGO_BIN_EXE_atp"))
            .args(["audit", "verify"])
            .arg(&audit)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "atp audit verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}
