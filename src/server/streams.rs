//! Bounds on server streams: how many one caller holds open (`limits.streams_per_caller`),
//! how many bytes each may buffer (`limits.stream_buffer_bytes`) and how long a producer
//! waits for a client that stopped reading (`limits.stream_idle_timeout_ms`).
//!
//! A response stream is a [`channel`]: the producer reserves bytes before it makes a
//! message (a read in flight counts too) and the reservation is released when tonic takes
//! the message. So a stalled client costs at most its budget here, plus the one message
//! HTTP/2 holds for it, whatever the message sizes.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tonic::Status;

use super::{auth::Caller, status::ApiError};
use crate::sync::lock;

/// Messages queued per stream at most, whatever their size (small messages too cost
/// memory).
const MAX_QUEUED: usize = 16;

/// Open streams per caller. Callers are told apart by (auth kind, id): all anonymous
/// callers share one count.
#[derive(Debug)]
pub(crate) struct StreamRegistry {
    limit: usize,
    open: Mutex<HashMap<(&'static str, String), usize>>,
}

impl StreamRegistry {
    /// A registry allowing `limit` open streams per caller.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::default(),
        })
    }

    /// Counts one more open stream for `caller`, or refuses with RESOURCE_EXHAUSTED naming
    /// `limits.streams_per_caller`. The stream counts until the permit is dropped.
    pub(crate) fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<StreamPermit, Status> {
        let key = (caller.auth.as_str(), caller.id.clone());
        let mut open = lock(&self.open);
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.limit {
            return Err(ApiError::LimitExceeded {
                what: "too many open streams for this caller",
                limit: "limits.streams_per_caller",
                value: self.limit,
            }
            .into());
        }
        *n += 1;
        super::metrics::streams_open(1.0);
        Ok(StreamPermit {
            registry: Arc::clone(self),
            key,
        })
    }

    /// Open streams of (auth kind, id) right now.
    #[cfg(test)]
    fn count(&self, auth: &'static str, id: &str) -> usize {
        lock(&self.open)
            .get(&(auth, id.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// One open stream of one caller; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    registry: Arc<StreamRegistry>,
    key: (&'static str, String),
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        super::metrics::streams_open(-1.0);
        let mut open = lock(&self.registry.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The client left (or the stream was dropped).
    #[error("the client left")]
    Closed,
    /// The client took nothing while the producer waited this long for room.
    #[error(
        "the client read nothing for {}; stream ended (limits.stream_idle_timeout_ms)",
        humantime::format_duration(*.0)
    )]
    Idle(Duration),
}

impl From<SendError> for Status {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed => ApiError::ClientCancelled(e.to_string()).into(),
            SendError::Idle(_) => ApiError::ClientTooSlow {
                message: e.to_string(),
                limit: Some("limits.stream_idle_timeout_ms"),
            }
            .into(),
        }
    }
}

/// What the two ends share.
#[derive(Debug)]
struct Link {
    /// Bytes the producer may still reserve.
    bytes: Arc<Semaphore>,
    /// The budget, as permits (at least 1, at most `u32::MAX`).
    budget: u32,
    /// Messages taken by tonic so far (the producer's idle clock restarts on each).
    taken: AtomicU64,
    /// Sent after the queued messages when the producer ends with an error.
    terminal: Mutex<Option<Status>>,
}

type Item<T> = (Result<T, Status>, OwnedSemaphorePermit);

/// A response stream with a byte budget: `budget` bytes buffered at most, and a producer
/// that waits for room longer than `idle` while the client takes nothing gets
/// [`SendError::Idle`].
pub(crate) fn channel<T>(
    budget: usize,
    idle: Duration,
    permit: Option<StreamPermit>,
) -> (StreamSender<T>, BoundedStream<T>) {
    let budget = u32::try_from(budget.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let link = Arc::new(Link {
        bytes: Arc::new(Semaphore::new(budget as usize)),
        budget,
        taken: AtomicU64::new(0),
        terminal: Mutex::new(None),
    });
    let (tx, rx) = mpsc::channel(MAX_QUEUED);
    (
        StreamSender {
            tx,
            link: Arc::clone(&link),
            idle,
        },
        BoundedStream {
            rx,
            link,
            _permit: permit,
        },
    )
}

/// The producer's end of a [`channel`].
#[derive(Debug)]
pub(crate) struct StreamSender<T> {
    tx: mpsc::Sender<Item<T>>,
    link: Arc<Link>,
    idle: Duration,
}

/// Room for one message, reserved ahead of making it.
#[derive(Debug)]
pub(crate) struct Reservation<T> {
    slot: mpsc::OwnedPermit<Item<T>>,
    bytes: OwnedSemaphorePermit,
}

impl<T> Reservation<T> {
    /// Queues `item` in the reserved room (never waits).
    pub(crate) fn send(self, item: Result<T, Status>) {
        self.slot.send((item, self.bytes));
    }
}

impl<T> StreamSender<T> {
    /// Waits for `bytes` of budget (a message larger than the whole budget takes all of
    /// it) and a queue slot, failing if the client takes nothing for the idle timeout.
    pub(crate) async fn reserve(&self, bytes: usize) -> Result<Reservation<T>, SendError> {
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.link.budget);
        let bytes = self
            .idle_wait(Arc::clone(&self.link.bytes).acquire_many_owned(n))
            .await?
            .map_err(|_| SendError::Closed)?;
        let slot = self
            .idle_wait(self.tx.clone().reserve_owned())
            .await?
            .map_err(|_| SendError::Closed)?;
        Ok(Reservation { slot, bytes })
    }

    /// Ends the stream with `status` after the messages already queued; never waits (the
    /// status costs no budget).
    pub(crate) fn fail(self, status: Status) {
        *lock(&self.link.terminal) = Some(status);
    }

    /// Runs `fut`, giving up when the client takes nothing for the idle timeout.
    async fn idle_wait<F: Future>(&self, fut: F) -> Result<F::Output, SendError> {
        tokio::pin!(fut);
        loop {
            let seen = self.link.taken.load(Ordering::Acquire);
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = tokio::time::sleep(self.idle) => {
                    if self.link.taken.load(Ordering::Acquire) == seen {
                        return Err(SendError::Idle(self.idle));
                    }
                }
            }
        }
    }
}

