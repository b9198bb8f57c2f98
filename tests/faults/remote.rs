//! A remote hypervisor through libvirt's real remote transport: a second session libvirtd
//! reached as `qemu+ssh://` through an sshd on 127.0.0.1 (throwaway host and client keys,
//! host key verified), serving one TCG guest. The remote libvirtd is killed (SIGKILL) in
//! the middle of a ReadFile, and the ssh session hung (SIGSTOP) in the middle of a
//! streaming Exec: each in-flight call ends with UNAVAILABLE / HYPERVISOR_UNAVAILABLE
//! within the keepalive window, and the daemon reconnects (a new ssh session) and serves
//! Ping and Exec again without a restart. The reconnect times are printed.

use std::time::{Duration, Instant};

use crate::{
    GUEST,
    common::{self, Daemon, ping, run_sh, sh_request},
    helpers::{Client, bounded, read_req, stream_error},
    libvirtd_process::{RestartedLibvirtd, exited, libvirtd_pid, signal},
};
use nix::sys::signal::Signal;
use ocloudview_atp::{
    pb::exec_event::Event,
    testbed::{Flavour, LibvirtSession, SshServer},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const NAME: &str = "atp-fault-remote";
const DOMAIN: &str = "remote/atp-fault-remote";
/// Keepalive: a probe after 1 s of silence, the connection closed after 2 unanswered.
const INTERVAL_S: u64 = 1;
const COUNT: u64 = 2;
/// The longest an in-flight call may take to fail: interval × (count + 1) + slack for
/// a loaded 2-core machine. The agent timeout is 60 s, so only keepalive or the closed
/// connection can end a call this soon.
const WINDOW: Duration = Duration::from_secs(INTERVAL_S * (COUNT + 1) + 5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_libvirtd_over_ssh_killed_or_hung_is_unavailable_then_reconnected() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(300), "remote libvirtd test", async {
        let image = common::image().await;
        let session = LibvirtSession::start().await.unwrap();
        let _dom = session
            .create_domain(NAME, &image, Flavour::Debian)
            .await
            .unwrap();
        let local_uri = session.uri().to_owned();
        let root = local_uri
            .split_once("socket=")
            .map(|(_, s)| {
                std::path::Path::new(s)
                    .ancestors()
                    .nth(3)
                    .unwrap()
                    .to_owned()
            })
            .unwrap();
        // Declared after the session, so dropped first: whatever happens, the restarted
        // libvirtd destroys the domain and stops.
        let mut restarted = RestartedLibvirtd {
            child: None,
            uri: local_uri.clone(),
            domain: NAME.into(),
        };
        let sshd = SshServer::start().await.unwrap();
        let uri = sshd.libvirt_uri(&local_uri);
        eprintln!("remote URI: {uri}");
        let d = Daemon::start(
            &[],
            &format!(
                "[agent]\ntimeout_ms = 60000\n\n[[hypervisors]]\nname = \"remote\"\n\
                 uri = \"{uri}\"\nkeepalive_interval_s = {INTERVAL_S}\nkeepalive_count = {COUNT}\n"
            ),
        )
        .await;
        let mut c = d.client().await;
        let t = Instant::now();
        c.ping(ping(DOMAIN)).await.unwrap();
        eprintln!(
            "first ping through ssh (connect included): {:?}",
            t.elapsed()
        );
        let relay: Vec<String> = sshd
            .session_pids()
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_owned())
            .collect();
        eprintln!("ssh session processes: {relay:?}");
        assert!(
            relay.iter().any(|c| c == "virt-ssh-helper" || c == "nc"),
            "the daemon reached the guest without an ssh session relaying to libvirtd: {relay:?} {}",
            sshd.log()
        );
        let made = run_sh(
            &mut c,
            DOMAIN,
            "dd if=/dev/urandom of=/tmp/big bs=1M count=6 2>/dev/null && echo ok",
        )
        .await;
        assert_eq!(made.stdout, b"ok\n", "{made:?}");

        // 1. The remote libvirtd dies (SIGKILL) while a 6 MiB ReadFile is in flight.
        let lvd = libvirtd_pid(&root);
        let mut s = c
            .read_file(read_req(DOMAIN, "/tmp/big", 64 << 10))
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        assert!(!first.eof, "the whole file came in one chunk");
        signal(lvd, Signal::SIGKILL);
        let t = Instant::now();
        let (st, n) = stream_error(&mut s, Duration::from_secs(30), "ReadFile").await;
        let took = t.elapsed();
        eprintln!(
            "ReadFile, libvirtd killed: {:?} after {took:?} ({n} more chunks): {}",
            st.code(),
            st.message()
        );
        assert_unavailable(&st, took);
        while !exited(lvd) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        restarted.start(&root);
        let back = reconnected(&mut c).await;
        eprintln!("reconnect after the remote libvirtd restarted: {back:?}");
        let out = run_sh(&mut c, DOMAIN, "echo again").await;
        assert_eq!(out.stdout, b"again\n", "{out:?}");

        // 2. The ssh session hangs (SIGSTOP: TCP stays up, nothing flows) under an Exec
        //    streaming output.
        let mut s = c
            .exec(sh_request(
                DOMAIN,
                "i=0; while [ $i -lt 600 ]; do echo $i; i=$((i+1)); sleep 0.1; done",
            ))
            .await
            .unwrap()
            .into_inner();
        let mut stdout = 0;
        while stdout < 2 {
            match s.message().await.unwrap().unwrap().event {
                Some(Event::Stdout(_)) => stdout += 1,
                Some(Event::Exited(x)) => panic!("the exec ended early: {x:?}"),
                _ => {}
            }
        }
        let hung = sshd.session_pids();
        assert!(!hung.is_empty(), "no ssh session to hang");
        for &p in &hung {
            signal(p, Signal::SIGSTOP);
        }
        let t = Instant::now();
        let (st, n) = stream_error(&mut s, Duration::from_secs(30), "Exec").await;
        let took = t.elapsed();
        eprintln!(
            "Exec, ssh session hung: {:?} after {took:?} ({n} more events): {}",
            st.code(),
            st.message()
        );
        assert_unavailable(&st, took);
        // The hung session is gone for good (as after a network partition).
        for &p in &hung {
            signal(p, Signal::SIGKILL);
            signal(p, Signal::SIGCONT);
        }
        let back = reconnected(&mut c).await;
        eprintln!("reconnect after the hung ssh session (new session): {back:?}");
        let out = run_sh(&mut c, DOMAIN, "echo served").await;
        assert_eq!(out.stdout, b"served\n", "{out:?}");
        assert!(
            sshd.session_pids().iter().all(|p| !hung.contains(p)),
            "the daemon still uses the hung session"
        );
        drop(d);
        drop(restarted);
    })
    .await;
}

/// The in-flight call failed the way a lost hypervisor must: UNAVAILABLE, reason
/// HYPERVISOR_UNAVAILABLE, naming the hypervisor (`remote/DOMAIN`), within the keepalive
/// window.
fn assert_unavailable(st: &Status, took: Duration) {
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    let reason = st.get_details_error_info().map(|i| i.reason);
    assert_eq!(reason.as_deref(), Some("HYPERVISOR_UNAVAILABLE"), "{st:?}");
    assert!(
        took < WINDOW,
        "failed after {took:?}, beyond the keepalive window {WINDOW:?}"
    );
}

/// Pings until the daemon answers again (reconnect backoff 1 s, doubling), bounded; the
/// time it took.
async fn reconnected(c: &mut Client) -> Duration {
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), c.ping(ping(DOMAIN))).await {
            Ok(Ok(_)) => return t.elapsed(),
            Ok(Err(st))
                if st.code() == Code::Unavailable && t.elapsed() < Duration::from_secs(60) =>
            {
                // Polling for the reconnect, bounded above.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("no reconnect after {:?}: {other:?}", t.elapsed()),
        }
    }
}
