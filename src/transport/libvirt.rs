//! A guest agent reached through libvirt's `virDomainQemuAgentCommand`.
//!
//! The call is blocking FFI, so it runs on tokio's blocking pool. libvirt serialises agent
//! commands per domain and does its own `guest-sync`; we always pass a finite timeout
//! (never `VIR_DOMAIN_QEMU_AGENT_COMMAND_BLOCK`), and keep replies far below libvirt's
//! 4 MiB RPC cap: a reply over 10 MiB would disable the domain's agent until it restarts.
//! See <https://libvirt.org/html/libvirt-libvirt-qemu.html#virDomainQemuAgentCommand>.

use std::{sync::Arc, time::Duration};

use virt::{domain::Domain, error::ErrorNumber};

use super::{
    AgentReply, AgentRequest, ChunkBounds, NO_REPLY_WAIT, TransportError, framing::parse_reply,
};

/// 2 MiB raw is about 2.7 MiB of base64 JSON: inside libvirt's 4 MiB RPC string, and far
/// from the 10 MiB reply size that poisons the domain's agent.
pub const CHUNK_BOUNDS: ChunkBounds = ChunkBounds {
    max_read: 2 << 20,
    max_write: 2 << 20,
};

/// libvirt runs its own `guest-sync` (5 s default) before the command; our own deadline
/// allows for it so libvirt, not tokio, reports the agent's timeout.
const SYNC_ALLOWANCE: Duration = Duration::from_secs(6);

/// A libvirt domain's agent channel.
#[derive(Debug, Clone)]
pub struct LibvirtTransport {
    domain: Arc<Domain>,
    name: Arc<str>,
}

impl LibvirtTransport {
    /// Wraps a domain handle; `name` is used in error messages.
    pub fn new(domain: Domain, name: impl Into<Arc<str>>) -> Self {
        Self {
            domain: Arc::new(domain),
            name: name.into(),
        }
    }

    /// The domain's name as given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The libvirt domain handle.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Runs one agent command; `timeout` is rounded up to whole seconds for libvirt.
    pub async fn call(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<AgentReply, TransportError> {
        let request_expects_reply = request.expects_reply;
        let json = String::from_utf8(request.to_json(None))
            .map_err(|e| TransportError::Protocol(format!("request is not UTF-8: {e}")))?;
        let timeout = if request.expects_reply {
            timeout
        } else {
            timeout.min(NO_REPLY_WAIT)
        };
        let secs = i32::try_from(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0))
            .unwrap_or(i32::MAX)
            .max(1);
        let domain = Arc::clone(&self.domain);
        let name = Arc::clone(&self.name);
        let task = tokio::task::spawn_blocking(move || {
            let out = domain.qemu_agent_command(&json, secs, 0);
            out.map_err(|e| (e, name))
        });
        let joined = tokio::time::timeout(timeout + SYNC_ALLOWANCE, task)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|e| TransportError::Protocol(format!("libvirt call panicked: {e}")))?;
        match joined {
            Ok(reply) => Ok(parse_reply(reply.as_bytes())?.reply),
            Err((err, name)) => match classify(&err, &name, timeout) {
                // No reply is the success of a no-reply command; the agent may also vanish
                // because the guest is going down.
                Err(TransportError::Timeout(_) | TransportError::AgentUnavailable(_))
                    if !request_expects_reply =>
                {
                    Ok(AgentReply::Return(b"{}".to_vec()))
                }
                other => other,
            },
        }
    }
}

/// Turns a libvirt error into an agent error reply or a transport error.
fn classify(
    err: &virt::error::Error,
    domain: &str,
    timeout: Duration,
) -> Result<AgentReply, TransportError> {
    let msg = err.message();
    // libvirt reports the agent's own error replies as
    // "internal error: unable to execute QEMU agent command 'X': DESC".
    const AGENT_FAILED: &str = "unable to execute QEMU agent command";
    if let Some(at) = msg.find(AGENT_FAILED) {
        let rest = msg.get(at + AGENT_FAILED.len()..).unwrap_or_default();
        let desc = rest.split_once("': ").map_or(rest, |(_, d)| d).to_owned();
        let class = if desc.contains("has not been found") || desc.contains("has been disabled") {
            "CommandNotFound"
        } else {
            "GenericError"
        };
        return Ok(AgentReply::Error {
            class: class.into(),
            desc,
        });
    }
    let code = err.code();
    Err(if code.is(ErrorNumber::AgentUnresponsive) {
        if msg.contains("not available for now") {
            TransportError::Timeout(timeout)
        } else {
            TransportError::AgentUnavailable(format!("{domain}: {msg}"))
        }
    } else if code.is(ErrorNumber::OperationInvalid) && msg.contains("not running") {
        TransportError::DomainNotRunning(format!("{domain}: {msg}"))
    } else if code.is(ErrorNumber::NoDomain) {
        TransportError::DomainNotFound(format!("{domain}: {msg}"))
    } else if code.is(ErrorNumber::AgentUnsynced) {
        TransportError::AgentUnavailable(format!("{domain}: {msg}"))
    } else {
        TransportError::Libvirt {
            code: format!("{code:?}"),
            message: msg.to_owned(),
        }
    })
}
