//! Issue 11, bounds: the attacks of items 6, 7 and 9 and the header-less WriteFile, run
//! against a real `atp serve` in front of a real host qemu-ga (connections: in
//! `security_bounds/connections.rs`). Each limit is set small in the test's config so the
//! attack is quick; every load loop is bounded and stays on loopback. Files live only in the agent's own temp directory.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;
#[path = "security_bounds/connections.rs"]
mod connections;

use std::time::{Duration, Instant};

use common::{Daemon, daemon_for, drain_exec, sh_request};
use ocloudview_atp::{
    pb::{FileChunk, ReadFileRequest, WriteFileRequest, guest_agent_client::GuestAgentClient},
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tonic::{
    Code, Request, Status, Streaming,
    transport::{Channel, Endpoint},
};

const TOKEN: &str = "second-caller-token";
const MIB: u64 = 1 << 20;

/// A sparse file of `size` bytes in the agent's directory.
fn big_file(agent: &HostAgent, name: &str, size: u64) -> String {
    let path = agent.dir().join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    path.display().to_string()
}

fn read_req(path: &str, chunk_size: u32) -> ReadFileRequest {
    ReadFileRequest {
        domain: "host".into(),
        path: path.into(),
        chunk_size,
        ..Default::default()
    }
}

/// A second caller: a token over loopback TCP.
async fn token_client(
    port: u16,
) -> GuestAgentClient<
    tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
> {
    let ch = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    GuestAgentClient::with_interceptor(
        ch,
        move |mut req: Request<()>| -> Result<Request<()>, Status> {
            req.metadata_mut().insert("authorization", header.clone());
            Ok(req)
        },
    )
}

/// Reads a ReadFile stream to its end: the bytes, and the error that ended it, if any.
async fn drain_read(mut s: Streaming<FileChunk>) -> (u64, Option<Status>) {
    let mut n = 0;
    loop {
        match s.message().await {
            Ok(Some(c)) => n += c.data.len() as u64,
            Ok(None) => return (n, None),
            Err(st) => return (n, Some(st)),
        }
    }
}

#[tokio::test]
async fn one_caller_cannot_use_up_the_guest_agents_file_handles() {
    let agent = HostAgent::start().unwrap();
    let path = big_file(&agent, "big.bin", 16 * MIB);
    let port = common::free_port();
    let digest = format!("{:x}", Sha256::digest(TOKEN.as_bytes()));
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[limits]\nopen_handles_per_guest = 48\nstreams_per_caller = 32\nstream_buffer_bytes = 262144\n\n\
             [[server.tokens]]\nsha256 = \"{digest}\"\nidentity = \"other\"\nroles = [\"ops\"]\n\n\
             [[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await;
    let baseline = agent.open_files().unwrap();

    // The attacker (the UNIX caller) opens 1,100 reads and never reads any of them.
    let mut attacker = d.client().await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        let call = attacker.read_file(read_req(&path, 64 * 1024));
        match tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("every ReadFile is answered, admitted or refused")
        {
            Ok(s) => held.push(s.into_inner()),
            Err(st) => {
                assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
                assert!(st.message().contains("limits.streams_per_caller"), "{st:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        held.len(),
        32,
        "the attacker holds streams_per_caller streams"
    );
    assert_eq!(refused, 1100 - 32);
    let open = agent.open_files().unwrap();
    assert!(open <= baseline + 48, "agent fds {baseline} -> {open}");

    // Meanwhile another caller is served: a whole file and an exec.
    let mut other = token_client(port).await;
    let small = agent.dir().join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    let s = other
        .read_file(read_req(&small.display().to_string(), 0))
        .await
        .unwrap();
    let (n, err) = drain_read(s.into_inner()).await;
    assert_eq!((n, err.map(|e| e.code())), (5, None));
    let out = drain_exec(
        other
            .exec(sh_request("host", "echo ok"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(out.stdout, b"ok\n", "{out:?}");

    // The second caller too may hold streams, up to the guest's handle bound: past it,
    // RESOURCE_EXHAUSTED names the per-guest limit, not an agent failure.
    let mut others = Vec::new();
    let mut at_guest_limit = 0;
    for _ in 0..30 {
        match other.read_file(read_req(&path, 64 * 1024)).await {
            Ok(s) => others.push(s.into_inner()),
            Err(st) => {
                assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
                assert!(
                    st.message().contains("limits.open_handles_per_guest"),
                    "{st:?}"
                );
                at_guest_limit += 1;
            }
        }
    }
    assert_eq!((others.len(), at_guest_limit), (16, 14));
    // 48 file handles, plus what the agent keeps of the execs (pipes until reaped).
    let open = agent.open_files().unwrap();
    assert!(open <= baseline + 48 + 4, "agent fds {baseline} -> {open}");
    // The agent itself is far from its own fd limit and answers (a fresh connection: the
    // unread streams hold this test's receive window on the other one).
    token_client(port)
        .await
        .ping(common::ping("host"))
        .await
        .unwrap();

    // Leaving frees everything: the handles close and the attacker may read again.
    drop(held);
    drop(others);
    // (The agent keeps an fd or so of its own after the execs.)
    common::eventually(
        || agent.open_files().unwrap() <= baseline + 2,
        "agent handles closed",
    )
    .await;
    let s = attacker
        .read_file(read_req(&small.display().to_string(), 0))
        .await
        .unwrap();
    let (n, err) = drain_read(s.into_inner()).await;
    assert_eq!((n, err.map(|e| e.code())), (5, None));
}

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn stalled_readers_cost_their_byte_budget_and_end_after_the_idle_timeout() {
    common::init_logging();
    let agent = HostAgent::start().unwrap();
    let path = big_file(&agent, "big.bin", 64 * MIB);
    let d = daemon_for(
        &agent,
        "[limits]\nstream_buffer_bytes = 2097152\nstream_idle_timeout_ms = 4000\n",
    )
    .await;
    let mut pinger = d.client().await;
    pinger.ping(common::ping("host")).await.unwrap();
    let baseline_fds = agent.open_files().unwrap();
    let rss0 = rss_kib(d.pid());

    // Eight readers ask for 48 MiB chunks and then read nothing.
    let mut reader = d.client().await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let s = reader.read_file(read_req(&path, 48 << 20)).await.unwrap();
        stalled.push(s.into_inner());
    }
    common::eventually(
        || agent.open_files().unwrap() >= baseline_fds + 8,
        "the eight stalled reads are open in the agent",
    )
    .await;
    // Not synchronisation: time for each stream to fill what it may buffer; memory that
    // did not grow meanwhile is the subject.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_kib(d.pid()).saturating_sub(rss0);
    eprintln!("daemon RSS grew {grown} KiB with 8 stalled readers");
    assert!(
        grown < 100 * 1024,
        "daemon RSS grew {grown} KiB with 8 stalled readers"
    );
    let held = agent.open_files().unwrap();
    assert!(
        held >= baseline_fds + 8,
        "the stalled reads hold their handles: {held}"
    );
    // The guest still answers others (a separate connection: the stalled streams hold
    // this test's own receive window on theirs).
    tokio::time::timeout(Duration::from_secs(10), pinger.ping(common::ping("host")))
        .await
        .expect("Ping answered within the agent timeout")
        .unwrap();

    // After the idle timeout the daemon gives up: the guest handles are closed, and a
    // reader that comes back finds its stream ended with DEADLINE_EXCEEDED.
    common::eventually(
        || agent.open_files() == Some(baseline_fds),
        "stalled handles closed",
    )
    .await;
    // Read one of them (after dropping the others, whose unread data holds this test's
    // connection window).
    let last = stalled.pop().unwrap();
    drop(stalled);
    let (n, err) = tokio::time::timeout(Duration::from_secs(30), drain_read(last))
        .await
        .unwrap();
    let st = err.expect("the stream ends with an error");
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
    assert!(
        st.message().contains("limits.stream_idle_timeout_ms"),
        "{st:?}"
    );
    assert!(n < 64 * MIB, "{n}");
}

#[tokio::test]
async fn a_write_that_never_sends_its_header_is_refused_and_audited() {
    let agent = HostAgent::start().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let log = audit.path().join("audit.jsonl");
    let d = daemon_for(
        &agent,
        &format!(
            "[limits]\nwrite_header_timeout_ms = 500\n\n[audit]\npath = \"{}\"\n",
            log.display()
        ),
    )
    .await;
    let mut c = d.client().await;
    let t = Instant::now();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        c.write_file(tokio_stream::pending::<WriteFileRequest>()),
    )
    .await
    .expect("refused within the header timeout, not left waiting")
    .unwrap_err();
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
    assert!(
        st.message().contains("limits.write_header_timeout_ms"),
        "{st:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(500));
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records.iter().any(|r| r["rpc"] == "WriteFile"
            && r["status"] == "DEADLINE_EXCEEDED"
            && r["caller"]["id"] == format!("uid:{}", nix::unistd::getuid())),
        "{records:#?}"
    );
}

#[tokio::test]
async fn the_library_client_bounds_its_open_handles_per_agent() {
    use ocloudview_atp::{
        qga::{AgentClient, QgaError},
        transport::socket::SocketTransport,
    };
    let agent = HostAgent::start().unwrap();
    let path = agent.dir().join("f.txt");
    std::fs::write(&path, b"x").unwrap();
    let path = path.display().to_string();
    let client = AgentClient::new(SocketTransport::new(agent.socket())).with_handle_limit(2);
    let clone = client.clone();
    let a = client.open(&path, "r").await.unwrap();
    let _b = clone.open(&path, "r").await.unwrap();
    // The bound is shared by the clones, and refused without asking the agent.
    let before = agent.open_files().unwrap();
    let e = client.open(&path, "r").await.unwrap_err();
    assert!(
        matches!(
            e,
            QgaError::LimitExceeded {
                limit: "limits.open_handles_per_guest",
                value: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(agent.open_files().unwrap(), before);
    assert_eq!(client.open_handles(), 2);
    // Closing frees the slot; so does dropping (once the agent has closed the handle).
    a.close().await.unwrap();
    let c = client.open(&path, "r").await.unwrap();
    drop(c);
    common::eventually(|| client.open_handles() == 1, "dropped handle released").await;
    client
        .open(&path, "r")
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn uploads_waiting_for_their_header_count_against_the_caller() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let d = daemon_for(
        &agent,
        &format!(
            "[limits]\nstreams_per_caller = 2\nwrite_header_timeout_ms = 20000\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .await;
    let c = d.client().await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut c = c.clone();
        waiting.push(tokio::spawn(async move {
            c.write_file(tokio_stream::pending::<WriteFileRequest>())
                .await
        }));
    }
    // The two uploads take their stream slots when the daemon receives them.
    common::eventually(
        || common::metrics::counter(port, "atp_streams_open", &[]) >= 2.0,
        "both uploads hold their stream slots",
    )
    .await;
    let st = tokio::time::timeout(
        Duration::from_secs(5),
        c.clone()
            .write_file(tokio_stream::pending::<WriteFileRequest>()),
    )
    .await
    .expect("the third upload is refused at once")
    .unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("limits.streams_per_caller"), "{st:?}");
    for w in waiting {
        w.abort();
    }
}
