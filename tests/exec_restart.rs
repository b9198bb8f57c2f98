//! Execs survive a daemon restart (`[state]`): after a graceful stop (SIGTERM) and after a
//! crash (SIGKILL), a second daemon on the same config adopts the running execs. Against a
//! real qemu-ga on the host (its pids are host processes; it keeps running across the
//! daemon restarts) and the real `atp serve` binary.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, daemon_for, drain_exec, sh_request};
use ocloudview_atp::{
    pb::{
        ExecAttachRequest, ExecCancelRequest, ExecEvent, exec_event::Event,
        guest_agent_client::GuestAgentClient,
    },
    testbed::HostAgent,
};
use tonic::transport::Channel;

/// Starts an exec and returns its id and pid once `Started` arrived, with the stream.
async fn start(
    c: &mut GuestAgentClient<Channel>,
    script: &str,
    timeout_ms: u64,
) -> (String, i64, tonic::Streaming<ExecEvent>) {
    let mut req = sh_request("host", script);
    req.timeout_ms = timeout_ms;
    let mut s = c.exec(req).await.unwrap().into_inner();
    match s.message().await.unwrap().and_then(|e| e.event) {
        Some(Event::Started(st)) => (st.exec_id, st.pid, s),
        other => panic!("expected Started, got {other:?}"),
    }
}

/// Reads events until the first stdout chunk (the program is past its first line).
async fn first_output(s: &mut tonic::Streaming<ExecEvent>) -> Vec<u8> {
    loop {
        match s.message().await.unwrap().and_then(|e| e.event) {
            Some(Event::Stdout(d)) => return d,
            Some(_) => {}
            None => panic!("the stream ended before any output"),
        }
    }
}

async fn attach(c: &mut GuestAgentClient<Channel>, id: &str) -> common::ExecOutcome {
    let s = c
        .exec_attach(ExecAttachRequest {
            exec_id: id.to_owned(),
        })
        .await
        .unwrap_or_else(|st| panic!("ExecAttach {id} after the restart: {st:?}"))
        .into_inner();
    drain_exec(s).await
}

/// Whether a host process's command line contains `marker`.
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(marker)
        })
    })
}

