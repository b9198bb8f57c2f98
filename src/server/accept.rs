//! The accept loop of one listener: at most `limits.max_connections` connections at once
//! (further ones wait in the kernel's backlog), a handshake deadline for each, and a
//! pause instead of a spin when the process is out of file descriptors.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use super::authority::AuthorityFix;

/// Pause after an accept failed for want of file descriptors or memory, so the loop
/// waits for connections to end instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one "out of descriptors" warning per listener in this time.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Bytes the HTTP/2 client preface takes. On a plaintext connection the handshake
/// deadline ends once the preface has arrived: from then on, HTTP/2 keepalive pings
/// (`limits.http2_keepalive_ms`) drop a peer that does not answer.
const H2_PREFACE: usize = 24;

/// A listening socket [`incoming`] can accept from.
pub(crate) trait Listener: Send + 'static {
    /// The accepted connection.
    type Io: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static;
    /// Accepts one connection.
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;
    async fn accept_one(&self) -> io::Result<TcpStream> {
        let (s, _) = self.accept().await?;
        // As tonic's own TCP listener does: gRPC messages are small and latency-bound.
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Listener for UnixListener {
    /// Any `:authority` a client derives from a socket path is taken (see
    /// [`AuthorityFix`]).
    type Io = AuthorityFix<UnixStream>;
    async fn accept_one(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| AuthorityFix::new(s))
    }
}

/// What an accept error means for the loop.
fn classify(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(nix::libc::EMFILE) => Some("the daemon's file descriptor limit (LimitNOFILE)"),
        Some(nix::libc::ENFILE) => Some("the system's file descriptor limit"),
        Some(nix::libc::ENOBUFS | nix::libc::ENOMEM) => Some("memory"),
        _ => None,
    }
}

/// Accepted connections of `listener`, each holding one of `max_connections` slots until
/// it closes, and each dropped if it has not finished its handshake within `handshake`.
/// While all slots are taken nothing is accepted. `tls`: the listener's connections are
/// TLS (tonic does the TLS handshake; this deadline covers it as well).
pub(crate) fn incoming<L: Listener>(
    listener: L,
    name: String,
    max_connections: usize,
    handshake: Duration,
    tls: bool,
) -> impl Stream<Item = io::Result<Guarded<L::Io>>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(
        max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    async_stream::stream! {
        // When the last "out of descriptors" warning was logged (one per episode).
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let io = loop {
                match listener.accept_one().await {
                    Ok(io) => break io,
                    Err(e) => match classify(&e) {
                        Some(what) => {
                            if warned.is_none_or(|t| t.elapsed() > WARN_EVERY) {
                                tracing::warn!(listen = %name, error = %e, "accept failed: out of {what}; pausing accepts until connections end");
                                warned = Some(tokio::time::Instant::now());
                            }
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                        None => {
                            // A connection that failed before we took it (reset, aborted):
                            // nothing to wait for, but never spin on a persistent error.
                            tracing::debug!(listen = %name, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    },
                }
            };
            yield Ok(Guarded::new(io, slot, handshake, tls));
        }
    }
}

/// A connection holding its listener slot, with a deadline for its handshake.
///
/// The handshake counts as done once tonic has taken the connection (after TLS, if any)
/// and it has then read the HTTP/2 preface (plaintext), or any TLS record (TLS: a real
/// client always acknowledges the server's SETTINGS). Until then, a read or write past
/// the deadline fails with `TimedOut`, which closes the connection and frees the slot.
#[derive(Debug)]
pub(crate) struct Guarded<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Set when tonic asks for the connection's info: it is being served (TLS done).
    handed: AtomicBool,
    /// Bytes read since `handed`.
    read_after: usize,
    /// How many such bytes end the handshake.
    needed: usize,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, slot: OwnedSemaphorePermit, handshake: Duration, tls: bool) -> Self {
        Self {
            io,
            _slot: slot,
            deadline: Some(Box::pin(tokio::time::sleep(handshake))),
            handed: AtomicBool::new(false),
            read_after: 0,
            needed: if tls { 1 } else { H2_PREFACE },
        }
    }

    /// Fails once the handshake deadline has passed, unless the handshake is done.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.deadline.is_some()
            && self.handed.load(Ordering::Acquire)
            && self.read_after >= self.needed
        {
            self.deadline = None;
        }
        let expired = self
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if expired {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection handshake not completed within limits.handshake_timeout_ms",
            ));
        }
        Ok(())
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.handed.store(true, Ordering::Release);
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            tracing::debug!(error = %e, "dropping a connection");
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.deadline.is_some() && self.handed.load(Ordering::Acquire) {
            self.read_after += buf.filled().len() - before;
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
