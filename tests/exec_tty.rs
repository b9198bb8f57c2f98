//! Terminal sessions through the library (util-linux `script` in the guest), against a
//! real host qemu-ga and in the busybox TCG guest: the program's stdin is a terminal of
//! the asked size, a shell on it runs lines typed into it and exits with its status,
//! resize changes what `stty size` says, Ctrl-C typed and `signal` both interrupt the
//! foreground program, Ctrl-D and EOF end `cat`; a guest without `script` is refused up
//! front. The keystroke echo (by the terminal itself) is timed and printed, not asserted.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use ocloudview_atp::{
    qga::{AgentClient, ExecEvent, ExecSession, GuestExecCommand, StdinFeed, TerminalSize},
    testbed::{BootOptions, HostAgent, QemuGuest},
    transport::socket::SocketTransport,
};

/// Reads output until it contains `needle` (bounded); returns everything read.
async fn until(s: &mut ExecSession, needle: &str) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match s.next_event().await.unwrap() {
                Some(ExecEvent::Stdout(d)) => {
                    out.extend(d);
                    if String::from_utf8_lossy(&out).contains(needle) {
                        return;
                    }
                }
                Some(ExecEvent::Exited(x)) => panic!(
                    "exited ({x:?}) before {needle:?}; output {:?}",
                    String::from_utf8_lossy(&out)
                ),
                Some(ExecEvent::Stderr(_)) => {}
                None => panic!("session over before {needle:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {needle:?} within 30 s; output {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads to the end: (output, exit code, signal).
async fn finish(mut s: ExecSession) -> (String, Option<i32>, Option<i32>) {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match s.next_event().await.unwrap() {
                Some(ExecEvent::Stdout(d)) => out.extend(d),
                Some(ExecEvent::Exited(x)) => {
                    return (
                        String::from_utf8_lossy(&out).into_owned(),
                        x.exit_code,
                        x.signal,
                    );
                }
                Some(_) => {}
                None => panic!("no exit"),
            }
        }
    })
    .await
    .expect("the program did not end within 30 s")
}

fn on_tty(path: &str, args: &[&str], rows: u16, cols: u16) -> GuestExecCommand {
    let mut c = GuestExecCommand::simple(path, args.iter().map(|a| (*a).to_owned()).collect());
    c.tty = Some(TerminalSize { rows, cols });
    c
}

/// Interrupted by SIGINT: script(1) reports it as 128+2 (or the agent as the signal).
fn interrupted(code: Option<i32>, signal: Option<i32>) -> bool {
    code == Some(130) || signal == Some(2)
}