/// The audit log's records.
fn records(d: &Daemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execs_survive_graceful_and_hard_restarts() {
    common::init_logging();
    let agent = HostAgent::start().expect("host qemu-ga (run scripts/setup.sh)");
    let mut d = daemon_for(&agent, "[audit]\npath = \"audit.jsonl\"\n[state]\n").await;
    let mut c = d.client().await;
    let t0 = Instant::now();
    let nonce = std::process::id();
    let marker = format!("sleep 60.{nonce}");

    // Before a graceful stop: one attached exec past its first line, one long detached
    // exec to cancel later, and one whose 4 s deadline falls after the restart.
    let (a, _, mut a_stream) = start(&mut c, "echo one; sleep 3; echo two", 0).await;
    assert_eq!(first_output(&mut a_stream).await, b"one\n");
    let (b, b_pid, _) = start(&mut c, &format!("{marker}; echo never"), 0).await;
    let (t, _, _) = start(&mut c, "sleep 30", 4000).await;
    assert!(running(&marker), "the exec to cancel is not running");

    let st = d.terminate();
    assert!(st.success(), "daemon A: {st:?}");
    let cut = drain_exec(a_stream).await;
    assert_eq!(
        cut.error.map(|e| e.code()),
        Some(tonic::Code::Unavailable),
        "an attached client is told the daemon stopped"
    );
    assert!(
        running(&marker),
        "a graceful stop must leave the programs running"
    );
    let state = d.dir.path().join("state/execs");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        3,
        "one record per running exec"
    );

    d.restart().await;
    let mut c = d.client().await;
    // The output is replayed from the start of the exec's files.
    let out = attach(&mut c, &a).await;
    assert_eq!(out.stdout, b"one\ntwo\n", "{out:?}");
    let x = out.exited.expect("Exited after the restart");
    assert_eq!((x.exit_code, x.timed_out), (Some(0), false));

    let killed = c
        .exec_cancel(ExecCancelRequest { exec_id: b.clone() })
        .await
        .unwrap()
        .into_inner()
        .killed;
    assert!(killed, "ExecCancel after the restart");
    common::eventually(|| !running(&marker), "the cancelled program is gone").await;
    common::eventually(
        || !std::path::Path::new(&format!("/proc/{b_pid}")).exists(),
        "the cancelled exec's pid is gone",
    )
    .await;

    // The deadline set before the restart is enforced after it.
    let out = attach(&mut c, &t).await;
    let x = out.exited.expect("the timed-out exec's exit");
    assert!(x.timed_out && x.signal == Some(9), "{x:?}");
    assert!(
        x.duration_ms >= 4000 && x.duration_ms < 15_000,
        "killed at its 4 s deadline: {x:?}"
    );

    // A crash: the next daemon adopts the exec all the same.
    let (k, _, s) = start(&mut c, "echo one; sleep 2; echo two", 0).await;
    drop(s);
    // Crash once the exec is parked, not mid agent request: the host qemu-ga (7.2,
    // unix-listen mode) was seen to stop accepting connections for good when its client
    // died with a request in flight (connect: ECONNREFUSED while qemu-ga runs), which a
    // guest's virtio-serial channel does not have.
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.kill_hard();
    // Beside k's record: one of an exec the agent never started (as after an agent
    // restart: the agent does not know the pid), and one naming a directory that is not
    // an exec directory (refused, never acted on).
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("{k}.json"))).unwrap()).unwrap();
    let forge = |pid: i64, dir: &str| {
        let mut r = rec.clone();
        let id = uuid::Uuid::new_v4().to_string();
        r["exec_id"] = id.clone().into();
        r["request_id"] = uuid::Uuid::new_v4().to_string().into();
        r["pid"] = pid.into();
        r["dir"] = dir.into();
        std::fs::write(state.join(format!("{id}.json")), r.to_string()).unwrap();
        (id, r["request_id"].as_str().unwrap().to_owned())
    };
    let (lost, lost_request) = forge(i64::from(std::process::id()), rec["dir"].as_str().unwrap());
    let (refused, _) = forge(rec["pid"].as_i64().unwrap(), "/etc");
    d.restart().await;
    let mut c = d.client().await;
    let out = attach(&mut c, &k).await;
    for id in [&lost, &refused] {
        let st = c
            .exec_attach(ExecAttachRequest {
                exec_id: id.clone(),
            })
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::NotFound, "{id}: {st:?}");
    }
    assert!(state.join(format!("{refused}.refused")).exists());
    assert_eq!(out.stdout, b"one\ntwo\n", "{out:?}");
    assert_eq!(out.exited.and_then(|x| x.exit_code), Some(0));

    // Every record is gone once its outcome was written; each Exec has exactly one.
    common::eventually(
        || {
            std::fs::read_dir(&state)
                .unwrap()
                .flatten()
                .all(|e| e.path().extension().is_some_and(|x| x == "refused"))
        },
        "exec records removed after their outcomes",
    )
    .await;
    let st = d.terminate();
    assert!(st.success(), "the last daemon: {st:?}");
    let recs = records(&d);
    let decisions = recs
        .iter()
        .filter(|r| r["rpc"] == "Exec" && r["kind"] == "decision")
        .count();
    assert_eq!(decisions, 4, "four Exec requests");
    let mut outcomes = std::collections::HashMap::<String, Vec<&serde_json::Value>>::new();
    let lost_outcome: Vec<_> = recs
        .iter()
        .filter(|r| r["request_id"] == lost_request.as_str())
        .collect();
    assert_eq!(lost_outcome.len(), 1, "{lost_outcome:?}");
    assert_eq!(lost_outcome[0]["status"], "UNAVAILABLE");
    assert!(
        lost_outcome[0]["message"]
            .as_str()
            .unwrap()
            .contains("lost across a daemon restart"),
        "{lost_outcome:?}"
    );
    for r in recs
        .iter()
        .filter(|r| r["rpc"] == "Exec" && r["request_id"] != lost_request.as_str())
    {
        let id = r["request_id"].as_str().unwrap().to_owned();
        let e = outcomes.entry(id).or_default();
        if r["kind"] == "outcome" {
            e.push(r);
        }
    }
    assert_eq!(outcomes.len(), 4);

    for (id, o) in &outcomes {
        assert_eq!(o.len(), 1, "Exec {id}: one outcome record, not {o:?}");
        assert_eq!(o[0]["status"], "OK", "{:?}", o[0]);
        assert!(
            o[0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("later daemon instance"),
            "{:?}",
            o[0]
        );
    }
    let messages: Vec<&str> = outcomes
        .values()
        .map(|o| o[0]["message"].as_str().unwrap_or_default())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("cancelled by ExecCancel")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("timed out")),
        "{messages:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
