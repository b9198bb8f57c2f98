//! Exec, ExecAttach and ExecCancel.
//!
//! STREAM mode tails the program's output live (see [`crate::qga::ExecSession`]). When the
//! client leaves mid-stream, the session is *parked* with the event that could not be
//! delivered; ExecAttach resumes it from there. A parked session nobody attaches to within
//! [`PARK_TTL`] is drained in the background, so its guest handles and directory go away.
//! COLLECT mode waits for exit and sends the output at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::{
    gate::{Call, Outcome},
    service::{EventStream, GuestAgentService, STREAM_BUFFER},
    status::ApiError,
};
use crate::{
    pb::{self, exec_event::Event},
    qga::{AgentClient, ExecEvent, ExecSession, GuestExecCommand},
};

/// How long a parked exec waits for ExecAttach before it is drained.
pub(crate) const PARK_TTL: Duration = Duration::from_secs(600);
/// How long a finished exec's result stays available to ExecAttach.
const FINISHED_TTL: Duration = Duration::from_secs(600);
/// Largest stdout/stderr message; larger output is split (gRPC's default limit is 4 MiB).
const MAX_EVENT: usize = 1 << 20;
const COLLECT_POLL: Duration = Duration::from_millis(50);

/// Running and recently finished execs by id.
#[derive(Debug, Default)]
pub(crate) struct ExecRegistry {
    map: Mutex<HashMap<String, Arc<ExecEntry>>>,
}

#[derive(Debug)]
pub(crate) struct ExecEntry {
    id: String,
    domain: String,
    owner: String,
    pid: i64,
    client: AgentClient,
    state: Mutex<EntryState>,
}

