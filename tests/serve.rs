//! `atp serve --config FILE` as a real process, in front of real host agents: the three
//! first RPCs, on a UNIX and a TCP listener, with errors mapped to precise statuses.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use ocloudview_atp::{
    pb::{
        GetAgentInfoRequest, GetOsInfoRequest, PingRequest, guest_agent_client::GuestAgentClient,
    },
    testbed::HostAgent,
};
use sha2::Digest;
use tonic::Code;

#[tokio::test]
async fn serves_ping_info_osinfo_on_unix_and_tcp() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    // TCP callers must authenticate (loopback included): a token for this one.
    let digest = format!("{:x}", sha2::Sha256::digest(b"serve-test-token"));
    let daemon = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[[server.tokens]]\nsha256 = \"{digest}\"\nidentity = \"ci\"\n\n\
             [[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await;
    let mode = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );

    let mut unix = daemon.client().await;
    let pong = unix
        .ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pong.latency_us > 0 && pong.latency_us < 5_000_000,
        "{pong:?}"
    );

    let info = unix
        .get_agent_info(GetAgentInfoRequest {
            domain: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!info.version.is_empty());
    let ping = info
        .supported_commands
        .iter()
        .find(|c| c.name == "guest-ping")
        .unwrap();
    assert!(ping.enabled);
    let shutdown = info
        .supported_commands
        .iter()
        .find(|c| c.name == "guest-shutdown")
        .unwrap();
    assert!(!shutdown.enabled && !shutdown.success_response);

    let mut tcp = GuestAgentClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let anonymous = tcp
        .get_os_info(GetOsInfoRequest {
            domain: "host".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let mut req = tonic::Request::new(GetOsInfoRequest {
        domain: "host".into(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer serve-test-token".parse().unwrap());
    let os = tcp.get_os_info(req).await.unwrap().into_inner();
    assert_eq!(os.machine, std::env::consts::ARCH);
    assert!(!os.id.is_empty() && !os.kernel_release.is_empty());
}

#[tokio::test]
async fn errors_have_precise_statuses() {
    let mut agent = HostAgent::start().unwrap();
    let daemon = Daemon::start(
        &[],
        &format!(
            "[agent]\ntimeout_ms = 1500\n\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await;
    let mut c = daemon.client().await;

    let st = c
        .ping(PingRequest {
            domain: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound, "{st:?}");
    assert!(st.message().contains("nope"));

    let st = c
        .ping(PingRequest {
            domain: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");

    c.ping(PingRequest {
        domain: "host".into(),
    })
    .await
    .unwrap();
    agent.kill();
    let started = Instant::now();
    let st = c
        .ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn sigterm_stops_the_daemon_within_its_grace_period() {
    let agent = HostAgent::start().unwrap();
    let mut daemon = Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await;
    // A client that keeps its connection open does not hold the daemon up for long.
    let mut lingering = daemon.client().await;
    lingering
        .ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .unwrap();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let st = daemon.terminate();
        (st, daemon)
    })
    .await
    .unwrap();
    let (status, daemon) = status;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(!daemon.socket.exists(), "socket file left behind");
    drop(lingering);
}

#[test]
fn bad_config_names_the_key_and_fails_with_config_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = [\"tcp://not-an-address\"]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen[0]") && err.contains("tcp://not-an-address"),
        "{err}"
    );
}
