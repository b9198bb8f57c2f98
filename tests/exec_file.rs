//! Exec (collecting and streaming) and chunked files through the async client, against a
//! real qemu-ga on the host (scratch files live in the agent's temp dir) and against the
//! real TCG guest over its virtio-serial socket.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use ocloudview_atp::{
    qga::{
        AgentClient, ExecEvent, GuestExecCommand, QgaError,
        commands::{GuestFileRead, GuestFileWrite},
    },
    testbed::{BootOptions, HostAgent, QemuGuest},
    transport::socket::SocketTransport,
};

fn sh(script: &str) -> GuestExecCommand {
    GuestExecCommand::simple("/bin/sh", vec!["-c".into(), script.into()])
}

const POLL: Duration = Duration::from_millis(20);

fn exec_dirs() -> usize {
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".atp-exec-")
        })
        .count()
}

#[tokio::test]
async fn exec_collects_exit_codes_signals_and_raw_bytes() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));

    let r = c
        .exec_and_wait(&sh("echo out; echo err >&2; exit 3"), POLL)
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.decode_stdout().as_deref(), Some("out\n"));
    assert_eq!(r.decode_stderr().as_deref(), Some("err\n"));

    let r = c
        .exec_and_wait(
            &GuestExecCommand::simple("cat", vec![]).stdin("from stdin"),
            POLL,
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, b"from stdin");

    // Not UTF-8: bytes are kept, decoding is lossy.
    let r = c
        .exec_and_wait(&sh(r"printf '\377\376ok'"), POLL)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"\xff\xfeok");
    assert_eq!(r.decode_stdout().unwrap(), "\u{fffd}\u{fffd}ok");

    // Killed by a signal: the signal, no exit code.
    let r = c.exec_and_wait(&sh("kill -9 $$"), POLL).await.unwrap();
    assert_eq!((r.exit_code, r.signal), (None, Some(9)));

    // Environment: entries are added, PATH is kept usable.
    let r = c
        .exec_and_wait(
            &sh("echo \"$GREETING\"; command -v sh >/dev/null && echo found").env("GREETING=hi"),
            POLL,
        )
        .await
        .unwrap();
    assert_eq!(r.decode_stdout().as_deref(), Some("hi\nfound\n"));

    // A program that does not exist: the agent says so.
    let err = c
        .exec_and_wait(&GuestExecCommand::simple("/no/such/program", vec![]), POLL)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");

    // Bad requests never reach the agent.
    for bad in [
        GuestExecCommand::simple("", vec![]),
        GuestExecCommand::simple("/bin/echo", vec!["a\0b".into()]),
    ] {
        assert!(matches!(
            c.exec(&bad).await,
            Err(QgaError::InvalidArgument(_))
        ));
    }

    let shell = c.exec_shell("echo $((6 * 7))").await.unwrap();
    assert_eq!(shell.decode_stdout().as_deref(), Some("42\n"));
    assert!(shell.success());
}

#[tokio::test]
async fn exec_timeout_kills_the_guest_process() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    let marker = agent.dir().join("still-running");
    let cmd =
        sh(&format!("sleep 30; touch {}", marker.display())).timeout(Duration::from_millis(500));
    let started = Instant::now();
    let r = c.exec_and_wait(&cmd, POLL).await.unwrap();
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(9));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn streaming_exec_delivers_output_before_exit_and_cleans_up() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    let before = exec_dirs();
    c.ping().await.unwrap(); // the client's own connection is part of the baseline
    let baseline_fds = agent.open_files().unwrap();
    let started = Instant::now();
    let mut s = c
        .exec_stream(&sh(
            "for i in 1 2 3; do echo $i; sleep 0.4; done; echo done >&2; exit 7",
        ))
        .await
        .unwrap();
    // The wrapper records the program's pid, for a later client's sweep.
    let pid = s.pid().to_string();
    common::eventually(
        || {
            std::fs::read_dir("/tmp").unwrap().any(|e| {
                let e = e.unwrap();
                e.file_name().to_string_lossy().starts_with(".atp-exec-")
                    && std::fs::read_to_string(e.path().join("pid")).is_ok_and(|p| p.trim() == pid)
            })
        },
        "an exec directory holding the program's pid",
    )
    .await;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut first_at = None;
    let exit = loop {
        match s.next_event().await.unwrap().unwrap() {
            ExecEvent::Stdout(d) => {
                first_at.get_or_insert(started.elapsed());
                out.extend(d);
            }
            ExecEvent::Stderr(d) => err.extend(d),
            ExecEvent::Exited(e) => break e,
        }
    };
    assert!(s.next_event().await.unwrap().is_none());
    let total = started.elapsed();
    assert_eq!(out, b"1\n2\n3\n");
    assert_eq!(err, b"done\n");
    assert_eq!(exit.exit_code, Some(7));
    let first_at = first_at.unwrap();
    assert!(
        first_at + Duration::from_millis(600) < total,
        "first output at {first_at:?}, exit at {total:?}"
    );
    assert_eq!(exec_dirs(), before, "exec directory left behind");
    assert_eq!(agent.open_files().unwrap(), baseline_fds, "handle leaked");

    // Timeout in streaming mode.
    let mut s = c
        .exec_stream(&sh("echo start; sleep 30").timeout(Duration::from_millis(600)))
        .await
        .unwrap();
    let exit = loop {
        if let ExecEvent::Exited(e) = s.next_event().await.unwrap().unwrap() {
            break e;
        }
    };
    assert!(exit.timed_out && exit.signal == Some(9), "{exit:?}");
    assert_eq!(exec_dirs(), before);
}

