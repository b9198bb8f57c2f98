//! The one mapping of agent ([`QgaError`]) failures: the guest cache is reset where the
//! error says so, then the error gets its reason, code and metadata. There is no
//! `From<QgaError>`: [`agent_error`] is the only way in, so no handler can skip the reset.

use tonic::{Code, Status};

use super::{ApiError, Classified, to_status};
use crate::{
    qga::QgaError,
    server::{guests::Guests, reason::Reason},
    transport::TransportError,
};

/// An agent failure on one guest, as mapped by `agent_error` (fields private: only
/// that function builds one).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AgentError {
    domain: String,
    error: QgaError,
    /// A guest helper (readlink, mkdir, mv...): an unclassified failure is
    /// FAILED_PRECONDITION rather than UNKNOWN.
    helper: bool,
}

/// Maps an agent error on `domain`, forgetting a cached guest that libvirt says is gone
/// and reconnecting a lost libvirt connection. Every [`QgaError`] of a handler goes
/// through here (or [`agent_status`] / [`helper_status`]).
pub(crate) fn agent_error(guests: &Guests, domain: &str, e: QgaError) -> ApiError {
    match &e {
        QgaError::Transport(TransportError::DomainNotFound(_)) => guests.forget(domain),
        QgaError::Transport(TransportError::ConnectionLost(_)) => guests.reconnect(),
        _ => {}
    }
    ApiError::Agent(AgentError {
        domain: domain.to_owned(),
        error: e,
        helper: false,
    })
}

/// [`agent_error`] as a status.
pub(crate) fn agent_status(guests: &Guests, domain: &str, e: QgaError) -> Status {
    to_status(&agent_error(guests, domain, e))
}

/// [`agent_status`] for a failed guest helper (`readlink`, `mkdir`, `mv`, `ln`...): by its
/// errno text like any agent error, and FAILED_PRECONDITION where the text says nothing
/// more precise.
pub(crate) fn helper_status(guests: &Guests, domain: &str, e: QgaError) -> Status {
    match agent_error(guests, domain, e) {
        ApiError::Agent(mut a) => {
            a.helper = true;
            to_status(&ApiError::Agent(a))
        }
        other => to_status(&other),
    }
}

impl AgentError {
    /// The agent's error.
    pub fn qga(&self) -> &QgaError {
        &self.error
    }

    pub(super) fn classify(&self) -> Classified {
        let (reason, code) = match &self.error {
            QgaError::Transport(t) => transport(t),
            QgaError::Agent { class, desc, .. } => {
                // qemu-ga refuses most commands while frozen as "has been disabled: the
                // agent is in frozen state" (CommandNotFound): not a blocklist.
                if desc.contains("frozen state") {
                    (Reason::FsFrozen, Code::FailedPrecondition)
                } else if class == "CommandNotFound" && desc.contains("disabled") {
                    (Reason::CommandDisabled, Code::FailedPrecondition)
                } else if class == "CommandNotFound" {
                    (Reason::CommandUnknown, Code::Unimplemented)
                } else if class == "Unsupported" {
                    // Ours: what this guest cannot do (e.g. streamed stdin on Windows).
                    (Reason::GuestUnsupported, Code::FailedPrecondition)
                } else {
                    match generic(desc) {
                        (Reason::GuestError, Code::Unknown) if self.helper => {
                            (Reason::GuestError, Code::FailedPrecondition)
                        }
                        other => other,
                    }
                }
            }
            QgaError::CommandDisabled { .. } => (Reason::CommandDisabled, Code::FailedPrecondition),
            QgaError::InvalidArgument(_) => (Reason::InvalidArgument, Code::InvalidArgument),
            QgaError::LimitExceeded { .. } => (Reason::LimitExceeded, Code::ResourceExhausted),
            QgaError::Decode { .. } | QgaError::Encode { .. } => (Reason::Internal, Code::Internal),
        };
        let mut meta = vec![("domain", self.domain.clone())];
        match &self.error {
            QgaError::Agent { command, class, .. } => {
                meta.push(("command", command.clone()));
                meta.push(("class", class.clone()));
            }
            QgaError::CommandDisabled { command }
            | QgaError::Decode { command, .. }
            | QgaError::Encode { command, .. } => meta.push(("command", command.clone())),
            QgaError::LimitExceeded { limit, value, .. } => {
                meta.push(("limit", (*limit).to_owned()));
                meta.push(("value", value.to_string()));
            }
            QgaError::Transport(TransportError::Timeout(d)) => {
                meta.push(("timeout_ms", d.as_millis().to_string()));
            }
            QgaError::Transport(TransportError::RequestTooLarge { max, .. }) => {
                meta.push(("max_bytes", max.to_string()));
            }
            QgaError::Transport(_) | QgaError::InvalidArgument(_) => {}
        }
        (reason, code, meta)
    }

