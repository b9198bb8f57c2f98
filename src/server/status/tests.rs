use std::{path::Path, time::Duration};

use tonic_types::StatusExt;

use super::{agent::agent_error, *};
use crate::{config::Config, guests::GuestRegistry, qga::QgaError, transport::TransportError};

fn registry() -> crate::server::guests::Guests {
    let text = "[server]\nlisten = [\"unix:///run/atp/atp.sock\"]\n";
    crate::server::guests::Guests::new(std::sync::Arc::new(GuestRegistry::from_config(
        &Config::parse(text, Path::new("/")).unwrap(),
    )))
}

fn agent(class: &str, desc: &str) -> QgaError {
    QgaError::Agent {
        command: "guest-exec".into(),
        class: class.into(),
        desc: desc.into(),
    }
}

fn tr(t: TransportError) -> QgaError {
    QgaError::Transport(t)
}

/// Every error the daemon maps, with the code and reason a client sees.
fn cases() -> Vec<(ApiError, Code, Reason)> {
    use Reason as R;
    let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let g = registry();
    let q = |e: QgaError| agent_error(&g, "vm", e);
    vec![
        (
            ApiError::InvalidArgument("x".into()),
            Code::InvalidArgument,
            R::InvalidArgument,
        ),
        (
            ApiError::Unauthenticated("x".into()),
            Code::Unauthenticated,
            R::Unauthenticated,
        ),
        (
            ApiError::PolicyDenied {
                plugin: Some("p".into()),
                reason: "no".into(),
                path: None,
            },
            Code::PermissionDenied,
            R::PolicyDenied,
        ),
        (
            ApiError::AuditUnavailable,
            Code::Unavailable,
            R::AuditUnavailable,
        ),
        (
            ApiError::LimitExceeded {
                what: "too many open streams for this caller",
                limit: "limits.streams_per_caller",
                value: 2,
            },
            Code::ResourceExhausted,
            R::LimitExceeded,
        ),
        (
            ApiError::PolicyMaxBytes {
                what: "read stopped at",
                value: 5,
            },
            Code::ResourceExhausted,
            R::LimitExceeded,
        ),
        (
            GuestError::Unknown("vm".into()).into(),
            Code::NotFound,
            R::GuestNotFound,
        ),
        (
            GuestError::InvalidName("".into()).into(),
            Code::InvalidArgument,
            R::InvalidArgument,
        ),
        (
            GuestError::Libvirt(LibvirtError::Connect {
                uri: "u".into(),
                message: "m".into(),
            })
            .into(),
            Code::Unavailable,
            R::HypervisorUnavailable,
        ),
        (
            GuestError::Libvirt(LibvirtError::Other("o".into())).into(),
            Code::Unavailable,
            R::HypervisorUnavailable,
        ),
        (
            GuestError::Libvirt(LibvirtError::DomainNotFound {
                name: "d".into(),
                uri: "u".into(),
            })
            .into(),
            Code::NotFound,
            R::GuestNotFound,
        ),
        (
            q(tr(TransportError::Connect {
                path: "/x".into(),
                error: io(),
            })),
            Code::Unavailable,
            R::AgentUnavailable,
        ),
        (
            q(tr(TransportError::Io(io()))),
            Code::Unavailable,
            R::AgentUnavailable,
        ),
        (
            q(tr(TransportError::Closed)),
            Code::Unavailable,
            R::AgentUnavailable,
        ),
        (
            q(tr(TransportError::Protocol("p".into()))),
            Code::Unavailable,
            R::AgentUnavailable,
        ),
        (
            q(tr(TransportError::AgentUnavailable("a".into()))),
            Code::Unavailable,
            R::AgentUnavailable,
        ),
        (
            q(tr(TransportError::Libvirt {
                code: "c".into(),
                message: "m".into(),
            })),
            Code::Unavailable,
            R::HypervisorUnavailable,
        ),
        (
            q(tr(TransportError::Stopped)),
            Code::Unavailable,
            R::DaemonShuttingDown,
        ),
        (
            q(tr(TransportError::ConnectionLost("eof".into()))),
            Code::Unavailable,
            R::HypervisorUnavailable,
        ),
        (
            q(tr(TransportError::Timeout(Duration::from_secs(1)))),
            Code::DeadlineExceeded,
            R::AgentBusy,
        ),
        (
            q(tr(TransportError::DomainNotRunning("d".into()))),
            Code::FailedPrecondition,
            R::GuestNotRunning,
        ),
        (
            q(tr(TransportError::DomainNotFound("d".into()))),
            Code::NotFound,
            R::GuestNotFound,
        ),
        (
            q(tr(TransportError::RequestTooLarge { size: 9, max: 1 })),
            Code::InvalidArgument,
            R::InvalidArgument,
        ),
        (
            q(agent(
                "CommandNotFound",
                "Command guest-exec has been disabled",
            )),
            Code::FailedPrecondition,
            R::CommandDisabled,
        ),
        (
            // qemu-ga 7.2 while frozen: not a blocklist.
            q(agent(
                "CommandNotFound",
                "Command guest-exec has been disabled: the agent is in frozen state",
            )),
            Code::FailedPrecondition,
            R::FsFrozen,
        ),
        (
            q(agent(
                "CommandNotFound",
                "The command guest-x has not been found",
            )),
            Code::Unimplemented,
            R::CommandUnknown,
        ),
        (
            q(agent("Unsupported", "streamed stdin needs a POSIX guest")),
            Code::FailedPrecondition,
            R::GuestUnsupported,
        ),
        (
            q(agent("GenericError", "boom")),
            Code::Unknown,
            R::GuestError,
        ),
        (
            q(agent(
                "GenericError",
                "failed to open file '/x' (mode: 'r'): No such file or directory",
            )),
            Code::NotFound,
            R::GuestPathNotFound,
        ),
        (
            q(agent("GenericError", "handle '999' has not been found")),
            Code::NotFound,
            R::GuestError,
        ),
        (
            q(agent(
                "GenericError",
                "failed to open file: Permission denied",
            )),
            Code::PermissionDenied,
            R::GuestPermissionDenied,
        ),
        (
            q(agent("GenericError", "File exists")),
            Code::AlreadyExists,
            R::GuestPathExists,
        ),
        (
            q(agent("GenericError", "open: Is a directory")),
            Code::FailedPrecondition,
            R::GuestPathUnsuitable,
        ),
        (
            q(agent("GenericError", "open: File name too long")),
            Code::InvalidArgument,
            R::GuestError,
        ),
        (
            q(agent("GenericError", "open: No such device or address")),
            Code::FailedPrecondition,
            R::GuestError,
        ),
        (
            q(agent("GenericError", "No space left on device")),
            Code::ResourceExhausted,
            R::GuestError,
        ),
        (
            q(agent(
                "GenericError",
                "value '51380224' is invalid for argument count",
            )),
            Code::InvalidArgument,
            R::GuestError,
        ),
        (
            q(QgaError::CommandDisabled {
                command: "guest-exec".into(),
            }),
            Code::FailedPrecondition,
            R::CommandDisabled,
        ),
        (
            q(QgaError::InvalidArgument("x".into())),
            Code::InvalidArgument,
            R::InvalidArgument,
        ),
        (
            q(QgaError::LimitExceeded {
                what: "too many open guest file handles on this guest",
                limit: "limits.open_handles_per_guest",
                value: 4,
            }),
            Code::ResourceExhausted,
            R::LimitExceeded,
        ),
        (
            q(QgaError::Decode {
                command: "guest-info".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            }),
            Code::Internal,
            R::Internal,
        ),
        (
            q(QgaError::Encode {
                command: "guest-exec".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            }),
            Code::Internal,
            R::Internal,
        ),
        (
            ApiError::GuestPathNotFound("p".into()),
            Code::NotFound,
            R::GuestPathNotFound,
        ),
        (
            ApiError::GuestPathExists("p".into()),
            Code::AlreadyExists,
            R::GuestPathExists,
        ),
        (
            ApiError::GuestPathUnsuitable("p".into()),
            Code::FailedPrecondition,
            R::GuestPathUnsuitable,
        ),
        (
            ApiError::GuestPathChanged("p".into()),
            Code::Aborted,
            R::GuestPathChanged,
        ),
        (
            ApiError::GuestUnsupported("p".into()),
            Code::FailedPrecondition,
            R::GuestUnsupported,
        ),
        (
            ApiError::GuestWriteIncomplete {
                written: 1,
                wanted: 2,
            },
            Code::DataLoss,
            R::GuestWriteIncomplete,
        ),
        (
            ApiError::ExecNotFound("e".into()),
            Code::NotFound,
            R::ExecNotFound,
        ),
        (
            ApiError::ExecEnded("e".into()),
            Code::NotFound,
            R::ExecNotFound,
        ),
        (
            ApiError::ExecAttached,
            Code::FailedPrecondition,
            R::ExecAttached,
        ),
        (
            ApiError::TaskNotFound("t".into()),
            Code::NotFound,
            R::TaskNotFound,
        ),
        (
            ApiError::ShuttingDown,
            Code::Unavailable,
            R::DaemonShuttingDown,
        ),
        (
            ApiError::ClientTooSlow {
                message: "slow".into(),
                limit: None,
            },
            Code::DeadlineExceeded,
            R::ClientTooSlow,
        ),
        (
            ApiError::ClientCancelled("gone".into()),
            Code::Cancelled,
            R::ClientCancelled,
        ),
        (
            ApiError::ClientStream(Status::cancelled("reset")),
            Code::Cancelled,
            R::ClientCancelled,
        ),
        (
            ApiError::ClientStream(Status::internal("decode")),
            Code::InvalidArgument,
            R::InvalidArgument,
        ),
        (
            ApiError::Internal("bug".into()),
            Code::Internal,
            R::Internal,
        ),
        // Directory trees (issue 15).
        (
            ApiError::TreeEntryRefused {
                entry: "../x".into(),
                message: "entry \"../x\" refused".into(),
                from_guest: false,
            },
            Code::InvalidArgument,
            R::TreeEntryRefused,
        ),
        (
            ApiError::TreeEntryRefused {
                entry: "l".into(),
                message: "entry \"l\" refused".into(),
                from_guest: true,
            },
            Code::FailedPrecondition,
            R::GuestTreeRefused,
        ),
        (
            ApiError::TreeChecksum("mismatch".into()),
            Code::DataLoss,
            R::TreeChecksumMismatch,
        ),
        (
            ApiError::FsFrozen("frozen".into()),
            Code::FailedPrecondition,
            R::FsFrozen,
        ),
    ]
}

