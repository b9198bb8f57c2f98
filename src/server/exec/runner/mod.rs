//! One task per exec. It owns the [`ExecSession`] from start to end and enforces the
//! decision's deadline and `max_bytes` whether or not a client is attached or reading.
//!
//! Attached, it tails the output and delivers it (COLLECT: held until the exit). Parked
//! (nobody attached, or the client read nothing for `limits.stream_idle_timeout`), it
//! holds no guest file handle: it polls `guest-exec-status` and the deadline, and for
//! `max_bytes` the output files' sizes, at a low rate; an attach reopens the files at the
//! saved offsets. The Exec call's outcome is recorded when the program really ends.

mod limits;
mod pace;

use self::limits::Kill;

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tonic::{Code, Status};

use super::{
    FINISHED_TTL, PARK_TTL,
    attachment::{self, Attachment, Detached},
    recording::Recording,
    registry::{Cmd, ExecEntry, TaskGuard},
};
use crate::{
    pb::{self, exec_event::Event},
    qga::{ExecSession, KillOutcome, QgaError},
    server::{
        budget::ByteBudget,
        gate::{Call, Outcome},
        service::GuestAgentService,
        status::ApiError,
    },
};

/// How often a parked exec checks its program (exit, deadline) and output size.
const PARK_POLL: Duration = Duration::from_secs(1);
const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);
/// The longest pause while bulk stdin is being written: each poll is a few agent calls
/// (over libvirt, each with libvirt's own sync), taken from the writes.
const POLL_BULK: Duration = Duration::from_secs(1);
/// The first pause after stdin was written (an echo takes a few ms to come back).
const POLL_ECHO: Duration = Duration::from_millis(2);
/// Consecutive failed status polls (one per [`PARK_POLL`]) after which a parked exec's
/// task gives up: the agent is gone.
const MAX_FAILURES: u32 = 120;
/// Output kept per stream while a COLLECT client waits for the exit.
const COLLECT_CAP: usize = 16 << 20;

/// The decision's limits, carried by the exec for its whole life.
#[derive(Debug, Clone, Copy)]
pub(super) struct ExecLimits {
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    /// The policy's `max_bytes`, spent by the output the program writes.
    pub(super) output: ByteBudget,
}

enum End {
    /// Exit delivered (or recorded) and the directory removed.
    Done,
    /// Exited while parked and nobody attached within [`PARK_TTL`].
    Discarded,
    Shutdown,
    Failed(QgaError),
}

enum Wake {
    Tick,
    /// Stdin was written: poll soon (the echo is coming).
    Input,
    Cmd(Option<Cmd>),
    Deadline,
    ClientGone,
    Shutdown,
    Sent(bool),
    Idle,
}