async fn exercise(c: &AgentClient, place: &str) {
    // A terminal of the asked size, with TERM set.
    let (s, mut feed) = c
        .exec_interactive(&on_tty(
            "/bin/sh",
            &[
                "-c",
                "test -t 0 && test -t 1 && echo on-a-tty; stty size; echo \"term=$TERM\"",
            ],
            33,
            101,
        ))
        .await
        .unwrap();
    let (out, code, _) = finish(s).await;
    feed.close().await.unwrap();
    assert!(out.contains("on-a-tty"), "{place}: {out:?}");
    assert!(out.contains("33 101"), "{place}: {out:?}");
    assert!(out.contains("term=xterm-256color"), "{place}: {out:?}");
    assert_eq!(code, Some(0), "{place}");

    // A shell: typed lines run; resize shows in `stty size`; `exit 3` is the status.
    let (mut s, mut feed) = c
        .exec_interactive(&on_tty("/bin/sh", &[], 24, 80))
        .await
        .unwrap();
    feed.write(b"echo $((6*7))x\n").await.unwrap();
    until(&mut s, "42x").await;
    feed.resize(TerminalSize {
        rows: 40,
        cols: 120,
    })
    .await
    .unwrap();
    feed.write(b"stty size\n").await.unwrap();
    until(&mut s, "40 120").await;
    feed.write(b"exit 3\n").await.unwrap();
    let (_, code, _) = finish(s).await;
    assert_eq!(code, Some(3), "{place}: the shell's status");
    feed.abort().await;

    // Ctrl-C typed reaches the foreground program through the terminal.
    let (mut s, mut feed) = c
        .exec_interactive(&on_tty(
            "/bin/sh",
            &["-c", "echo ready; exec sleep 60"],
            24,
            80,
        ))
        .await
        .unwrap();
    until(&mut s, "ready").await;
    feed.write(b"\x03").await.unwrap();
    let (_, code, signal) = finish(s).await;
    assert!(
        interrupted(code, signal),
        "{place}: Ctrl-C: {code:?} {signal:?}"
    );
    feed.abort().await;

    // `signal` does the same from outside the terminal's input.
    let (mut s, feed) = c
        .exec_interactive(&on_tty(
            "/bin/sh",
            &["-c", "echo ready; exec sleep 60"],
            24,
            80,
        ))
        .await
        .unwrap();
    until(&mut s, "ready").await;
    assert!(feed.signal(2).await.unwrap(), "{place}: signalled");
    let (_, code, signal) = finish(s).await;
    assert!(
        interrupted(code, signal),
        "{place}: signal 2: {code:?} {signal:?}"
    );
    assert!(
        !feed.signal(2).await.unwrap(),
        "{place}: an ended program is not signalled"
    );
    assert!(
        feed.signal(64).await.is_err(),
        "{place}: signal 64 is not allowed"
    );

    // Ctrl-D ends `cat`; so does closing stdin.
    let (mut s, mut feed) = c
        .exec_interactive(&on_tty("cat", &[], 24, 80))
        .await
        .unwrap();
    feed.write(b"abc\n").await.unwrap();
    until(&mut s, "abc").await;
    feed.write(b"\x04").await.unwrap();
    let (_, code, _) = finish(s).await;
    assert_eq!(code, Some(0), "{place}: Ctrl-D");
    feed.abort().await;

    let (mut s, mut feed) = c
        .exec_interactive(&on_tty("cat", &[], 24, 80))
        .await
        .unwrap();
    feed.write(b"xyz\n").await.unwrap();
    until(&mut s, "xyz").await;
    feed.close().await.unwrap();
    let (_, code, _) = finish(s).await;
    assert_eq!(code, Some(0), "{place}: EOF");

    // The echo of a keystroke comes from the guest's terminal.
    let (mut s, mut feed) = c
        .exec_interactive(&on_tty("cat", &[], 24, 80))
        .await
        .unwrap();
    let took = echoes(&mut s, &mut feed, 10).await;
    eprintln!(
        "{place}: keystroke echo through a terminal (library, polling at its own pace): p50 {:?}, max {:?}",
        took[5], took[9]
    );
    // A pending partial line would take the EOF as "send the line" (canonical mode).
    feed.write(b"\n").await.unwrap();
    feed.close().await.unwrap();
    finish(s).await;
}

async fn echoes(s: &mut ExecSession, feed: &mut StdinFeed, n: u8) -> Vec<Duration> {
    let mut took = Vec::new();
    for i in 0..n {
        let key = b'a' + i;
        let t = Instant::now();
        feed.write(&[key]).await.unwrap();
        until(s, &char::from(key).to_string()).await;
        took.push(t.elapsed());
    }
    took.sort();
    took
}

#[tokio::test]
async fn a_terminal_on_the_host_agent() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    exercise(&c, "host agent").await;
}

#[tokio::test]
async fn a_terminal_in_the_busybox_guest() {
    let image = common::image().await;
    let guest = QemuGuest::boot(&image, BootOptions::default())
        .await
        .unwrap();
    let c = AgentClient::new(SocketTransport::new(guest.agent_socket()));
    exercise(&c, "busybox TCG guest").await;
    // Without script(1) on the PATH the session is refused before anything starts.
    let mut cmd = on_tty("sh", &[], 24, 80);
    cmd.env.push("X=1".into());
    let hide = c
        .exec_shell("mv /usr/bin/script /usr/bin/script.away")
        .await
        .unwrap();
    assert_eq!(hide.exit_code, Some(0));
    let err = c.exec_interactive(&cmd).await.unwrap_err().to_string();
    assert!(err.contains("script(1)"), "{err}");
    c.exec_shell("mv /usr/bin/script.away /usr/bin/script")
        .await
        .unwrap();
}
