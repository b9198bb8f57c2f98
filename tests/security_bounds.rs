//! Issue 11, bounds: the attacks of items 6, 7 and 9 and the header-less WriteFile, run
//! against a real `atp serve` in front of a real host qemu-ga. Each limit is set small
//! in the test's config so the attack is quick; every load loop is bounded and stays on
//! loopback. Files live only in the agent's own temp directory.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

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

/// Sets the open-file limit of process `pid` (the test's own, or the daemon's).
fn set_nofile(pid: u32, n: u32) {
    let st = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:{n}"))
        .status()
        .unwrap();
    assert!(st.success(), "prlimit failed");
}

/// CPU time (user + system) `pid` has used, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    ticks
        / String::from_utf8_lossy(&hz.stdout)
            .trim()
            .parse::<f64>()
            .unwrap()
}

/// Share of one core `pid` used over `over`.
async fn cpu_share(pid: u32, over: Duration) -> f64 {
    let c0 = cpu_secs(pid);
    tokio::time::sleep(over).await;
    (cpu_secs(pid) - c0) / over.as_secs_f64()
}

/// Opens up to `n` TCP connections to `port` that send nothing (each connect bounded).
async fn idle_connects(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let c = tokio::net::TcpStream::connect(("127.0.0.1", port));
                tokio::time::timeout(Duration::from_secs(3), c)
                    .await
                    .ok()?
                    .ok()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            out.push(s);
        }
    }
    out
}

/// A daemon with an anonymous loopback TCP listener and the given `[limits]`, its open
/// file limit set to `nofile`.
async fn tcp_daemon(agent: &HostAgent, port: u16, limits: &str, nofile: u32) -> Daemon {
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[limits]\n{limits}\n\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ),
    )
    .await;
    set_nofile(d.pid(), nofile);
    d
}

#[tokio::test]
async fn idle_tcp_connects_leave_unix_callers_served_and_the_cpu_idle() {
    common::init_logging();
    set_nofile(std::process::id(), 8192);
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let d = tcp_daemon(
        &agent,
        port,
        "max_connections = 64\nhandshake_timeout_ms = 1000",
        192,
    )
    .await;
    // A client that speaks HTTP/2 keeps its connection past the handshake timeout.
    let mut talker = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
    tokio::io::AsyncWriteExt::write_all(&mut talker, &hello)
        .await
        .unwrap();
    let mut idle = idle_connects(port, 1100).await;
    // Past the cap and the backlog the kernel drops SYNs; enough get through to exceed
    // both the cap and the daemon's descriptor limit.
    assert!(idle.len() > 256, "only {} connects succeeded", idle.len());

    let share = cpu_share(d.pid(), Duration::from_secs(2)).await;
    assert!(
        share < 0.5,
        "daemon used {:.0}% of a core with idle connects",
        share * 100.0
    );
    // At most max_connections of them are open in the daemon at once (the socket count
    // also has the listeners, the agent connection and a few of tokio's own).
    let sockets = common::fd_targets(d.pid())
        .iter()
        .filter(|t| t.starts_with("socket:"))
        .count();
    assert!(sockets <= 64 + 8, "{sockets} sockets open in the daemon");
    // (The talker, 2 s after its preface: still open, whatever the server sent it.)
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::io::AsyncReadExt::read(&mut talker, &mut buf);
        match tokio::time::timeout(Duration::from_millis(300), read).await {
            Err(_) => break,
            Ok(Ok(0)) => panic!("a connection that sent its preface was closed"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("a connection that sent its preface failed: {e}"),
        }
    }
    // A connect that sends nothing is closed once the handshake timeout has passed.
    let mut first = idle.remove(0);
    let mut sink = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut first, &mut sink),
    )
    .await
    .expect("the daemon closes a connection that never sends its preface")
    .ok();
    // A UNIX caller is served meanwhile (a fresh connection each time).
    for _ in 0..3 {
        let mut c = d.client().await;
        tokio::time::timeout(Duration::from_secs(10), c.ping(common::ping("host")))
            .await
            .expect("UNIX Ping answered while the TCP connects sit there")
            .unwrap();
    }
    drop(idle);
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_pauses_instead_of_spinning() {
    common::init_logging();
    set_nofile(std::process::id(), 8192);
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    // More connection slots than descriptors: accept runs into EMFILE.
    let d = tcp_daemon(
        &agent,
        port,
        "max_connections = 512\nhandshake_timeout_ms = 60000",
        64,
    )
    .await;
    let idle = idle_connects(port, 1100).await;
    assert!(idle.len() > 64, "only {} connects succeeded", idle.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let share = cpu_share(d.pid(), Duration::from_secs(2)).await;
    assert!(
        share < 0.5,
        "daemon used {:.0}% of a core at EMFILE",
        share * 100.0
    );
    // Once the connects go away the daemon serves again.
    drop(idle);
    let mut c = tokio::time::timeout(Duration::from_secs(20), d.client())
        .await
        .expect("the daemon accepts again");
    tokio::time::timeout(Duration::from_secs(10), c.ping(common::ping("host")))
        .await
        .expect("Ping answered after the connects left")
        .unwrap();
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
async fn a_tls_connect_that_never_finishes_its_handshake_is_closed() {
    let agent = HostAgent::start().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let port = common::free_port();
    let _d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[limits]\nhandshake_timeout_ms = 1000\n\n\
             [[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            cert_path.display(),
            key_path.display(),
            agent.socket().display()
        ),
    )
    .await;
    // Silent, and stalled after the first bytes of a TLS record: both are closed.
    for first in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00][..]] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, first)
            .await
            .unwrap();
        let mut sink = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink),
        )
        .await
        .expect("the daemon closes a connection whose TLS handshake never finishes")
        .ok();
    }
}
