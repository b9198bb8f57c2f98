//! Every RPC's reachable failures against the real daemon (real host qemu-ga, real
//! `atp serve`, real policy plugins): each status must carry a `google.rpc.ErrorInfo` with
//! the documented reason (docs/api.md, "Error reasons") and the code that reason implies.
//! A test collects every mismatch and fails listing them all.
//!
//! Not reached here: GUEST_NOT_RUNNING and HYPERVISOR_UNAVAILABLE (libvirt: see
//! tests/faults), GUEST_PERMISSION_DENIED (the host agent runs as root), GUEST_PATH_CHANGED
//! (tests/security_files swaps paths), GUEST_UNSUPPORTED (a guest without /proc),
//! GUEST_WRITE_INCOMPLETE (a full guest disk), CLIENT_CANCELLED (only audit records see
//! it), FS_FROZEN (tests/daemon_admin freezes a Debian guest) and INTERNAL; the unit table
//! in src/server/status maps each of them.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use common::Daemon;
use ocloudview_atp::{
    pb::{self, guest_agent_client::GuestAgentClient, write_file_request::Msg},
    server::reason::{DOMAIN, Reason},
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status, Streaming, transport::Channel};
use tonic_types::StatusExt;

/// The plugin: a caller `denied` may do nothing, guest `forbidden` is off limits, a file
/// named `secret.txt` may not be read (decided on the resolved path), `big.bin` is read
/// with `max_bytes` = 10; everything else is allowed. One task, `greet`.
const PLUGIN: &str = r#"
fn tasks() {
    #{ greet: #{ description: "say a word", argv: ["/bin/echo", "{word}"],
                 params: #{ word: ["hello", "bye"] } } }
}
fn authorize(req) {
    if req.caller.id == "denied" { return deny("this caller may do nothing"); }
    if req.domain.name == "forbidden" { return deny("forbidden is off limits"); }
    if req.rpc == "ReadFile" && req.file.path.ends_with("/secret.txt") { return deny("not that file"); }
    if req.rpc == "ReadFile" && req.file.path.ends_with("/big.bin") {
        return allow("a little").with(#{ max_bytes: 10 });
    }
    allow("the error reasons test")
}
"#;

const DENIED_TOKEN: &str = "denied-token";

/// Collects mismatches; fails at the end with all of them.
#[derive(Default)]
struct Checker {
    fails: Vec<String>,
    seen: BTreeSet<&'static str>,
}

impl Checker {
    /// Checks that `st` is an error with `reason` (and the code it implies, or `code`
    /// when given: GUEST_ERROR's follows the agent's text); returns its metadata.
    fn check(
        &mut self,
        what: &str,
        st: Option<Status>,
        reason: Reason,
        code: Option<Code>,
    ) -> HashMap<String, String> {
        self.seen.insert(reason.as_str());
        let Some(st) = st else {
            self.fails
                .push(format!("{what}: succeeded, expected {reason}"));
            return HashMap::new();
        };
        let want = code.unwrap_or(reason.code());
        if st.code() != want {
            self.fails.push(format!(
                "{what}: code {:?}, expected {want:?} ({})",
                st.code(),
                st.message()
            ));
        }
        match st.get_details_error_info() {
            None => self.fails.push(format!(
                "{what}: no ErrorInfo, expected {reason} ({:?}: {})",
                st.code(),
                st.message()
            )),
            Some(info) if info.reason != reason.as_str() || info.domain != DOMAIN => {
                self.fails.push(format!(
                    "{what}: reason {} (domain {}), expected {reason} ({})",
                    info.reason,
                    info.domain,
                    st.message()
                ));
            }
            Some(info) => {
                eprintln!("ok {what}: {reason} {:?}", info.metadata);
                return info.metadata;
            }
        }
        HashMap::new()
    }

    /// Checks a metadata value (only when the reason was right: else already reported).
    fn meta(&mut self, what: &str, m: &HashMap<String, String>, key: &str, want: &str) {
        if !m.is_empty() && m.get(key).map(String::as_str) != Some(want) {
            self.fails.push(format!(
                "{what}: metadata {key} = {:?}, expected {want:?}",
                m.get(key)
            ));
        }
    }

    fn finish(self) {
        eprintln!("reasons checked: {:?}", self.seen);
        assert!(
            self.fails.is_empty(),
            "{} error paths without their reason:\n{}",
            self.fails.len(),
            self.fails.join("\n")
        );
    }
}

/// The error of a streaming call: at the call, or the first one on its stream.
async fn stream_err<T>(r: Result<Response<Streaming<T>>, Status>) -> Option<Status> {
    let mut s = match r {
        Ok(s) => s.into_inner(),
        Err(st) => return Some(st),
    };
    loop {
        match s.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(st) => return Some(st),
        }
    }
}

