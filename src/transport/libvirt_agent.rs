//! A guest agent reached through libvirt's `virDomainQemuAgentCommand`.
//!
//! The call is blocking FFI, so it runs on tokio's blocking pool. libvirt serialises agent
//! commands per domain and does its own `guest-sync`; we always pass a finite timeout
//! (never `VIR_DOMAIN_QEMU_AGENT_COMMAND_BLOCK`), and keep replies far below libvirt's
//! 4 MiB RPC cap: a reply over 10 MiB would disable the domain's agent until it restarts.
//! See <https://libvirt.org/html/libvirt-libvirt-qemu.html#virDomainQemuAgentCommand>.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Semaphore, mpsc, oneshot};
use virt::{domain::Domain, error::ErrorNumber};

use super::{
    AgentReply, AgentRequest, ChunkBounds, NO_REPLY_WAIT, TransportError, framing::parse_reply,
};

/// Reads: 2 MiB raw is about 2.7 MiB of base64 JSON, inside libvirt's 4 MiB RPC string
/// and far from the 10 MiB reply size that poisons the domain's agent.
///
/// Writes: measured with libvirt 9.0, a request larger than the agent socket's send
/// buffer (about 208 KiB) stalls until it times out, at random: 128 KiB raw (175 KB of
/// base64) never failed, 192 KiB failed two times in three. So writes stay at 128 KiB.
///
/// The default read: a 10 MiB file read through libvirt from a Debian 12 TCG guest, one
/// read at a time, took 0.87 s in 512 KiB reads, 0.90 s in 768 KiB, 0.93 s in 1 MiB and
/// 1.16 s in 2 MiB (median of 4 each, this machine kind): larger replies cost libvirt
/// and the agent more per byte than the extra round trips.
pub const CHUNK_BOUNDS: ChunkBounds = ChunkBounds {
    max_read: 2 << 20,
    max_write: 128 << 10,
    read_chunk: 512 << 10,
};

/// Largest request sent through libvirt; see [`CHUNK_BOUNDS`].
pub const MAX_REQUEST: usize = 190_000;

/// libvirt runs its own `guest-sync` (5 s default) before the command; our own deadline
/// allows for it so libvirt, not tokio, reports the agent's timeout.
const SYNC_ALLOWANCE: Duration = Duration::from_secs(6);

/// Requests that may wait for the domain's worker; senders wait beyond this.
const QUEUE_DEPTH: usize = 64;

type Job = (
    AgentRequest,
    Duration,
    oneshot::Sender<Result<AgentReply, TransportError>>,
);

/// A libvirt domain's agent channel, with its own serial queue: libvirt runs one agent
/// job per domain and makes others wait up to 30 s for its job lock, so requests queue
/// here, in order, instead.
#[derive(Debug, Clone)]
pub struct LibvirtTransport {
    domain: Arc<Domain>,
    name: Arc<str>,
    jobs: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    /// Shared with the worker: set by [`LibvirtTransport::with_limiter`].
    limiter: Arc<std::sync::OnceLock<Arc<Semaphore>>>,
}

impl LibvirtTransport {
    /// Wraps a domain handle; `name` is used in error messages. Must be called inside a
    /// tokio runtime (the queue's worker is a task).
    pub fn new(domain: Domain, name: impl Into<Arc<str>>) -> Self {
        let domain = Arc::new(domain);
        let name: Arc<str> = name.into();
        let depth = Arc::new(AtomicUsize::new(0));
        let limiter = Arc::new(std::sync::OnceLock::<Arc<Semaphore>>::new());
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let (d, n, q) = (Arc::clone(&domain), Arc::clone(&name), Arc::clone(&depth));
        let l = Arc::clone(&limiter);
        tokio::spawn(async move {
            while let Some((request, timeout, reply)) = rx.recv().await {
                q.fetch_sub(1, Ordering::Relaxed);
                if reply.is_closed() {
                    continue;
                }
                let res = execute(&d, &n, request, timeout, l.get().cloned()).await;
                let _ = reply.send(res);
            }
        });
        Self {
            domain,
            name,
            jobs,
            depth,
            limiter,
        }
    }

    /// Runs every command of this domain within `limiter`, shared by all domains of one
    /// libvirt connection: libvirtd serves at most `max_client_requests` calls of a
    /// connection at once and stops reading the rest. A permit is held for as long as
    /// libvirt runs the call, even past our own deadline.
    pub fn with_limiter(self, limiter: Arc<Semaphore>) -> Self {
        let _ = self.limiter.set(limiter);
        self
    }

    /// Requests waiting for this domain's worker.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// The domain's name as given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The libvirt domain handle.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Queues one agent command; `timeout` is rounded up to whole seconds for libvirt
    /// and starts when the command leaves the queue.
    pub async fn call(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<AgentReply, TransportError> {
        self.submit(request, timeout).await?.wait().await
    }

    /// Queues a command and returns once it is queued (in submission order).
    pub async fn submit(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<super::Ticket, TransportError> {
        let size = request.arguments.as_ref().map_or(0, String::len);
        if size > MAX_REQUEST {
            return Err(TransportError::RequestTooLarge {
                size,
                max: MAX_REQUEST,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send((request, timeout, tx)).await.is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(TransportError::Stopped);
        }
        Ok(super::Ticket(rx))
    }
}

/// Runs one command on the blocking pool, with a finite timeout on both sides.
async fn execute(
    domain: &Arc<Domain>,
    name: &Arc<str>,
    request: AgentRequest,
    timeout: Duration,
    limiter: Option<Arc<Semaphore>>,
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
    let domain = Arc::clone(domain);
    let name = Arc::clone(name);
    let permit = match limiter {
        Some(l) => Some(
            l.acquire_owned()
                .await
                .map_err(|_| TransportError::Stopped)?,
        ),
        None => None,
    };
    let task = tokio::task::spawn_blocking(move || {
        let out = domain.qemu_agent_command(&json, secs, 0);
        drop(permit);
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
    const LOST: &[&str] = &[
        "client socket is closed",
        "End of file while reading data",
        "Cannot recv data",
        "Cannot write data",
        "no valid connection",
        "keepalive timeout",
    ];
    if LOST.iter().any(|m| msg.contains(m)) {
        return Err(TransportError::ConnectionLost(format!("{domain}: {msg}")));
    }
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