/// The task's state.
pub(super) struct Runner {
    pub(super) svc: GuestAgentService,
    pub(super) entry: Arc<ExecEntry>,
    pub(super) session: ExecSession,
    pub(super) cmds: mpsc::Receiver<Cmd>,
    /// The Exec request's call, finished when the program ends.
    pub(super) call: Option<Call>,
    pub(super) client: Option<Attachment>,
    /// COLLECT: hold output until the exit while the first client is attached.
    pub(super) collect: bool,
    pub(super) limits: ExecLimits,
    pub(super) guard: TaskGuard,
    pending: VecDeque<pb::ExecEvent>,
    deadline_done: bool,
    accepted: u64,
    over: bool,
    collected: (usize, usize),
    capped: (bool, bool),
    killed: Option<Kill>,
    exit: Option<pb::ExecExited>,
    exited_at: Option<Instant>,
    poll: Duration,
    /// When the program last wrote output (or was given stdin): the full rounds' pace
    /// slows with the quiet (see [`pace::round_max`]).
    last_output: Instant,
    failures: u32,
    /// An interactive session's recording.
    pub(super) recording: Option<Arc<Recording>>,
    /// Started by an earlier daemon instance (adopted from `[state]` at startup).
    pub(super) adopted: bool,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        svc: GuestAgentService,
        entry: Arc<ExecEntry>,
        session: ExecSession,
        cmds: mpsc::Receiver<Cmd>,
        call: Call,
        client: Option<Attachment>,
        collect: bool,
        limits: ExecLimits,
        guard: TaskGuard,
    ) -> Self {
        Self {
            svc,
            entry,
            session,
            cmds,
            call: Some(call),
            client,
            collect,
            limits,
            guard,
            pending: VecDeque::new(),
            deadline_done: false,
            accepted: 0,
            over: false,
            collected: (0, 0),
            capped: (false, false),
            killed: None,
            exit: None,
            exited_at: None,
            poll: POLL_MIN,
            last_output: Instant::now(),
            failures: 0,
            recording: None,
            adopted: false,
        }
    }

    /// Runs the exec to its end.
    pub(super) async fn run(mut self) {
        let end = self.main_loop().await;
        match end {
            End::Done | End::Discarded => {
                if matches!(end, End::Discarded) {
                    tracing::info!(exec_id = %self.entry.id, "nobody attached after the exit; output discarded");
                }
                self.record_exit().await;
                self.entry.set_finished(self.exit);
                self.expire();
            }
            End::Shutdown => {
                self.session.release_handles().await;
                let recording = self.finish_recording().await;
                let st: Status = ApiError::ShuttingDown.into();
                self.end_client(Code::Unavailable, st.message(), Some(st.clone()))
                    .await;
                if self.entry.persisted() && self.session.has_exited() {
                    // The agent reported the exit (and has forgotten the pid): a later
                    // daemon could not learn it, so the outcome is recorded now.
                    self.record_exit().await;
                }
                if self.entry.persisted()
                    && let Some(call) = self.call.take()
                {
                    // Recorded in `[state]`: the next daemon instance adopts the exec
                    // and records its outcome once the program ends.
                    call.hand_off();
                } else if let Some(mut call) = self.call.take() {
                    if let Some(r) = recording {
                        call.set_recording(r);
                    }
                    call.finish_with(
                        Code::Unavailable,
                        "the daemon shut down; the program was left running",
                        Outcome::default(),
                    )
                    .await;
                }
            }
            End::Failed(e) => {
                self.session.release_handles().await;
                let recording = self.finish_recording().await;
                let st = self.svc.agent_error(&self.entry.domain, e);
                self.end_client(st.code(), st.message(), Some(st.clone()))
                    .await;
                if let Some(mut call) = self.call.take() {
                    if let Some(r) = recording {
                        call.set_recording(r);
                    }
                    call.finish_status(&st, self.outcome()).await;
                    self.forget_record().await;
                }
                self.svc.shared.execs.remove(&self.entry.id);
            }
        }
        // Late requests: the exec is over.
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Cancel { reply } => {
                    let _ = reply.send(Ok(false));
                }
                Cmd::Idle => {}
                Cmd::Attach { tx, call, reply } => {
                    let _ = reply.send(Err((
                        ApiError::ExecEnded(self.entry.id.clone()).into(),
                        call,
                    )));
                    drop(tx);
                }
            }
        }
        drop(self.guard);
    }

    async fn main_loop(&mut self) -> End {
        loop {
            if self.svc.shared.shutdown.is_cancelled() {
                return End::Shutdown;
            }
            if self.session.is_finished() && self.pending.is_empty() {
                return End::Done;
            }
            if self.client.is_some() {
                let holding = self.collect && self.exit.is_none();
                if !holding && !self.pending.is_empty() {
                    self.deliver_front().await;
                    continue;
                }
                if self.session.is_finished() {
                    continue;
                }
                match self.session.step().await {
                    Ok(Some(ev)) => {
                        self.poll = POLL_MIN;
                        self.last_output = Instant::now();
                        self.accept(ev).await;
                    }
                    Ok(None) => {
                        let pause = self.poll;
                        let max = if self.entry.bulk_input.load(Ordering::Relaxed) {
                            POLL_BULK
                        } else {
                            pace::round_max(self.last_output.elapsed())
                        };
                        self.poll = (self.poll * 2).min(max);
                        self.pause_watching_exit(pause).await;
                    }
                    // The agent answered with an error: the exec cannot go on.
                    Err(e @ QgaError::Agent { .. }) => return End::Failed(e),
                    Err(e) => self.fail_client(e).await,
                }
                continue;
            }
            // Parked: no guest handles while nobody reads.
            if self.session.open_handles() > 0 {
                self.session.release_handles().await;
            }
            if self.session.has_exited() {
                self.record_exit().await;
                let at = *self.exited_at.get_or_insert_with(Instant::now);
                if at.elapsed() >= PARK_TTL {
                    self.session.discard().await;
                    self.pending.clear();
                    return End::Discarded;
                }
            }
            if self.wait(PARK_POLL).await {
                match self.session.poll_exit().await {
                    Ok(_) => self.failures = 0,
                    // The agent does not know the pid (it was restarted): the exec is lost.
                    Err(e @ QgaError::Agent { .. }) => return End::Failed(e),
                    Err(e) => {
                        // Transient agent trouble must not end the limits' enforcement;
                        // an agent gone for good ends the task after a while.
                        self.failures += 1;
                        tracing::warn!(exec_id = %self.entry.id, error = %e, failures = self.failures, "exec status poll failed");
                        if self.failures >= MAX_FAILURES {
                            return End::Failed(e);
                        }
                        continue;
                    }
                }
                self.check_size().await;
            }
        }
    }

    /// Waits `pause` for the program, handling requests, the deadline, a client that
    /// leaves and shutdown meanwhile. True when the pause ran out.
    async fn wait(&mut self, pause: Duration) -> bool {
        let deadline = self.deadline_armed();
        let wake = {
            let closed = async {
                match &self.client {
                    Some(c) => c.tx.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => Wake::Tick,
                () = self.entry.input.notified() => Wake::Input,
                cmd = self.cmds.recv() => Wake::Cmd(cmd),
                () = tokio::time::sleep_until(self.limits.deadline.into()), if deadline => Wake::Deadline,
                () = closed => Wake::ClientGone,
                () = self.svc.shared.shutdown.cancelled() => Wake::Shutdown,
            }
        };
        self.handle(wake).await
    }

    /// Delivers the first pending event, or detaches a client that does not read it
    /// within `limits.stream_idle_timeout`. Deadline, `max_bytes` (by output size) and
    /// requests are served meanwhile.
    async fn deliver_front(&mut self) {
        let idle = tokio::time::sleep(self.svc.shared.limits.stream_idle_timeout);
        tokio::pin!(idle);
        loop {
            let (Some(client), Some(front)) = (&self.client, self.pending.front()) else {
                return;
            };
            let deadline = self.deadline_armed();
            let sizing = self.sizing();
            let wake = tokio::select! {
                ok = attachment::send(&client.tx, front) => Wake::Sent(ok),
                cmd = self.cmds.recv() => Wake::Cmd(cmd),
                () = tokio::time::sleep_until(self.limits.deadline.into()), if deadline => Wake::Deadline,
                () = &mut idle => Wake::Idle,
                () = tokio::time::sleep(PARK_POLL), if sizing => Wake::Tick,
                () = self.svc.shared.shutdown.cancelled() => Wake::Shutdown,
            };
            match wake {
                Wake::Sent(true) => {
                    let Some(ev) = self.pending.pop_front() else {
                        return;
                    };
                    let done = match &ev.event {
                        Some(Event::Stdout(d) | Event::Stderr(d)) => {
                            if let Some(c) = self.client.as_mut() {
                                c.bytes += d.len() as u64;
                            }
                            None
                        }
                        Some(Event::Exited(x)) => Some(*x),
                        _ => None,
                    };
                    if let Some(x) = done
                        && let Some(c) = self.client.take()
                    {
                        c.finish(Code::Ok, "", Some(&x)).await;
                    }
                    return;
                }
                Wake::Sent(false) => {
                    self.detach(Detached::Left).await;
                    return;
                }
                Wake::Idle => {
                    self.detach(Detached::Idle).await;
                    return;
                }
                Wake::Tick => self.check_size().await,
                other => {
                    self.handle(other).await;
                    if self.client.is_none() || self.svc.shared.shutdown.is_cancelled() {
                        return;
                    }
                }
            }
        }
    }

    /// Acts on what woke a wait; true for a plain tick.
    async fn handle(&mut self, wake: Wake) -> bool {
        match wake {
            Wake::Tick => return true,
            Wake::Input => {
                self.poll = POLL_ECHO;
                self.last_output = Instant::now();
                return true;
            }
            Wake::Cmd(Some(cmd)) => self.command(cmd).await,
            Wake::Cmd(None) | Wake::Shutdown | Wake::Sent(_) => {}
            Wake::Deadline => {
                self.deadline_done = true;
                self.kill(Kill::Timeout).await;
            }
            Wake::ClientGone => self.detach(Detached::Left).await,
            Wake::Idle => self.detach(Detached::Idle).await,
        }
        false
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Cancel { reply } => {
                let res = if self.session.has_exited() {
                    Ok(false)
                } else {
                    match self.session.kill(false).await {
                        Ok(KillOutcome::Killed) => {
                            self.killed.get_or_insert(Kill::Cancelled);
                            Ok(true)
                        }
                        Ok(_) => Ok(false),
                        Err(e) => Err(self.svc.agent_error(&self.entry.domain, e)),
                    }
                };
                let _ = reply.send(res);
            }
            Cmd::Idle => self.kill(Kill::Idle).await,
            Cmd::Attach { tx, call, reply } => {
                if self.client.is_some() {
                    let st: Status = ApiError::ExecAttached.into();
                    let _ = reply.send(Err((st, call)));
                    return;
                }
                self.collect = false;
                self.client = Some(Attachment {
                    tx,
                    call: Some(*call),
                    bytes: 0,
                });
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// The client leaves (or stopped reading): the exec goes on, parked.
    async fn detach(&mut self, why: Detached) {
        self.collect = false;
        let Some(c) = self.client.take() else {
            return;
        };
        let message = match why {
            Detached::Left => "the client left; the exec continues detached".to_owned(),
            Detached::Idle => format!(
                "the client read nothing for {} ms (limits.stream_idle_timeout_ms); the exec continues detached",
                self.svc.shared.limits.stream_idle_timeout.as_millis()
            ),
        };
        tracing::debug!(exec_id = %self.entry.id, %message, "exec detached");
        c.finish(Code::Cancelled, &message, None).await;
        self.session.release_handles().await;
    }

    /// A transport error while a client reads: its stream ends with the error, and the
    /// exec goes on detached (its limits still enforced; an attach retries the reads).
    async fn fail_client(&mut self, e: QgaError) {
        let st = self.svc.agent_error(&self.entry.domain, e);
        tracing::warn!(exec_id = %self.entry.id, status = %st.message(), "reading the exec's output failed; detached");
        self.collect = false;
        self.end_client(st.code(), st.message(), Some(st.clone()))
            .await;
        self.session.release_handles().await;
    }

    /// Ends the attached client's stream (shutdown, failure).
    async fn end_client(&mut self, code: Code, message: &str, st: Option<Status>) {
        if let Some(c) = self.client.take() {
            if let Some(st) = st {
                attachment::send_error(&c.tx, st);
            }
            c.finish(code, message, None).await;
        }
    }

    /// Removes the exec's `[state]` record once its outcome is recorded.
    pub(super) async fn forget_record(&mut self) {
        if self.entry.persisted() {
            self.entry.set_persisted(false);
            super::adopt::forget(&self.svc, &self.entry.id).await;
        }
    }

    /// Forgets the finished exec after [`FINISHED_TTL`].
    fn expire(&self) {
        let (svc, id) = (self.svc.clone(), self.entry.id.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(FINISHED_TTL) => {}
                () = svc.shared.shutdown.cancelled() => {}
            }
            svc.shared.execs.remove(&id);
        });
    }
}
