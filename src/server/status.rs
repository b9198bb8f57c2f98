//! The one place where our errors become gRPC statuses: every status the daemon sends is
//! built by [`to_status`], so each carries a bounded message and a `google.rpc.ErrorInfo`
//! detail with its [`Reason`] (domain [`DOMAIN`]) and metadata a client can act on.
//! Agent errors have one mapping, `agent_error`, which also resets the guest cache.

mod agent;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use self::agent::AgentError;
pub(crate) use self::agent::{agent_status, helper_status};
use super::reason::{DOMAIN, Reason};
use crate::{guests::GuestError, libvirt::LibvirtError};

/// Everything an RPC can fail with, before it is mapped to a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A policy denied the request.
    #[error("{}denied by {}: {reason}",
        path.as_ref().map(|p| format!("{p} (where the requested path leads in the guest) ")).unwrap_or_default(),
        plugin.as_deref().unwrap_or("the default policy"))]
    PolicyDenied {
        /// The deciding plugin; `None` for the default policy.
        plugin: Option<String>,
        /// The plugin's reason.
        reason: String,
        /// The resolved guest path, when the second decision of a file request denied.
        path: Option<String>,
    },
    /// The decision record cannot be written (`on_failure = "refuse"`). No cause: it
    /// names the log's host path, which goes to the daemon's own log only.
    #[error("the audit log cannot be written; request refused")]
    AuditUnavailable,
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
    /// A policy's `max_bytes` is spent (ReadFile, WriteFile).
    #[error("{what} the policy's max_bytes ({value})")]
    PolicyMaxBytes {
        /// `read stopped at` or `upload exceeds`.
        what: &'static str,
        /// The budget.
        value: u64,
    },
    /// The guest name did not resolve.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// An agent command failed; built only by `agent_error` (the one agent mapping).
    #[error(transparent)]
    Agent(AgentError),
    /// A guest path the request needs is missing (TRUNCATE of a missing file).
    #[error("{0}")]
    GuestPathNotFound(String),
    /// A guest path exists where it must not (EXCLUSIVE).
    #[error("{0}")]
    GuestPathExists(String),
    /// A guest path is of the wrong kind (not a regular file).
    #[error("{0}")]
    GuestPathUnsuitable(String),
    /// A path component was swapped while it was opened, or a staging directory replaced.
    #[error("{0}")]
    GuestPathChanged(String),
    /// The guest lacks what the operation needs.
    #[error("{0}")]
    GuestUnsupported(String),
    /// The guest wrote fewer bytes than it was given.
    #[error("guest wrote {written} of {wanted} bytes")]
    GuestWriteIncomplete {
        /// Bytes written.
        written: u64,
        /// Bytes sent.
        wanted: usize,
    },
    /// No exec with this id.
    #[error("no exec with id {0:?}")]
    ExecNotFound(String),
    /// The exec's task ended and left no result.
    #[error("exec {0:?} ended without a result")]
    ExecEnded(String),
    /// The exec's output goes to another client.
    #[error("this exec is attached to another client")]
    ExecAttached,
    /// No task of this name.
    #[error("no task named {0:?}")]
    TaskNotFound(String),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The client sent or read nothing for too long.
    #[error("{message}")]
    ClientTooSlow {
        /// What it did not do, and for how long.
        message: String,
        /// The setting that bounds it, if one does.
        limit: Option<&'static str>,
    },
    /// The client went away or cancelled (seen only in audit records).
    #[error("{0}")]
    ClientCancelled(String),
    /// The client's message stream could not be read (tonic's status for it).
    #[error("the request stream failed: {}", .0.message())]
    ClientStream(Status),
    /// A daemon bug.
    #[error("{0}")]
    Internal(String),
    // Directory trees (issue 15).
    /// A tree entry breaks the entry rules (docs/api.md, PushTree); `from_guest` when the
    /// guest's tree holds it (PullTree), else the client sent it.
    #[error("{message}")]
    TreeEntryRefused {
        /// The entry's path as it arrived.
        entry: String,
        /// What is wrong, naming the entry.
        message: String,
        /// The guest's tree holds it (PullTree).
        from_guest: bool,
    },
    /// The archive's SHA-256 differs between the daemon and the guest.
    #[error("{0}")]
    TreeChecksum(String),
    /// The guest's file systems are frozen (a second FsFreeze, or what needs them thawed).
    #[error("{0}")]
    FsFrozen(String),
}