#[derive(Debug)]
enum EntryState {
    /// A stream is delivering its events.
    Attached,
    /// Nobody is listening; the session waits here.
    Parked {
        session: Box<ExecSession>,
        pending: Option<pb::ExecEvent>,
    },
    /// Done; the final event is kept for late attachers.
    Finished(pb::ExecExited),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ExecRegistry {
    fn insert(&self, domain: &str, owner: &str, pid: i64, client: AgentClient) -> Arc<ExecEntry> {
        let id = uuid::Uuid::new_v4().to_string();
        let entry = Arc::new(ExecEntry {
            id: id.clone(),
            domain: domain.to_owned(),
            owner: owner.to_owned(),
            pid,
            client,
            state: Mutex::new(EntryState::Attached),
        });
        lock(&self.map).insert(id, Arc::clone(&entry));
        entry
    }

    /// The guest an exec runs in and who started it (for the gate, before it is touched).
    pub(crate) fn domain_and_owner(&self, id: &str) -> Option<(String, String)> {
        self.get(id).map(|e| (e.domain.clone(), e.owner.clone()))
    }

    fn get(&self, id: &str) -> Option<Arc<ExecEntry>> {
        lock(&self.map).get(id).cloned()
    }

    fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    /// The guest pids of every exec this daemon knows (running, parked or finished).
    pub(crate) fn pids(&self) -> Vec<i64> {
        lock(&self.map).values().map(|e| e.pid).collect()
    }

    /// Closes the guest handles of every parked session (daemon shutdown).
    pub(crate) async fn close_parked(&self) {
        let entries: Vec<_> = lock(&self.map).values().cloned().collect();
        for e in entries {
            let taken = std::mem::replace(&mut *lock(&e.state), EntryState::Attached);
            if let EntryState::Parked { mut session, .. } = taken {
                session.close_handles().await;
            }
        }
    }
}

fn event(e: Event) -> pb::ExecEvent {
    pb::ExecEvent { event: Some(e) }
}

fn exited(x: &crate::qga::ExecExit, out_trunc: bool, err_trunc: bool) -> pb::ExecExited {
    pb::ExecExited {
        exit_code: x.exit_code,
        signal: x.signal,
        duration_ms: u64::try_from(x.duration.as_millis()).unwrap_or(u64::MAX),
        stdout_truncated: out_trunc,
        stderr_truncated: err_trunc,
        timed_out: x.timed_out,
    }
}

/// Builds the guest command from the request.
async fn command(
    s: &GuestAgentService,
    client: &AgentClient,
    r: &pb::ExecRequest,
    limit_ms: Option<u64>,
) -> Result<GuestExecCommand, Status> {
    let mut cmd = match &r.command {
        Some(pb::exec_request::Command::Argv(a)) => {
            GuestExecCommand::simple(a.path.clone(), a.args.clone())
        }
        Some(pb::exec_request::Command::Shell(line)) => {
            if line.is_empty() {
                return Err(Status::invalid_argument("shell command line is empty"));
            }
            let os = client.os().await.map_err(|e| s.agent_error(&r.domain, e))?;
            GuestExecCommand::shell(&os, line)
        }
        None => return Err(Status::invalid_argument("exec needs argv or shell")),
    };
    cmd.env = r.env.clone();
    cmd.input_data = (!r.stdin.is_empty()).then(|| r.stdin.clone());
    cmd.cwd = (!r.cwd.is_empty()).then(|| r.cwd.clone());
    let asked = if r.timeout_ms == 0 {
        s.shared.exec_timeout
    } else {
        Duration::from_millis(r.timeout_ms)
    };
    // A policy's timeout_ms limit caps whatever the caller asked for.
    cmd.timeout = Some(limit_ms.map_or(asked, |l| asked.min(Duration::from_millis(l))));
    Ok(cmd)
}

pub(crate) async fn exec(
    s: &GuestAgentService,
    call: Call,
    r: pb::ExecRequest,
) -> Result<EventStream<pb::ExecEvent>, Status> {
    let started = Instant::now();
    let prepared = async {
        let client = s.client(&r.domain).await?;
        let cmd = command(s, &client, &r, call.limits.timeout_ms).await?;
        Ok::<_, Status>((client, cmd))
    }
    .await;
    let (client, cmd) = match prepared {
        Ok(p) => p,
        Err(e) => {
            call.finish::<()>(&Err(e.clone())).await;
            return Err(e);
        }
    };
    s.shared.reaper.maybe_sweep(s, &r.domain, &client);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let collect = r.mode == pb::ExecMode::Collect as i32;
    if collect && !r.detach {
        let pid = match client.exec(&cmd).await {
            Ok(pid) => pid,
            Err(e) => return fail(call, s.agent_error(&r.domain, e)).await,
        };
        let entry = s
            .shared
            .execs
            .insert(&r.domain, &call.caller.id, pid, client.clone());
        let _ = tx
            .send(Ok(event(Event::Started(pb::ExecStarted {
                exec_id: entry.id.clone(),
                pid,
            }))))
            .await;
        let svc = s.clone();
        let max_bytes = call.limits.max_bytes;
        tokio::spawn(async move {
            let res = client
                .wait_for(pid, started, cmd.timeout, COLLECT_POLL)
                .await;
            let mut outcome = Outcome::default();
            let code = match res {
                Ok(mut r) => {
                    // The agent hands output over at exit; a policy budget caps what we pass on.
                    if let Some(limit) = max_bytes {
                        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                        r.stdout_truncated |= r.stdout.len() > limit;
                        r.stdout.truncate(limit);
                        let room = limit - r.stdout.len();
                        r.stderr_truncated |= r.stderr.len() > room;
                        r.stderr.truncate(room);
                    }
                    outcome = Outcome {
                        exit_code: r.exit_code,
                        signal: r.signal,
                        bytes: Some((r.stdout.len() + r.stderr.len()) as u64),
                    };
                    let exit = crate::qga::ExecExit {
                        exit_code: r.exit_code,
                        signal: r.signal,
                        duration: r.duration,
                        timed_out: r.timed_out,
                    };
                    let done = exited(&exit, r.stdout_truncated, r.stderr_truncated);
                    *lock(&entry.state) = EntryState::Finished(done);
                    for chunk in r.stdout.chunks(MAX_EVENT) {
                        let _ = tx.send(Ok(event(Event::Stdout(chunk.to_vec())))).await;
                    }
                    for chunk in r.stderr.chunks(MAX_EVENT) {
                        let _ = tx.send(Ok(event(Event::Stderr(chunk.to_vec())))).await;
                    }
                    let _ = tx.send(Ok(event(Event::Exited(done)))).await;
                    Code::Ok
                }
                Err(e) => {
                    let st: Status = ApiError::Qga(e).into();
                    let code = st.code();
                    let _ = tx.send(Err(st)).await;
                    svc.shared.execs.remove(&entry.id);
                    code
                }
            };
            expire(&svc, &entry.id);
            call.finish_with(code, "", outcome).await;
        });
        return Ok(ReceiverStream::new(rx));
    }
    let session = match client.exec_stream(&cmd).await {
        Ok(sess) => sess,
        Err(e) => return fail(call, s.agent_error(&r.domain, e)).await,
    };
    let entry = s
        .shared
        .execs
        .insert(&r.domain, &call.caller.id, session.pid(), client);
    let started_ev = event(Event::Started(pb::ExecStarted {
        exec_id: entry.id.clone(),
        pid: session.pid(),
    }));
    let _ = tx.send(Ok(started_ev)).await;
    if r.detach {
        park(s, &entry, Box::new(session), None);
        call.finish::<()>(&Ok(())).await;
    } else {
        tokio::spawn(pump(s.clone(), entry, Box::new(session), None, tx, call));
    }
    Ok(ReceiverStream::new(rx))
}

async fn fail<T>(call: Call, st: Status) -> Result<T, Status> {
    call.finish::<()>(&Err(st.clone())).await;
    Err(st)
}

/// Delivers a session's events to one client until it exits, the client leaves (then the
/// session is parked) or the daemon shuts down (then the stream ends with UNAVAILABLE).
/// A policy `max_bytes` limit on output kills the program once reached.
async fn pump(
    s: GuestAgentService,
    entry: Arc<ExecEntry>,
    mut session: Box<ExecSession>,
    mut pending: Option<pb::ExecEvent>,
    tx: mpsc::Sender<Result<pb::ExecEvent, Status>>,
    call: Call,
) {
    let token = s.shared.shutdown.clone();
    let budget = call.limits.max_bytes;
    let mut sent: u64 = 0;
    let mut over = false;
    loop {
        let mut ev = match pending.take() {
            Some(ev) => ev,
            None => {
                let next = tokio::select! {
                    () = token.cancelled() => {
                        session.close_handles().await;
                        let st = Status::unavailable("the daemon is shutting down");
                        let _ = tx.send(Err(st.clone())).await;
                        call.finish::<()>(&Err(st)).await;
                        return;
                    }
                    next = session.next_event() => next,
                };
                match next {
                    Ok(Some(ev)) => to_pb(ev),
                    Ok(None) => {
                        call.finish::<()>(&Ok(())).await;
                        return;
                    }
                    Err(e) => {
                        session.close_handles().await;
                        let st: Status = ApiError::Qga(e).into();
                        let _ = tx.send(Err(st.clone())).await;
                        s.shared.execs.remove(&entry.id);
                        call.finish::<()>(&Err(st)).await;
                        return;
                    }
                }
            }
        };
        if let Some(Event::Stdout(d) | Event::Stderr(d)) = ev.event.as_mut() {
            if let Some(limit) = budget {
                let room = limit.saturating_sub(sent);
                if d.len() as u64 > room {
                    d.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                    if !over {
                        over = true;
                        tracing::info!(exec_id = %entry.id, limit, "exec output reached the policy's max_bytes; killing it");
                        let _ = session.kill().await;
                    }
                }
            }
            sent += d.len() as u64;
        }
        if let Some(Event::Exited(x)) = ev.event.as_mut() {
            x.stdout_truncated |= over;
            x.stderr_truncated |= over;
        }
        let done = match &ev.event {
            Some(Event::Exited(x)) => Some(*x),
            _ => None,
        };
        if let Some(x) = done {
            *lock(&entry.state) = EntryState::Finished(x);
            expire(&s, &entry.id);
        }
        let empty = matches!(&ev.event, Some(Event::Stdout(d) | Event::Stderr(d)) if d.is_empty());
        if !empty && tx.send(Ok(ev.clone())).await.is_err() {
            // The client left: keep the session (and the undelivered event) for ExecAttach.
            if done.is_none() {
                park(&s, &entry, session, Some(ev));
            }
            call.finish::<()>(&Err(Status::cancelled("client left")))
                .await;
            return;
        }
        if let Some(x) = done {
            let outcome = Outcome {
                exit_code: x.exit_code,
                signal: x.signal,
                bytes: Some(sent),
            };
            call.finish_with(Code::Ok, "", outcome).await;
            return;
        }
    }
}

fn to_pb(ev: ExecEvent) -> pb::ExecEvent {
    match ev {
        ExecEvent::Stdout(d) => event(Event::Stdout(d)),
        ExecEvent::Stderr(d) => event(Event::Stderr(d)),
        ExecEvent::Exited(x) => event(Event::Exited(exited(&x, false, false))),
    }
}

/// Parks a session; drains it in the background if nobody attaches within [`PARK_TTL`].
fn park(
    s: &GuestAgentService,
    entry: &Arc<ExecEntry>,
    session: Box<ExecSession>,
    pending: Option<pb::ExecEvent>,
) {
    *lock(&entry.state) = EntryState::Parked { session, pending };
    let (svc, entry) = (s.clone(), Arc::clone(entry));
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(PARK_TTL) => {}
            () = svc.shared.shutdown.cancelled() => return,
        }
        let taken = {
            let mut st = lock(&entry.state);
            match std::mem::replace(&mut *st, EntryState::Attached) {
                EntryState::Parked { session, .. } => Some(session),
                other => {
                    *st = other;
                    None
                }
            }
        };
        if let Some(mut session) = taken {
            tracing::info!(exec_id = %entry.id, "nobody attached; draining the exec's output");
            let mut last = None;
            while let Ok(Some(ev)) = session.next_event().await {
                if let ExecEvent::Exited(x) = ev {
                    last = Some(exited(&x, false, false));
                }
            }
            match last {
                Some(x) => *lock(&entry.state) = EntryState::Finished(x),
                None => svc.shared.execs.remove(&entry.id),
            }
            expire(&svc, &entry.id);
        }
    });
}