/// Which variant `e` is: exhaustive, so a new variant does not compile until it has an
/// arm here, and `status_table` fails until `cases` has one of it.
fn variant(e: &ApiError) -> usize {
    match e {
        ApiError::InvalidArgument(_) => 0,
        ApiError::Unauthenticated(_) => 1,
        ApiError::PolicyDenied { .. } => 2,
        ApiError::AuditUnavailable => 3,
        ApiError::LimitExceeded { .. } => 4,
        ApiError::PolicyMaxBytes { .. } => 5,
        ApiError::Guest(_) => 6,
        ApiError::Agent(_) => 7,
        ApiError::GuestPathNotFound(_) => 8,
        ApiError::GuestPathExists(_) => 9,
        ApiError::GuestPathUnsuitable(_) => 10,
        ApiError::GuestPathChanged(_) => 11,
        ApiError::GuestUnsupported(_) => 12,
        ApiError::GuestWriteIncomplete { .. } => 13,
        ApiError::ExecNotFound(_) => 14,
        ApiError::ExecEnded(_) => 15,
        ApiError::ExecAttached => 16,
        ApiError::TaskNotFound(_) => 17,
        ApiError::ShuttingDown => 18,
        ApiError::ClientTooSlow { .. } => 19,
        ApiError::ClientCancelled(_) => 20,
        ApiError::ClientStream(_) => 21,
        ApiError::Internal(_) => 22,
        // Directory trees (issue 15).
        ApiError::TreeEntryRefused { .. } => 23,
        ApiError::TreeChecksum(_) => 24,
        ApiError::FsFrozen(_) => 25,
    }
}
const VARIANTS: usize = 26;

