//! Exec, ExecAttach and ExecCancel.
//!
//! Each exec is run by one task ([`runner`]) from start to end: it enforces the decision's
//! `timeout_ms` and `max_bytes` whether or not a client is attached, holds no guest file
//! handle while nobody reads, and records the Exec call's outcome when the program really
//! ends. Exec's own stream and later ExecAttach streams attach to that task; ExecCancel
//! asks it to kill the program (never an exited one: see [`crate::qga::AgentClient::kill`]).
//! COLLECT mode holds the output until the exit and sends it at once.

mod adopt;
mod attachment;
mod feeder;
pub(crate) mod interactive;
mod persist;
mod recording;
mod registry;
mod runner;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub(crate) use adopt::adopt_all;
pub(crate) use recording::Recordings;
pub(crate) use registry::{ExecRegistry, Owner};

use self::{
    attachment::Attachment,
    runner::{ExecLimits, Runner},
};
use super::{
    action::Beyond,
    budget::ByteBudget,
    gate::Call,
    service::{EventStream, GuestAgentService},
    status::ApiError,
};
use crate::{
    pb::{self, exec_event::Event},
    qga::{AgentClient, GuestExecCommand, RunAs, valid_env_entry},
};

/// How long an exec that ended while nobody was attached keeps its output for ExecAttach.
pub(crate) const PARK_TTL: Duration = Duration::from_secs(600);
/// How long a finished exec's result stays available to ExecAttach.
const FINISHED_TTL: Duration = Duration::from_secs(600);

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

/// Refuses environment entries whose name is not an identifier (`BASH_FUNC_x%%`, `A-B`,
/// no `=`): checked before the policy sees the request, so they never reach a guest.
pub(crate) fn check_env(env: &[String]) -> Result<(), Status> {
    match env.iter().find(|e| !valid_env_entry(e)) {
        None => Ok(()),
        Some(bad) => {
            let name: String = bad
                .split('=')
                .next()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect();
            Err(ApiError::InvalidArgument(format!(
                "environment entries must be NAME=value with NAME matching [A-Za-z_][A-Za-z0-9_]*; \
                 {name:?} does not"
            ))
            .into())
        }
    }
}

/// Refuses a `user` or `group` that is not an account name or a numeric id, and a
/// `group` without a `user`: checked before the policy sees the request.
pub(crate) fn check_user(r: &pb::ExecRequest) -> Result<(), Status> {
    if r.user.is_empty() {
        if !r.group.is_empty() {
            return Err(ApiError::InvalidArgument("`group` needs `user`".into()).into());
        }
        return Ok(());
    }
    run_as(r, r.user.clone())
        .validate()
        .map_err(|e| ApiError::InvalidArgument(e.to_string()).into())
}

/// The request's run-as user: `user` (the request's, or the policy's default), with the
/// request's `group` and `login`.
fn run_as(r: &pb::ExecRequest, user: String) -> RunAs {
    RunAs {
        user,
        group: (!r.group.is_empty()).then(|| r.group.clone()),
        login: r.login,
    }
}

/// As for files: policies decide on the normalised program path and working directory,
/// and that is what the guest runs (`/bin/../bin/rm` is `/bin/rm`). Relative paths
/// (`systemctl`) and empty ones stay as given.
pub(crate) fn normalize(r: &mut pb::ExecRequest) {
    if let Some(pb::exec_request::Command::Argv(a)) = r.command.as_mut() {
        a.path = crate::policy::request::normalize_path(&a.path);
    }
    r.cwd = crate::policy::request::normalize_path(&r.cwd);
}

/// Builds the guest command from the request.
async fn command(
    s: &GuestAgentService,
    call: &Call,
    client: &AgentClient,
    r: &pb::ExecRequest,
) -> Result<GuestExecCommand, Status> {
    let mut cmd = match &r.command {
        Some(pb::exec_request::Command::Argv(a)) => {
            GuestExecCommand::simple(a.path.clone(), a.args.clone())
        }
        Some(pb::exec_request::Command::Shell(line)) => {
            if line.is_empty() {
                return Err(ApiError::InvalidArgument("shell command line is empty".into()).into());
            }
            let os = client
                .os()
                .await
                .map_err(|e| s.agent_error(call.domain(), e))?;
            GuestExecCommand::shell(&os, line)
        }
        None => return Err(ApiError::InvalidArgument("exec needs argv or shell".into()).into()),
    };
    check_env(&r.env)?;
    cmd.env = r.env.clone();
    cmd.input_data = (!r.stdin.is_empty()).then(|| r.stdin.clone());
    cmd.cwd = (!r.cwd.is_empty()).then(|| r.cwd.clone());
    // The request's user, else the deciding plugins' default (`with(#{ run_as })`).
    let user = Some(r.user.clone())
        .filter(|u| !u.is_empty())
        .or_else(|| call.limits().run_as.clone());
    match user {
        Some(u) => cmd.user = Some(run_as(r, u)),
        None if r.login => {
            return Err(ApiError::InvalidArgument("`login` needs `user`".into()).into());
        }
        None => {}
    }
    // The task enforces the deadline itself.
    cmd.timeout = None;
    Ok(cmd)
}

