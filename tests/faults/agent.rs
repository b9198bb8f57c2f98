//! A host qemu-ga killed in the middle of a ReadFile, a WriteFile and an Exec, then
//! replaced on the same socket while the daemon keeps running.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    common::{self, daemon_for, drain_exec, fd_targets, ping, sh_request},
    helpers::{Client, argv, bounded, fd_count, read_req, read_to_end, stream_error},
    respawned::Respawned,
};
use ocloudview_atp::{
    pb::{WriteFileHeader, WriteFileRequest, exec_event::Event, write_file_request::Msg},
    testbed::HostAgent,
};
use tonic::Code;

/// `[agent] timeout_ms` of the host-agent tests.
const AGENT_TIMEOUT: Duration = Duration::from_millis(2000);

/// Size of the largest file in `dir` whose name starts with `prefix`.
fn largest(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        // An upload's staging directory holds its data in `data`.
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            if m.is_dir() {
                std::fs::metadata(e.path().join("data"))
                    .ok()
                    .map(|m| m.len())
            } else {
                Some(m.len())
            }
        })
        .max()
        .unwrap_or(0)
}

/// After an agent came back: Ping and a small ReadFile work through the same daemon.
async fn works_again(c: &mut Client, small: &Path) {
    bounded(
        Duration::from_secs(10),
        "requests after the restart",
        async {
            c.ping(ping("host")).await.unwrap();
            let (data, _) = read_to_end(c, read_req("host", &small.display().to_string(), 0))
                .await
                .unwrap();
            assert_eq!(data, b"still here\n");
        },
    )
    .await;
}

/// Kills a process the killed agent left behind (found by pid, checked by name).
fn kill_orphan(pid: i64, comm: &str) {
    let seen = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if seen.trim() == comm
        && let Ok(pid) = i32::try_from(pid)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn agent_killed_mid_read_write_and_exec_is_unavailable_then_replaced_without_daemon_restart()
{
    common::init_logging();
    bounded(Duration::from_secs(90), "agent kill test", async {
        let mut agent = HostAgent::start().unwrap();
        let socket = agent.socket().to_owned();
        // No background sweep of exec directories: it would talk to the agents this test
        // swaps under the daemon, and a host qemu-ga serves one connection at a time.
        let d = daemon_for(
            &agent,
            "\n[agent]\ntimeout_ms = 2000\nsweep_exec_dirs_after_s = 0\n",
        )
        .await;
        let mut c = d.client().await;
        let big = agent.dir().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let small = agent.dir().join("small.txt");
        std::fs::write(&small, "still here\n").unwrap();
        c.ping(ping("host")).await.unwrap();

        // 1. Killed in the middle of a 64 MiB ReadFile.
        let mut s = c
            .read_file(read_req("host", &big.display().to_string(), 1 << 20))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..2 {
            let chunk = s.message().await.unwrap().unwrap();
            assert!(!chunk.eof);
        }
        let t0 = Instant::now();
        agent.kill();
        let (st, more) =
            stream_error(&mut s, Duration::from_secs(10), "ReadFile after the kill").await;
        let took = t0.elapsed();
        eprintln!(
            "mid-ReadFile kill: {more} buffered chunks, then {:?} after {took:?}: {}",
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(took < AGENT_TIMEOUT, "UNAVAILABLE took {took:?}");
        let t0 = Instant::now();
        let mut a1 = Respawned::start(&socket).await;
        works_again(&mut c, &small).await;
        eprintln!(
            "agent replaced; requests work again {:?} after its start",
            t0.elapsed()
        );

        // 2. Killed while a WriteFile streams.
        let target = agent.dir().join("w.bin");
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteFileRequest>(4);
        tx.send(WriteFileRequest {
            msg: Some(Msg::Header(WriteFileHeader {
                domain: "host".into(),
                path: target.display().to_string(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let producer = tokio::spawn(async move {
            let block = vec![0x5a_u8; 1 << 20];
            for _ in 0..256 {
                let msg = WriteFileRequest {
                    msg: Some(Msg::Data(block.clone())),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        let mut cw = c.clone();
        let mut upload = tokio::spawn(async move {
            cw.write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        let dir = agent.dir().to_owned();
        bounded(Duration::from_secs(10), "upload under way", async {
            while largest(&dir, ".atp-") < 4 << 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let t0 = Instant::now();
        a1.kill();
        let res = bounded(
            Duration::from_secs(10),
            "WriteFile after the kill",
            &mut upload,
        )
        .await
        .unwrap();
        let took = t0.elapsed();
        producer.abort();
        let st = res.expect_err("the upload succeeded although its agent was killed");
        eprintln!(
            "mid-WriteFile kill ({} MiB written): {:?} after {took:?}: {}",
            largest(&dir, ".atp-") >> 20,
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(took < AGENT_TIMEOUT, "UNAVAILABLE took {took:?}");
        assert!(!target.exists(), "a failed upload replaced its target");
        let mut a2 = Respawned::start(&socket).await;
        works_again(&mut c, &small).await;

        // 3. Killed under a running Exec.
        let mut s = c
            .exec(argv("host", "sleep", &["30"]))
            .await
            .unwrap()
            .into_inner();
        let pid = match s.message().await.unwrap().unwrap().event.unwrap() {
            Event::Started(st) => st.pid,
            other => panic!("expected Started, got {other:?}"),
        };
        let exec_dir = fd_targets(a2.pid())
            .into_iter()
            .find(|t| t.contains("/.atp-exec-"))
            .and_then(|t| Some(Path::new(&t).parent()?.to_owned()));
        let t0 = Instant::now();
        a2.kill();
        let rest = bounded(
            Duration::from_secs(10),
            "Exec after the kill",
            drain_exec(s),
        )
        .await;
        let took = t0.elapsed();
        // What the dead agent cannot clean up: its orphaned program and exec directory.
        kill_orphan(pid, "sleep");
        if let Some(dir) = &exec_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        assert!(rest.exited.is_none(), "{rest:?}");
        let st = rest.error.expect("the exec stream ended without a status");
        eprintln!(
            "mid-Exec kill: {:?} after {took:?}: {}",
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(took < AGENT_TIMEOUT, "UNAVAILABLE took {took:?}");

        // The last replacement: it works, and it is left with no handle open.
        let a3 = Respawned::start(&socket).await;
        works_again(&mut c, &small).await;
        let baseline = fd_count(a3.pid());
        for _ in 0..3 {
            works_again(&mut c, &small).await;
            let (data, last) = read_to_end(&mut c, read_req("host", &big.display().to_string(), 0))
                .await
                .unwrap();
            assert_eq!((data.len(), last.total_bytes), (64 << 20, 64 << 20));
            let o = bounded(Duration::from_secs(10), "exec on the new agent", async {
                drain_exec(
                    c.exec(sh_request("host", "echo ok"))
                        .await
                        .unwrap()
                        .into_inner(),
                )
                .await
            })
            .await;
            assert_eq!(
                (o.stdout.as_slice(), o.exited.and_then(|x| x.exit_code)),
                (&b"ok\n"[..], Some(0))
            );
        }
        common::eventually(
            || fd_count(a3.pid()) <= baseline,
            "the new agent back at its baseline of open files",
        )
        .await;
        eprintln!(
            "new agent: {} open files, baseline {baseline}",
            fd_count(a3.pid())
        );
        drop(a3);
    })
    .await;
}
