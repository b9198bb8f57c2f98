//! ExecInteractive: an Exec whose stdin streams from the client. The stream counts against
//! its caller from the start; the first message (`start`, an ExecRequest) must come within
//! `limits.write_header_timeout`; the gate decides on it as `ExecInteractive` with
//! `exec.interactive`; then the program runs like an Exec (the same [`Runner`] delivers
//! its output and enforces its limits) and a feeder task passes the client's stdin to the
//! library's [`StdinFeed`] in order, one chunk at a time (backpressure reaches the client
//! through HTTP/2 flow control). EOF, a half-closed client stream or a client that went
//! away close the program's stdin; a program that ended stops the feeder.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Status, Streaming};

use super::{
    attachment, exec_limits, fail, hand_over, prepare,
    registry::{self, ExecEntry},
};
use crate::{
    pb::{self, exec_input::Msg},
    qga::StdinFeed,
    server::{
        action::{Action, Rpc},
        auth,
        service::{EventStream, GuestAgentService, exec_info},
        status::ApiError,
        streams::Held,
    },
};

/// How often a feeder blocked on a program that does not read checks whether it ended.
const ENDED_POLL: Duration = Duration::from_millis(500);

/// Runs one ExecInteractive call up to the start of its program.
pub(crate) async fn open(
    s: &GuestAgentService,
    request: Request<Streaming<pb::ExecInput>>,
) -> Result<Held<EventStream<pb::ExecEvent>>, Status> {
    let (meta, ext, mut input) = request.into_parts();
    let probe = Request::from_parts(meta, ext, ());
    let gate = &s.shared.gate;
    let caller = auth::caller(&probe)?;
    let permit = match s.shared.streams.acquire(&caller) {
        Ok(p) => p,
        Err(st) => {
            gate.refused(Rpc::ExecInteractive, &probe, &st).await;
            return Err(st);
        }
    };
    let wait = s.shared.limits.write_header_timeout;
    let first = match tokio::time::timeout(wait, input.message()).await {
        Ok(m) => m.map_err(ApiError::ClientStream)?,
        Err(_) => {
            let st: Status = ApiError::ClientTooSlow {
                message: format!(
                    "no ExecInteractive start message within {} (limits.write_header_timeout_ms)",
                    humantime::format_duration(wait)
                ),
                limit: Some("limits.write_header_timeout_ms"),
            }
            .into();
            gate.refused(Rpc::ExecInteractive, &probe, &st).await;
            return Err(st);
        }
    };
    let mut r = match first {
        Some(pb::ExecInput {
            msg: Some(Msg::Start(r)),
        }) if r.stdin.is_empty() => r,
        _ => {
            let st: Status = ApiError::InvalidArgument(
                "the first ExecInteractive message must be `start`, with an empty `stdin`".into(),
            )
            .into();
            gate.refused(Rpc::ExecInteractive, &probe, &st).await;
            return Err(st);
        }
    };
    super::normalize(&mut r);
    super::check_env(&r.env)?;
    let mut info = exec_info(&r);
    info.interactive = true;
    let domain = r.domain.clone();
    let call = s
        .admit(Action::ExecInteractive(info), &probe, &domain)
        .await?;
    let (client, cmd, (entry, cmds)) = match prepare(s, &call, &r).await {
        Ok(p) => p,
        Err(e) => return fail(call, e).await,
    };
    let limits = exec_limits(s, &r, &call);
    let (session, feed) = match client.exec_interactive(&cmd).await {
        Ok(x) => x,
        Err(e) => {
            s.shared.execs.remove(&entry.id);
            let st = s.agent_error(call.domain(), e);
            return fail(call, st).await;
        }
    };
    let ended = Arc::clone(&entry);
    let (events, tx) = hand_over(s, call, &r, entry, cmds, session, limits);
    tokio::spawn(feeder(input, feed, ended, tx));
    Ok(Held::new(events, permit))
}

/// Passes the client's input to the program until EOF, the client leaving, or the
/// program's end; then closes (or, with a chunk in flight, aborts) the feed.
async fn feeder(
    mut input: Streaming<pb::ExecInput>,
    mut feed: StdinFeed,
    entry: Arc<ExecEntry>,
    tx: registry::EventTx,
) {
    let ended = || async {
        while entry.finished().is_none() {
            tokio::time::sleep(ENDED_POLL).await;
        }
    };
    loop {
        let msg = tokio::select! {
            m = input.message() => m,
            () = ended() => break,
        };
        match msg {
            Ok(Some(pb::ExecInput {
                msg: Some(Msg::Stdin(data)),
            })) => {
                let wrote = tokio::select! {
                    w = feed.write(&data) => Some(w),
                    () = ended() => None,
                };
                match wrote {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(exec_id = %entry.id, error = %e, "stdin not written")
                    }
                    None => {}
                }
                break;
            }
            Ok(Some(pb::ExecInput {
                msg: Some(Msg::Resize(_) | Msg::Signal(_)),
            })) => {
                let st: Status = ApiError::GuestUnsupported(
                    "resize and signal need a terminal, which this session does not have".into(),
                )
                .into();
                attachment::send_error(&tx, st);
                break;
            }
            Ok(Some(pb::ExecInput {
                msg: Some(Msg::Start(_)) | None,
            })) => {
                let st: Status = ApiError::InvalidArgument(
                    "after `start`, ExecInteractive takes `stdin`, `eof`, `resize` or `signal`"
                        .into(),
                )
                .into();
                attachment::send_error(&tx, st);
                break;
            }
            // EOF, a half-closed stream, or a client that went away.
            Ok(Some(pb::ExecInput {
                msg: Some(Msg::Eof(_)),
            }))
            | Ok(None)
            | Err(_) => break,
        }
    }
    feed.abort().await;
}
