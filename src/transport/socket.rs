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
//! 4. Requests already queued are pipelined, two at a time: written back to back, their
//!    replies read in order, each checked against its own id.

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
        self.submit(request, timeout).await?.wait().await
    }

    /// Queues a request and returns as soon as it is queued: requests submitted one after
    /// another by one task run in that order (and may be pipelined).
    pub async fn submit(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<super::Ticket, TransportError> {
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
        Ok(super::Ticket(rx))
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

/// Requests the worker keeps in flight on one connection. qemu-ga answers pipelined
/// requests in order; with two, the agent encodes the next reply while we decode this one.
const PIPELINE_DEPTH: usize = 2;

/// A request taken from the queue, with its own deadline.
struct Pending {
    request: AgentRequest,
    timeout: Duration,
    deadline: Instant,
    reply: oneshot::Sender<Result<AgentReply, TransportError>>,
}

impl Worker {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(j) => j,
                None => match jobs.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            let first = match job {
                Job::Close(ack) => {
                    self.conn = None;
                    let _ = ack.send(());
                    continue;
                }
                Job::Call {
                    request,
                    timeout,
                    reply,
                } => self.take(request, timeout, reply),
            };
            let Some(first) = first else { continue };
            if !first.request.expects_reply {
                self.single(first).await;
                continue;
            }
            // Pipeline: whatever else is already queued (up to the depth) goes out now.
            let mut batch = vec![first];
            while batch.len() < PIPELINE_DEPTH {
                match jobs.try_recv() {
                    Ok(Job::Call {
                        request,
                        timeout,
                        reply,
                    }) if request.expects_reply => {
                        if let Some(p) = self.take(request, timeout, reply) {
                            batch.push(p);
                        }
                    }
                    Ok(other) => {
                        held = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.pipelined(batch).await;
        }
    }

    /// Accounts for a dequeued call; `None` if its caller already gave up (nothing sent).
    fn take(
        &self,
        request: AgentRequest,
        timeout: Duration,
        reply: oneshot::Sender<Result<AgentReply, TransportError>>,
    ) -> Option<Pending> {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        (!reply.is_closed()).then(|| Pending {
            request,
            timeout,
            deadline: Instant::now() + timeout,
            reply,
        })
    }

    async fn single(&mut self, p: Pending) {
        let result = match tokio::time::timeout_at(p.deadline, self.execute(&p.request)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(p.timeout)),
        };
        if result.is_err() {
            // Whatever is still in flight belongs to no one: start over with a resync.
            self.conn = None;
        }
        if p.reply.send(result).is_err() {
            tracing::debug!(path = %self.path.display(), "caller left before the agent answered");
        }
    }

    /// Writes every request of `batch`, then reads their replies in order, each checked
    /// against its own id. After any failure the rest of the batch fails too and the
    /// connection is dropped (the next request resyncs).
    async fn pipelined(&mut self, batch: Vec<Pending>) {
        if batch.len() == 1 {
            let mut batch = batch;
            if let Some(p) = batch.pop() {
                self.single(p).await;
            }
            return;
        }
        let first_deadline = batch
            .iter()
            .map(|p| p.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        let sent = tokio::time::timeout_at(first_deadline, self.send_all(&batch)).await;
        let ids = match sent {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => return self.fail_all(batch, &e),
            Err(_) => {
                let t = batch.first().map_or(Duration::ZERO, |p| p.timeout);
                return self.fail_all(batch, &TransportError::Timeout(t));
            }
        };
        let mut rest = batch.into_iter().zip(ids);
        while let Some((p, id)) = rest.next() {
            let got = match tokio::time::timeout_at(p.deadline, self.receive(id)).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::Timeout(p.timeout)),
            };
            match got {
                Ok(reply) => {
                    let _ = p.reply.send(Ok(reply));
                }
                Err(e) => {
                    let remaining: Vec<Pending> = rest.map(|(p, _)| p).collect();
                    let lost = TransportError::Protocol(format!(
                        "an earlier pipelined request failed: {e}"
                    ));
                    let _ = p.reply.send(Err(e));
                    self.fail_all(remaining, &lost);
                    return;
                }
            }
        }
    }

    async fn send_all(&mut self, batch: &[Pending]) -> Result<Vec<u64>, TransportError> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.path).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(TransportError::Closed);
        };
        let mut ids = Vec::with_capacity(batch.len());
        let mut bytes = Vec::new();
        for p in batch {
            let id = random_id();
            bytes.extend_from_slice(&p.request.to_json(Some(id)));
            ids.push(id);
        }
        conn.stream.write_all(&bytes).await?;
        Ok(ids)
    }

    async fn receive(&mut self, id: u64) -> Result<AgentReply, TransportError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(TransportError::Closed);
        };
        let line = conn.read_line().await?;
        check_reply(&line, id)
    }

    fn fail_all(&mut self, batch: Vec<Pending>, e: &TransportError) {
        self.conn = None;
        for p in batch {
            let err = match e {
                TransportError::Timeout(_) => TransportError::Timeout(p.timeout),
                TransportError::Closed => TransportError::Closed,
                other => TransportError::Protocol(other.to_string()),
            };
            let _ = p.reply.send(Err(err));
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
        check_reply(&line, id)
    }
}

/// Parses a reply line and checks it answers request `id`.
fn check_reply(line: &[u8], id: u64) -> Result<AgentReply, TransportError> {
    let parsed = parse_reply(line)?;
    if parsed.id.as_deref() != Some(id.to_string().as_str()) {
        return Err(TransportError::Protocol(format!(
            "reply to another request (id {:?}, expected {id})",
            parsed.id
        )));
    }
    Ok(parsed.reply)
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