/// `m` as the caller the plugin denies everything.
fn interactive_start(r: pb::ExecRequest) -> pb::ExecInput {
    pb::ExecInput {
        msg: Some(pb::exec_input::Msg::Start(r)),
    }
}

fn denied<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {DENIED_TOKEN}").parse().unwrap(),
    );
    r
}

fn header(path: &str, mode: pb::WriteMode, sha: Vec<u8>) -> pb::WriteFileRequest {
    pb::WriteFileRequest {
        msg: Some(Msg::Header(pb::WriteFileHeader {
            domain: "host".into(),
            path: path.into(),
            mode: mode as i32,
            expected_sha256: sha,
            ..Default::default()
        })),
    }
}

fn data(d: &[u8]) -> pb::WriteFileRequest {
    pb::WriteFileRequest {
        msg: Some(Msg::Data(d.to_vec())),
    }
}

fn read(domain: &str, path: &str) -> pb::ReadFileRequest {
    pb::ReadFileRequest {
        domain: domain.into(),
        path: path.into(),
        ..Default::default()
    }
}

fn agent_command(command: &str, arguments_json: &str) -> pb::AgentCommandRequest {
    pb::AgentCommandRequest {
        domain: "host".into(),
        command: command.into(),
        arguments_json: arguments_json.into(),
        timeout_ms: 0,
    }
}

fn task(name: &str, word: &str) -> pb::RunTaskRequest {
    pb::RunTaskRequest {
        domain: "host".into(),
        task: name.into(),
        params: [("word".to_owned(), word.to_owned())].into(),
    }
}

async fn tcp_client(port: u16) -> GuestAgentClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GuestAgentClient::new(ch)
}

/// The daemon of the main walk: guest `host` (a live agent), `stopped` (an agent that
/// never answers: SIGSTOP), `gone` (no agent), the plugin, a denied token over TCP, one
/// exec per caller and a 1 s header deadline.
struct Bed {
    host: HostAgent,
    stopped: HostAgent,
    _policies: tempfile::TempDir,
    daemon: Daemon,
    port: u16,
}

async fn bed() -> Bed {
    let host = HostAgent::start().unwrap();
    let stopped = HostAgent::start().unwrap();
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("10-errors.rhai"), PLUGIN).unwrap();
    let digest: String = Sha256::digest(DENIED_TOKEN)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let port = common::free_port();
    let daemon = Daemon::start(
        &[format!("tcp://127.0.0.1:{port}")],
        &format!(
            "[[server.tokens]]\nsha256 = \"{digest}\"\nidentity = \"denied\"\n\n\
             [policy]\ndir = \"{}\"\n\n[agent]\ntimeout_ms = 3000\n\n\
             [limits]\nexecs_per_caller = 1\nwrite_header_timeout_ms = 1000\n\n\
             [[guests]]\nname = \"host\"\nsocket = \"{}\"\n\n\
             [[guests]]\nname = \"stopped\"\nsocket = \"{}\"\n\n\
             [[guests]]\nname = \"gone\"\nsocket = \"{}/no-agent.sock\"\n",
            policies.path().display(),
            host.socket().display(),
            stopped.socket().display(),
            policies.path().display(),
        ),
    )
    .await;
    Bed {
        host,
        stopped,
        _policies: policies,
        daemon,
        port,
    }
}

