//! The cross-language proof: the Python package `clients/python` (its committed stubs,
//! generated from `proto/`) runs its pytest suite against the real `atp serve` in front of
//! real host qemu-gas — over the UNIX socket, over TCP with a bearer token, and over mutual
//! TLS — and the example CLI built on it (`examples/python/atp_client.py`) runs its
//! subcommands. The stubs must match the proto and the Python sources must be ruff-clean.
//! Needs `.venv` from `scripts/setup.sh` (grpcio, pytest, ruff); without it the tests fail,
//! never skip. The sources run from this checkout (`PYTHONPATH=clients/python/src`), not
//! from whatever copy of the package the venv has installed.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use common::Daemon;
use ocloudview_atp::testbed::HostAgent;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "python-ci-token";

/// Denies the guest `forbidden` and guest paths under a `forbidden` directory; allows the rest.
const POLICY: &str = r#"fn authorize(req) {
    if req.domain.name == "forbidden" { return deny("forbidden is off limits"); }
    if (req.rpc == "ReadFile" || req.rpc == "WriteFile") && req.file.path.contains("/forbidden/") {
        return deny("no files under forbidden/");
    }
    allow("the python client test")
}
"#;

/// A program in the repo's venv (`bin/<name>`); missing means scripts/setup.sh was not run.
fn venv(name: &str) -> PathBuf {
    let path = Path::new(ROOT).join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it creates .venv with the Python client's \
         requirements, pytest and ruff)",
        path.display()
    );
    path
}

/// Runs `program args` in the repo root with the package's sources on PYTHONPATH and
/// `envs`; bounded, output echoed.
async fn run(program: &Path, args: &[&str], envs: &[(&str, String)]) -> Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .env("PYTHONPATH", Path::new(ROOT).join("clients/python/src"))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran for more than 300 s", program.display()))
        .unwrap();
    eprintln!(
        "$ {} {}\n--- stdout\n{}--- stderr\n{}--- {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

fn token_config() -> String {
    let digest = format!("{:x}", Sha256::digest(TOKEN.as_bytes()));
    format!("[[server.tokens]]\nsha256 = \"{digest}\"\nidentity = \"python-ci\"\n\n")
}

fn guest_entry(agent: &HostAgent) -> String {
    format!(
        "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        agent.socket().display()
    )
}

/// A certificate signed by `issuer` (self-signed CA when None): (PEM, key PEM, issuer).
fn cert(
    issuer: Option<&Issuer<'static, KeyPair>>,
    sans: &[&str],
    cn: &str,
    usage: Option<ExtendedKeyUsagePurpose>,
) -> (String, String, Option<Issuer<'static, KeyPair>>) {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    match (issuer, usage) {
        (Some(issuer), Some(usage)) => {
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let c = params.signed_by(&key, issuer).unwrap();
            (c.pem(), key.serialize_pem(), None)
        }
        _ => {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let c = params.self_signed(&key).unwrap();
            (c.pem(), String::new(), Some(Issuer::new(params, key)))
        }
    }
}

