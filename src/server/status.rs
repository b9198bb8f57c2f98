//! The one place where our errors become gRPC statuses.

use tonic::{Code, Status};

use crate::{guests::GuestError, libvirt::LibvirtError, qga::QgaError, transport::TransportError};

/// Everything an RPC can fail with, before it is mapped to a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A configured bound (`[limits]`) is reached for this caller or guest.
    #[error("{what}: the limit {limit} = {value} is reached; retry when some have ended")]
    LimitExceeded {
        /// What ran out.
        what: &'static str,
        /// The setting, e.g. `limits.streams_per_caller`.
        limit: &'static str,
        /// Its value.
        value: usize,
    },
    /// The guest name did not resolve.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The agent command failed.
    #[error(transparent)]
    Qga(#[from] QgaError),
}

/// Maps an error to the status a client sees. Exhaustive over our own enums, so a new
/// variant cannot slip through unmapped.
pub fn to_status(err: &ApiError) -> Status {
    let code = match err {
        ApiError::InvalidArgument(_) => Code::InvalidArgument,
        ApiError::LimitExceeded { .. } => Code::ResourceExhausted,
        ApiError::Guest(g) => match g {
            GuestError::Unknown(_) => Code::NotFound,
            GuestError::InvalidName(_) => Code::InvalidArgument,
            GuestError::Libvirt(l) => libvirt_code(l),
        },
        ApiError::Qga(q) => match q {
            QgaError::Transport(t) => transport_code(t),
            QgaError::Agent { class, desc, .. } => {
                if class == "CommandNotFound" && desc.contains("disabled") {
                    Code::FailedPrecondition
                } else if class == "CommandNotFound" {
                    Code::Unimplemented
                } else {
                    generic_code(desc)
                }
            }
            QgaError::CommandDisabled { .. } => Code::FailedPrecondition,
            QgaError::InvalidArgument(_) => Code::InvalidArgument,
            QgaError::LimitExceeded { .. } => Code::ResourceExhausted,
            QgaError::Decode { .. } | QgaError::Encode { .. } => Code::Internal,
        },
    };
    Status::new(code, bounded(message(err)))
}

/// Longest status message: it travels in an HTTP/2 header, and messages can echo
/// request fields (a huge guest name must not break the response).
const MAX_MESSAGE: usize = 1024;

