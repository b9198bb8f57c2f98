//! Faults over libvirt: the session libvirtd restarted under a ping load, and a ReadFile
//! asking for 64 MiB chunks, which must be clamped and leave the domain's agent healthy.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    GUEST,
    common::{self, drain_exec, ping, sh_request},
    helpers::{bounded, libvirt_guest, read_req},
    libvirtd_process::{RestartedLibvirtd, exited, libvirtd_pid, signal},
};
use ocloudview_atp::{
    libvirt::LibvirtManager,
    pb::{AgentCommandRequest, ListDomainsRequest, exec_event::Event},
    testbed::wait_for_agent,
    transport::libvirt_agent::LibvirtTransport,
};
use sha2::{Digest, Sha256};
use tonic::Code;

/// One ping of the load: when it was sent (since the start), how long it took, and its
/// code (`None`: no answer within 20 s).
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    took: Duration,
    code: Option<Code>,
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libvirtd_restarted_under_load_is_unavailable_then_reconnected() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(200), "libvirtd restart test", async {
        let name = "atp-fault-lvd";
        let domain = "lab/atp-fault-lvd";
        let (session, _dom, d) = libvirt_guest(name).await;
        let mut c = d.client().await;
        c.ping(ping(domain)).await.unwrap();
        let uri = session.uri().to_owned();
        let root: PathBuf = uri
            .split_once("socket=")
            .map(|(_, s)| Path::new(s).ancestors().nth(3).unwrap().to_owned())
            .unwrap();
        let pid = libvirtd_pid(&root);
        // Whatever happens below, the domain's QEMU must not outlive the test.
        let mut restarted = RestartedLibvirtd {
            child: None,
            uri: uri.clone(),
            domain: name.into(),
        };

        // The load: two pingers, and an exec streaming through libvirt.
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut pingers = Vec::new();
        for _ in 0..2 {
            let (mut c, stop) = (c.clone(), Arc::clone(&stop));
            pingers.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let res = tokio::time::timeout(Duration::from_secs(20), c.ping(ping(domain))).await;
                    let (code, message) = match res {
                        Ok(Ok(_)) => (Some(Code::Ok), String::new()),
                        Ok(Err(st)) => (Some(st.code()), st.message().to_owned()),
                        Err(_) => (None, "no answer within 20 s".into()),
                    };
                    samples.push(Sample {
                        at: t - origin,
                        took: t.elapsed(),
                        code,
                        message,
                    });
                    // Pacing, not synchronisation: the load's rate.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                samples
            }));
        }
        let mut s = c
            .exec(sh_request(domain, "sleep 60"))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            s.message().await.unwrap().unwrap().event,
            Some(Event::Started(_))
        ));
        // Not synchronisation (the exec's Started is above): the load runs a while
        // before the outage.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Stop libvirtd the way a service manager does (TERM, then KILL).
        let killed_at = origin.elapsed();
        signal(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while !exited(pid) && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !exited(pid) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        eprintln!("libvirtd {pid} stopped in {:?}", t0.elapsed());
        let exec_end = tokio::time::timeout(Duration::from_secs(15), async {
            let mut n = 0;
            loop {
                match s.message().await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => return (None, n),
                    Err(st) => return (Some(st), n),
                }
            }
        })
        .await;
        let exec_took = origin.elapsed() - killed_at;
        // A few seconds without libvirtd (the outage itself, not synchronisation).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut next = c.clone();
        let t1 = Instant::now();
        let next_res = tokio::time::timeout(Duration::from_secs(15), next.ping(ping(domain))).await;
        let next_took = t1.elapsed();

        // Start libvirtd again on the same state; it finds the running QEMU.
        let restarted_at = origin.elapsed();
        restarted.start(&root);
        let uri2 = uri.clone();
        let back = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            loop {
                let up = LibvirtManager::connect_uri(&uri2)
                    .and_then(|m| m.list_domains())
                    .is_ok_and(|l| l.iter().any(|d| d.name == "atp-fault-lvd" && d.active));
                if up || t0.elapsed() > Duration::from_secs(60) {
                    return up.then(|| t0.elapsed());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .unwrap();
        let back = back.expect("the restarted libvirtd did not list the running domain within 60 s");
        eprintln!("libvirtd restarted; it lists the domain after {back:?}");
        // The agent answers through a new connection to the new libvirtd: from here on,
        // a failure is the daemon's.
        let uri3 = uri.clone();
        let handle = tokio::task::spawn_blocking(move || {
            LibvirtManager::connect_uri(&uri3)?.lookup_domain_by_name("atp-fault-lvd")
        })
        .await
        .unwrap()
        .unwrap();
        let fresh = wait_for_agent(
            LibvirtTransport::new(handle, "atp-fault-lvd"),
            "agent through the restarted libvirtd",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        eprintln!("a fresh libvirt connection reaches the agent after {fresh:?}");
        // The daemon should find its way back without a restart of its own.
        let mut reconnect = None;
        let t2 = Instant::now();
        while t2.elapsed() < Duration::from_secs(30) {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(15), c.ping(ping(domain))).await {
                reconnect = Some(t2.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Diagnostic only: a name the daemon has not resolved before goes through a fresh
        // lookup (which reconnects) unless the registry hands out a cached client.
        let bare = tokio::time::timeout(Duration::from_secs(15), c.ping(ping("atp-fault-lvd"))).await;
        eprintln!("ping by the bare domain name after the restart: {bare:?}");
        let list = tokio::time::timeout(Duration::from_secs(15), c.list_domains(ListDomainsRequest {})).await;
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for p in pingers {
            samples.extend(bounded(Duration::from_secs(25), "pinger", p).await.unwrap());
        }
        samples.sort_by_key(|s| s.at);

        // What the load saw.
        let outage: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at + s.took >= killed_at && s.at < restarted_at)
            .collect();
        let after: Vec<&Sample> = samples.iter().filter(|s| s.at > restarted_at + back).collect();
        let count = |v: &[&Sample], code: Option<Code>| v.iter().filter(|s| s.code == code).count();
        let slowest = outage.iter().map(|s| s.took).max().unwrap_or_default();
        eprintln!(
            "pings while libvirtd was down: {} ({} UNAVAILABLE, {} OK, {} hung), slowest {slowest:?}; first error: {:?}",
            outage.len(),
            count(&outage, Some(Code::Unavailable)),
            count(&outage, Some(Code::Ok)),
            count(&outage, None),
            outage.iter().find(|s| s.code != Some(Code::Ok)).map(|s| (s.code, &s.message)),
        );
        eprintln!(
            "pings after the restart: {} ({} OK); last: {:?}",
            after.len(),
            count(&after, Some(Code::Ok)),
            after.last().map(|s| (s.code, &s.message)),
        );
        eprintln!("in-flight exec after the stop ({exec_took:?}): {exec_end:?}");
        eprintln!("next ping after the stop ({next_took:?}): {next_res:?}");
        eprintln!("daemon ping after the restart: {reconnect:?}; ListDomains: {list:?}");

        let (exec_st, _) = exec_end.expect("the in-flight exec hung for 15 s after libvirtd stopped");
        let exec_st = exec_st.expect("the in-flight exec ended cleanly without libvirtd");
        assert_eq!(exec_st.code(), Code::Unavailable, "{exec_st:?}");
        let next_st = next_res
            .expect("a ping with libvirtd down hung for 15 s")
            .expect_err("a ping succeeded with libvirtd down");
        assert_eq!(next_st.code(), Code::Unavailable, "{next_st:?}");
        assert!(!outage.is_empty());
        for s in &outage {
            assert!(s.code.is_some() && s.took < Duration::from_secs(15), "a ping hung: {s:?}");
            assert!(
                matches!(s.code, Some(Code::Unavailable | Code::Ok)),
                "a ping during the outage failed with {s:?}"
            );
        }
        let up = reconnect.unwrap_or_else(|| {
            panic!(
                "the daemon did not reconnect within 30 s of libvirtd coming back; last ping: {:?}",
                samples.last()
            )
        });
        eprintln!("daemon answered {up:?} after libvirtd was back");
        let list = list.expect("ListDomains hung").expect("ListDomains failed after the restart");
        assert!(
            list.get_ref().domains.iter().any(|d| d.name == domain && d.agent_connected),
            "{list:?}"
        );
        drop(restarted);
        drop(session);
    })
    .await;
}

#[tokio::test]
async fn oversized_read_chunks_are_clamped_over_libvirt_and_the_agent_stays_healthy() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(180), "oversized reply test", async {
        let (_session, _dom, d) = libvirt_guest("atp-fault-big").await;
        let mut c = d.client().await;
        let domain = "lab/atp-fault-big";
        let path = "/data/big12.bin";
        let size = 12 << 20;
        let o = bounded(Duration::from_secs(60), "making the guest file", async {
            drain_exec(
                c.exec(sh_request(
                    domain,
                    &format!("head -c {size} /dev/urandom > {path} && sha256sum {path}"),
                ))
                .await
                .unwrap()
                .into_inner(),
            )
            .await
        })
        .await;
        assert_eq!(o.exited.and_then(|x| x.exit_code), Some(0), "{o:?}");
        let guest_sum = String::from_utf8(o.stdout).unwrap();
        let guest_sum = guest_sum.split_whitespace().next().unwrap().to_owned();

        let t0 = Instant::now();
        let mut s = c
            .read_file(read_req(domain, path, 64 << 20))
            .await
            .unwrap()
            .into_inner();
        let (mut data, mut largest_chunk, mut chunks) = (Vec::new(), 0, 0);
        let last = bounded(Duration::from_secs(90), "12 MiB over libvirt", async {
            loop {
                let chunk = s.message().await.unwrap().unwrap();
                largest_chunk = largest_chunk.max(chunk.data.len());
                chunks += 1;
                data.extend_from_slice(&chunk.data);
                if chunk.eof {
                    break chunk;
                }
            }
        })
        .await;
        let took = t0.elapsed();
        eprintln!(
            "12 MiB with chunk_size 64 MiB over libvirt: {chunks} messages, largest {largest_chunk} bytes, {:.1} MiB/s",
            12.0 / took.as_secs_f64()
        );
        assert!(largest_chunk <= 2 << 20, "a chunk of {largest_chunk} bytes");
        assert_eq!((data.len(), last.total_bytes), (size, size as u64));
        let ours: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        let theirs: String = last.sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!((ours.as_str(), theirs.as_str()), (guest_sum.as_str(), guest_sum.as_str()));
        // The domain's agent channel is fine afterwards.
        for _ in 0..3 {
            bounded(Duration::from_secs(15), "ping after the read", c.ping(ping(domain)))
                .await
                .unwrap();
        }

        // The raw passthrough cannot ask for a big reply: guest-file-read is refused.
        let st = c
            .agent_command(AgentCommandRequest {
                domain: domain.into(),
                command: "guest-file-read".into(),
                arguments_json: r#"{"handle":1000,"count":50331648}"#.into(),
                timeout_ms: 0,
            })
            .await
            .unwrap_err();
        eprintln!("AgentCommand guest-file-read: {:?} {}", st.code(), st.message());
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        let r = c
            .agent_command(AgentCommandRequest {
                domain: domain.into(),
                command: "guest-ping".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.return_json, "{}");
    })
    .await;
}