/// Forgets a finished exec after [`FINISHED_TTL`].
fn expire(s: &GuestAgentService, id: &str) {
    let (svc, id) = (s.clone(), id.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(FINISHED_TTL).await;
        svc.shared.execs.remove(&id);
    });
}

pub(crate) async fn attach(
    s: &GuestAgentService,
    call: Call,
    r: pb::ExecAttachRequest,
) -> Result<EventStream<pb::ExecEvent>, Status> {
    let Some(entry) = s.shared.execs.get(&r.exec_id) else {
        return fail(
            call,
            Status::not_found(format!("no exec with id {:?}", r.exec_id)),
        )
        .await;
    };
    let taken = std::mem::replace(&mut *lock(&entry.state), EntryState::Attached);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    match taken {
        EntryState::Attached => {
            return fail(
                call,
                Status::failed_precondition("this exec is attached to another client"),
            )
            .await;
        }
        EntryState::Finished(x) => {
            *lock(&entry.state) = EntryState::Finished(x);
            let _ = tx.send(Ok(event(Event::Exited(x)))).await;
            call.finish::<()>(&Ok(())).await;
        }
        EntryState::Parked { session, pending } => {
            tokio::spawn(pump(s.clone(), entry, session, pending, tx, call));
        }
    }
    Ok(ReceiverStream::new(rx))
}

pub(crate) async fn cancel(
    s: &GuestAgentService,
    _: &Call,
    r: pb::ExecCancelRequest,
) -> Result<pb::ExecCancelResponse, Status> {
    let Some(entry) = s.shared.execs.get(&r.exec_id) else {
        return Err(Status::not_found(format!(
            "no exec with id {:?}",
            r.exec_id
        )));
    };
    if matches!(*lock(&entry.state), EntryState::Finished(_)) {
        return Ok(pb::ExecCancelResponse { killed: false });
    }
    entry.client.kill(entry.pid).await.map_err(ApiError::Qga)?;
    Ok(pb::ExecCancelResponse { killed: true })
}
