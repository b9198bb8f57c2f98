//! Guest faults: a TCG guest reset under a streaming Exec and a terminal session (both
//! streams end with an error; both work again after the reboot), and 1,000 random client
//! cancellations against a guest's agent socket without one misrouted reply.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    GUEST,
    common::{self, Daemon, drain_exec, ping, sh_request},
    helpers::{Client, XorShift, bounded, libvirt_guest, read_req, read_to_end, stream_error},
};
use ocloudview_atp::{
    pb::{GetAgentInfoRequest, GetOsInfoRequest, exec_event::Event},
    testbed::{BootOptions, QemuGuest},
};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

/// Pings `domain` until it answers; returns how long that took.
async fn ping_until_up(c: &mut Client, domain: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < limit {
        match tokio::time::timeout(Duration::from_secs(15), c.ping(ping(domain))).await {
            Ok(Ok(_)) => return t0.elapsed(),
            Ok(Err(st)) => last = Some(format!("{:?}: {}", st.code(), st.message())),
            Err(_) => last = Some("a ping hung for 15 s".into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{domain} did not answer within {limit:?}; last: {last:?}");
}

#[tokio::test]
async fn guest_reset_mid_exec_ends_the_stream_and_a_new_exec_works_after_boot() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(240), "reset test", async {
        let (_session, dom, d) = libvirt_guest("atp-fault-rb").await;
        let mut c = d.client().await;
        let domain = "lab/atp-fault-rb";
        let mut s = c
            .exec(sh_request(domain, "echo started; sleep 60"))
            .await
            .unwrap()
            .into_inner();
        match s.message().await.unwrap().unwrap().event.unwrap() {
            Event::Started(_) => {}
            other => panic!("expected Started, got {other:?}"),
        }
        // Output flowing proves the stream is live before the reset.
        match bounded(Duration::from_secs(10), "first output", s.message())
            .await
            .unwrap()
            .unwrap()
            .event
            .unwrap()
        {
            Event::Stdout(d) => assert_eq!(d, b"started\n"),
            other => panic!("expected stdout, got {other:?}"),
        }
        // A terminal session too, with a shell waiting for input.
        let (tty_tx, mut tty) = tty_session(&d, domain).await;
        // A hard reset (QMP system_reset through libvirt), as a crash-reboot would.
        let handle = dom.domain().clone();
        let t0 = Instant::now();
        tokio::task::spawn_blocking(move || handle.reset())
            .await
            .unwrap()
            .unwrap();
        let (st, more) =
            stream_error(&mut s, Duration::from_secs(60), "Exec after the reset").await;
        let took = t0.elapsed();
        eprintln!(
            "reset mid-exec: stream ended {took:?} later ({more} messages first) with {:?}: {}",
            st.code(),
            st.message()
        );
        assert_ne!(st.code(), Code::Ok);
        if !matches!(
            st.code(),
            Code::Unavailable | Code::Aborted | Code::NotFound
        ) {
            eprintln!(
                "NOTE: unexpected code {:?} for an exec lost to a reboot",
                st.code()
            );
        }
        let (st, _) = stream_error(
            &mut tty,
            Duration::from_secs(60),
            "terminal after the reset",
        )
        .await;
        eprintln!(
            "reset mid-session: the terminal's stream ended with {:?}: {}",
            st.code(),
            st.message()
        );
        assert_ne!(st.code(), Code::Ok);
        drop(tty_tx);
        let up = ping_until_up(&mut c, domain, Duration::from_secs(120)).await;
        eprintln!("agent answers again {up:?} after the stream ended");
        // The next terminal session works.
        let (tty_tx, tty) = tty_session(&d, domain).await;
        tty_tx
            .send(ocloudview_atp::pb::ExecInput {
                msg: Some(ocloudview_atp::pb::exec_input::Msg::Stdin(
                    b"echo tty-$((40+2)); exit\n".to_vec(),
                )),
            })
            .await
            .unwrap();
        let o = bounded(
            Duration::from_secs(60),
            "terminal after the reboot",
            drain_exec(tty),
        )
        .await;
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("tty-42"),
            "{o:?}"
        );
        assert_eq!(o.exited.and_then(|x| x.exit_code), Some(0));
        drop(tty_tx);
        let o = bounded(Duration::from_secs(30), "exec after the reboot", async {
            drain_exec(
                c.exec(sh_request(domain, "echo back"))
                    .await
                    .unwrap()
                    .into_inner(),
            )
            .await
        })
        .await;
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(o.stdout, b"back\n");
        assert_eq!(o.exited.and_then(|x| x.exit_code), Some(0));
    })
    .await;
}

