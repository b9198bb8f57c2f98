//! Streamed stdin through the library against a real host qemu-ga (stock 7.2): lines reach
//! the program in order and EOF ends it (`wc -l` counts 2), 8 MiB in chunks of mixed sizes
//! through `sha256sum` arrive intact, a program that never reads holds writes back (bounded spool) without
//! blocking the agent, and aborting a session leaves no holder, pump or program behind; and the same mechanics in the
//! busybox TCG guest. The keystroke round trip (one byte in, its echo by `cat` out) and the
//! throughput are printed, not asserted.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use ocloudview_atp::{
    qga::{AgentClient, ExecEvent, ExecSession, GuestExecCommand, StdinFeed},
    testbed::{BootOptions, HostAgent, QemuGuest},
    transport::socket::SocketTransport,
};
use sha2::{Digest, Sha256};

/// Output and exit code of a session, read to its end (bounded).
async fn drain(mut s: ExecSession) -> (Vec<u8>, Option<i32>) {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match s.next_event().await.unwrap() {
                Some(ExecEvent::Stdout(d)) => out.extend(d),
                Some(ExecEvent::Exited(x)) => return (out, x.exit_code),
                Some(_) => {}
                None => return (out, None),
            }
        }
    })
    .await
    .expect("the program did not end within 60 s")
}

/// `n` one-byte writes to a `cat`, each timed until its echo is read back; sorted.
async fn round_trips(session: &mut ExecSession, feed: &mut StdinFeed, n: u8) -> Vec<Duration> {
    let mut took = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        feed.write(&[b'a' + i]).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), session.next_event())
                .await
                .unwrap()
                .unwrap()
            {
                Some(ExecEvent::Stdout(d)) if d.contains(&(b'a' + i)) => break,
                Some(_) => {}
                None => panic!("the session ended"),
            }
        }
        took.push(t.elapsed());
    }
    took.sort();
    took
}

fn client(agent: &HostAgent) -> AgentClient {
    AgentClient::new(SocketTransport::new(agent.socket()))
}

#[tokio::test]
async fn lines_arrive_in_order_and_eof_ends_the_program() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    let (session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("wc", vec!["-l".into()]))
        .await
        .unwrap();
    let reader = tokio::spawn(drain(session));
    feed.write(b"a\n").await.unwrap();
    feed.write(b"b\n").await.unwrap();
    feed.close().await.unwrap();
    assert!(!feed.is_open());
    assert!(feed.write(b"late").await.is_err(), "stdin is closed");
    let (out, code) = reader.await.unwrap();
    assert_eq!(
        (String::from_utf8(out).unwrap().trim(), code),
        ("2", Some(0))
    );
}

/// Written and closed at once, before the guest's processes may have opened the FIFO:
/// nothing is lost (a chunk in a pipe nobody else has open yet vanishes when the agent's
/// handle closes, so small chunks wait for the pump's `pready`).
#[tokio::test]
async fn input_written_and_closed_at_once_is_not_lost() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    for i in 0..20 {
        let (session, mut feed) = c
            .exec_interactive(&GuestExecCommand::simple("wc", vec!["-c".into()]))
            .await
            .unwrap();
        feed.write(b"abc").await.unwrap();
        feed.close().await.unwrap();
        let (out, code) = drain(session).await;
        feed.abort().await;
        assert_eq!(
            (String::from_utf8(out).unwrap().trim(), code),
            ("3", Some(0)),
            "session {i}"
        );
    }
}

#[tokio::test]
async fn eight_mib_arrive_intact() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = format!("{:x}", Sha256::digest(&data));
    let (session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("sha256sum", vec![]))
        .await
        .unwrap();
    let reader = tokio::spawn(drain(session));
    let t = Instant::now();
    // Large and small chunks mixed: keystroke-sized ones must not overtake spooled data
    // (they take the FIFO directly only once the spool is drained); some writes leave
    // the segment open for more.
    let sizes = [3 << 20, 10, 1024, 700 << 10, 1, 5, 2 << 20, 1000, 64 << 10];
    let mut rest = &data[..];
    for (i, n) in sizes.iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*n).min(rest.len()));
        feed.write_more(now, i % 3 == 1 && !later.is_empty())
            .await
            .unwrap();
        rest = later;
    }
    feed.close().await.unwrap();
    let (out, code) = reader.await.unwrap();
    let took = t.elapsed();
    eprintln!(
        "8 MiB of stdin in {took:?}: {:.1} MiB/s",
        8.0 / took.as_secs_f64()
    );
    assert_eq!(code, Some(0));
    assert!(String::from_utf8(out).unwrap().starts_with(&want));
}