/// The run-time limit: the request's (or `agent.exec_timeout_ms`), capped by a policy's.
fn time_limit(s: &GuestAgentService, r: &pb::ExecRequest, limit_ms: Option<u64>) -> Duration {
    let asked = if r.timeout_ms == 0 {
        s.shared.exec_timeout
    } else {
        Duration::from_millis(r.timeout_ms)
    };
    limit_ms.map_or(asked, |l| asked.min(Duration::from_millis(l)))
}

/// What an exec needs before it starts: the guest, the command, and its place in the
/// registry (counted against the caller's `limits.execs_per_caller`).
async fn prepare(
    s: &GuestAgentService,
    call: &Call,
    r: &pb::ExecRequest,
) -> Result<(AgentClient, GuestExecCommand, registry::Reserved), Status> {
    call.beyond(Beyond::KillHelper)?;
    call.beyond(Beyond::SweepExecDirs)?;
    call.beyond(Beyond::StdinHelpers)?;
    let client = s.client(call).await?;
    let cmd = command(s, call, &client, r).await?;
    let reserved = s.shared.execs.reserve(
        call.domain(),
        Owner::of(call.caller()),
        s.shared.limits.execs_per_caller,
    )?;
    s.shared
        .exec_dir_sweeps
        .maybe_sweep(s, call.domain(), &client);
    Ok((client, cmd, reserved))
}

/// The limits the exec carries from its start: the deadline (request, default, policy)
/// and the policy's `max_bytes` on output.
fn exec_limits(s: &GuestAgentService, r: &pb::ExecRequest, call: &Call) -> ExecLimits {
    let timeout = time_limit(s, r, call.limits().timeout_ms);
    let started = Instant::now();
    ExecLimits {
        deadline: started
            .checked_add(timeout)
            .unwrap_or(started + Duration::from_secs(100 * 365 * 24 * 3600)),
        timeout,
        output: ByteBudget::new(call.limits().max_bytes),
    }
}

/// Starts the program and hands it to its [`Runner`] task, which enforces its limits and
/// delivers (STREAM) or holds (COLLECT) its output whether or not a client stays.
pub(crate) async fn exec(
    s: &GuestAgentService,
    call: Call,
    r: pb::ExecRequest,
) -> Result<EventStream<pb::ExecEvent>, Status> {
    let (client, cmd, (entry, cmds)) = match prepare(s, &call, &r).await {
        Ok(p) => p,
        Err(e) => return fail(call, e).await,
    };
    let limits = exec_limits(s, &r, &call);
    let session = match start_session(&client, cmd).await {
        Ok(sess) => sess,
        Err(e) => {
            s.shared.execs.remove(&entry.id);
            let st = s.agent_error(call.domain(), e);
            return fail(call, st).await;
        }
    };
    let persisted = adopt::save_started(s, &call, &entry, &session, &r, &limits).await;
    entry.set_persisted(persisted);
    Ok(hand_over(s, call, &r, (entry, cmds), session, limits, None).0)
}