/// A shell on a terminal in `domain` (ExecInteractive with tty), after its Started event.
async fn tty_session(
    d: &Daemon,
    domain: &str,
) -> (
    tokio::sync::mpsc::Sender<ocloudview_atp::pb::ExecInput>,
    tonic::Streaming<ocloudview_atp::pb::ExecEvent>,
) {
    use ocloudview_atp::pb::{Argv, ExecInput, ExecRequest, exec_input::Msg, exec_request};
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = ExecRequest {
        domain: domain.into(),
        command: Some(exec_request::Command::Argv(Argv {
            path: "/bin/sh".into(),
            args: vec![],
        })),
        tty: true,
        ..Default::default()
    };
    tx.send(ExecInput {
        msg: Some(Msg::Start(start)),
    })
    .await
    .unwrap();
    let mut c = d.client().await;
    let mut s = c
        .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match s.message().await.unwrap().unwrap().event.unwrap() {
        Event::Started(_) => {}
        other => panic!("expected Started, got {other:?}"),
    }
    (tx, s)
}

/// One request of kind `kind`; `Err` describes an error status or a reply that belongs
/// to another request.
async fn one_call(c: &mut Client, domain: &str, kind: u64) -> Result<(), String> {
    let err = |what: &str, st: Status| format!("{what}: {:?} {}", st.code(), st.message());
    match kind {
        0 => c
            .ping(ping(domain))
            .await
            .map(drop)
            .map_err(|st| err("Ping", st)),
        1 => {
            let r = c
                .get_os_info(GetOsInfoRequest {
                    domain: domain.into(),
                })
                .await
                .map_err(|st| err("GetOsInfo", st))?
                .into_inner();
            if r.id == "debian" && !r.kernel_release.is_empty() {
                Ok(())
            } else {
                Err(format!("GetOsInfo answered {r:?}"))
            }
        }
        2 => {
            let r = c
                .get_agent_info(GetAgentInfoRequest {
                    domain: domain.into(),
                })
                .await
                .map_err(|st| err("GetAgentInfo", st))?
                .into_inner();
            if !r.version.is_empty() && r.supported_commands.iter().any(|c| c.name == "guest-ping")
            {
                Ok(())
            } else {
                Err(format!(
                    "GetAgentInfo answered version {:?} with {} commands",
                    r.version,
                    r.supported_commands.len()
                ))
            }
        }
        _ => {
            let (data, last) = read_to_end(c, read_req(domain, "/etc/hostname", 0))
                .await
                .map_err(|st| err("ReadFile", st))?;
            let want = b"qga-debian\n";
            if data == want
                && last.total_bytes == 11
                && last.sha256 == Sha256::digest(want).to_vec()
            {
                Ok(())
            } else {
                Err(format!(
                    "ReadFile /etc/hostname gave {:?} ({last:?})",
                    String::from_utf8_lossy(&data)
                ))
            }
        }
    }
}

