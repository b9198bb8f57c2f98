//! Operating the real `atp serve` process in front of a real host agent: graceful shutdown
//! in the middle of an exec, gRPC health, Prometheus metrics, and the listing, guest-info
//! and raw agent-command RPCs.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    daemon_for, drain_exec, fd_targets, grpc_channel,
    metrics::{sample, scrape},
    ping,
};
use ocloudview_atp::{
    pb::{
        AgentCommandRequest, Argv, ExecRequest, GetGuestInfoRequest, ListDomainsRequest,
        exec_event::Event, exec_request::Command,
    },
    testbed::HostAgent,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn sigterm_mid_exec_ends_the_stream_closes_handles_and_exits_zero() {
    let agent = HostAgent::start().unwrap();
    let idle_fds = agent.open_files().unwrap();
    let mut d = daemon_for(&agent, "shutdown_grace_ms = 2000").await;
    let mut c = d.client().await;
    c.ping(ping("host")).await.unwrap();
    // The daemon's connection to the agent is part of the baseline.
    let baseline = agent.open_files().unwrap();

    let mut health = HealthClient::new(grpc_channel(&d.socket).await);
    let h = health
        .check(HealthCheckRequest {
            service: "ocloudview.atp.v1.GuestAgent".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, ServingStatus::Serving as i32, "{h:?}");

    let mut s = c
        .exec(ExecRequest {
            domain: "host".into(),
            command: Some(Command::Argv(Argv {
                path: "sleep".into(),
                args: vec!["30".into()],
            })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pid = match s.message().await.unwrap().unwrap().event.unwrap() {
        Event::Started(st) => st.pid,
        other => panic!("expected Started, got {other:?}"),
    };
    let during = agent.open_files().unwrap();
    eprintln!("agent fds: idle {idle_fds}, connected {baseline}, exec running {during}");
    assert!(during > baseline, "the exec holds no guest handle?");
    // The exec's private directory in the guest, to clean up at the end.
    let exec_dir = fd_targets(agent.pid().unwrap())
        .into_iter()
        .find(|t| t.contains("/.atp-exec-"))
        .and_then(|t| Some(Path::new(&t).parent()?.to_owned()));
    assert!(exec_dir.is_some(), "no exec output file open in the agent");

    let started = Instant::now();
    let mut term = tokio::task::spawn_blocking(move || {
        let st = d.terminate();
        (st, started.elapsed(), d)
    });
    let rest = tokio::time::timeout(Duration::from_secs(5), drain_exec(s))
        .await
        .expect("the exec stream hung after SIGTERM");
    eprintln!(
        "stream ended after {:?}: {:?}",
        started.elapsed(),
        rest.error
    );
    assert!(rest.exited.is_none(), "{rest:?}");
    let st = rest.error.expect("the exec stream ended without a status");
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");

    let (status, took, d) = tokio::time::timeout(Duration::from_secs(15), &mut term)
        .await
        .unwrap()
        .unwrap();
    eprintln!("daemon exited after {took:?}: {status:?}");
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_millis(2000),
        "exit took {took:?}, the grace period is 2 s"
    );
    assert!(!d.socket.exists(), "socket file left behind");

    common::eventually(
        || agent.open_files().unwrap() <= baseline,
        "agent back to its baseline of open files",
    )
    .await;
    let exec_handles: Vec<String> = fd_targets(agent.pid().unwrap())
        .into_iter()
        .filter(|t| t.contains("/.atp-exec-"))
        .collect();
    assert!(
        exec_handles.is_empty(),
        "guest file handles left open in the agent: {exec_handles:?}"
    );

    // The guest program outlives the daemon (only its handles are closed); the agent
    // still watches it (a pidfd). Once it is gone, the agent is back to idle: nothing of
    // the daemon's is left in it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    common::eventually(
        || agent.open_files().unwrap() <= idle_fds,
        "agent back to its idle open files once the program is gone",
    )
    .await;
    std::fs::remove_dir_all(exec_dir.unwrap()).unwrap();
    drop(c);
}

fn now_ns() -> i128 {
    i128::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

#[tokio::test]
async fn metrics_count_rpcs_by_code_and_time_them() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let d = daemon_for(
        &agent,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    let mut c = d.client().await;
    for _ in 0..3 {
        c.ping(ping("host")).await.unwrap();
    }
    let st = c.ping(ping("no-such-guest")).await.unwrap_err();
    assert_eq!(st.code(), Code::NotFound, "{st:?}");

    let body = scrape(port).await;
    assert!(
        body.lines()
            .next()
            .is_some_and(|l| l.split(' ').nth(1) == Some("200")),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "atp_rpc_requests_total",
            &["rpc=\"Ping\"", "code=\"OK\""]
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "atp_rpc_requests_total",
            &["rpc=\"Ping\"", "code=\"NOT_FOUND\""]
        ),
        Some(1.0),
        "{body}"
    );
    assert!(body.contains("atp_rpc_duration_seconds"), "{body}");
    assert_eq!(
        sample(&body, "atp_rpc_duration_seconds_count", &["rpc=\"Ping\""]),
        Some(4.0),
        "{body}"
    );
}

#[tokio::test]
async fn list_domains_guest_info_and_raw_agent_commands() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;

    let list = c
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap()
        .into_inner();
    let host = list
        .domains
        .iter()
        .find(|g| g.name == "host")
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(host.state, "socket", "{host:?}");
    assert!(host.agent_connected, "{host:?}");
    assert!(host.hypervisor.is_empty(), "{host:?}");

    let info = c
        .get_guest_info(GetGuestInfoRequest {
            domain: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(info.hostname.as_deref(), Some(hostname.trim()), "{info:?}");

    let before = now_ns();
    let time = c
        .agent_command(AgentCommandRequest {
            domain: "host".into(),
            command: "guest-get-time".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = now_ns();
    let v: serde_json::Value = serde_json::from_str(&time.return_json).unwrap();
    let guest_ns = i128::from(v.as_i64().unwrap_or_else(|| panic!("{v}")));
    let slack = 2_000_000_000; // 2 s
    assert!(
        before - slack <= guest_ns && guest_ns <= after + slack,
        "guest time {guest_ns} vs host {before}..{after}"
    );

    let st = c
        .agent_command(AgentCommandRequest {
            domain: "host".into(),
            command: "guest-sync-delimited".into(),
            arguments_json: "{\"id\": 1}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");

    let st = c
        .agent_command(AgentCommandRequest {
            domain: "host".into(),
            command: "guest-get-time".into(),
            arguments_json: "[1]".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");

    // The refusals did not disturb the daemon's connection to the agent.
    c.ping(ping("host")).await.unwrap();
}