/// Writes `pem` into `dir/name`; its path as a string.
fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn package_test_suite_against_the_daemon() {
    // One agent per daemon: qemu-ga serves one client at a time.
    let agent = HostAgent::start().unwrap();
    let tls_agent = HostAgent::start().unwrap();
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("10-python-ci.rhai"), POLICY).unwrap();
    let policy = format!("[policy]\ndir = \"{}\"\n\n", policies.path().display());

    let port = common::free_port();
    let d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!("{policy}{}{}", token_config(), guest_entry(&agent)),
    )
    .await;

    let pki = tempfile::tempdir().unwrap();
    let (ca_pem, _, ca) = cert(None, &[], "atp python CA", None);
    let ca = ca.unwrap();
    let server = ExtendedKeyUsagePurpose::ServerAuth;
    let (server_pem, server_key, _) =
        cert(Some(&ca), &["127.0.0.1", "localhost"], "atp", Some(server));
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let (client_pem, client_key, _) = cert(Some(&ca), &[], "python-ci", Some(client));
    let ca_path = write(pki.path(), "ca.pem", &ca_pem);
    let tls_port = common::free_port();
    let _t = Daemon::start(
        &[format!("tcp://127.0.0.1:{tls_port}")],
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{ca_path}\"\n\n{policy}{}",
            write(pki.path(), "server.pem", &server_pem),
            write(pki.path(), "server.key", &server_key),
            guest_entry(&tls_agent)
        ),
    )
    .await;

    let dir = agent.dir().display().to_string();
    let envs = [
        ("ATP_TEST_SERVER", format!("unix://{}", d.socket.display())),
        ("ATP_TEST_DOMAIN", "host".to_owned()),
        ("ATP_TEST_DIR", dir.clone()),
        ("ATP_TEST_TCP_SERVER", format!("127.0.0.1:{port}")),
        ("ATP_TEST_TOKEN", TOKEN.to_owned()),
        ("ATP_TEST_DENIED_DOMAIN", "forbidden".to_owned()),
        ("ATP_TEST_DENIED_PATH", format!("{dir}/forbidden/x.txt")),
        ("ATP_TEST_TLS_SERVER", format!("127.0.0.1:{tls_port}")),
        ("ATP_TEST_TLS_CA", ca_path.clone()),
        (
            "ATP_TEST_TLS_CERT",
            write(pki.path(), "client.pem", &client_pem),
        ),
        (
            "ATP_TEST_TLS_KEY",
            write(pki.path(), "client.key", &client_key),
        ),
    ];
    let out = run(
        &venv("python"),
        &[
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ],
        &envs,
    )
    .await;
    assert!(
        out.status.success(),
        "the Python package's tests failed ({}); their output is above",
        out.status
    );
    // The suite really ran against this daemon: its 3 MiB file is in the agent's directory.
    assert_eq!(
        std::fs::metadata(agent.dir().join("py.bin")).unwrap().len(),
        3 << 20
    );

    // Without the daemon's address the suite fails rather than skipping.
    let out = run(
        &venv("python"),
        &[
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ],
        &[],
    )
    .await;
    assert!(
        !out.status.success(),
        "the suite passed with no daemon to test"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ATP_TEST_SERVER"));
}

#[tokio::test]
async fn example_cli_over_tcp_with_a_bearer_token() {
    let agent = HostAgent::start().unwrap();
    let port = common::free_port();
    let _d = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!("{}{}", token_config(), guest_entry(&agent)),
    )
    .await;
    let python = venv("python");
    let cli = Path::new(ROOT).join("examples/python/atp_client.py");
    let cli = cli.to_str().unwrap();
    let server = format!("127.0.0.1:{port}");
    let atp = |args: &[&str]| -> Vec<String> {
        [&[cli, "--server", &server, "--token", TOKEN][..], args]
            .concat()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };

    // Without the token the daemon refuses the caller, with that reason.
    let out = run(&python, &[cli, "--server", &server, "ping", "host"], &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNAUTHENTICATED: ") && stderr.contains("[UNAUTHENTICATED"),
        "expected UNAUTHENTICATED, with that reason, without a token"
    );
    let args = atp(&["ping", "host"]);
    let out = run(
        &python,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert!(out.status.success(), "ping with the token failed");

    // write, read back, exec: the bytes and the exit code come through.
    let local = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = local.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let guest = agent.dir().join("cli.bin").display().to_string();
    let back = local.path().join("back.bin").display().to_string();
    for (args, code) in [
        (
            atp(&["write", "host", &guest, "-i", src.to_str().unwrap()]),
            0,
        ),
        (atp(&["read", "host", &guest, "-o", &back]), 0),
        (
            atp(&["exec", "host", "--", "/bin/sh", "-c", "echo hi; exit 4"]),
            4,
        ),
    ] {
        let out = run(
            &python,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        )
        .await;
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        if args.contains(&"exec".to_owned()) {
            assert_eq!(out.stdout, b"hi\n");
        }
    }
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

#[tokio::test]
async fn python_stubs_match_the_proto_and_sources_are_ruff_clean() {
    let out = run(
        &venv("python"),
        &["clients/python/gen_stubs.py", "--check"],
        &[],
    )
    .await;
    assert!(out.status.success(), "the package's stubs are stale");
    // One configuration (clients/python/pyproject.toml) for the package and the example.
    let config = "clients/python/pyproject.toml";
    let check: &[&str] = &["check", "--config", config];
    let format: &[&str] = &["format", "--check", "--config", config];
    for args in [check, format] {
        let args = [args, &["clients/python", "examples/python"]].concat();
        let out = run(&venv("ruff"), &args, &[]).await;
        assert!(out.status.success(), "ruff {args:?} found problems");
    }
}
