//! How bytes reach a guest agent.
//!
//! Two backends sit behind one [`Transport`]:
//! - [`socket`]: the agent's UNIX socket (plain QEMU chardev, or qemu-ga's own
//!   `unix-listen` mode), with the `guest-sync-delimited` discipline so that a stale reply
//!   never reaches a caller;
//! - [`libvirt_agent`]: the agent of a libvirt domain, through `virDomainQemuAgentCommand`
//!   (the `virt` crate), off the async runtime. (Connections to libvirtd themselves and
//!   domain lookup are the crate-root [`crate::libvirt`].)
//!
//! The transport moves one request and one reply at a time; it knows command names only
//! as strings and nothing of gRPC, policy or audit.

mod error;
pub mod framing;
pub mod libvirt_agent;
pub mod socket;

use std::time::Duration;

pub use error::TransportError;

/// One agent request: a command name and its arguments, already serialised as a JSON object.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The QGA command, e.g. `guest-ping`.
    pub execute: String,
    /// The `arguments` object as JSON text, or `None` for a command without arguments.
    pub arguments: Option<String>,
    /// False for commands that send no reply on success (`guest-shutdown`, `guest-suspend-*`):
    /// the transport then waits only briefly for an error reply.
    pub expects_reply: bool,
}

/// How long a no-reply command waits for an error before it counts as accepted.
pub const NO_REPLY_WAIT: Duration = Duration::from_secs(1);

impl AgentRequest {
    /// About how many bytes [`AgentRequest::to_json`] produces (within a few bytes).
    pub fn wire_len(&self) -> usize {
        self.execute.len() + self.arguments.as_ref().map_or(0, String::len) + 48
    }

    /// Builds the wire form `{"execute":..,"arguments":..[,"id":..]}`.
    ///
    /// `id` is echoed by qemu-ga in its reply, which lets the socket transport prove that a
    /// reply belongs to the request it just sent.
    pub fn to_json(&self, id: Option<u64>) -> Vec<u8> {
        let args_len = self.arguments.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(self.execute.len() + args_len + 64);
        out.extend_from_slice(b"{\"execute\":");
        // Command names are plain identifiers, but quote them properly all the same.
        let name = serde_json::to_string(&self.execute).unwrap_or_else(|_| "\"\"".into());
        out.extend_from_slice(name.as_bytes());
        if let Some(args) = &self.arguments {
            out.extend_from_slice(b",\"arguments\":");
            out.extend_from_slice(args.as_bytes());
        }
        if let Some(id) = id {
            out.extend_from_slice(format!(",\"id\":{id}").as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// What the agent answered: the raw JSON of its `return` value, or its error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentReply {
    /// `{"return": X}`: the JSON text of X.
    Return(Vec<u8>),
    /// `{"error": {"class": .., "desc": ..}}`: the agent refused or failed the command.
    Error {
        /// QGA error class, e.g. `CommandNotFound` or `GenericError`.
        class: String,
        /// The agent's human-readable description.
        desc: String,
    },
}

/// A queued request's reply, to be awaited.
#[derive(Debug)]
pub struct Ticket(tokio::sync::oneshot::Receiver<Result<AgentReply, TransportError>>);

impl Ticket {
    /// Waits for the reply.
    pub async fn wait(self) -> Result<AgentReply, TransportError> {
        self.0.await.map_err(|_| TransportError::Stopped)?
    }
}

/// The largest raw read/write a single agent call may move on each transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkBounds {
    /// Largest `count` for one `guest-file-read`, in bytes.
    pub max_read: usize,
    /// Largest payload for one `guest-file-write`, in bytes.
    pub max_write: usize,
    /// The `count` a whole-file read goes fastest with, when the client names none.
    pub read_chunk: usize,
}

/// A connection to one guest agent: a direct socket or a libvirt domain.
///
/// Cheap to clone; clones share the underlying connection and its serial queue.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The agent's UNIX socket.
    Socket(socket::SocketTransport),
    /// A libvirt domain's agent channel.
    Libvirt(libvirt_agent::LibvirtTransport),
}

impl Transport {
    /// Sends one request and waits at most `timeout` for its reply.
    pub async fn call(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<AgentReply, TransportError> {
        match self {
            Transport::Socket(t) => t.call(request, timeout).await,
            Transport::Libvirt(t) => t.call(request, timeout).await,
        }
    }

    /// Queues a request without waiting for its reply; requests one task submits in turn
    /// run in that order. Await the reply with [`Ticket::wait`].
    pub async fn submit(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<Ticket, TransportError> {
        match self {
            Transport::Socket(t) => t.submit(request, timeout).await,
            Transport::Libvirt(t) => t.submit(request, timeout).await,
        }
    }

    /// Short name of the backend, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Socket(_) => "socket",
            Transport::Libvirt(_) => "libvirt",
        }
    }

    /// Requests queued for this guest and not yet started.
    pub fn queue_depth(&self) -> usize {
        match self {
            Transport::Socket(t) => t.queue_depth(),
            Transport::Libvirt(t) => t.queue_depth(),
        }
    }

    /// Per-call size limits that keep this transport healthy.
    pub fn chunk_bounds(&self) -> ChunkBounds {
        match self {
            Transport::Socket(_) => socket::CHUNK_BOUNDS,
            Transport::Libvirt(_) => libvirt_agent::CHUNK_BOUNDS,
        }
    }
}

impl From<socket::SocketTransport> for Transport {
    fn from(t: socket::SocketTransport) -> Self {
        Transport::Socket(t)
    }
}

impl From<libvirt_agent::LibvirtTransport> for Transport {
    fn from(t: libvirt_agent::LibvirtTransport) -> Self {
        Transport::Libvirt(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form() {
        let r = AgentRequest {
            execute: "guest-file-read".into(),
            arguments: Some(r#"{"handle":1000,"count":4096}"#.into()),
            expects_reply: true,
        };
        assert_eq!(
            String::from_utf8(r.to_json(Some(7))).unwrap(),
            r#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":4096},"id":7}"#
        );
        let p = AgentRequest {
            execute: "guest-ping".into(),
            arguments: None,
            expects_reply: true,
        };
        assert_eq!(
            String::from_utf8(p.to_json(None)).unwrap(),
            r#"{"execute":"guest-ping"}"#
        );
    }
}
