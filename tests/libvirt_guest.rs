//! The TCG guest as a transient domain of an unprivileged session libvirtd: agent commands
//! through `virDomainQemuAgentCommand`, and through the domain's second agent channel
//! bound to a host socket, at the same time.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::Duration;

use ocloudview_atp::{
    libvirt::{LibvirtError, LibvirtManager},
    pb::{GetOsInfoRequest, PingRequest},
    qga::{AgentClient, QgaError},
    testbed::{Flavour, LibvirtSession},
    transport::{TransportError, libvirt_agent::LibvirtTransport, socket::SocketTransport},
};

#[tokio::test]
async fn libvirt_and_direct_channels_of_one_domain() {
    common::init_logging();
    let image = common::image().await;
    let session = LibvirtSession::start().await.unwrap();
    eprintln!(
        "session libvirtd answered after {:.2?}",
        session.start_time()
    );
    let dom = session
        .create_domain("atp-lv-1", &image, Flavour::Debian)
        .await
        .unwrap();
    eprintln!(
        "domain agent answered through libvirt {:.2?} after create",
        dom.boot_time()
    );

    // The seed API: connect, look up by name.
    let uri = session.uri().to_owned();
    let domain = tokio::task::spawn_blocking(move || {
        let mgr = LibvirtManager::connect_uri(&uri)?;
        assert!(
            mgr.list_domains()?
                .iter()
                .any(|d| d.name == "atp-lv-1" && d.active)
        );
        match mgr.lookup_domain_by_name("no-such-domain") {
            Err(LibvirtError::DomainNotFound { .. }) => {}
            other => panic!("expected DomainNotFound, got {other:?}"),
        }
        mgr.lookup_domain_by_name("atp-lv-1")
    })
    .await
    .unwrap()
    .unwrap();

    let via_libvirt = AgentClient::new(LibvirtTransport::new(domain, "atp-lv-1"));
    let direct = AgentClient::new(SocketTransport::new(dom.direct_socket()));
    let (a, b) = tokio::join!(
        async {
            via_libvirt.ping().await?;
            let info = via_libvirt.info().await?;
            let os = via_libvirt.osinfo().await?;
            Ok::<_, QgaError>((info, os))
        },
        async {
            direct.ping().await?;
            let info = direct.info().await?;
            let os = direct.osinfo().await?;
            Ok::<_, QgaError>((info, os))
        }
    );
    let (info_l, os_l) = a.unwrap();
    let (info_d, os_d) = b.unwrap();
    assert_eq!(os_l.id.as_deref(), Some("debian"));
    assert_eq!(os_l, os_d, "both channels reach the same guest");
    assert_eq!(info_l.version, info_d.version);
    assert!(info_l.command("guest-file-open").unwrap().enabled);

    // An agent error relayed by libvirt keeps its meaning.
    #[derive(serde::Serialize)]
    struct NoSuch {}
    impl ocloudview_atp::qga::Command for NoSuch {
        const NAME: &'static str = "guest-no-such-command";
        type Reply = serde_json::Value;
    }
    let err = via_libvirt.call(&NoSuch {}).await.unwrap_err();
    assert!(err.is_command_not_found(), "{err:?}");
    via_libvirt.ping().await.unwrap();

    // The daemon reaches the same domain through a configured hypervisor, by plain name
    // and as `hypervisor/domain`.
    let daemon = common::Daemon::start(
        &[],
        &format!(
            "[[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n",
            session.uri()
        ),
    )
    .await;
    let mut c = daemon.client().await;
    for name in ["atp-lv-1", "lab/atp-lv-1"] {
        let pong = c
            .ping(PingRequest {
                domain: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(pong.latency_us > 0);
        let os = c
            .get_os_info(GetOsInfoRequest {
                domain: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(os.id, "debian");
    }
    // An Exec whose stdin is larger than one libvirt agent request (128 KiB) is written to
    // a file the wrapper reads: 300,000 bytes arrive whole (an Ansible module on stdin is
    // often that large).
    let mut big = common::sh_request("lab/atp-lv-1", "wc -c");
    big.stdin = vec![b'x'; 300_000];
    let o = common::drain_exec(c.exec(big).await.unwrap().into_inner()).await;
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "300000");
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
    let st = c
        .ping(PingRequest {
            domain: "other/atp-lv-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
    let st = c
        .ping(PingRequest {
            domain: "lab/absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);

    // A domain that is gone gives a clear error quickly, not a hang.
    dom.destroy();
    let st = c
        .ping(PingRequest {
            domain: "lab/atp-lv-1".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            st.code(),
            tonic::Code::NotFound | tonic::Code::FailedPrecondition
        ),
        "{st:?}"
    );
    let started = std::time::Instant::now();
    let err = via_libvirt
        .clone()
        .with_timeout(Duration::from_secs(3))
        .ping()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            QgaError::Transport(
                TransportError::DomainNotFound(_) | TransportError::DomainNotRunning(_)
            )
        ),
        "{err:?}"
    );
}
