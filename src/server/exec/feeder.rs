//! The feeder of an ExecInteractive session: passes the client's messages to the
//! library's [`StdinFeed`] in order. A reader task reads a few messages ahead, so stdin
//! chunks already at hand are gathered into one guest write (up to [`GATHER_MAX`]) and the
//! spool segment stays open while more is queued; anything else (resize, signal, EOF)
//! first makes what was written visible to the program.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{
    attachment,
    interactive::terminal_size,
    recording::Recording,
    registry::{self, ExecEntry},
};
use crate::{
    pb::{self, exec_input::Msg},
    qga::{QgaError, StdinFeed},
    server::status::ApiError,
};

/// How often a feeder blocked on a program that does not read checks whether it ended.
const ENDED_POLL: Duration = Duration::from_millis(500);
/// Client messages read ahead of the guest writes (each at most the server's message size).
const READ_AHEAD: usize = 2;
/// The most stdin gathered from queued messages into one guest write.
const GATHER_MAX: usize = 1 << 20;

/// Stdin writes up to this size (typing, a pasted line) make the runner look for the echo
/// at once; bulk input leaves it to its usual back-off, whose polls would otherwise take
/// the agent's time from the writes.
const ECHO_MAX: usize = 4 << 10;

/// What the reader task passes on: a message, the end of the client's stream (`None`) or
/// the client gone (`Err`).
type Item = Result<Option<pb::ExecInput>, Status>;

/// Passes the client's input to the program until EOF, the client leaving, the program's
/// end or the policy's idle time.
pub(super) struct Feeder {
    pub(super) feed: StdinFeed,
    pub(super) entry: Arc<ExecEntry>,
    pub(super) tx: registry::EventTx,
    pub(super) recording: Option<Arc<Recording>>,
    pub(super) idle: Option<Duration>,
}

/// What the feeder does after one client message.
enum Next {
    Go,
    /// Stdin ended: close it (EOF after what was written), keep the feed until the end.
    Eof,
    /// The session's input is over otherwise: abort the feed.
    Stop,
}

