//! ExecInteractive: an Exec whose stdin streams from the client. The stream counts against
//! its caller from the start; the first message (`start`, an ExecRequest) must come within
//! `limits.write_header_timeout`; the gate decides on it as `ExecInteractive` with
//! `exec.interactive`; then the program runs like an Exec (the same [`Runner`] delivers
//! its output and enforces its limits) and a feeder task ([`super::feeder`]) passes the
//! client's stdin to the library's [`StdinFeed`](crate::qga::StdinFeed) in order
//! (backpressure reaches the client through HTTP/2 flow control). EOF, a half-closed client stream or a client that went
//! away close the program's stdin; a program that ended stops the feeder. With `tty` the
//! program runs on a terminal in the guest: `resize` and `signal` reach it, a client that
//! goes away hangs it up (SIGHUP, as a closed terminal would), and the policy's
//! `idle_timeout_ms` ends a session without input. Every session is recorded (asciicast
//! v2, [`super::recording`]) when the daemon keeps an audit log.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Status, Streaming};

use super::{
    exec_limits, fail, hand_over, prepare,
    recording::{Header, Recording},
};
use crate::{
    pb::{self, exec_input::Msg},
    qga::TerminalSize,
    server::{
        action::{Action, Rpc},
        gate::Call,
        service::{EventStream, GuestAgentService, exec_info},
        status::ApiError,
        streams::Held,
    },
};

/// The largest window, in rows or columns.
const MAX_CELLS: u32 = 1000;

/// Runs one ExecInteractive call up to the start of its program.
pub(crate) async fn open(
    s: &GuestAgentService,
    request: Request<Streaming<pb::ExecInput>>,
) -> Result<Held<EventStream<pb::ExecEvent>>, Status> {
    let crate::server::opening::Opened {
        probe,
        stream: input,
        permit,
        first,
    } = crate::server::opening::open(
        s,
        Rpc::ExecInteractive,
        "ExecInteractive start message",
        request,
    )
    .await?;
    let svc_gate = &s.shared.gate;
    let mut r = match first {
        Some(pb::ExecInput {
            msg: Some(Msg::Start(r)),
        }) if r.stdin.is_empty() => r,
        _ => {
            let st: Status = ApiError::InvalidArgument(
                "the first ExecInteractive message must be `start`, with an empty `stdin`".into(),
            )
            .into();
            svc_gate.refused(Rpc::ExecInteractive, &probe, &st).await;
            return Err(st);
        }
    };
    super::normalize(&mut r);
    super::check_env(&r.env)?;
    super::check_user(&r)?;
    let mut info = exec_info(&r);
    info.interactive = true;
    let domain = r.domain.clone();
    let call = s
        .admit(Action::ExecInteractive(info), &probe, &domain)
        .await?;
    let (client, mut cmd, (entry, cmds)) = match prepare(s, &call, &r).await {
        Ok(p) => p,
        Err(e) => return fail(call, e).await,
    };
    let size = terminal_size(r.tty_size.as_ref());
    cmd.tty = r.tty.then_some(size);
    let recording = match record(s, &call, &r, size).await {
        Ok(rec) => rec,
        Err(st) => {
            s.shared.execs.remove(&entry.id);
            return fail(call, st).await;
        }
    };
    let limits = exec_limits(s, &r, &call);
    let idle = call.limits().idle_timeout_ms.map(Duration::from_millis);
    let (session, feed) = match client.exec_interactive(&cmd).await {
        Ok(x) => x,
        Err(e) => {
            s.shared.execs.remove(&entry.id);
            if let Some(rec) = &recording {
                rec.finish().await;
            }
            let st = s.agent_error(call.domain(), e);
            return fail(call, st).await;
        }
    };
    let ended = Arc::clone(&entry);
    let (events, tx) = hand_over(
        s,
        call,
        &r,
        (entry, cmds),
        session,
        limits,
        recording.clone(),
    );
    let feeder = super::feeder::Feeder {
        feed,
        entry: ended,
        tx,
        recording,
        idle,
    };
    tokio::spawn(feeder.run(input));
    Ok(Held::new(events, permit))
}

/// The requested window size: 0 rows or columns means 24x80; at most 1000 each.
pub(super) fn terminal_size(t: Option<&pb::TerminalSize>) -> TerminalSize {
    let d = TerminalSize::default();
    let pick = |v: u32, default: u16| match v {
        0 => default,
        v => u16::try_from(v.min(MAX_CELLS)).unwrap_or(default),
    };
    t.map_or(d, |t| TerminalSize {
        rows: pick(t.rows, d.rows),
        cols: pick(t.cols, d.cols),
    })
}

/// Starts the session's recording (with an audit log). A recording that cannot be made
/// refuses the session when the audit log refuses on failure.
async fn record(
    s: &GuestAgentService,
    call: &Call,
    r: &pb::ExecRequest,
    size: TerminalSize,
) -> Result<Option<Arc<Recording>>, Status> {
    let Some(rec) = &s.shared.recordings else {
        return Ok(None);
    };
    let what = match &r.command {
        Some(pb::exec_request::Command::Argv(a)) => std::iter::once(a.path.as_str())
            .chain(a.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        Some(pb::exec_request::Command::Shell(line)) => line.clone(),
        None => String::new(),
    };
    let header = Header {
        size,
        title: format!(
            "{}: {}",
            call.domain(),
            what.chars().take(200).collect::<String>()
        ),
        term: r
            .env
            .iter()
            .find_map(|e| e.strip_prefix("TERM="))
            .map(str::to_owned)
            .or_else(|| {
                r.tty
                    .then(|| crate::qga::DEFAULT_TERM["TERM=".len()..].to_owned())
            }),
        input: call.limits().record_input,
    };
    match Recording::create(&rec.dir, call.request_id(), header).await {
        Ok(made) => Ok(Some(Arc::new(made))),
        Err(e) => {
            tracing::error!(dir = %rec.dir.display(), error = %e, "session recording not created");
            if rec.refuse {
                Err(ApiError::AuditUnavailable.into())
            } else {
                Ok(None)
            }
        }
    }
}