#[test]
fn status_table() {
    let mut seen = std::collections::HashSet::new();
    let mut variants = std::collections::HashSet::new();
    for (err, code, reason) in cases() {
        variants.insert(variant(&err));
        let st = to_status(&err);
        assert_eq!(st.code(), code, "{err}");
        assert!(!st.message().is_empty());
        let info = st.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, reason.as_str(), "{err}");
        assert_eq!(info.domain, DOMAIN);
        // A reason implies its code; only GUEST_ERROR's follows the agent's text.
        if reason != Reason::GuestError {
            assert_eq!(reason.code(), code, "{reason}");
        }
        seen.insert(reason);
    }
    assert_eq!(
        variants.len(),
        VARIANTS,
        "a variant of ApiError has no case"
    );
    // Every reason the daemon can send has a case (AGENT_* included).
    for r in Reason::ALL {
        assert!(seen.contains(r), "no case yields {r}");
    }
}

#[test]
fn metadata_names_what_a_client_acts_on() {
    let info = |e: ApiError| to_status(&e).get_details_error_info().unwrap().metadata;
    let m = info(ApiError::PolicyDenied {
        plugin: Some("30-role-exec".into()),
        reason: "no".into(),
        path: Some("/etc/shadow".into()),
    });
    assert_eq!(m["plugin"], "30-role-exec");
    assert_eq!(m["path"], "/etc/shadow");
    let m = info(ApiError::PolicyDenied {
        plugin: None,
        reason: "no".into(),
        path: None,
    });
    assert_eq!(m["plugin"], "default");
    let m = info(ApiError::LimitExceeded {
        what: "w",
        limit: "limits.execs_per_caller",
        value: 3,
    });
    assert_eq!(
        (m["limit"].as_str(), m["value"].as_str()),
        ("limits.execs_per_caller", "3")
    );
    let g = registry();
    let m = info(agent_error(&g, "web-01", agent("GenericError", "boom")));
    assert_eq!(m["domain"], "web-01");
    assert_eq!(m["command"], "guest-exec");
    assert_eq!(m["class"], "GenericError");
    let m = info(GuestError::Unknown("x".repeat(5000)).into());
    assert!(m["domain"].len() <= MAX_META + '…'.len_utf8());
}

