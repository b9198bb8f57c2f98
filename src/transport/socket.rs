//! The agent's UNIX socket, driven by one worker task per socket.
//!
//! qemu-ga serves one client and one command at a time, and on virtio-serial it cannot
//! tell that a client went away: a reply the last client never read is handed to the next.
//! So a single worker owns the connection and runs requests strictly one after another:
//!
//! 1. On every (re)connect it sends `0xFF` (resets the agent's parser) and
//!    `guest-sync-delimited` with a random id, discards input up to the `0xFF` sentinel and
//!    until that id comes back. Only then is the connection in sync.
//! 2. Every request carries a fresh random `id`, which the agent echoes; a reply with any
//!    other id means sync was lost.
//! 3. A caller that gives up (drops its future) does not disturb the wire: the worker still
//!    reads the reply and throws it away. A timeout, I/O error or foreign reply drops the
//!    connection, so the next request reconnects and resyncs.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    AgentReply, AgentRequest, ChunkBounds, NO_REPLY_WAIT, TransportError,
    framing::{Framer, SENTINEL, parse_reply},
};

/// qemu-ga caps `guest-file-read` at 48 MiB; a write request must fit the agent's 64 MiB
/// JSON token budget after base64 (4/3), so writes stop at 32 MiB.
pub const CHUNK_BOUNDS: ChunkBounds = ChunkBounds {
    max_read: 48 << 20,
    max_write: 32 << 20,
};

/// Requests that may wait for the worker; senders wait (back-pressure) beyond this.
const QUEUE_DEPTH: usize = 64;

/// Read granularity; replies larger than this are read in several steps.
const READ_CHUNK: usize = 256 << 10;

enum Job {
    Call {
        request: AgentRequest,
        timeout: Duration,
        reply: oneshot::Sender<Result<AgentReply, TransportError>>,
    },
    /// Drop the connection (the next call reconnects); acknowledged once closed.
    Close(oneshot::Sender<()>),
}

/// A guest agent reached through its UNIX socket.
///
/// Clones share one connection and one worker; the worker stops when the last clone is
/// dropped, closing the socket.
#[derive(Debug, Clone)]
pub struct SocketTransport {
    path: Arc<PathBuf>,
    jobs: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
}

impl SocketTransport {
    /// Creates the transport and its worker. Connects lazily, on the first request.
    ///
    /// Must be called inside a tokio runtime.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = Arc::new(path.into());
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let depth = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            path: Arc::clone(&path),
            conn: None,
            depth: Arc::clone(&depth),
        };
        tokio::spawn(worker.run(rx));
        Self { path, jobs, depth }
    }

    /// Requests waiting for the worker.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request; `timeout` covers connecting, resync and the reply.
    pub async fn call(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<AgentReply, TransportError> {
        let (reply, rx) = oneshot::channel();
        let job = Job::Call {
            request,
            timeout,
            reply,
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).await.is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(TransportError::Stopped);
        }
        rx.await.map_err(|_| TransportError::Stopped)?
    }

    /// Closes the connection after the requests queued before this one, and waits until
    /// it is closed. The agent serves one client at a time, so this frees it for others;
    /// a later call reconnects (and resyncs).
    pub async fn close(&self) {
        let (ack, rx) = oneshot::channel();
        if self.jobs.send(Job::Close(ack)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Worker {
    path: Arc<PathBuf>,
    conn: Option<Conn>,
    depth: Arc<AtomicUsize>,
}

impl Worker {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let (request, timeout, reply) = match job {
                Job::Call {
                    request,
                    timeout,
                    reply,
                } => {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                    (request, timeout, reply)
                }
                Job::Close(ack) => {
                    self.conn = None;
                    let _ = ack.send(());
                    continue;
                }
            };
            if reply.is_closed() {
                // The caller gave up while queued: nothing was sent, nothing to clean up.
                continue;
            }
            let deadline = Instant::now() + timeout;
            let result = match tokio::time::timeout_at(deadline, self.execute(&request)).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::Timeout(timeout)),
            };
            if result.is_err() {
                // Whatever is still in flight belongs to no one: start over with a resync.
                self.conn = None;
            }
            if reply.send(result).is_err() {
                tracing::debug!(path = %self.path.display(), "caller left before the agent answered");
            }
        }
    }

    async fn execute(&mut self, request: &AgentRequest) -> Result<AgentReply, TransportError> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.path).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(TransportError::Closed);
        };
        let id = random_id();
        conn.stream.write_all(&request.to_json(Some(id))).await?;
        let line = if request.expects_reply {
            conn.read_line().await?
        } else {
            match tokio::time::timeout(NO_REPLY_WAIT, conn.read_line()).await {
                Ok(Ok(line)) => line,
                // The agent (or the guest) went away: what a shutdown or suspend does.
                Ok(Err(TransportError::Closed | TransportError::Io(_))) | Err(_) => {
                    // Accepted: the agent answers these only when they fail. A late error
                    // must not meet the next caller, so start over with a resync.
                    self.conn = None;
                    return Ok(AgentReply::Return(b"{}".to_vec()));
                }
                Ok(Err(e)) => return Err(e),
            }
        };
        let parsed = parse_reply(&line)?;
        if parsed.id.as_deref() != Some(id.to_string().as_str()) {
            return Err(TransportError::Protocol(format!(
                "reply to another request (id {:?}, expected {id})",
                parsed.id
            )));
        }
        Ok(parsed.reply)
    }
}

/// An open, synchronised connection.
struct Conn {
    stream: UnixStream,
    framer: Framer,
}

impl Conn {
    async fn open(path: &Path) -> Result<Self, TransportError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|error| TransportError::Connect {
                path: path.to_owned(),
                error,
            })?;
        let mut conn = Conn {
            stream,
            framer: Framer::new(),
        };
        conn.sync().await?;
        Ok(conn)
    }

    /// `0xFF` + `guest-sync-delimited`, then discard everything until our id comes back.
    async fn sync(&mut self) -> Result<(), TransportError> {
        let id = random_id();
        let mut msg = vec![SENTINEL];
        msg.extend_from_slice(
            format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).as_bytes(),
        );
        self.stream.write_all(&msg).await?;
        let want = id.to_string();
        loop {
            while !self.framer.skip_past_sentinel() {
                self.fill().await?;
            }
            let line = self.read_line().await?;
            // A stale reply of an earlier client's sync may carry the sentinel too.
            if let Ok(p) = parse_reply(&line) {
                if p.reply == AgentReply::Return(want.clone().into_bytes()) {
                    return Ok(());
                }
                tracing::debug!(reply = ?p.reply, "discarded stale sync reply");
            }
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, TransportError> {
        loop {
            if let Some(line) = self.framer.next_line()? {
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), TransportError> {
        let buf = self.framer.buffer_mut();
        buf.reserve(READ_CHUNK);
        if self.stream.read_buf(buf).await? == 0 {
            return Err(TransportError::Closed);
        }
        Ok(())
    }
}

/// A random id below 2^53, so that any JSON implementation reads it back exactly.
fn random_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 >> 11
}