#[tokio::test]
async fn files_round_trip_in_chunks_and_bad_handles_are_clear_errors() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    c.ping().await.unwrap(); // the client's own connection is part of the baseline
    let baseline = agent.open_files().unwrap();
    let path = agent.dir().join("blob.bin");
    let path = path.to_str().unwrap();
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    c.write_file(path, &data).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(c.read_file(path).await.unwrap(), data);
    let (head, more) = c.read_file_capped(path, 1000).await.unwrap();
    assert_eq!((head.as_slice(), more), (&data[..1000], true));

    // An absurd count is clamped to what the transport carries in one reply.
    let h = c.file_open(path, Some("r")).await.unwrap();
    let r = c.file_read(h, Some(usize::MAX)).await.unwrap();
    assert_eq!(r.count as usize, data.len());
    c.file_close(h).await.unwrap();

    // Bad inputs: clear agent errors, connection stays usable.
    let missing = c.read_file("/nonexistent/file").await.unwrap_err();
    assert!(missing.to_string().contains("No such file"), "{missing}");
    let bad = c.file_read(999_999, None).await.unwrap_err();
    assert!(bad.to_string().contains("not been found"), "{bad}");
    let h = c.file_open(path, None).await.unwrap();
    c.file_close(h).await.unwrap();
    let closed = c.file_read(h, None).await.unwrap_err();
    assert!(closed.to_string().contains("not been found"), "{closed}");
    assert!(matches!(
        c.file_open("", None).await,
        Err(QgaError::InvalidArgument(_))
    ));

    // A close given up while it waits behind other requests still reaches the agent.
    let busy = c.open(path, "r").await.unwrap();
    for _ in 0..3 {
        let f = c.open(path, "r").await.unwrap();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (c, h) = (c.clone(), busy.handle());
                tokio::spawn(async move { c.file_read(h, Some(1 << 20)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(Duration::ZERO, f.close()).await;
        for r in readers {
            r.await.unwrap().unwrap();
        }
    }
    busy.close().await.unwrap();
    common::eventually(
        || agent.open_files().unwrap() == baseline,
        "handles back to baseline after cancelled closes",
    )
    .await;

    // Readers cancelled at every stage (opening, reading, closing) leave no handle open.
    for i in 0..40u64 {
        let _ = tokio::time::timeout(Duration::from_micros(i * 250), c.read_file(path)).await;
    }
    c.ping().await.unwrap();
    common::eventually(
        || agent.open_files().unwrap() == baseline,
        "handles back to baseline",
    )
    .await;
}

#[tokio::test]
async fn command_disabled_in_the_guest_fails_locally_naming_the_setting() {
    let agent = HostAgent::start_blocking(&["guest-exec"]).unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    let err = c.exec(&sh("true")).await.unwrap_err();
    assert!(
        matches!(&err, QgaError::CommandDisabled { command } if command == "guest-exec"),
        "{err:?}"
    );
    assert!(err.to_string().contains("--block-rpcs"), "{err}");
    c.ping().await.unwrap();
}

#[tokio::test]
async fn tcg_guest_exec_and_files_over_virtio_serial() {
    let image = common::image().await;
    let guest = QemuGuest::boot(&image, BootOptions::default())
        .await
        .unwrap();
    let c = AgentClient::new(SocketTransport::new(guest.agent_socket()));
    let r = c.exec_shell("uname -n; echo x >&2; exit 4").await.unwrap();
    assert_eq!(
        (
            r.exit_code,
            r.decode_stdout().as_deref(),
            r.stderr.as_slice()
        ),
        (Some(4), Some("qga-debian\n"), &b"x\n"[..])
    );
    let mut s = c
        .exec_stream(&sh("for i in 1 2; do echo $i; sleep 0.3; done"))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(ev) = s.next_event().await.unwrap() {
        if let ExecEvent::Stdout(d) = ev {
            out.extend(d);
        }
    }
    assert_eq!(out, b"1\n2\n");
    let data: Vec<u8> = (0..(2 << 20)).map(|i| (i % 253) as u8).collect();
    c.write_file("/data/blob", &data).await.unwrap();
    assert_eq!(c.read_file("/data/blob").await.unwrap(), data);
    let sum = c.exec_shell("sha256sum /data/blob").await.unwrap();
    let local = sha256_hex(&data);
    assert!(sum.decode_stdout().unwrap().starts_with(&local));
    let left = c
        .exec_shell("ls -d /tmp/.atp-exec-* 2>/dev/null | wc -l")
        .await
        .unwrap();
    assert_eq!(left.decode_stdout().unwrap().trim(), "0");

    // A file-write chunk queued behind a read, ten times: qemu-ga over virtio-serial lost
    // the read's reply when the write arrived mid-answer (9 of 10), so large requests go
    // out alone; both replies must arrive, each to its own request.
    let reader = c.file_open("/data/blob", Some("r")).await.unwrap();
    let writer = c.file_open("/data/pipe.bin", Some("w")).await.unwrap();
    let chunk = vec![5u8; 16 << 10];
    for _ in 0..10 {
        let read = c
            .submit(&GuestFileRead {
                handle: reader,
                count: Some(4096),
            })
            .await
            .unwrap();
        let write = c
            .submit(&GuestFileWrite::new(writer, &chunk))
            .await
            .unwrap();
        assert_eq!(read.reply().await.unwrap().count, 4096);
        assert_eq!(write.reply().await.unwrap().count, 16 << 10);
    }
    c.file_close(reader).await.unwrap();
    c.file_close(writer).await.unwrap();

    // What a client that died mid-exec leaves, and what must survive a sweep (busybox sh):
    // also another user's `.atp-exec-*` with a FIFO for `pid`, which must not stall it.
    let setup = c
        .exec_shell(
            "set -e; dead=$(sh -c 'echo $$'); sleep 60 >/dev/null 2>&1 </dev/null & live=$!; mkdir /data/victim; \
             for n in dead nopid live inuse recent; do mkdir /tmp/.atp-exec-$n; : >/tmp/.atp-exec-$n/out; done; \
             echo $dead >/tmp/.atp-exec-dead/pid; echo $live >/tmp/.atp-exec-live/pid; \
             echo $dead >/tmp/.atp-exec-inuse/pid; echo $dead >/tmp/.atp-exec-recent/pid; \
             ln -s /data/victim /tmp/.atp-exec-link; \
             mkdir /tmp/.atp-exec-foreign; mkfifo /tmp/.atp-exec-foreign/pid; chown 65534 /tmp/.atp-exec-foreign; \
             echo $dead",
        )
        .await
        .unwrap();
    assert_eq!(setup.exit_code, Some(0), "{:?}", setup.decode_stderr());
    let dead: i64 = setup.decode_stdout().unwrap().trim().parse().unwrap();
    // A long idle minimum keeps everything: all of it was just written.
    let none = c
        .sweep_exec_dirs(Duration::from_secs(3600), &[])
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let mut removed = c.sweep_exec_dirs(Duration::ZERO, &[dead]).await.unwrap();
    removed.sort();
    // `inuse` and `recent` share the dead pid the caller still uses; `live` still runs.
    assert_eq!(removed, ["/tmp/.atp-exec-nopid"]);
    let mut removed = c.sweep_exec_dirs(Duration::ZERO, &[]).await.unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            "/tmp/.atp-exec-dead",
            "/tmp/.atp-exec-inuse",
            "/tmp/.atp-exec-recent"
        ]
    );
    let left = c
        .exec_shell("ls -d /tmp/.atp-exec-* /data/victim")
        .await
        .unwrap();
    assert_eq!(
        left.decode_stdout().as_deref(),
        Some("/data/victim\n/tmp/.atp-exec-foreign\n/tmp/.atp-exec-link\n/tmp/.atp-exec-live\n")
    );
}

fn sha256_hex(d: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