/// Processes whose command line or open files mention `needle`.
fn holding(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut hit = String::from_utf8_lossy(&cmd).contains(needle);
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            hit |= fds
                .filter_map(Result::ok)
                .filter_map(|f| std::fs::read_link(f.path()).ok())
                .any(|l| l.to_string_lossy().contains(needle));
        }
        if hit {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn a_reader_that_never_reads_blocks_nothing_and_abort_leaves_nothing() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    // `sleep` never reads stdin: the pipe fills, then the spool, then a write waits.
    let (mut session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("sleep", vec!["300".into()]))
        .await
        .unwrap();
    let pid = session.pid();
    // The wrapper's fd 0 is the FIFO once it has run `exec <in`; before that it briefly
    // reads /proc/$$/stat on fd 0 (its start time), so look until it settles.
    let t = Instant::now();
    let dir = loop {
        let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0"))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        if fd0.contains("atp-exec-") {
            break fd0.trim_end_matches("/in").to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the program's stdin is not the FIFO: {fd0:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The pipe fills, the pump blocks on it, the spool fills: then a write waits.
    let mut taken = 0;
    while tokio::time::timeout(Duration::from_secs(2), feed.write(&vec![0u8; 1 << 20]))
        .await
        .is_ok()
    {
        taken += 1;
        assert!(
            taken <= ocloudview_atp::qga::SPOOL_SEGMENTS + 1,
            "a full pipe and spool did not hold the writes back"
        );
    }
    // The agent still answers.
    c.ping().await.unwrap();
    // The session ends: the feed is aborted, the program killed, the directory removed.
    feed.abort().await;
    session.kill(false).await.unwrap();
    let _ = drain(session).await;
    let t = Instant::now();
    loop {
        let left = holding(&dir);
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn keystroke_round_trip() {
    let agent = HostAgent::start().unwrap();
    let c = client(&agent);
    let (mut session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("cat", vec![]))
        .await
        .unwrap();
    let took = round_trips(&mut session, &mut feed, 20).await;
    eprintln!(
        "keystroke round trip on the host agent: p50 {:?}, max {:?}",
        took[10], took[19]
    );
    feed.close().await.unwrap();
    let (_, code) = drain(session).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn in_the_busybox_guest_stdin_streams_and_ends() {
    let image = common::image().await;
    let guest = QemuGuest::boot(&image, BootOptions::default())
        .await
        .unwrap();
    let c = AgentClient::new(SocketTransport::new(guest.agent_socket()));
    let (session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("wc", vec!["-l".into()]))
        .await
        .unwrap();
    let reader = tokio::spawn(drain(session));
    feed.write(b"a\n").await.unwrap();
    feed.write(b"b\n").await.unwrap();
    feed.close().await.unwrap();
    let (out, code) = reader.await.unwrap();
    assert_eq!(
        (String::from_utf8(out).unwrap().trim(), code),
        ("2", Some(0))
    );

    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = format!("{:x}", Sha256::digest(&data));
    let (session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("sha256sum", vec![]))
        .await
        .unwrap();
    let reader = tokio::spawn(drain(session));
    let t = Instant::now();
    feed.write(&data).await.unwrap();
    feed.close().await.unwrap();
    let (out, code) = reader.await.unwrap();
    eprintln!("1 MiB of stdin into the TCG guest in {:?}", t.elapsed());
    assert_eq!(code, Some(0));
    assert!(String::from_utf8(out).unwrap().starts_with(&want));

    let (mut session, mut feed) = c
        .exec_interactive(&GuestExecCommand::simple("cat", vec![]))
        .await
        .unwrap();
    let took = round_trips(&mut session, &mut feed, 10).await;
    eprintln!(
        "keystroke round trip in the TCG guest (direct socket): p50 {:?}, max {:?}",
        took[5], took[9]
    );
    feed.close().await.unwrap();
    let (_, code) = drain(session).await;
    assert_eq!(code, Some(0));
}