/// The running part of Exec and ExecInteractive, once `session` started for `entry`:
/// sends `Started` and hands the session to its [`Runner`]. Returns the client's event
/// stream and a sender into it (for ExecInteractive's feeder to end it with an error).
fn hand_over(
    s: &GuestAgentService,
    call: Call,
    r: &pb::ExecRequest,
    (entry, cmds): registry::Reserved,
    session: crate::qga::ExecSession,
    limits: ExecLimits,
    recording: Option<std::sync::Arc<recording::Recording>>,
) -> (EventStream<pb::ExecEvent>, registry::EventTx) {
    entry.set_pid(session.pid());
    let (tx, rx) = events(s);
    attachment::send_now(
        &tx,
        event(Event::Started(pb::ExecStarted {
            exec_id: entry.id.clone(),
            pid: session.pid(),
        })),
    );
    let attached = (!r.detach).then(|| Attachment {
        tx: tx.clone(),
        call: None,
        bytes: 0,
    });
    let guard = s.shared.execs.task_guard(&entry);
    let collect = r.mode == pb::ExecMode::Collect as i32;
    let mut runner = Runner::new(
        s.clone(),
        entry,
        session,
        cmds,
        call,
        attached,
        collect,
        limits,
        guard,
    );
    runner.recording = recording;
    tokio::spawn(runner.run());
    (ReceiverStream::new(rx), tx)
}

/// Starts the program. Stdin of any size works on every transport: beyond what one agent
/// request carries (over libvirt 128 KiB; an Ansible module on stdin is often larger) the
/// QGA layer writes it to a file the wrapper reads.
async fn start_session(
    client: &AgentClient,
    cmd: GuestExecCommand,
) -> Result<crate::qga::ExecSession, crate::qga::QgaError> {
    client.exec_stream(&cmd).await
}

/// A client's event channel, holding at most `limits.stream_buffer_bytes` of output: an
/// output event carries at most one tail read ([`crate::qga::DEFAULT_CHUNK`]).
fn events(
    s: &GuestAgentService,
) -> (
    registry::EventTx,
    mpsc::Receiver<Result<pb::ExecEvent, Status>>,
) {
    let room = (s.shared.limits.stream_buffer_bytes / crate::qga::DEFAULT_CHUNK).max(1);
    mpsc::channel(room)
}

async fn fail<T>(call: Call, st: Status) -> Result<T, Status> {
    Err(call.fail(st).await)
}

pub(crate) async fn attach(
    s: &GuestAgentService,
    call: Call,
    r: pb::ExecAttachRequest,
) -> Result<EventStream<pb::ExecEvent>, Status> {
    let Some(entry) = s.shared.execs.get(&r.exec_id) else {
        return fail(call, ApiError::ExecNotFound(r.exec_id).into()).await;
    };
    let (tx, rx) = events(s);
    let (reply, answer) = oneshot::channel();
    let sent = entry
        .cmds
        .send(registry::Cmd::Attach {
            tx: tx.clone(),
            call: Box::new(call),
            reply,
        })
        .await;
    let call = match sent {
        Ok(()) => match answer.await {
            Ok(Ok(())) => return Ok(ReceiverStream::new(rx)),
            Ok(Err((st, call))) if st.code() != tonic::Code::NotFound => {
                return fail(*call, st).await;
            }
            Ok(Err((_, call))) => *call,
            // The task ended with the request unanswered (it drains its queue first, so
            // this is only a task that failed).
            Err(_) => {
                return Err(ApiError::Internal("the exec's task ended".into()).into());
            }
        },
        Err(mpsc::error::SendError(registry::Cmd::Attach { call, .. })) => *call,
        Err(_) => return Err(ApiError::Internal("unexpected exec request".into()).into()),
    };
    // The task is over: report how the exec ended.
    match entry.finished() {
        Some(x) => {
            attachment::send_now(&tx, event(Event::Exited(x)));
            let outcome = super::gate::Outcome {
                exit_code: x.exit_code,
                signal: x.signal,
                bytes: Some(0),
            };
            call.finish_with(tonic::Code::Ok, "", outcome).await;
            Ok(ReceiverStream::new(rx))
        }
        None => fail(call, ApiError::ExecEnded(r.exec_id).into()).await,
    }
}

pub(crate) async fn cancel(
    s: &GuestAgentService,
    call: &Call,
    r: pb::ExecCancelRequest,
) -> Result<pb::ExecCancelResponse, Status> {
    call.beyond(Beyond::KillHelper)?;
    let Some(entry) = s.shared.execs.get(&r.exec_id) else {
        return Err(ApiError::ExecNotFound(r.exec_id).into());
    };
    let (reply, answer) = oneshot::channel();
    if entry
        .cmds
        .send(registry::Cmd::Cancel { reply })
        .await
        .is_err()
    {
        // The task has ended: the program is not running.
        return Ok(pb::ExecCancelResponse { killed: false });
    }
    let killed = answer.await.unwrap_or(Ok(false))?;
    Ok(pb::ExecCancelResponse { killed })
}
