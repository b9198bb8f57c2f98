//! A hung libvirtd (SIGSTOP: the socket still accepts, nothing answers): with libvirt
//! keepalive the daemon's calls on that connection end with UNAVAILABLE within the
//! keepalive window instead of hanging until the agent timeout (set far longer here), and
//! once libvirtd runs again the daemon reconnects and serves without a restart.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    GUEST,
    common::{self, Daemon, ping},
    helpers::bounded,
    libvirtd_process::{libvirtd_pid, signal},
};
use nix::sys::signal::Signal;
use ocloudview_atp::testbed::{Flavour, LibvirtSession};
use tonic::Code;
use tonic_types::StatusExt;

/// Continues a stopped libvirtd whatever the test does.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        signal(self.0, Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_libvirtd_is_unavailable_within_the_keepalive_window_then_reconnected() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(180), "hung libvirtd test", async {
        let image = common::image().await;
        let session = LibvirtSession::start().await.unwrap();
        let _dom = session
            .create_domain("atp-fault-hung", &image, Flavour::Debian)
            .await
            .unwrap();
        // Keepalive: a probe after 1 s of silence, closed after 2 unanswered ones (about
        // 3 s); the agent timeout is 60 s, so only keepalive can end a call sooner.
        let d = Daemon::start(
            &[],
            &format!(
                "[agent]\ntimeout_ms = 60000\n\n[[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n\
                 keepalive_interval_s = 1\nkeepalive_count = 2\n",
                session.uri()
            ),
        )
        .await;
        let domain = "lab/atp-fault-hung";
        let mut c = d.client().await;
        c.ping(ping(domain)).await.unwrap();

        let uri = session.uri().to_owned();
        let root: PathBuf = uri
            .split_once("socket=")
            .map(|(_, s)| Path::new(s).ancestors().nth(3).unwrap().to_owned())
            .unwrap();
        let pid = libvirtd_pid(&root);
        signal(pid, Signal::SIGSTOP);
        let stopped = Continue(pid);
        let t = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(30), c.ping(ping(domain))).await;
        let took = t.elapsed();
        let st = res
            .expect("a ping on a hung libvirtd still hangs after 30 s")
            .expect_err("a ping succeeded on a stopped libvirtd");
        eprintln!(
            "ping on the hung libvirtd: {:?} after {took:?}: {}",
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        let reason = st.get_details_error_info().map(|i| i.reason);
        assert_eq!(reason.as_deref(), Some("HYPERVISOR_UNAVAILABLE"), "{st:?}");
        assert!(took < Duration::from_secs(15), "took {took:?}");

        drop(stopped); // SIGCONT
        let t = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(20), c.ping(ping(domain))).await {
                Ok(Ok(_)) => break,
                Ok(Err(st))
                    if st.code() == Code::Unavailable && t.elapsed() < Duration::from_secs(60) =>
                {
                    // The reconnect backoff (1 s, doubling): ask again, bounded.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => panic!("no recovery after SIGCONT: {other:?}"),
            }
        }
        eprintln!("served again {:?} after SIGCONT", t.elapsed());
    })
    .await;
}
