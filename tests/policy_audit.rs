//! Policy plugins and the audit trail, end to end: the shipped plugins in front of a real
//! host agent, adversarial plugins that must fail closed quickly, hot reload, and an
//! audit log that records every request without secrets and verifies.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{drain_exec, sh_request};
use ocloudview_atp::{
    pb::{
        PingRequest, ReadFileRequest, RunTaskRequest, WriteFileHeader, WriteFileRequest,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, service::interceptor::InterceptedService, transport::Channel};

type Client = GuestAgentClient<InterceptedService<Channel, Token>>;

#[derive(Clone)]
struct Token(&'static str);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(req)
    }
}

fn token_entry(token: &str, identity: &str, roles: &[&str]) -> String {
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[server.tokens]]\nsha256 = \"{hex}\"\nidentity = \"{identity}\"\nroles = {roles:?}\n")
}

async fn client_as(d: &common::Daemon, token: &'static str) -> Client {
    let ch = common::grpc_channel(&d.socket).await;
    GuestAgentClient::with_interceptor(ch, Token(token))
}

fn config(agent: &HostAgent, policy_dir: &Path, audit: &Path) -> String {
    format!(
        "{}{}{}\n[policy]\ndir = \"{}\"\ndefault = \"deny\"\n[policy.settings]\nread_paths = [\"/etc/os-release\", \"{}/\"]\n\n[audit]\npath = \"{}\"\n\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        token_entry("ops-token", "alice", &["ops"]),
        token_entry("admin-token", "bob", &["admin"]),
        token_entry("dev-token", "carol", &[]),
        policy_dir.display(),
        agent.dir().display(),
        audit.display(),
        agent.socket().display()
    )
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(path: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn shipped_plugins_decide_and_every_request_is_audited() {
    let agent = HostAgent::start().unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let tmp = tempfile::tempdir().unwrap();
    let audit = tmp.path().join("audit.jsonl");
    let d = common::Daemon::start(&[], &config(&agent, &policies, &audit)).await;
    let mut ops = client_as(&d, "ops-token").await;
    let mut admin = client_as(&d, "admin-token").await;
    let mut dev = client_as(&d, "dev-token").await;

    ops.ping(PingRequest {
        domain: "host".into(),
    })
    .await
    .unwrap();

    // Argument-level exec rules.
    let o = drain_exec(ops.exec(argv("uptime", &[])).await.unwrap().into_inner()).await;
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
    // The program path is normalised before the policy sees it, and that is what runs:
    // `/usr/local/../bin/uptime` is `/usr/bin/uptime` (allowed), while a `..` walk out
    // of the system directories is not `uptime` at all.
    let o = drain_exec(
        ops.exec(argv("/usr/local/../bin//uptime", &[]))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
    let st = ops
        .exec(argv("/usr/bin/../../tmp/uptime", &[]))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(
        st.message().contains("ops may not run /tmp/uptime"),
        "{}",
        st.message()
    );
    let marker = agent.dir().join("ops-was-here");
    let st = ops
        .exec(argv("touch", &[marker.to_str().unwrap()]))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(
        st.message().contains("30-role-exec") && st.message().contains("ops may not run touch"),
        "{}",
        st.message()
    );
    let st = ops
        .exec(argv("systemctl", &["stop", "nginx"]))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    let st = dev
        .exec(sh_request("host", &format!("touch {}", marker.display())))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(!marker.exists(), "a denied exec reached the agent");

    // A denied write never reaches the agent; admin's exec does.
    let target = agent.dir().join("written-by-ops");
    let msgs = vec![
        WriteFileRequest {
            msg: Some(Msg::Header(WriteFileHeader {
                domain: "host".into(),
                path: target.display().to_string(),
                ..Default::default()
            })),
        },
        WriteFileRequest {
            msg: Some(Msg::Data(b"filedata-xyz".to_vec())),
        },
    ];
    let st = ops.write_file(tokio_stream::iter(msgs)).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(!target.exists());
    let mut r = sh_request("host", "cat >/dev/null; echo \"$SECRET\" | wc -c");
    r.env = vec!["SECRET=hunter2-env-value".into()];
    r.stdin = b"topsecret-stdin".to_vec();
    let o = drain_exec(admin.exec(r).await.unwrap().into_inner()).await;
    assert_eq!(o.exited.unwrap().exit_code, Some(0));

    // Read-only paths, normalised before the policy sees them.
    let allowed = agent.dir().join("notes.txt");
    std::fs::write(&allowed, "readable").unwrap();
    let read = |path: String| ReadFileRequest {
        domain: "host".into(),
        path,
        ..Default::default()
    };
    let mut s = dev
        .read_file(read(allowed.display().to_string()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().data, b"readable");
    let escape = format!("{}/../../etc/shadow", agent.dir().display());
    let st = dev.read_file(read(escape)).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");

    // Seed allowlist tasks; parameters are checked against allowed values.
    let o = drain_exec(
        dev.run_task(RunTaskRequest {
            domain: "host".into(),
            task: "info".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert!(String::from_utf8(o.stdout).unwrap().starts_with("Linux"));
    let st = ops
        .run_task(RunTaskRequest {
            domain: "host".into(),
            task: "restart_service".into(),
            params: [("unit".to_string(), "nginx; reboot".to_string())].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("not allowed"));
    let tasks = dev
        .list_tasks(ocloudview_atp::pb::ListTasksRequest {
            domain: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tasks.tasks.iter().any(|t| t.name == "diagnostics"));

    // Raw agent commands are denied by the baseline.
    let st = admin
        .agent_command(ocloudview_atp::pb::AgentCommandRequest {
            domain: "host".into(),
            command: "guest-get-time".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);

    // Only the caller who started an exec may attach to it.
    let mut r = argv("uptime", &[]);
    r.detach = true;
    let o = drain_exec(ops.exec(r).await.unwrap().into_inner()).await;
    let attach = || ocloudview_atp::pb::ExecAttachRequest {
        exec_id: o.exec_id.clone(),
    };
    let st = dev.exec_attach(attach()).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    let back = drain_exec(ops.exec_attach(attach()).await.unwrap().into_inner()).await;
    assert_eq!(back.exited.unwrap().exit_code, Some(0));

    // The audit trail: a decision and an outcome per request, no secrets, chain intact.
    drop(d);
    let lines = audit_lines(&audit);
    let decisions = lines.iter().filter(|l| l["kind"] == "decision").count();
    let outcomes = lines.iter().filter(|l| l["kind"] == "outcome").count();
    assert_eq!(decisions, outcomes, "every decision has its outcome");
    assert_eq!(decisions, 18, "one decision per request made above");
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in ["hunter2-env-value", "topsecret-stdin", "filedata-xyz"] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    assert!(text.contains("\"SECRET\""), "env keys are recorded");
    assert!(
        text.contains("\"/usr/bin/uptime\"") && !text.contains("/usr/local/../bin"),
        "the audit records the normalised program path"
    );
    let denied_touch = lines
        .iter()
        .find(|l| {
            l["kind"] == "decision"
                && l["decision"] == "deny"
                && l["caller"]["id"] == "alice"
                && l["rpc"] == "Exec"
        })
        .unwrap();
    assert_eq!(denied_touch["plugin"], "30-role-exec");
    let (ok, out) = verify(&audit);
    assert!(ok, "{out}");
}

fn argv(path: &str, args: &[&str]) -> ocloudview_atp::pb::ExecRequest {
    ocloudview_atp::pb::ExecRequest {
        domain: "host".into(),
        command: Some(ocloudview_atp::pb::exec_request::Command::Argv(
            ocloudview_atp::pb::Argv {
                path: path.into(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            },
        )),
        ..Default::default()
    }
}

const HOSTILE: &str = r#"
fn authorize(req) {
    let kind = req.domain.name;
    if kind == "loop" { loop { } }
    if kind == "bomb" { let s = "xx"; loop { s += s; } }
    if kind == "recurse" { return deep(0); }
    if kind == "error" { return req.nope.field; }
    if kind == "string" { return "allow"; }
    ()
}
fn deep(n) { deep(n + 1) }
"#;

#[tokio::test]
async fn hostile_plugins_fail_closed_fast_and_the_daemon_keeps_serving() {
    let agent = HostAgent::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("00-allow.rhai"),
        "fn authorize(req) { allow(\"everything\") }",
    )
    .unwrap();
    std::fs::write(dir.join("50-hostile.rhai"), HOSTILE).unwrap();
    let audit = tmp.path().join("audit.jsonl");
    let port = common::free_port();
    let body = format!(
        "[policy]\ndir = \"{}\"\n[audit]\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        dir.display(),
        audit.display(),
        agent.socket().display()
    );
    let d = common::Daemon::start(&[], &body).await;
    let mut c = d.client().await;
    c.ping(PingRequest {
        domain: "host".into(),
    })
    .await
    .unwrap();
    for kind in ["loop", "bomb", "recurse", "error", "string"] {
        let t0 = Instant::now();
        let st = c
            .ping(PingRequest {
                domain: kind.into(),
            })
            .await
            .unwrap_err();
        let took = t0.elapsed();
        assert_eq!(st.code(), Code::PermissionDenied, "{kind}: {st:?}");
        assert!(
            st.message().contains("50-hostile"),
            "{kind}: {}",
            st.message()
        );
        assert!(took < Duration::from_millis(100), "{kind} took {took:?}");
        eprintln!("{kind}: denied in {took:?}: {}", st.message());
        c.ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .unwrap();
    }

    // eval and import are refused when a plugin loads, so such a plugin never runs: a
    // reload that brings one fails (the metrics count it), keeps the previous set in
    // force (both plugins deny every request if they ever run) and `atp policy check`
    // names it.
    // Plugins appear whole (renamed in), so no reload sees a half-written file.
    let put = |file: &str, src: &str| {
        let staged = tmp.path().join(file);
        std::fs::write(&staged, src).unwrap();
        std::fs::rename(&staged, dir.join(file)).unwrap();
    };
    let reloads = |result: &str| {
        common::metrics::counter(
            port,
            "atp_policy_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    for (file, src, word) in [
        (
            "60-eval.rhai",
            "fn authorize(req) { eval(\"deny(\\\"the eval plugin ran\\\")\") }",
            "eval",
        ),
        (
            "61-import.rhai",
            "import \"/etc/passwd\" as p;\nfn authorize(req) { deny(\"the import plugin ran\") }",
            "import",
        ),
    ] {
        let failed = reloads("error");
        put(file, src);
        common::eventually(
            || reloads("error") > failed,
            &format!("a failed reload after writing {file}"),
        )
        .await;
        c.ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .unwrap_or_else(|st| panic!("{file} is in force after the reload: {st:?}"));
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
            .args(["policy", "check"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!check.status.success());
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(
            err.contains(file.trim_end_matches(".rhai")) && err.contains(word),
            "{err}"
        );
        let ok = reloads("ok");
        std::fs::remove_file(dir.join(file)).unwrap();
        // The removal's reload, so that the next file gets a reload of its own.
        common::eventually(
            || reloads("ok") > ok,
            &format!("a reload after removing {file}"),
        )
        .await;
    }
    // A good plugin after them is picked up: the reloader still works.
    let ok = reloads("ok");
    put(
        "70-no-ping.rhai",
        "fn authorize(req) { if req.rpc == \"Ping\" { deny(\"pings are off\") } }",
    );
    common::eventually(|| reloads("ok") > ok, "a reload after writing 70-no-ping").await;
    let st = c
        .ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .expect_err("the new plugin was not picked up");
    assert!(st.message().contains("pings are off"), "{st:?}");

    drop(d);
    let lines = audit_lines(&audit);
    let hostile: Vec<_> = lines
        .iter()
        .filter(|l| l["plugin"] == "50-hostile" && l["decision"] == "deny")
        .collect();
    assert_eq!(
        hostile.len(),
        5,
        "each hostile request is audited with the plugin's name"
    );
    assert!(verify(&audit).0);
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_requests_unless_told_to_continue() {
    let agent = HostAgent::start().unwrap();
    // /dev/full accepts the open and fails every write with ENOSPC, even for root.
    for (mode, refuse) in [("refuse", true), ("continue", false)] {
        let body = format!(
            "[audit]\npath = \"/dev/full\"\non_failure = \"{mode}\"\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        );
        let d = common::Daemon::start(&[], &body).await;
        let mut c = d.client().await;
        let marker = agent.dir().join(format!("ran-with-{mode}"));
        let res = c
            .exec(sh_request("host", &format!("touch {}", marker.display())))
            .await;
        if refuse {
            let st = res.unwrap_err();
            assert_eq!(st.code(), Code::Unavailable, "{st:?}");
            assert!(
                st.message().contains("audit log cannot be written"),
                "{}",
                st.message()
            );
            assert!(!marker.exists(), "an unaudited request reached the agent");
        } else {
            let o = drain_exec(res.unwrap().into_inner()).await;
            assert_eq!(o.exited.unwrap().exit_code, Some(0));
            assert!(marker.exists());
        }
    }
}

#[test]
fn shipped_cases_pass_through_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["policy", "test"])
        .arg(root.join("policies"))
        .arg(root.join("policies/cases.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = text
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 40, "{n} cases");
    // A wrong expectation is reported as a failure (the runner can fail).
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[case]]\nname = \"ping by anonymous\"\nexpect = \"allow\"\n[case.request]\nrpc = \"Ping\"\ncaller = { id = \"x\", auth = \"none\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["policy", "test"])
        .arg(root.join("policies"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL ping by anonymous"));
}
