//! ReadFile / WriteFile through the daemon against a real host agent: 64 MiB round
//! trips with equal hashes, ranges, write modes, atomic writes refusing a bad checksum,
//! no handle left open by a client that cancels, and a Ping that is not starved by a
//! transfer.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use common::daemon_for;
use ocloudview_atp::{
    pb::{
        FileChunk, PingRequest, ReadFileRequest, WriteFileHeader, WriteFileRequest, WriteMode,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tonic::{Code, transport::Channel};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn read_all(c: &mut GuestAgentClient<Channel>, r: ReadFileRequest) -> (Vec<u8>, FileChunk) {
    let mut s = c.read_file(r).await.unwrap().into_inner();
    let mut data = Vec::new();
    loop {
        let chunk = s.message().await.unwrap().unwrap();
        assert_eq!(
            chunk.offset as usize,
            data.len() + chunk.offset as usize - data.len()
        );
        data.extend_from_slice(&chunk.data);
        if chunk.eof {
            assert!(s.message().await.unwrap().is_none());
            return (data, chunk);
        }
    }
}

fn write_stream(
    header: WriteFileHeader,
    data: Vec<u8>,
    msg: usize,
) -> impl tokio_stream::Stream<Item = WriteFileRequest> {
    let mut msgs = vec![WriteFileRequest {
        msg: Some(Msg::Header(header)),
    }];
    msgs.extend(data.chunks(msg).map(|c| WriteFileRequest {
        msg: Some(Msg::Data(c.to_vec())),
    }));
    tokio_stream::iter(msgs)
}

fn header(path: &std::path::Path) -> WriteFileHeader {
    WriteFileHeader {
        domain: "host".into(),
        path: path.display().to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn sixty_four_mib_round_trip_with_equal_hashes() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let data = pattern(64 << 20, 7);
    let digest = Sha256::digest(&data).to_vec();

    let up = agent.dir().join("up.bin");
    let mut h = header(&up);
    h.expected_sha256 = digest.clone();
    let t0 = Instant::now();
    let resp = c
        .write_file(write_stream(h, data.clone(), 1 << 20))
        .await
        .unwrap()
        .into_inner();
    eprintln!(
        "WriteFile 64 MiB: {:.1} MiB/s",
        64.0 / t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        (resp.bytes_written, resp.sha256.clone()),
        (64 << 20, digest.clone())
    );
    assert_eq!(Sha256::digest(std::fs::read(&up).unwrap()).to_vec(), digest);

    let t0 = Instant::now();
    let (back, last) = read_all(
        &mut c,
        ReadFileRequest {
            domain: "host".into(),
            path: up.display().to_string(),
            ..Default::default()
        },
    )
    .await;
    eprintln!(
        "ReadFile 64 MiB: {:.1} MiB/s",
        64.0 / t0.elapsed().as_secs_f64()
    );
    assert_eq!((last.total_bytes, last.sha256), (64 << 20, digest));
    assert!(back == data);

    // A range.
    let (part, last) = read_all(
        &mut c,
        ReadFileRequest {
            domain: "host".into(),
            path: up.display().to_string(),
            offset: 1000,
            length: 5000,
            chunk_size: 777,
        },
    )
    .await;
    assert_eq!(part, &data[1000..6000]);
    assert_eq!(last.sha256, Sha256::digest(&data[1000..6000]).to_vec());
    let st = c
        .read_file(ReadFileRequest {
            domain: "host".into(),
            path: up.display().to_string(),
            offset: u64::MAX,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    let st = c
        .read_file(ReadFileRequest {
            domain: "host".into(),
            path: "relative".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    // The other OS's form is refused: this guest would open `C:\x` relative to its cwd.
    for (path, says) in [
        ("C:\\x", "drive-letter paths are for Windows guests"),
        ("\\\\server\\share", "UNC and device paths"),
    ] {
        let st = c
            .read_file(ReadFileRequest {
                domain: "host".into(),
                path: path.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{path}");
        assert!(st.message().contains(says), "{path}: {}", st.message());
    }
    let missing = ReadFileRequest {
        domain: "host".into(),
        path: "/nonexistent/x".into(),
        ..Default::default()
    };
    assert_eq!(
        c.read_file(missing).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn write_modes_permissions_and_checksum_refusal() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let path = agent.dir().join("conf");
    std::fs::write(&path, "original\n").unwrap();

    // A checksum mismatch is refused and the target is untouched (no temp file left).
    let mut h = header(&path);
    h.expected_sha256 = vec![0; 32];
    let st = c
        .write_file(write_stream(h, b"new content\n".to_vec(), 4))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("checksum mismatch"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "original\n");
    let leftovers: Vec<_> = std::fs::read_dir(agent.dir())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.contains(".atp-").then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let mut h = header(&path);
    h.mode = WriteMode::Exclusive as i32;
    assert_eq!(
        c.write_file(write_stream(h, b"x".to_vec(), 1))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    let mut h = header(&agent.dir().join("absent"));
    h.mode = WriteMode::Truncate as i32;
    assert_eq!(
        c.write_file(write_stream(h, b"x".to_vec(), 1))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let mut h = header(&path);
    h.mode = WriteMode::Append as i32;
    c.write_file(write_stream(h, b"more\n".to_vec(), 2))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "original\nmore\n");

    let fresh = agent.dir().join("fresh.sh");
    let mut h = header(&fresh);
    h.mode = WriteMode::Exclusive as i32;
    h.permissions = Some(0o750);
    c.write_file(write_stream(h, b"#!/bin/sh\n".to_vec(), 3))
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777,
        0o750
    );

    // The header must come first.
    let bad = tokio_stream::iter(vec![WriteFileRequest {
        msg: Some(Msg::Data(b"x".to_vec())),
    }]);
    assert_eq!(
        c.write_file(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn cancelled_transfers_leave_no_handle_open() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;
    c.ping(PingRequest {
        domain: "host".into(),
    })
    .await
    .unwrap();
    let baseline = agent.open_files().unwrap();
    let big = agent.dir().join("big.bin");
    std::fs::write(&big, pattern(16 << 20, 3)).unwrap();
    for _ in 0..5 {
        let mut s = c
            .read_file(ReadFileRequest {
                domain: "host".into(),
                path: big.display().to_string(),
                chunk_size: 65536,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let _ = s.message().await.unwrap().unwrap();
        drop(s);
    }
    // A writer that dies halfway: its whole process (here: its own runtime and
    // connection) goes away without ending the upload.
    let socket = d.socket.clone();
    let half = agent.dir().join("half");
    let hdr = header(&half);
    let agent_pid = agent.pid().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut c = common::grpc_client(&socket).await;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(WriteFileRequest {
                msg: Some(Msg::Header(hdr)),
            })
            .await
            .unwrap();
            tx.send(WriteFileRequest {
                msg: Some(Msg::Data(vec![1; 100_000])),
            })
            .await
            .unwrap();
            let call = tokio::spawn(async move {
                c.write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            });
            // Abandon it only once the agent holds the staged file open: the checks
            // below then prove a cleanup, not an upload that never began.
            common::eventually(
                || {
                    common::fd_targets(agent_pid)
                        .iter()
                        .any(|t| t.contains("/.atp-"))
                },
                "the upload's staged file is open in the agent",
            )
            .await;
            std::mem::forget(tx); // never ends the stream
            drop(call);
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    common::eventually(
        || agent.open_files().unwrap() == baseline,
        "agent handles back to baseline",
    )
    .await;
    common::eventually(
        || {
            std::fs::read_dir(agent.dir())
                .unwrap()
                .all(|e| !e.unwrap().file_name().to_string_lossy().contains(".atp-"))
        },
        "temp file of the abandoned write removed",
    )
    .await;
    assert!(
        !half.exists(),
        "an unfinished upload must not create the target"
    );
}

#[tokio::test]
async fn ping_is_not_starved_by_a_transfer_and_guests_do_not_wait_on_each_other() {
    let busy = HostAgent::start().unwrap();
    let idle = HostAgent::start().unwrap();
    let d = common::Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"busy\"\nsocket = \"{}\"\n[[guests]]\nname = \"idle\"\nsocket = \"{}\"\n",
            busy.socket().display(),
            idle.socket().display()
        ),
    )
    .await;
    let mut c = d.client().await;
    let big = busy.dir().join("big.bin");
    std::fs::write(&big, pattern(64 << 20, 9)).unwrap();
    let mut reader = c.clone();
    let path = big.display().to_string();
    let (under_way, first_chunk) = tokio::sync::oneshot::channel();
    let transfer = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut s = reader
            .read_file(ReadFileRequest {
                domain: "busy".into(),
                path,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut chunks = 0u32;
        let mut under_way = Some(under_way);
        while let Some(ch) = s.message().await.unwrap() {
            if ch.eof {
                break;
            }
            chunks += 1;
            if let Some(tx) = under_way.take() {
                let _ = tx.send(());
            }
        }
        (t0.elapsed(), chunks)
    });
    tokio::time::timeout(Duration::from_secs(10), first_chunk)
        .await
        .expect("the transfer's first chunk within 10 s")
        .unwrap();
    let mut same = Vec::new();
    let mut other = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        c.ping(PingRequest {
            domain: "busy".into(),
        })
        .await
        .unwrap();
        same.push(t.elapsed());
        let t = Instant::now();
        c.ping(PingRequest {
            domain: "idle".into(),
        })
        .await
        .unwrap();
        other.push(t.elapsed());
        // Pacing, not synchronisation: spreads the pings over the transfer.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (total, chunks) = transfer.await.unwrap();
    let per_chunk = total / chunks.max(1);
    let worst_same = *same.iter().max().unwrap();
    let worst_other = *other.iter().max().unwrap();
    eprintln!(
        "64 MiB read in {total:?} ({chunks} chunks, {per_chunk:?} each); ping same guest worst {worst_same:?}, other guest worst {worst_other:?}"
    );
    assert!(
        worst_same < per_chunk * 3 + Duration::from_millis(100),
        "same-guest ping {worst_same:?} vs chunk {per_chunk:?}"
    );
    assert!(
        worst_other < Duration::from_millis(100),
        "other guest waited {worst_other:?}"
    );
}