fn bounded(mut m: String) -> String {
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

/// qemu-ga reports every other failure as `GenericError`; its description carries the
/// guest's errno text, which says what kind of failure it was.
fn generic_code(desc: &str) -> Code {
    const TABLE: &[(&str, Code)] = &[
        ("No such file or directory", Code::NotFound),
        ("No such device or address", Code::FailedPrecondition),
        ("Invalid argument", Code::InvalidArgument),
        ("File name too long", Code::InvalidArgument),
        ("Read-only file system", Code::FailedPrecondition),
        ("Device or resource busy", Code::FailedPrecondition),
        ("Text file busy", Code::FailedPrecondition),
        ("Too many open files", Code::ResourceExhausted),
        ("has not been found", Code::NotFound),
        ("Permission denied", Code::PermissionDenied),
        ("Operation not permitted", Code::PermissionDenied),
        ("File exists", Code::AlreadyExists),
        ("No space left on device", Code::ResourceExhausted),
        ("Is a directory", Code::FailedPrecondition),
        ("Not a directory", Code::FailedPrecondition),
        ("is invalid for argument", Code::InvalidArgument),
        ("Invalid parameter", Code::InvalidArgument),
        ("frozen state", Code::FailedPrecondition),
    ];
    TABLE
        .iter()
        .find(|(needle, _)| desc.contains(needle))
        .map_or(Code::Unknown, |(_, code)| *code)
}

fn libvirt_code(e: &LibvirtError) -> Code {
    match e {
        LibvirtError::Connect { .. } => Code::Unavailable,
        LibvirtError::DomainNotFound { .. } => Code::NotFound,
        LibvirtError::Other(_) => Code::Unavailable,
    }
}

fn transport_code(e: &TransportError) -> Code {
    match e {
        TransportError::Connect { .. }
        | TransportError::Io(_)
        | TransportError::Closed
        | TransportError::Protocol(_)
        | TransportError::AgentUnavailable(_)
        | TransportError::Libvirt { .. }
        | TransportError::Stopped => Code::Unavailable,
        TransportError::ConnectionLost(_) => Code::Unavailable,
        TransportError::Timeout(_) => Code::DeadlineExceeded,
        TransportError::DomainNotRunning(_) => Code::FailedPrecondition,
        TransportError::DomainNotFound(_) => Code::NotFound,
        TransportError::RequestTooLarge { .. } => Code::InvalidArgument,
    }
}

/// The client-facing message: our error chain, plus what to do where we know it.
fn message(err: &ApiError) -> String {
    match err {
        ApiError::Qga(QgaError::Agent { class, desc, .. })
            if class == "CommandNotFound" && desc.contains("disabled") =>
        {
            format!(
                "{err}; the guest agent blocks this command: check qemu-ga's --block-rpcs/--allow-rpcs \
                 (BLOCK_RPCS/ALLOW_RPCS in /etc/sysconfig/qemu-ga on RHEL-like guests)"
            )
        }
        // The socket's host path is the daemon's business, not the caller's.
        ApiError::Qga(QgaError::Transport(TransportError::Connect { error, .. })) => {
            format!("cannot connect to the guest agent's socket: {error}")
        }
        _ => err.to_string(),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        to_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn agent(class: &str, desc: &str) -> ApiError {
        ApiError::Qga(QgaError::Agent {
            command: "guest-exec".into(),
            class: class.into(),
            desc: desc.into(),
        })
    }

    fn tr(t: TransportError) -> ApiError {
        ApiError::Qga(QgaError::Transport(t))
    }

    #[test]
    fn status_table() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases: Vec<(ApiError, Code)> = vec![
            (ApiError::InvalidArgument("x".into()), Code::InvalidArgument),
            (
                ApiError::LimitExceeded {
                    what: "too many open streams for this caller",
                    limit: "limits.streams_per_caller",
                    value: 2,
                },
                Code::ResourceExhausted,
            ),
            (GuestError::Unknown("vm".into()).into(), Code::NotFound),
            (
                GuestError::InvalidName("".into()).into(),
                Code::InvalidArgument,
            ),
            (
                GuestError::Libvirt(LibvirtError::Connect {
                    uri: "u".into(),
                    message: "m".into(),
                })
                .into(),
                Code::Unavailable,
            ),
            (
                GuestError::Libvirt(LibvirtError::DomainNotFound {
                    name: "d".into(),
                    uri: "u".into(),
                })
                .into(),
                Code::NotFound,
            ),
            (
                tr(TransportError::Connect {
                    path: "/x".into(),
                    error: io(),
                }),
                Code::Unavailable,
            ),
            (tr(TransportError::Io(io())), Code::Unavailable),
            (tr(TransportError::Closed), Code::Unavailable),
            (tr(TransportError::Protocol("p".into())), Code::Unavailable),
            (
                tr(TransportError::AgentUnavailable("a".into())),
                Code::Unavailable,
            ),
            (tr(TransportError::Stopped), Code::Unavailable),
            (
                tr(TransportError::ConnectionLost("eof".into())),
                Code::Unavailable,
            ),
            (
                tr(TransportError::Timeout(Duration::from_secs(1))),
                Code::DeadlineExceeded,
            ),
            (
                tr(TransportError::DomainNotRunning("d".into())),
                Code::FailedPrecondition,
            ),
            (
                tr(TransportError::DomainNotFound("d".into())),
                Code::NotFound,
            ),
            (
                agent("CommandNotFound", "Command guest-exec has been disabled"),
                Code::FailedPrecondition,
            ),
            (
                agent("CommandNotFound", "The command guest-x has not been found"),
                Code::Unimplemented,
            ),
            (agent("GenericError", "boom"), Code::Unknown),
            (
                agent(
                    "GenericError",
                    "failed to open file '/x' (mode: 'r'): No such file or directory",
                ),
                Code::NotFound,
            ),
            (
                agent("GenericError", "handle '999' has not been found"),
                Code::NotFound,
            ),
            (
                agent("GenericError", "failed to open file: Permission denied"),
                Code::PermissionDenied,
            ),
            (agent("GenericError", "File exists"), Code::AlreadyExists),
            (
                agent("GenericError", "open: File name too long"),
                Code::InvalidArgument,
            ),
            (
                agent("GenericError", "open: No such device or address"),
                Code::FailedPrecondition,
            ),
            (
                agent("GenericError", "No space left on device"),
                Code::ResourceExhausted,
            ),
            (
                agent(
                    "GenericError",
                    "value '51380224' is invalid for argument count",
                ),
                Code::InvalidArgument,
            ),
            (
                ApiError::Qga(QgaError::CommandDisabled {
                    command: "guest-exec".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                ApiError::Qga(QgaError::InvalidArgument("x".into())),
                Code::InvalidArgument,
            ),
            (
                ApiError::Qga(QgaError::LimitExceeded {
                    what: "too many open guest file handles on this guest",
                    limit: "limits.open_handles_per_guest",
                    value: 4,
                }),
                Code::ResourceExhausted,
            ),
        ];
        for (err, want) in cases {
            let st = to_status(&err);
            assert_eq!(st.code(), want, "{err}");
            assert!(!st.message().is_empty());
        }
    }

    #[test]
    fn disabled_command_names_the_guest_setting() {
        let st = to_status(&agent(
            "CommandNotFound",
            "Command guest-exec has been disabled",
        ));
        assert!(st.message().contains("--block-rpcs"), "{}", st.message());
        assert!(st.message().contains("/etc/sysconfig/qemu-ga"));
    }

    #[test]
    fn host_paths_stay_out_of_messages() {
        let st = to_status(&tr(TransportError::Connect {
            path: "/run/qemu/secret-guest/qga.sock".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        }));
        assert_eq!(st.code(), Code::Unavailable);
        assert!(!st.message().contains("/run/qemu"), "{}", st.message());
        assert!(st.message().contains("agent"), "{}", st.message());
    }
}