/// A reason and what a client may need to act on it.
type Classified = (Reason, Code, Vec<(&'static str, String)>);

/// Maps an error to the status a client sees: its code, a bounded message, and an
/// `ErrorInfo` with its reason. Exhaustive over our own enums, so a new variant cannot
/// slip through unmapped.
pub fn to_status(err: &ApiError) -> Status {
    let (reason, code, meta) = classify(err);
    build(code, reason, meta, message(err))
}

/// The reason of `err` (what [`to_status`] puts in its `ErrorInfo`).
pub fn reason(err: &ApiError) -> Reason {
    classify(err).0
}

fn classify(err: &ApiError) -> Classified {
    let plain = |r: Reason| (r, r.code(), Vec::new());
    match err {
        ApiError::InvalidArgument(_) => plain(Reason::InvalidArgument),
        ApiError::Unauthenticated(_) => plain(Reason::Unauthenticated),
        ApiError::PolicyDenied { plugin, path, .. } => {
            let mut m = vec![("plugin", plugin.clone().unwrap_or_else(|| "default".into()))];
            m.extend(path.clone().map(|p| ("path", p)));
            (Reason::PolicyDenied, Code::PermissionDenied, m)
        }
        ApiError::AuditUnavailable => plain(Reason::AuditUnavailable),
        ApiError::LimitExceeded { limit, value, .. } => (
            Reason::LimitExceeded,
            Code::ResourceExhausted,
            vec![("limit", (*limit).into()), ("value", value.to_string())],
        ),
        ApiError::PolicyMaxBytes { value, .. } => (
            Reason::LimitExceeded,
            Code::ResourceExhausted,
            vec![("limit", "max_bytes".into()), ("value", value.to_string())],
        ),
        ApiError::Guest(g) => guest(g),
        ApiError::Agent(a) => a.classify(),
        ApiError::GuestPathNotFound(_) => plain(Reason::GuestPathNotFound),
        ApiError::GuestPathExists(_) => plain(Reason::GuestPathExists),
        ApiError::GuestPathUnsuitable(_) => plain(Reason::GuestPathUnsuitable),
        ApiError::GuestPathChanged(_) => plain(Reason::GuestPathChanged),
        ApiError::GuestUnsupported(_) => plain(Reason::GuestUnsupported),
        ApiError::GuestWriteIncomplete { .. } => plain(Reason::GuestWriteIncomplete),
        ApiError::ExecNotFound(id) | ApiError::ExecEnded(id) => (
            Reason::ExecNotFound,
            Code::NotFound,
            vec![("exec_id", id.clone())],
        ),
        ApiError::ExecAttached => plain(Reason::ExecAttached),
        ApiError::TaskNotFound(t) => (
            Reason::TaskNotFound,
            Code::NotFound,
            vec![("task", t.clone())],
        ),
        ApiError::ShuttingDown => plain(Reason::DaemonShuttingDown),
        ApiError::ClientTooSlow { limit, .. } => (
            Reason::ClientTooSlow,
            Code::DeadlineExceeded,
            limit.map(|l| ("limit", l.to_owned())).into_iter().collect(),
        ),
        ApiError::ClientCancelled(_) => plain(Reason::ClientCancelled),
        ApiError::ClientStream(st) if st.code() == Code::Cancelled => {
            plain(Reason::ClientCancelled)
        }
        ApiError::ClientStream(_) => plain(Reason::InvalidArgument),
        ApiError::Internal(_) => plain(Reason::Internal),
        // Directory trees (issue 15).
        ApiError::TreeEntryRefused {
            entry, from_guest, ..
        } => {
            let r = if *from_guest {
                Reason::GuestTreeRefused
            } else {
                Reason::TreeEntryRefused
            };
            (r, r.code(), vec![("entry", entry.clone())])
        }
        ApiError::TreeChecksum(_) => plain(Reason::TreeChecksumMismatch),
        ApiError::FsFrozen(_) => plain(Reason::FsFrozen),
    }
}

fn guest(g: &GuestError) -> Classified {
    match g {
        GuestError::Unknown(name) => (
            Reason::GuestNotFound,
            Code::NotFound,
            vec![("domain", name.clone())],
        ),
        GuestError::InvalidName(_) => (Reason::InvalidArgument, Code::InvalidArgument, vec![]),
        GuestError::Libvirt(LibvirtError::DomainNotFound { name, .. }) => (
            Reason::GuestNotFound,
            Code::NotFound,
            vec![("domain", name.clone())],
        ),
        GuestError::Libvirt(LibvirtError::Connect { .. } | LibvirtError::Other(_)) => {
            (Reason::HypervisorUnavailable, Code::Unavailable, vec![])
        }
    }
}

/// Longest status message: it travels in an HTTP/2 header, and messages can echo
/// request fields (a huge guest name must not break the response).
const MAX_MESSAGE: usize = 1024;
/// Longest `ErrorInfo` metadata value (they travel in the same trailers).
const MAX_META: usize = 256;

fn bounded(mut m: String, max: usize) -> String {
    if m.len() > max {
        let mut cut = max;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

fn build(code: Code, reason: Reason, meta: Vec<(&'static str, String)>, msg: String) -> Status {
    let meta: HashMap<String, String> = meta
        .into_iter()
        .map(|(k, v)| (k.to_owned(), bounded(v, MAX_META)))
        .collect();
    let details = ErrorDetails::with_error_info(reason.as_str(), DOMAIN, meta);
    Status::with_error_details(code, bounded(msg, MAX_MESSAGE), details)
}

/// The client-facing message: our error chain, plus what to do where we know it.
fn message(err: &ApiError) -> String {
    match err {
        ApiError::Agent(a) => a.message(),
        _ => err.to_string(),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        to_status(&e)
    }
}