    /// The client-facing message, with what to do where we know it.
    pub(super) fn message(&self) -> String {
        match &self.error {
            QgaError::Agent { desc, .. } if desc.contains("frozen state") => format!(
                "{}; the guest's file systems are frozen: FsThaw (or the freeze's deadline) \
                 thaws them",
                self.error
            ),
            QgaError::Agent { class, desc, .. }
                if class == "CommandNotFound" && desc.contains("disabled") =>
            {
                format!(
                    "{}; the guest agent blocks this command: check qemu-ga's --block-rpcs/--allow-rpcs \
                     (BLOCK_RPCS/ALLOW_RPCS in /etc/sysconfig/qemu-ga on RHEL-like guests)",
                    self.error
                )
            }
            // The socket's host path is the daemon's business, not the caller's.
            QgaError::Transport(TransportError::Connect { error, .. }) => {
                format!("cannot connect to the guest agent's socket: {error}")
            }
            e => e.to_string(),
        }
    }
}

/// qemu-ga reports every other failure as `GenericError`; its description carries the
/// guest's errno text, which says what kind of failure it was.
fn generic(desc: &str) -> (Reason, Code) {
    use Reason::{GuestError as Other, GuestPathExists, GuestPathNotFound, GuestPathUnsuitable};
    const TABLE: &[(&str, Reason, Code)] = &[
        (
            "No such file or directory",
            GuestPathNotFound,
            Code::NotFound,
        ),
        ("No such device or address", Other, Code::FailedPrecondition),
        ("Invalid argument", Other, Code::InvalidArgument),
        ("File name too long", Other, Code::InvalidArgument),
        ("Read-only file system", Other, Code::FailedPrecondition),
        ("Device or resource busy", Other, Code::FailedPrecondition),
        ("Text file busy", Other, Code::FailedPrecondition),
        ("Too many open files", Other, Code::ResourceExhausted),
        ("has not been found", Other, Code::NotFound),
        (
            "Permission denied",
            Reason::GuestPermissionDenied,
            Code::PermissionDenied,
        ),
        (
            "Operation not permitted",
            Reason::GuestPermissionDenied,
            Code::PermissionDenied,
        ),
        ("File exists", GuestPathExists, Code::AlreadyExists),
        ("No space left on device", Other, Code::ResourceExhausted),
        (
            "Is a directory",
            GuestPathUnsuitable,
            Code::FailedPrecondition,
        ),
        (
            "Not a directory",
            GuestPathUnsuitable,
            Code::FailedPrecondition,
        ),
        ("is invalid for argument", Other, Code::InvalidArgument),
        ("Invalid parameter", Other, Code::InvalidArgument),
        ("frozen state", Reason::FsFrozen, Code::FailedPrecondition),
    ];
    TABLE
        .iter()
        .find(|(needle, ..)| desc.contains(needle))
        .map_or((Other, Code::Unknown), |(_, r, c)| (*r, *c))
}

fn transport(e: &TransportError) -> (Reason, Code) {
    match e {
        TransportError::Connect { .. }
        | TransportError::Io(_)
        | TransportError::Closed
        | TransportError::Protocol(_)
        | TransportError::AgentUnavailable(_) => (Reason::AgentUnavailable, Code::Unavailable),
        TransportError::Libvirt { .. } | TransportError::ConnectionLost(_) => {
            (Reason::HypervisorUnavailable, Code::Unavailable)
        }
        TransportError::Stopped => (Reason::DaemonShuttingDown, Code::Unavailable),
        TransportError::Timeout(_) => (Reason::AgentBusy, Code::DeadlineExceeded),
        TransportError::DomainNotRunning(_) => (Reason::GuestNotRunning, Code::FailedPrecondition),
        TransportError::DomainNotFound(_) => (Reason::GuestNotFound, Code::NotFound),
        TransportError::RequestTooLarge { .. } => (Reason::InvalidArgument, Code::InvalidArgument),
    }
}
