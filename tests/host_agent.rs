//! The transport and typed commands against a real qemu-ga running on the host in
//! `unix-listen` mode (dangerous commands blocked).
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use nix::{sys::signal, unistd::Pid};
use ocloudview_atp::{
    qga::{AgentClient, QgaError},
    testbed::{HOST_BLOCKED_COMMANDS, HostAgent},
    transport::{TransportError, socket::SocketTransport},
};

fn client(agent: &HostAgent) -> AgentClient {
    AgentClient::new(SocketTransport::new(agent.socket()))
}

#[tokio::test]
async fn ping_info_osinfo_over_host_agent() {
    common::init_logging();
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    c.ping().await.unwrap();

    let info = c.info().await.unwrap();
    assert!(
        info.version.starts_with(char::is_numeric),
        "{}",
        info.version
    );
    assert!(info.command("guest-ping").unwrap().enabled);
    assert!(info.command("guest-file-read").unwrap().enabled);
    for blocked in HOST_BLOCKED_COMMANDS {
        if let Some(cmd) = info.command(blocked) {
            assert!(!cmd.enabled, "{blocked} must be blocked on a host agent");
        }
    }

    let os = c.osinfo().await.unwrap();
    let release = std::fs::read_to_string("/etc/os-release").unwrap();
    let id = os.id.clone().unwrap();
    assert!(
        release
            .lines()
            .any(|l| l.trim_matches('"') == format!("ID={id}") || l == format!("ID=\"{id}\"")),
        "osinfo id {id} not in /etc/os-release"
    );
    assert_eq!(os.machine.as_deref(), Some(std::env::consts::ARCH));
    let uname_r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(os.kernel_release.as_deref(), Some(uname_r.trim()));
}

#[tokio::test]
async fn blocked_command_is_refused_by_the_agent() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    #[derive(serde::Serialize)]
    struct Fstrim {}
    impl ocloudview_atp::qga::Command for Fstrim {
        const NAME: &'static str = "guest-fstrim";
        type Reply = serde_json::Value;
    }
    let err = c.call(&Fstrim {}).await.unwrap_err();
    assert!(err.is_command_not_found(), "{err}");
    assert!(err.to_string().contains("disabled"), "{err}");
    // The connection is still in sync afterwards.
    c.ping().await.unwrap();
}

#[tokio::test]
async fn killed_agent_gives_a_clear_error_not_a_hang() {
    let mut agent = HostAgent::start().unwrap();
    let c = client(&agent).with_timeout(Duration::from_secs(2));
    c.ping().await.unwrap();
    agent.kill();
    let started = Instant::now();
    let err = c.ping().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            QgaError::Transport(
                TransportError::Closed | TransportError::Io(_) | TransportError::Connect { .. }
            )
        ),
        "{err:?}"
    );
    // And again, now that the socket is gone for good: a connect error naming the path.
    let err = c.ping().await.unwrap_err();
    assert!(err.to_string().contains("qga.sock"), "{err}");
}

#[tokio::test]
async fn frozen_agent_times_out_within_the_deadline_and_recovers() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent).with_timeout(Duration::from_millis(800));
    c.ping().await.unwrap();
    let pid = Pid::from_raw(i32::try_from(agent.pid().unwrap()).unwrap());
    signal::kill(pid, signal::Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let err = c.ping().await.unwrap_err();
    let waited = started.elapsed();
    signal::kill(pid, signal::Signal::SIGCONT).unwrap();
    assert!(
        matches!(err, QgaError::Transport(TransportError::Timeout(_))),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // The transport resyncs on the next call; the late reply never surfaces.
    c.ping().await.unwrap();
    assert!(c.osinfo().await.unwrap().id.is_some());
}

#[tokio::test]
async fn cancelled_callers_do_not_desync_the_connection() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    for i in 0..50u64 {
        // Give up on guest-info after a varying few hundred microseconds.
        let fut = c.info();
        let _ = tokio::time::timeout(Duration::from_micros(50 + i * 37), fut).await;
        // The next caller always gets its own reply type.
        let os = c.osinfo().await.unwrap();
        assert!(os.id.is_some());
    }
}

#[tokio::test]
async fn pipelined_reads_and_concurrent_pings_each_get_their_own_reply() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let path = agent.dir().join("pipelined.bin");
    std::fs::write(&path, &data).unwrap();
    let h = c
        .file_open(path.to_str().unwrap(), Some("r"))
        .await
        .unwrap();
    // Pings from another task land between the reads in the agent's queue.
    let pinger = c.clone();
    let pings = tokio::spawn(async move {
        for _ in 0..200 {
            pinger.ping().await.unwrap();
        }
    });
    const CHUNK: usize = 16 << 10;
    let mut window = std::collections::VecDeque::new();
    let mut got = Vec::new();
    for _ in 0..data.len() / CHUNK {
        window.push_back(c.submit_file_read(h, CHUNK).await.unwrap());
        if window.len() == 4 {
            let r = window.pop_front().unwrap().reply().await.unwrap();
            got.extend_from_slice(&r.data().unwrap());
        }
    }
    while let Some(p) = window.pop_front() {
        got.extend_from_slice(&p.reply().await.unwrap().data().unwrap());
    }
    pings.await.unwrap();
    c.file_close(h).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "chunks arrived out of order or mixed up");
}

#[tokio::test]
async fn many_host_agents_at_once() {
    let agents: Vec<HostAgent> = (0..8).map(|_| HostAgent::start().unwrap()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for a in &agents {
        let c = client(a);
        tasks.spawn(async move {
            for _ in 0..20 {
                c.ping().await?;
            }
            c.info().await.map(|i| i.version)
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(!r.unwrap().unwrap().is_empty());
    }
}