#[test]
fn helpers_fail_precondition_where_the_text_says_nothing() {
    let g = registry();
    let st = helper_status(&g, "vm", agent("GenericError", "boom"));
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert_eq!(st.get_details_error_info().unwrap().reason, "GUEST_ERROR");
    let st = helper_status(&g, "vm", agent("GenericError", "mkdir: File exists"));
    assert_eq!(st.code(), Code::AlreadyExists);
    let st = agent_status(&g, "vm", agent("GenericError", "boom"));
    assert_eq!(st.code(), Code::Unknown);
}

#[test]
fn disabled_command_names_the_guest_setting() {
    let g = registry();
    let st = agent_status(
        &g,
        "vm",
        agent("CommandNotFound", "Command guest-exec has been disabled"),
    );
    assert!(st.message().contains("--block-rpcs"), "{}", st.message());
    assert!(st.message().contains("/etc/sysconfig/qemu-ga"));
}

#[test]
fn host_paths_stay_out_of_messages() {
    let g = registry();
    let st = agent_status(
        &g,
        "vm",
        tr(TransportError::Connect {
            path: "/run/qemu/secret-guest/qga.sock".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    );
    assert_eq!(st.code(), Code::Unavailable);
    assert!(!st.message().contains("/run/qemu"), "{}", st.message());
    assert!(st.message().contains("agent"), "{}", st.message());
}

#[test]
fn long_messages_are_capped() {
    let st = to_status(&ApiError::InvalidArgument("x".repeat(10_000)));
    assert!(st.message().len() <= MAX_MESSAGE + '…'.len_utf8());
}
