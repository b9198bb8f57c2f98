//! The gate by itself: who may pass, what policies are shown, what is recorded.

use std::{path::Path, sync::Arc};

use tonic::{Code, Request};

use super::*;
use crate::{
    audit::OnFailure,
    policy::request::{ExecInfo, FileInfo},
};

fn request(auth: AuthMethod) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(Caller {
        id: "alice".into(),
        auth,
        roles: vec!["ops".into()],
        peer: "127.0.0.1:9".into(),
    });
    req
}

/// A gate whose one plugin denies Exec and reads of /etc/shadow, and says which section
/// it was shown; audited to `dir/audit.log`.
async fn gate(dir: &Path) -> Gate {
    let plugins = dir.join("policies");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("10-test.rhai"),
        r#"
fn authorize(req) {
    if req.rpc == "Exec" { return deny("no exec for " + req.caller.id); }
    if req.rpc == "ReadFile" && req.file.path == "/etc/shadow" { return deny("secret"); }
    if req.rpc == "ReadFile" && req.exec == () && req.agent == () && req.file.op == "read" {
        return allow("read only its own section").with(#{ max_bytes: 100 });
    }
    ()
}
"#,
    )
    .unwrap();
    let policy = PolicyEngine::load(&plugins, true, serde_json::json!({ "k": 1 })).unwrap();
    let audit = AuditLog::open(&dir.join("audit.log"), OnFailure::Refuse)
        .await
        .unwrap();
    Gate {
        policy: Some(Arc::new(policy)),
        audit: Some(audit),
        denials: None,
    }
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read(path: &str) -> Action {
    Action::ReadFile(FileInfo {
        path: path.into(),
        requested: path.into(),
        op: "read".into(),
        ..FileInfo::default()
    })
}

#[tokio::test]
async fn an_unauthenticated_request_is_refused_before_any_policy() {
    let st = Gate::default()
        .admit(Action::Ping, &Request::new(()), "vm", None)
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_admitted_call_carries_the_admitted_domain_caller_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    let call = gate
        .admit(
            read("/etc/hostname"),
            &request(AuthMethod::Token),
            "vm1",
            None,
        )
        .await
        .unwrap();
    assert_eq!(call.domain(), "vm1");
    assert_eq!(call.caller().id, "alice");
    assert_eq!(
        call.limits().max_bytes,
        Some(100),
        "the plugin's limit, from its own section"
    );
    call.end(&Ok::<(), Status>(()), Outcome::default()).await;
    let recs = records(dir.path());
    assert_eq!(recs.len(), 2, "a decision and an outcome: {recs:?}");
    assert_eq!(recs[0]["kind"], "decision");
    assert_eq!(recs[0]["rpc"], "ReadFile");
    assert_eq!(recs[0]["caller"]["auth"], "token");
    assert_eq!(recs[0]["summary"]["file"]["path"], "/etc/hostname");
    assert!(
        recs[0]["summary"].get("settings").is_none(),
        "settings stay with the plugins"
    );
    assert!(recs[0]["summary"].get("exec").is_none());
    assert_eq!(recs[1]["kind"], "outcome");
    assert_eq!(recs[1]["status"], "OK");
    assert!(recs[1].get("error_reason").is_none());
    assert_eq!(recs[1]["request_id"], recs[0]["request_id"]);
}

#[tokio::test]
async fn a_denial_names_the_plugin_and_is_recorded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    let st = gate
        .admit(
            Action::Exec(ExecInfo {
                path: "/bin/true".into(),
                ..ExecInfo::default()
            }),
            &request(AuthMethod::Unix),
            "vm1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().contains("10-test"), "{}", st.message());
    assert!(
        st.message().contains("no exec for alice"),
        "{}",
        st.message()
    );
    let recs = records(dir.path());
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (&recs[0]["decision"], &recs[0]["plugin"]),
        (&"deny".into(), &"10-test".into())
    );
    assert_eq!(recs[1]["status"], "PERMISSION_DENIED");
    assert_eq!(recs[1]["error_reason"], "POLICY_DENIED");
}

#[tokio::test]
async fn a_second_file_decision_is_taken_on_the_resolved_path_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    let mut call = gate
        .admit(read("/tmp/link"), &request(AuthMethod::Unix), "vm1", None)
        .await
        .unwrap();
    let st = call
        .redecide_file(FileInfo {
            path: "/etc/shadow".into(),
            requested: "/tmp/link".into(),
            op: "read".into(),
            ..FileInfo::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().starts_with("/etc/shadow"), "{}", st.message());
    call.fail(st).await;
    let recs = records(dir.path());
    let kinds: Vec<_> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["decision", "decision", "outcome"]);
    assert_eq!(recs[1]["summary"]["file"]["requested"], "/tmp/link");
    assert_eq!(recs[1]["decision"], "deny");
}

#[tokio::test]
async fn only_file_requests_can_be_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    let mut call = gate
        .admit(Action::Ping, &request(AuthMethod::Unix), "vm1", None)
        .await
        .unwrap();
    let st = call.redecide_file(FileInfo::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Internal);
}

#[tokio::test]
async fn no_request_passes_when_its_decision_cannot_be_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path()).await;
    gate.audit.as_ref().unwrap().close().await;
    let st = gate
        .admit(Action::Ping, &request(AuthMethod::Unix), "vm1", None)
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unavailable);
    assert!(
        !st.message().contains(dir.path().to_str().unwrap()),
        "{}",
        st.message()
    );
}

#[tokio::test]
async fn declared_work_beyond_the_request_passes() {
    let call = Gate::default()
        .admit(Action::ListDomains, &request(AuthMethod::Unix), "", None)
        .await
        .unwrap();
    call.beyond(Beyond::PingEachGuest).unwrap();
}

#[tokio::test]
#[should_panic(expected = "does PingEachGuest, which it does not declare")]
async fn undeclared_work_beyond_the_request_is_a_bug() {
    let call = Gate::default()
        .admit(Action::Ping, &request(AuthMethod::Unix), "vm1", None)
        .await
        .unwrap();
    let _ = call.beyond(Beyond::PingEachGuest);
}