#[tokio::test]
async fn every_rpc_error_carries_its_reason() {
    let b = bed().await;
    let mut c = b.daemon.client().await;
    let mut tcp = tcp_client(b.port).await;
    let mut k = Checker::default();
    let dir = b.host.dir().display().to_string();
    std::fs::write(b.host.dir().join("exists.txt"), b"x").unwrap();
    std::fs::write(b.host.dir().join("big.bin"), [7u8; 100]).unwrap();
    std::fs::write(b.host.dir().join("secret.txt"), b"s").unwrap();
    std::os::unix::fs::symlink(
        b.host.dir().join("secret.txt"),
        b.host.dir().join("link.txt"),
    )
    .unwrap();

    // --- UNAUTHENTICATED (TCP needs a token here) and POLICY_DENIED (the denied caller),
    // for every RPC.
    let st = tcp.ping(common::ping("host")).await.err();
    k.check("Ping without a token", st, Reason::Unauthenticated, None);
    let mut bad = Request::new(pb::ListDomainsRequest {});
    bad.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let st = tcp.list_domains(bad).await.err();
    k.check(
        "ListDomains, unknown token",
        st,
        Reason::Unauthenticated,
        None,
    );
    let st = stream_err(tcp.exec(common::sh_request("host", "true")).await).await;
    k.check("Exec without a token", st, Reason::Unauthenticated, None);
    let st = tcp
        .write_file(tokio_stream::iter(vec![header(
            "/tmp/x",
            pb::WriteMode::Create,
            vec![],
        )]))
        .await
        .err();
    k.check(
        "WriteFile without a token",
        st,
        Reason::Unauthenticated,
        None,
    );

    let d = "POLICY_DENIED";
    let st = tcp.ping(denied(common::ping("host"))).await.err();
    let m = k.check("Ping, denied caller", st, Reason::PolicyDenied, None);
    k.meta(d, &m, "plugin", "10-errors");
    let st = tcp
        .list_domains(denied(pb::ListDomainsRequest {}))
        .await
        .err();
    k.check("ListDomains, denied", st, Reason::PolicyDenied, None);
    let g = || pb::GetAgentInfoRequest {
        domain: "host".into(),
    };
    let st = tcp.get_agent_info(denied(g())).await.err();
    k.check("GetAgentInfo, denied", st, Reason::PolicyDenied, None);
    let st = tcp
        .get_os_info(denied(pb::GetOsInfoRequest {
            domain: "host".into(),
        }))
        .await
        .err();
    k.check("GetOsInfo, denied", st, Reason::PolicyDenied, None);
    let st = tcp
        .get_guest_info(denied(pb::GetGuestInfoRequest {
            domain: "host".into(),
        }))
        .await
        .err();
    k.check("GetGuestInfo, denied", st, Reason::PolicyDenied, None);
    let st = tcp
        .agent_command(denied(agent_command("guest-ping", "")))
        .await
        .err();
    k.check("AgentCommand, denied", st, Reason::PolicyDenied, None);
    let st = stream_err(tcp.exec(denied(common::sh_request("host", "true"))).await).await;
    k.check("Exec, denied", st, Reason::PolicyDenied, None);
    let st = stream_err(
        tcp.exec_interactive(denied(tokio_stream::iter(vec![interactive_start(
            common::sh_request("host", "cat"),
        )])))
        .await,
    )
    .await;
    k.check("ExecInteractive, denied", st, Reason::PolicyDenied, None);
    let st = stream_err(
        tcp.exec_attach(denied(pb::ExecAttachRequest {
            exec_id: "x".into(),
        }))
        .await,
    )
    .await;
    k.check("ExecAttach, denied", st, Reason::PolicyDenied, None);
    let st = tcp
        .exec_cancel(denied(pb::ExecCancelRequest {
            exec_id: "x".into(),
        }))
        .await
        .err();
    k.check("ExecCancel, denied", st, Reason::PolicyDenied, None);
    let st = stream_err(tcp.read_file(denied(read("host", "/etc/hostname"))).await).await;
    k.check("ReadFile, denied", st, Reason::PolicyDenied, None);
    let st = tcp
        .write_file(denied(tokio_stream::iter(vec![
            header(&format!("{dir}/w.txt"), pb::WriteMode::Create, vec![]),
            data(b"x"),
        ])))
        .await
        .err();
    k.check("WriteFile, denied", st, Reason::PolicyDenied, None);
    let st = tcp
        .list_tasks(denied(pb::ListTasksRequest {
            domain: "host".into(),
        }))
        .await
        .err();
    k.check("ListTasks, denied", st, Reason::PolicyDenied, None);
    let st = stream_err(tcp.run_task(denied(task("greet", "hello"))).await).await;
    k.check("RunTask, denied", st, Reason::PolicyDenied, None);

    // --- Ping: the guest name, and the agent behind it.
    let st = c.ping(common::ping("")).await.err();
    k.check("Ping, empty domain", st, Reason::InvalidArgument, None);
    let st = c.ping(common::ping(&"x".repeat(600))).await.err();
    k.check("Ping, 600-byte domain", st, Reason::InvalidArgument, None);
    let st = c.ping(common::ping("nope")).await.err();
    let m = k.check("Ping, unknown guest", st, Reason::GuestNotFound, None);
    k.meta("GUEST_NOT_FOUND", &m, "domain", "nope");
    let st = c.ping(common::ping("forbidden")).await.err();
    let m = k.check("Ping, forbidden guest", st, Reason::PolicyDenied, None);
    k.meta(d, &m, "plugin", "10-errors");
    let st = c.ping(common::ping("gone")).await.err();
    let m = k.check("Ping, no agent", st, Reason::AgentUnavailable, None);
    k.meta("AGENT_UNAVAILABLE", &m, "domain", "gone");
    let pid = nix::unistd::Pid::from_raw(b.stopped.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let st = c.ping(common::ping("stopped")).await.err();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let m = k.check(
        "Ping, agent that does not answer",
        st,
        Reason::AgentBusy,
        None,
    );
    k.meta("AGENT_BUSY", &m, "timeout_ms", "3000");

    // --- The facts RPCs.
    let st = c
        .get_agent_info(pb::GetAgentInfoRequest {
            domain: "nope".into(),
        })
        .await
        .err();
    k.check(
        "GetAgentInfo, unknown guest",
        st,
        Reason::GuestNotFound,
        None,
    );
    let st = c
        .get_os_info(pb::GetOsInfoRequest {
            domain: "gone".into(),
        })
        .await
        .err();
    k.check("GetOsInfo, no agent", st, Reason::AgentUnavailable, None);
    let st = c
        .get_guest_info(pb::GetGuestInfoRequest {
            domain: "nope".into(),
        })
        .await
        .err();
    k.check(
        "GetGuestInfo, unknown guest",
        st,
        Reason::GuestNotFound,
        None,
    );

    // --- AgentCommand: checked by the daemon, then by the agent.
    let st = c.agent_command(agent_command("rm -rf", "")).await.err();
    k.check(
        "AgentCommand, not a command",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = c
        .agent_command(agent_command("guest-file-read", ""))
        .await
        .err();
    k.check(
        "AgentCommand, refused passthrough",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = c
        .agent_command(agent_command("guest-ping", "[1]"))
        .await
        .err();
    k.check(
        "AgentCommand, arguments not an object",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = c
        .agent_command(agent_command("guest-fstrim", ""))
        .await
        .err();
    let m = k.check(
        "AgentCommand, blocked command",
        st,
        Reason::CommandDisabled,
        None,
    );
    k.meta("COMMAND_DISABLED", &m, "command", "guest-fstrim");
    let st = c
        .agent_command(agent_command("guest-no-such-command", ""))
        .await
        .err();
    k.check(
        "AgentCommand, unknown command",
        st,
        Reason::CommandUnknown,
        None,
    );
    let st = c
        .agent_command(agent_command("guest-file-close", r#"{"handle": 987654}"#))
        .await
        .err();
    let m = k.check(
        "AgentCommand, agent GenericError",
        st,
        Reason::GuestError,
        Some(Code::NotFound),
    );
    k.meta("GUEST_ERROR", &m, "class", "GenericError");

    // --- Exec, RunTask, ExecAttach, ExecCancel.
    let mut no_command = common::sh_request("host", "true");
    no_command.command = None;
    let st = stream_err(c.exec(no_command).await).await;
    k.check("Exec, no command", st, Reason::InvalidArgument, None);
    let mut empty_shell = common::sh_request("host", "true");
    empty_shell.command = Some(pb::exec_request::Command::Shell(String::new()));
    let st = stream_err(c.exec(empty_shell).await).await;
    k.check("Exec, empty shell line", st, Reason::InvalidArgument, None);
    let mut bad_env = common::sh_request("host", "true");
    bad_env.env = vec!["A-B=1".into()];
    let st = stream_err(c.exec(bad_env).await).await;
    k.check(
        "Exec, bad environment name",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = stream_err(c.exec(common::sh_request("nope", "true")).await).await;
    k.check("Exec, unknown guest", st, Reason::GuestNotFound, None);
    // ExecInteractive: the first message must be `start`; a terminal message without a
    // terminal is refused, ending the stream.
    let st = stream_err(
        c.exec_interactive(tokio_stream::iter(vec![pb::ExecInput {
            msg: Some(pb::exec_input::Msg::Stdin(b"x".to_vec())),
        }]))
        .await,
    )
    .await;
    k.check(
        "ExecInteractive, stdin first",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = stream_err(c.run_task(task("nope", "hello")).await).await;
    let m = k.check("RunTask, unknown task", st, Reason::TaskNotFound, None);
    k.meta("TASK_NOT_FOUND", &m, "task", "nope");
    let st = stream_err(c.run_task(task("greet", "evil")).await).await;
    k.check(
        "RunTask, value not allowed",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = stream_err(
        c.exec_attach(pb::ExecAttachRequest {
            exec_id: "no-such-exec".into(),
        })
        .await,
    )
    .await;
    let m = k.check("ExecAttach, unknown id", st, Reason::ExecNotFound, None);
    k.meta("EXEC_NOT_FOUND", &m, "exec_id", "no-such-exec");
    let st = c
        .exec_cancel(pb::ExecCancelRequest {
            exec_id: "no-such-exec".into(),
        })
        .await
        .err();
    k.check("ExecCancel, unknown id", st, Reason::ExecNotFound, None);
    // One exec running (the limit is 1): a second reader, then a second exec.
    let mut running = c
        .exec(common::sh_request("host", "sleep 60"))
        .await
        .unwrap()
        .into_inner();
    let started = running.message().await.unwrap().unwrap();
    let Some(pb::exec_event::Event::Started(s)) = started.event else {
        panic!("first exec event is not Started: {started:?}");
    };
    let st = stream_err(
        c.exec_attach(pb::ExecAttachRequest {
            exec_id: s.exec_id.clone(),
        })
        .await,
    )
    .await;
    k.check(
        "ExecAttach, attached elsewhere",
        st,
        Reason::ExecAttached,
        None,
    );
    let st = stream_err(c.exec(common::sh_request("host", "true")).await).await;
    let m = k.check(
        "Exec, over execs_per_caller",
        st,
        Reason::LimitExceeded,
        None,
    );
    k.meta("LIMIT_EXCEEDED", &m, "limit", "limits.execs_per_caller");
    k.meta("LIMIT_EXCEEDED", &m, "value", "1");
    c.exec_cancel(pb::ExecCancelRequest {
        exec_id: s.exec_id.clone(),
    })
    .await
    .unwrap();
    let end = common::drain_exec(running).await;
    assert!(
        end.exited.is_some(),
        "the cancelled exec did not end: {end:?}"
    );

    // --- ReadFile.
    let st = stream_err(c.read_file(read("host", "relative/path")).await).await;
    k.check("ReadFile, relative path", st, Reason::InvalidArgument, None);
    let st = stream_err(c.read_file(read("host", &format!("{dir}/missing"))).await).await;
    k.check(
        "ReadFile, missing file",
        st,
        Reason::GuestPathNotFound,
        None,
    );
    let st = stream_err(c.read_file(read("nope", "/etc/hostname")).await).await;
    k.check("ReadFile, unknown guest", st, Reason::GuestNotFound, None);
    let st = stream_err(c.read_file(read("host", &format!("{dir}/big.bin"))).await).await;
    let m = k.check("ReadFile, over max_bytes", st, Reason::LimitExceeded, None);
    k.meta("LIMIT_EXCEEDED", &m, "limit", "max_bytes");
    k.meta("LIMIT_EXCEEDED", &m, "value", "10");
    let st = stream_err(c.read_file(read("host", &format!("{dir}/link.txt"))).await).await;
    let m = k.check(
        "ReadFile, link to a denied file",
        st,
        Reason::PolicyDenied,
        None,
    );
    k.meta(d, &m, "path", &format!("{dir}/secret.txt"));

    // --- WriteFile.
    let st = c
        .write_file(tokio_stream::iter(vec![data(b"no header")]))
        .await
        .err();
    k.check(
        "WriteFile, data before the header",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = c
        .write_file(tokio_stream::pending::<pb::WriteFileRequest>())
        .await
        .err();
    let m = k.check(
        "WriteFile, no header in time",
        st,
        Reason::ClientTooSlow,
        None,
    );
    k.meta(
        "CLIENT_TOO_SLOW",
        &m,
        "limit",
        "limits.write_header_timeout_ms",
    );
    let path = |f: &str| format!("{dir}/{f}");
    let st = c
        .write_file(tokio_stream::iter(vec![header(
            &path("w.txt"),
            pb::WriteMode::Create,
            vec![1; 5],
        )]))
        .await
        .err();
    k.check(
        "WriteFile, 5-byte sha256",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = c
        .write_file(tokio_stream::iter(vec![
            header(&path("w.txt"), pb::WriteMode::Create, vec![0; 32]),
            data(b"x"),
        ]))
        .await
        .err();
    k.check(
        "WriteFile, checksum mismatch",
        st,
        Reason::InvalidArgument,
        None,
    );
    let st = c
        .write_file(tokio_stream::iter(vec![
            header(&path("missing"), pb::WriteMode::Truncate, vec![]),
            data(b"x"),
        ]))
        .await
        .err();
    k.check(
        "WriteFile, TRUNCATE of a missing file",
        st,
        Reason::GuestPathNotFound,
        None,
    );
    let st = c
        .write_file(tokio_stream::iter(vec![
            header(&path("exists.txt"), pb::WriteMode::Exclusive, vec![]),
            data(b"x"),
        ]))
        .await
        .err();
    k.check(
        "WriteFile, EXCLUSIVE of an existing file",
        st,
        Reason::GuestPathExists,
        None,
    );
    let mut h = header("/tmp/x", pb::WriteMode::Create, vec![]);
    if let Some(Msg::Header(h)) = &mut h.msg {
        h.domain = "nope".into();
    }
    let st = c.write_file(tokio_stream::iter(vec![h])).await.err();
    k.check("WriteFile, unknown guest", st, Reason::GuestNotFound, None);

    // Last: its `cat` holds the caller's one exec slot until it has seen EOF.
    let resize = pb::ExecInput {
        msg: Some(pb::exec_input::Msg::Resize(pb::TerminalSize {
            rows: 24,
            cols: 80,
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(interactive_start(common::sh_request("host", "cat")))
        .await
        .unwrap();
    tx.send(resize).await.unwrap();
    let st = stream_err(
        c.exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await,
    )
    .await;
    drop(tx);
    k.check(
        "ExecInteractive, resize without a tty",
        st,
        Reason::GuestUnsupported,
        None,
    );

    k.finish();
}

/// A daemon that cannot write its audit log refuses every request with AUDIT_UNAVAILABLE.
#[tokio::test]
async fn an_unwritable_audit_log_is_audit_unavailable() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "[audit]\npath = \"/dev/full\"\n").await;
    let mut c = d.client().await;
    let mut k = Checker::default();
    let st = c.ping(common::ping("host")).await.err();
    k.check("Ping, audit log full", st, Reason::AuditUnavailable, None);
    let st = stream_err(c.exec(common::sh_request("host", "true")).await).await;
    k.check("Exec, audit log full", st, Reason::AuditUnavailable, None);
    k.finish();
}

/// Streams open when the daemon stops end with DAEMON_SHUTTING_DOWN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_at_shutdown_is_daemon_shutting_down() {
    let agent = HostAgent::start().unwrap();
    let mut d = common::daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let mut s = c
        .exec(common::sh_request("host", "sleep 60"))
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::exec_event::Event::Started(_))
    ));
    let status = tokio::task::block_in_place(|| d.terminate());
    eprintln!("daemon stopped: {status}");
    let st = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(st) => return Some(st),
            }
        }
    })
    .await
    .unwrap();
    let mut k = Checker::default();
    k.check(
        "Exec stream at shutdown",
        st,
        Reason::DaemonShuttingDown,
        None,
    );
    k.finish();
}
