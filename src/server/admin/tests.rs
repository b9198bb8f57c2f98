//! What the gate shows policies and writes to the audit log of the admin RPCs: never a
//! password, never a key.

use std::sync::Arc;

use tonic::Request;

use super::access::{keys_info, parse_keys, password_info};
use crate::{
    audit::{AuditLog, OnFailure},
    caller::{AuthMethod, Caller},
    pb,
    policy::PolicyEngine,
    server::{
        action::Action,
        gate::{Gate, Outcome},
    },
};

const PASSWORD: &str = "Tr0ub4dor&3-unique";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";

/// A gate whose plugin allows everything and copies the whole request map it was shown
/// into the decision record (so the record holds exactly what policies saw).
async fn gate(dir: &std::path::Path) -> Gate {
    let plugins = dir.join("policies");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("10-echo.rhai"),
        "fn authorize(req) { allow(\"ok\") }\nfn audit(req, decision) { #{ seen: req } }\n",
    )
    .unwrap();
    let policy = PolicyEngine::load(&plugins, false, serde_json::Value::Null).unwrap();
    Gate {
        policy: Some(Arc::new(policy)),
        audit: Some(
            AuditLog::open(&dir.join("audit.log"), OnFailure::Refuse)
                .await
                .unwrap(),
        ),
        denials: None,
    }
}

fn request<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.extensions_mut().insert(Caller {
        id: "alice".into(),
        auth: AuthMethod::Token,
        roles: vec!["admin".into()],
        peer: "127.0.0.1:9".into(),
    });
    req
}

#[tokio::test]
async fn set_user_password_shows_policies_and_the_audit_log_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    let msg = pb::SetUserPasswordRequest {
        domain: "vm1".into(),
        username: "root".into(),
        password: PASSWORD.into(),
        crypted: false,
    };
    let debug = format!("{msg:?} {msg:#?}");
    let req = request(msg);
    let call = gate
        .admit(
            Action::SetUserPassword(password_info(req.get_ref())),
            &req,
            "vm1",
            None,
        )
        .await
        .unwrap();
    call.end(&Ok::<(), tonic::Status>(()), Outcome::default())
        .await;
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    for text in [&log, &debug] {
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains(&b64), "{text}");
        assert!(!text.contains("Tr0ub4dor"), "{text}");
    }
    // What policies saw (copied into the record by the audit hook): that one was given.
    let rec: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(rec["extra"]["seen"]["account"]["password_given"], true);
    assert_eq!(rec["extra"]["seen"]["account"]["username"], "root");
    assert_eq!(rec["summary"]["account"]["password_given"], true);
    assert!(debug.contains("<redacted>"));
}

#[tokio::test]
async fn ssh_keys_are_seen_as_fingerprints_only() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    let keys = parse_keys(&[KEY.to_owned()]).unwrap();
    let req = request(());
    let call = gate
        .admit(
            Action::AddAuthorizedKeys(keys_info("root", &keys, false)),
            &req,
            "vm1",
            None,
        )
        .await
        .unwrap();
    call.end(&Ok::<(), tonic::Status>(()), Outcome::default())
        .await;
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(log.contains("SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"));
    assert!(!log.contains("AAAAC3NzaC1lZDI1NTE5"), "{log}");
    assert!(parse_keys(&["ssh-ed25519 AAAA\nroot".into()]).is_err());
}
