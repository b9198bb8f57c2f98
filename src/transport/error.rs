//! Errors of the transport layer: the agent could not be reached or did not answer properly.

use std::{path::PathBuf, time::Duration};

/// Why a request did not produce an agent reply.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The agent socket could not be opened: the guest or its agent is not running.
    #[error("cannot connect to agent socket {path}: {error}")]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Reading or writing the socket failed after it was open.
    #[error("agent connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The agent closed the connection.
    #[error("agent closed the connection")]
    Closed,
    /// The agent did not answer within the deadline.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent answered something that is not a QGA reply, or a reply to another request.
    #[error("agent protocol error: {0}")]
    Protocol(String),
    /// libvirt reports that the guest agent is not connected or unusable.
    #[error("guest agent unavailable: {0}")]
    AgentUnavailable(String),
    /// The connection to libvirtd is gone (libvirtd restarted or the link dropped); the
    /// registry reconnects on the next request.
    #[error("libvirt connection lost: {0}")]
    ConnectionLost(String),
    /// The libvirt domain exists but is not running.
    #[error("domain is not running: {0}")]
    DomainNotRunning(String),
    /// The libvirt domain does not exist (any more).
    #[error("no such domain: {0}")]
    DomainNotFound(String),
    /// Any other libvirt failure.
    #[error("libvirt error ({code}): {message}")]
    Libvirt {
        /// libvirt's error number, as its name.
        code: String,
        /// libvirt's message.
        message: String,
    },
    /// The request is larger than this transport carries safely.
    #[error("request of {size} bytes is larger than this transport carries safely ({max})")]
    RequestTooLarge {
        /// Size of the request's arguments.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The transport's worker is gone (the daemon is shutting down).
    #[error("agent transport stopped")]
    Stopped,
}
