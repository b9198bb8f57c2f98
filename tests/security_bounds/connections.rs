//! Issue 11 item 9: connections. Idle TCP connects, descriptor exhaustion and stalled
//! TLS handshakes against a real daemon: they must not starve UNIX callers, spin the CPU
//! or hold a connection slot forever. Loopback only; every loop is bounded.

use std::time::Duration;

use ocloudview_atp::testbed::HostAgent;

use crate::common::{self, Daemon};

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
    // Not synchronisation: the measuring window.
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

/// TCP listeners need callers to authenticate (issue 11 item 11); these tests only
/// connect, so one token (its SHA-256 is of nothing anyone holds) satisfies the rule.
const TCP_TOKEN: &str = "[[server.tokens]]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nidentity = \"nobody\"\n\n";

/// A daemon with a loopback TCP listener and the given `[limits]`, its open
/// file limit set to `nofile`.
async fn tcp_daemon(agent: &HostAgent, port: u16, limits: &str, nofile: u32) -> Daemon {
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "{TCP_TOKEN}[limits]\n{limits}\n\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
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
    // The accept loop has run into EMFILE once the daemon holds all 64 descriptors.
    let pid = d.pid();
    common::eventually(
        || common::fd_targets(pid).len() >= 64,
        "the daemon holds all 64 descriptors it may open",
    )
    .await;
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
            "{TCP_TOKEN}[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[limits]\nhandshake_timeout_ms = 1000\n\n\
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
