//! Authentication of the real `atp serve` process in front of a real host agent: bearer
//! tokens over TCP, peer credentials on the UNIX socket, mTLS with certificates made by
//! rcgen, and the rule that refuses an unauthenticated non-loopback TCP listener.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::Daemon;
use ocloudview_atp::{
    pb::{PingRequest, guest_agent_client::GuestAgentClient},
    testbed::HostAgent,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use tonic::{
    Code, Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

const TOKEN: &str = "s3cret-token-for-ci";

fn ping(token: Option<&str>) -> Request<PingRequest> {
    let mut req = Request::new(PingRequest {
        domain: "host".into(),
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

fn guest_entry(agent: &HostAgent) -> String {
    format!(
        "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        agent.socket().display()
    )
}

async fn tcp_channel(port: u16) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn bearer_tokens_on_tcp_and_peer_credentials_on_unix() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let digest = format!("{:x}", Sha256::digest(TOKEN.as_bytes()));
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[[server.tokens]]\nsha256 = \"{digest}\"\nidentity = \"ci\"\nroles = [\"ops\"]\n\n{}",
            guest_entry(&agent)
        ),
    )
    .await;

    let mut tcp = GuestAgentClient::new(tcp_channel(port).await);
    let st = tcp.ping(ping(None)).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "no token: {st:?}");
    let st = tcp.ping(ping(Some("not-the-token"))).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "wrong token: {st:?}");
    let mut bare = Request::new(PingRequest {
        domain: "host".into(),
    });
    bare.metadata_mut()
        .insert("authorization", TOKEN.parse().unwrap());
    let st = tcp.ping(bare).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "no Bearer prefix: {st:?}");

    // The right token, added to every call by an interceptor.
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let mut authed = GuestAgentClient::with_interceptor(
        tcp_channel(port).await,
        move |mut req: Request<()>| -> Result<Request<()>, Status> {
            req.metadata_mut().insert("authorization", header.clone());
            Ok(req)
        },
    );
    let pong = authed
        .ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pong.latency_us > 0, "{pong:?}");

    // The UNIX socket: peer credentials suffice, but a presented token is still checked.
    let mut unix = d.client().await;
    unix.ping(ping(None)).await.unwrap();
    let st = unix.ping(ping(Some("not-the-token"))).await.unwrap_err();
    assert_eq!(
        st.code(),
        Code::Unauthenticated,
        "unix, wrong token: {st:?}"
    );
    unix.ping(ping(Some(TOKEN))).await.unwrap();
}

/// A CA: its certificate (PEM) and what signs with it.
fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate signed by `issuer`: (certificate PEM, key PEM).
fn new_leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// Connects (over TLS when `tls` is given) and pings. A failure is an `Err` describing it;
/// a status the server itself sent (e.g. UNAUTHENTICATED from the interceptor) panics: the
/// refusals tested here must happen in the TLS layer, before any RPC is served.
async fn ping_over(port: u16, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let attempt = async {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            ep = ep.tls_config(tls).unwrap();
        }
        let ch = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
        match GuestAgentClient::new(ch).ping(ping(None)).await {
            Ok(_) => Ok(()),
            Err(st) => {
                assert!(
                    std::error::Error::source(&st).is_some(),
                    "refused by the service, not by the TLS layer: {st:?}"
                );
                Err(format!("ping: {st:?}"))
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_configured_ca() {
    let agent = HostAgent::start().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (ca_pem, ca) = new_ca("atp test CA");
    let (server_pem, server_key) = new_leaf(
        &ca,
        &["127.0.0.1", "localhost"],
        "atp daemon",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_pem, client_key) =
        new_leaf(&ca, &[], "ci-bot", ExtendedKeyUsagePurpose::ClientAuth);
    let (_, other_ca) = new_ca("someone else's CA");
    let (intruder_pem, intruder_key) = new_leaf(
        &other_ca,
        &[],
        "intruder",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n",
        write(pki.path(), "server.pem", &server_pem),
        write(pki.path(), "server.key", &server_key),
        write(pki.path(), "ca.pem", &ca_pem),
    );
    let port = common::free_port();
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!("{tls}{}", guest_entry(&agent)),
    )
    .await;

    let base = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .domain_name("localhost")
    };
    ping_over(
        port,
        Some(base().identity(Identity::from_pem(&client_pem, &client_key))),
    )
    .await
    .unwrap();

    let no_identity = ping_over(port, Some(base())).await;
    assert!(
        no_identity.is_err(),
        "a TLS client without a certificate was served"
    );
    eprintln!("without a client certificate: {}", no_identity.unwrap_err());

    let intruder = ping_over(
        port,
        Some(base().identity(Identity::from_pem(&intruder_pem, &intruder_key))),
    )
    .await;
    assert!(
        intruder.is_err(),
        "a client certificate from another CA was accepted"
    );
    eprintln!(
        "with a certificate from another CA: {}",
        intruder.unwrap_err()
    );

    let plaintext = ping_over(port, None).await;
    assert!(plaintext.is_err(), "a plaintext client was served");
    eprintln!("plaintext: {}", plaintext.unwrap_err());

    // The UNIX socket is not TLS and still authenticates by peer credentials.
    d.client().await.ping(ping(None)).await.unwrap();
}

/// Runs `atp serve` on `config` and returns its exit code and stderr (bounded wait).
fn serve_to_exit(config: &Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("atp serve did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 11 item 11: anonymous TCP callers (loopback included) are admitted only with
/// `insecure = true`, and never without a [policy] (they would be allowed everything).
#[tokio::test]
async fn tcp_needs_authentication_or_insecure_with_a_policy() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for (addr, extra, needs) in [
        ("0.0.0.0", "", "insecure"),
        ("127.0.0.1", "", "insecure"),
        ("127.0.0.1", "insecure = true\n", "[policy]"),
    ] {
        let path = dir.path().join("exposed.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = [\"tcp://{addr}:{port}\"]\n{extra}\n{}",
                guest_entry(&agent)
            ),
        )
        .unwrap();
        let (code, err) = tokio::task::spawn_blocking(move || serve_to_exit(&path))
            .await
            .unwrap();
        assert_eq!(code, Some(78), "{err}");
        assert!(
            err.contains("server.listen[0]") && err.contains(needs),
            "{addr} {extra}: {err}"
        );
        assert!(err.contains(&format!("{addr}:{port}")), "{err}");
    }

    let mut d = Daemon::start(
        &[format!("tcp://0.0.0.0:{port}")],
        &format!(
            "insecure = true\n\n{}\n[policy]\ndir = \"{}\"\n",
            guest_entry(&agent),
            policies.display()
        ),
    )
    .await;
    let mut tcp = GuestAgentClient::new(tcp_channel(port).await);
    // Anonymous callers get nothing from the shipped plugins.
    let denied = tcp.ping(ping(None)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    drop(tcp);
    let status = tokio::task::spawn_blocking(move || d.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