impl Feeder {
    pub(super) async fn run(mut self, input: Streaming<pb::ExecInput>) {
        let (ahead, mut msgs) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(read(input, ahead));
        let entry = Arc::clone(&self.entry);
        let ended = || async {
            while entry.finished().is_none() {
                tokio::time::sleep(ENDED_POLL).await;
            }
        };
        let idle = self.idle;
        let quiet = || async move {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let mut next = Next::Go;
        let mut pending: Option<Item> = None;
        while matches!(next, Next::Go) {
            let item = match pending.take() {
                Some(item) => Some(item),
                None => tokio::select! {
                    m = msgs.recv() => m,
                    () = ended() => break,
                    () = quiet() => {
                        tracing::info!(exec_id = %self.entry.id, "interactive session idle past its policy's idle_timeout_ms; ending it");
                        let _ = self.entry.cmds.send(registry::Cmd::Idle).await;
                        break;
                    }
                },
            };
            next = match item {
                Some(Ok(Some(pb::ExecInput {
                    msg: Some(Msg::Stdin(data)),
                }))) => {
                    let (data, more) = self.gather(data, &mut msgs, &mut pending).await;
                    tokio::select! {
                        n = self.stdin(&data, more) => n,
                        () = ended() => Next::Stop,
                    }
                }
                Some(Ok(Some(pb::ExecInput { msg: Some(m) }))) => {
                    tokio::select! {
                        n = self.handle(m) => n,
                        () = ended() => Next::Stop,
                    }
                }
                Some(Ok(Some(pb::ExecInput { msg: None }))) => {
                    self.refuse(ApiError::InvalidArgument(
                        "an ExecInput message must carry `stdin`, `eof`, `resize` or `signal`"
                            .into(),
                    ));
                    Next::Stop
                }
                // A half-closed stream: EOF.
                Some(Ok(None)) | None => Next::Eof,
                Some(Err(_)) => self.client_gone().await,
            };
        }
        reader.abort();
        self.entry.bulk_input.store(false, Ordering::Relaxed);
        if matches!(next, Next::Eof) {
            match self.feed.close().await {
                // The pump delivers the rest; the feed (its lease) lives until the end.
                // Many programs end soon after EOF: look for that at once.
                Ok(()) => {
                    self.entry.input.notify_one();
                    ended().await;
                }
                Err(e) => tracing::debug!(exec_id = %self.entry.id, error = %e, "stdin not closed"),
            }
        }
        self.feed.abort().await;
    }

    /// `first` and the stdin of messages already queued behind it, up to [`GATHER_MAX`]
    /// (recorded as they come); `more`: further input is already at hand. A queued message
    /// of another kind is left in `pending`.
    async fn gather(
        &self,
        first: Vec<u8>,
        msgs: &mut mpsc::Receiver<Item>,
        pending: &mut Option<Item>,
    ) -> (Vec<u8>, bool) {
        if let Some(r) = &self.recording {
            r.input(&first).await;
        }
        let mut data = first;
        while data.len() < GATHER_MAX {
            match msgs.try_recv() {
                Ok(Ok(Some(pb::ExecInput {
                    msg: Some(Msg::Stdin(more)),
                }))) => {
                    if let Some(r) = &self.recording {
                        r.input(&more).await;
                    }
                    data.extend_from_slice(&more);
                }
                Ok(other) => {
                    *pending = Some(other);
                    return (data, false);
                }
                Err(_) => break,
            }
        }
        let more = !msgs.is_empty();
        (data, more)
    }

    async fn stdin(&mut self, data: &[u8], more: bool) -> Next {
        self.entry
            .bulk_input
            .store(data.len() > ECHO_MAX || more, Ordering::Relaxed);
        match self.feed.write_more(data, more).await {
            Ok(()) => {
                if data.len() <= ECHO_MAX {
                    self.entry.input.notify_one();
                }
                Next::Go
            }
            Err(e) => {
                tracing::debug!(exec_id = %self.entry.id, error = %e, "stdin not written");
                Next::Stop
            }
        }
    }

    /// A client that went away: EOF, and a terminal hangs up as a closed one would (its
    /// shell must not stay behind, waiting for nobody).
    async fn client_gone(&mut self) -> Next {
        if self.feed.is_tty() {
            match self.feed.hangup().await {
                Ok(hung) => {
                    tracing::debug!(exec_id = %self.entry.id, hung, "client gone; terminal hung up")
                }
                Err(e) => {
                    tracing::warn!(exec_id = %self.entry.id, error = %e, "client gone; terminal not hung up")
                }
            }
        }
        Next::Stop
    }

    /// A message other than stdin; what was written reaches the program first.
    async fn handle(&mut self, m: Msg) -> Next {
        if !matches!(m, Msg::Eof(_))
            && let Err(e) = self.feed.write_more(&[], false).await
        {
            tracing::debug!(exec_id = %self.entry.id, error = %e, "stdin not written");
            return Next::Stop;
        }
        match m {
            Msg::Stdin(data) => self.stdin(&data, false).await,
            Msg::Eof(_) => Next::Eof,
            Msg::Resize(t) => {
                if !self.feed.is_tty() {
                    self.refuse(ApiError::GuestUnsupported(
                        "resize needs a terminal: start the session with `tty`".into(),
                    ));
                    return Next::Stop;
                }
                let size = terminal_size(Some(&t));
                if let Some(r) = &self.recording {
                    r.resize(size).await;
                }
                if let Err(e) = self.feed.resize(size).await {
                    // The window keeps its old size; the session goes on.
                    tracing::debug!(exec_id = %self.entry.id, error = %e, "terminal not resized");
                }
                self.entry.input.notify_one();
                Next::Go
            }
            Msg::Signal(n) => match self.feed.signal(n).await {
                Ok(_) => {
                    self.entry.input.notify_one();
                    Next::Go
                }
                Err(QgaError::InvalidArgument(m)) => {
                    self.refuse(ApiError::InvalidArgument(m));
                    Next::Stop
                }
                Err(e) => {
                    tracing::debug!(exec_id = %self.entry.id, error = %e, "signal not sent");
                    Next::Go
                }
            },
            Msg::Start(_) => {
                self.refuse(ApiError::InvalidArgument(
                    "after `start`, ExecInteractive takes `stdin`, `eof`, `resize` or `signal`"
                        .into(),
                ));
                Next::Stop
            }
        }
    }

    /// Ends the client's stream with `e` (the program goes on, attachable).
    fn refuse(&self, e: ApiError) {
        let st: Status = e.into();
        attachment::send_error(&self.tx, st);
    }
}

/// Reads the client's messages ahead into `ahead` until its stream ends (passed on as
/// `Ok(None)` or `Err`) or the feeder stops listening.
async fn read(mut input: Streaming<pb::ExecInput>, ahead: mpsc::Sender<Item>) {
    loop {
        let item = input.message().await;
        let last = !matches!(item, Ok(Some(_)));
        if ahead.send(item).await.is_err() || last {
            return;
        }
    }
}
