//! A real guest (Debian cloud kernel + busybox + qemu-ga) booted by QEMU under TCG,
//! reached over the host end of its virtio-serial agent channel.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use ocloudview_atp::{
    qga::AgentClient,
    testbed::{BootOptions, Flavour, QemuGuest},
    transport::socket::SocketTransport,
};

async fn boot(flavour: Flavour) -> QemuGuest {
    let image = common::image().await;
    let guest = QemuGuest::boot(
        &image,
        BootOptions {
            flavour,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eprintln!(
        "{flavour:?} guest: agent answered {:.2?} after QEMU start",
        guest.boot_time()
    );
    guest
}

/// A client that writes requests and leaves without reading: the agent answers anyway and,
/// on virtio-serial, QEMU keeps the replies for whoever connects next.
fn leave_stale_replies(socket: &Path) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(br#"{"execute":"guest-get-osinfo","id":"stale-1"}"#)
        .unwrap();
    s.write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":4242}}")
        .unwrap();
    s.write_all(br#"{"execute":"guest-info","id":"stale-2"}"#)
        .unwrap();
    // And half a request, left in the agent's parser.
    s.write_all(br#"{"execute":"guest-pi"#).unwrap();
    drop(s);
    // Not synchronisation: the agent answers while no client is connected, which is the
    // hazard set up here (the replies wait for whoever connects next).
    std::thread::sleep(Duration::from_millis(700));
}

#[tokio::test]
async fn debian_guest_over_direct_socket() {
    common::init_logging();
    let guest = boot(Flavour::Debian).await;
    let socket = guest.agent_socket();

    // The hazard is real on this transport: a naive next client reads a stale reply.
    let sock = socket.clone();
    let first = tokio::task::spawn_blocking(move || {
        leave_stale_replies(&sock);
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(br#"{"execute":"guest-ping","id":"fresh"}"#)
            .unwrap();
        let mut first = String::new();
        BufReader::new(&s).read_line(&mut first).unwrap();
        // Leave more behind for the next caller.
        drop(s);
        leave_stale_replies(&sock);
        first
    })
    .await
    .unwrap();
    assert!(
        !first.contains("\"fresh\""),
        "expected a stale reply first, got {first}"
    );

    // With the sync discipline, the next caller only ever sees its own replies.
    let c = AgentClient::new(SocketTransport::new(&socket));
    c.ping().await.unwrap();
    let info = c.info().await.unwrap();
    assert!(info.command("guest-exec").unwrap().enabled);
    let os = c.osinfo().await.unwrap();
    assert_eq!(os.id.as_deref(), Some("debian"));
    assert_eq!(os.machine.as_deref(), Some("x86_64"));
    assert!(
        os.kernel_release
            .as_deref()
            .unwrap()
            .contains("cloud-amd64"),
        "{os:?}"
    );
    for _ in 0..20 {
        c.ping().await.unwrap();
    }
}

#[tokio::test]
async fn alt_guest_reports_its_own_os() {
    common::init_logging();
    let guest = boot(Flavour::Alt).await;
    let c = AgentClient::new(SocketTransport::new(guest.agent_socket()));
    let os = c.osinfo().await.unwrap();
    assert_eq!(os.id.as_deref(), Some("qgatestos"));
    assert_eq!(os.pretty_name.as_deref(), Some("QGA Test OS 1.0"));
    assert_eq!(os.version_id.as_deref(), Some("1.0"));
    assert_eq!(os.variant_id.as_deref(), Some("test"));
}