impl<T: prost::Message> StreamSender<T> {
    /// Queues one message, waiting for room as [`StreamSender::reserve`] does.
    pub(crate) async fn send(&self, item: Result<T, Status>) -> Result<(), SendError> {
        let size = match &item {
            Ok(m) => m.encoded_len(),
            Err(st) => st.message().len(),
        };
        self.reserve(size).await?.send(item);
        Ok(())
    }
}

/// The client's end of a [`channel`], handed to tonic. Holds the caller's stream permit
/// for as long as tonic holds the stream.
#[derive(Debug)]
pub struct BoundedStream<T> {
    rx: mpsc::Receiver<Item<T>>,
    link: Arc<Link>,
    _permit: Option<StreamPermit>,
}

impl<T> Stream for BoundedStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((item, bytes))) => {
                drop(bytes);
                self.link.taken.fetch_add(1, Ordering::AcqRel);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => Poll::Ready(lock(&self.link.terminal).take().map(Err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for BoundedStream<T> {
    /// Wakes a producer waiting for room: it gets [`SendError::Closed`].
    fn drop(&mut self) {
        self.link.bytes.close();
    }
}

/// Any response stream, holding its caller's stream permit while tonic holds it (for
/// streams made elsewhere, such as the exec events of RunTask).
#[derive(Debug)]
pub struct Held<S> {
    inner: S,
    _permit: StreamPermit,
}

impl<S> Held<S> {
    /// `inner`, counted against its caller until dropped.
    pub(crate) fn new(inner: S, permit: StreamPermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
}

impl<S: Stream + Unpin> Stream for Held<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio_stream::StreamExt;

    use super::*;
    use crate::server::auth::AuthMethod;

    fn caller(auth: AuthMethod, id: &str) -> Caller {
        Caller {
            id: id.into(),
            auth,
            roles: Vec::new(),
            peer: String::new(),
        }
    }

    #[test]
    fn permits_count_per_auth_kind_and_id() {
        let r = StreamRegistry::new(2);
        let a = caller(AuthMethod::Token, "uid:0");
        let a1 = r.acquire(&a).unwrap();
        let _a2 = r.acquire(&a).unwrap();
        let st = r.acquire(&a).unwrap_err();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert!(st.message().contains("limits.streams_per_caller"), "{st}");
        // The same id proven another way is another caller.
        let _b = r.acquire(&caller(AuthMethod::Unix, "uid:0")).unwrap();
        drop(a1);
        assert_eq!(r.count("token", "uid:0"), 1);
        let _a3 = r.acquire(&a).unwrap();
    }

    #[tokio::test]
    async fn budget_bounds_buffered_bytes_and_idle_ends_the_producer() {
        let (tx, mut rx) = channel::<Vec<u8>>(10, Duration::from_millis(200), None);
        tx.reserve(6).await.unwrap().send(Ok(vec![1; 6]));
        // 6 of 10 bytes are buffered: 6 more do not fit until the first is taken.
        let t = tokio::time::Instant::now();
        let r = tx.reserve(6).await;
        assert!(matches!(r, Err(SendError::Idle(_))), "{r:?}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        // Taking the message frees its bytes.
        assert_eq!(rx.next().await.unwrap().unwrap(), vec![1; 6]);
        tx.reserve(6).await.unwrap().send(Ok(vec![2; 6]));
        tx.fail(Status::aborted("stop"));
        assert_eq!(rx.next().await.unwrap().unwrap(), vec![2; 6]);
        assert_eq!(rx.next().await.unwrap().unwrap_err().message(), "stop");
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_stream_wakes_a_waiting_producer() {
        let (tx, rx) = channel::<Vec<u8>>(4, Duration::from_secs(60), None);
        tx.reserve(4).await.unwrap().send(Ok(vec![0; 4]));
        let waiting = tokio::spawn(async move { tx.reserve(1).await.map(drop) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(SendError::Closed)), "{r:?}");
    }
}
