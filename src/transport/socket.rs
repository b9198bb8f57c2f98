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
    collections::VecDeque,
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
    read_chunk: crate::qga::DEFAULT_CHUNK,
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
/// requests in order; with two, the agent works on the next request while we read and
/// decode this reply.
const PIPELINE_DEPTH: usize = 2;

/// Largest request that may be pipelined. Measured on qemu-ga 7.2 over virtio-serial: a
/// request of a few KiB or more (a `guest-file-write` chunk) written while the agent is
/// still answering an earlier one loses that earlier reply (9 of 10 times for a 4 KiB
/// read followed by a 16 KiB write); small requests (reads, status polls, pings) never
/// did. So a larger request goes out alone: only on an empty window, with nothing
/// written behind it until its reply is in.
const PIPELINE_MAX_REQUEST: usize = 1024;

/// A caller's request taken from the queue: what to send, its deadline, and where its
/// reply goes.
struct QueuedCall {
    request: AgentRequest,
    timeout: Duration,
    deadline: Instant,
    reply: oneshot::Sender<Result<AgentReply, TransportError>>,
}

/// A request written to the agent whose reply has not been read yet.
struct InFlight {
    call: QueuedCall,
    id: u64,
}

/// Whether `request` may share the wire with others (see [`PIPELINE_MAX_REQUEST`]).
fn pipelinable(request: &AgentRequest) -> bool {
    request.wire_len() <= PIPELINE_MAX_REQUEST
}

/// What the worker woke up for while requests were in flight.
enum Event {
    /// The next reply line (for the oldest request in flight), or why there is none.
    Reply(Result<Vec<u8>, TransportError>),
    /// A new job, or `None` once every sender is gone.
    Job(Option<Job>),
}

impl Worker {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        // Invariant: requests are in flight only on an open connection; whatever drops
        // the connection fails them all first.
        let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(PIPELINE_DEPTH);
        let mut held: Option<Job> = None;
        // Whether a transport handle still exists: without one no job can come, but the
        // replies already in flight are still read and delivered to their tickets.
        let mut open = true;
        loop {
            if inflight.is_empty() {
                let job = match held.take() {
                    Some(j) => j,
                    None if !open => return,
                    None => match jobs.recv().await {
                        Some(j) => j,
                        None => return,
                    },
                };
                self.start(job, &mut inflight).await;
                continue;
            }
            // A sliding window: while the oldest reply streams in, a newly queued request
            // is written at once, so the agent always has its next request waiting.
            let room = open
                && held.is_none()
                && inflight.len() < PIPELINE_DEPTH
                && inflight.iter().all(|f| pipelinable(&f.call.request));
            let Some(front) = inflight.front() else {
                continue;
            };
            let (deadline, timeout) = (front.call.deadline, front.call.timeout);
            let Some(conn) = self.conn.as_mut() else {
                self.fail_all(inflight.drain(..).map(|f| f.call), &TransportError::Closed);
                continue;
            };
            let event = tokio::select! {
                biased;
                line = tokio::time::timeout_at(deadline, conn.read_line()) => {
                    Event::Reply(line.unwrap_or(Err(TransportError::Timeout(timeout))))
                }
                job = jobs.recv(), if room => Event::Job(job),
            };
            match event {
                Event::Reply(line) => self.answer(line, &mut inflight),
                Event::Job(None) => open = false,
                Event::Job(Some(Job::Call {
                    request,
                    timeout,
                    reply,
                })) if request.expects_reply && pipelinable(&request) => {
                    if let Some(p) = self.take(request, timeout, reply) {
                        self.send(p, &mut inflight).await;
                    }
                }
                // A close, a no-reply command or a large request waits until the window
                // is empty.
                Event::Job(Some(other)) => held = Some(other),
            }
        }
    }

    /// Handles a job taken with nothing in flight.
    async fn start(&mut self, job: Job, inflight: &mut VecDeque<InFlight>) {
        match job {
            Job::Close(ack) => {
                self.conn = None;
                let _ = ack.send(());
            }
            Job::Call {
                request,
                timeout,
                reply,
            } => {
                let Some(p) = self.take(request, timeout, reply) else {
                    return;
                };
                if p.request.expects_reply {
                    self.send(p, inflight).await;
                } else {
                    self.single(p).await;
                }
            }
        }
    }

    /// Accounts for a dequeued call; `None` if its caller already gave up (nothing sent).
    fn take(
        &self,
        request: AgentRequest,
        timeout: Duration,
        reply: oneshot::Sender<Result<AgentReply, TransportError>>,
    ) -> Option<QueuedCall> {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        (!reply.is_closed()).then(|| QueuedCall {
            request,
            timeout,
            deadline: Instant::now() + timeout,
            reply,
        })
    }

    /// Runs a command the agent answers only on failure, alone on the wire.
    async fn single(&mut self, p: QueuedCall) {
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

    /// Writes `p` (connecting and resyncing first if needed) and adds it to the window.
    /// A failed write drops the connection and fails everything in flight with it.
    async fn send(&mut self, p: QueuedCall, inflight: &mut VecDeque<InFlight>) {
        let id = random_id();
        let written = match tokio::time::timeout_at(p.deadline, self.write(&p.request, id)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(p.timeout)),
        };
        match written {
            Ok(()) => {
                tracing::trace!(id, execute = %p.request.execute, window = inflight.len() + 1, "request written");
                inflight.push_back(InFlight { call: p, id });
            }
            Err(e) => {
                self.fail_all(inflight.drain(..).map(|f| f.call), &e);
                let _ = p.reply.send(Err(e));
            }
        }
    }

    async fn write(&mut self, request: &AgentRequest, id: u64) -> Result<(), TransportError> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.path).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(TransportError::Closed);
        };
        conn.stream.write_all(&request.to_json(Some(id))).await?;
        Ok(())
    }

    /// Delivers the reply line read for the oldest request in flight. After any failure
    /// the rest of the window fails too and the connection is dropped (the next request
    /// resyncs).
    fn answer(&mut self, line: Result<Vec<u8>, TransportError>, inflight: &mut VecDeque<InFlight>) {
        let Some(InFlight { call, id }) = inflight.pop_front() else {
            return;
        };
        tracing::trace!(id, line = %line.as_ref().map(|l| super::framing::preview(l)).unwrap_or_default(), "reply read");
        match line.and_then(|l| check_reply(&l, id)) {
            Ok(reply) => {
                if call.reply.send(Ok(reply)).is_err() {
                    tracing::debug!(path = %self.path.display(), "caller left before the agent answered");
                }
            }
            Err(e) => {
                self.fail_all(inflight.drain(..).map(|f| f.call), &e);
                let _ = call.reply.send(Err(e));
            }
        }
    }

    /// Drops the connection and fails `pending`, the requests whose replies are lost with
    /// it because of `e`.
    fn fail_all(&mut self, pending: impl Iterator<Item = QueuedCall>, e: &TransportError) {
        self.conn = None;
        for p in pending {
            let err = match e {
                TransportError::Timeout(_) => TransportError::Timeout(p.timeout),
                TransportError::Closed => TransportError::Closed,
                other => TransportError::Protocol(format!(
                    "an earlier pipelined request failed: {other}"
                )),
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

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