/// Open descriptors of the guest's agent on `port`, counted in the guest.
async fn guest_agent_fds(c: &mut Client, domain: &str, port: &str) -> usize {
    let o = bounded(Duration::from_secs(20), "counting the agent's fds", async {
        drain_exec(
            c.exec(sh_request(
                domain,
                // The exec's own output files are open in the agent while this runs
                // (or not yet): they are left out, or the count would race with them.
                &format!(
                    "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' <$p/cmdline)\" in \
                     'qemu-ga '*'/{port} '*) for f in $p/fd/*; do readlink $f; done \
                     | grep -vc '/.atp-exec-' ;; esac; done 2>/dev/null"
                ),
            ))
            .await
            .unwrap()
            .into_inner(),
        )
        .await
    })
    .await;
    let n = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        n > 0,
        "cannot count the agent's fds: {o:?} stderr {}",
        String::from_utf8_lossy(&o.stderr)
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_cancellations_misroute_no_reply() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(180), "cancellation test", async {
        let image = common::image().await;
        let guest = QemuGuest::boot(&image, BootOptions::default()).await.unwrap();
        eprintln!("guest agent up after {:?}", guest.boot_time());
        let d = Daemon::start(
            &[],
            &format!(
                // No background sweep: its helper process would add to the fd counts.
                "[[guests]]\nname = \"g\"\nsocket = \"{}\"\n\n[agent]\nsweep_exec_dirs_after_s = 0\n",
                guest.agent_socket().display()
            ),
        )
        .await;
        let mut c = d.client().await;
        // Warm up, and learn how long each kind takes when left alone.
        let mut latency = [Duration::ZERO; 4];
        for kind in 0..4 {
            one_call(&mut c, "g", kind).await.unwrap();
            let t = Instant::now();
            one_call(&mut c, "g", kind).await.unwrap();
            latency[kind as usize] = t.elapsed();
        }
        eprintln!("alone: Ping {:?}, GetOsInfo {:?}, GetAgentInfo {:?}, ReadFile {:?}", latency[0], latency[1], latency[2], latency[3]);
        // Deadlines are 0-20 ms. A ReadFile is six agent calls, each queued behind the
        // other calls in flight: with 0-20 ms none would ever finish and have its reply
        // checked, so its range is ten times its time alone.
        let read_ms = u64::try_from(10 * latency[3].as_millis()).unwrap().max(20);
        let max_ms = [20, 20, 20, read_ms];
        let port = "org.qemu.guest_agent.0";
        let fds = guest_agent_fds(&mut c, "g", port).await;

        let seed = std::env::var("ATP_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
        eprintln!(
            "cancellation seed {seed} (ATP_FAULT_SEED={seed} repeats it); deadlines 0-{max_ms:?} ms"
        );
        let mut rng = XorShift(seed | 1);
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tally = [[0usize; 2]; 4]; // per kind: [completed, cancelled]
        // 1000 calls; on a loaded host too few may complete within 0-20 ms to check any
        // routing, so (bounded) rounds of 250 more follow with deadlines twice as long
        // until both kinds of ending are common enough to mean something.
        let mut scale = 1;
        let mut calls = 1000;
        for round in 0..4 {
            let t0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..calls {
                while set.len() >= 8 {
                    let (kind, done): (usize, bool) = set.join_next().await.unwrap().unwrap();
                    tally[kind][usize::from(!done)] += 1;
                }
                let kind = rng.next() % 4;
                let deadline =
                    Duration::from_millis(rng.next() % (scale * max_ms[kind as usize] + 1));
                let (mut c, failures) = (c.clone(), Arc::clone(&failures));
                set.spawn(async move {
                    match tokio::time::timeout(deadline, one_call(&mut c, "g", kind)).await {
                        Ok(Ok(())) => (kind as usize, true),
                        Ok(Err(e)) => {
                            failures.lock().unwrap().push(e);
                            (kind as usize, true)
                        }
                        Err(_) => (kind as usize, false),
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                let (kind, done) = r.unwrap();
                tally[kind][usize::from(!done)] += 1;
            }
            let completed: usize = tally.iter().map(|t| t[0]).sum();
            let cancelled: usize = tally.iter().map(|t| t[1]).sum();
            eprintln!(
                "round {round} ({calls} calls, deadlines x{scale}) in {:?}: {completed} completed, \
                 {cancelled} cancelled so far (Ping {:?}, GetOsInfo {:?}, GetAgentInfo {:?}, \
                 ReadFile {:?} as [completed, cancelled])",
                t0.elapsed(),
                tally[0],
                tally[1],
                tally[2],
                tally[3]
            );
            if completed >= 50 && cancelled >= 100 {
                break;
            }
            scale *= 2;
            calls = 250;
        }
        let completed: usize = tally.iter().map(|t| t[0]).sum();
        let cancelled: usize = tally.iter().map(|t| t[1]).sum();
        let failures = std::mem::take(&mut *failures.lock().unwrap());
        assert!(failures.is_empty(), "{} bad replies: {failures:#?}", failures.len());
        assert!(cancelled >= 100, "too few cancellations to mean anything: {cancelled}");
        assert!(completed >= 50, "too few completions to check routing: {completed}");

        for i in 0..20 {
            bounded(Duration::from_secs(10), "a call after the storm", one_call(&mut c, "g", i % 4))
                .await
                .unwrap();
        }
        // Cancelled reads closed their guest handles.
        let mut now = guest_agent_fds(&mut c, "g", port).await;
        for _ in 0..20 {
            if now <= fds {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            now = guest_agent_fds(&mut c, "g", port).await;
        }
        eprintln!("guest agent fds: {fds} before, {now} after");
        assert!(now <= fds, "guest agent handles leaked: {fds} before, {now} after");
        drop(guest);
    })
    .await;
}
