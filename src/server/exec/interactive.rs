//! ExecInteractive: an Exec whose stdin streams from the client. The stream counts against
//! its caller from the start; the first message (`start`, an ExecRequest) must come within
//! `limits.write_header_timeout`; the gate decides on it as `ExecInteractive` with
//! `exec.interactive`; then the program runs like an Exec (the same [`Runner`] delivers
//! its output and enforces its limits) and a feeder task passes the client's stdin to the
//! library's [`StdinFeed`] in order, one chunk at a time (backpressure reaches the client
//! through HTTP/2 flow control). EOF, a half-closed client stream or a client that went
//! away close the program's stdin; a program that ended stops the feeder. With `tty` the
//! program runs on a terminal in the guest: `resize` and `signal` reach it, a client that
//! goes away hangs it up (SIGHUP, as a closed terminal would), and the policy's
//! `idle_timeout_ms` ends a session without input. Every session is recorded (asciicast
//! v2, [`super::recording`]) when the daemon keeps an audit log.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Status, Streaming};

use super::{
    attachment, exec_limits, fail, hand_over, prepare,
    recording::{Header, Recording},
    registry::{self, ExecEntry},
};
use crate::{
    pb::{self, exec_input::Msg},
    qga::{QgaError, StdinFeed, TerminalSize},
    server::{
        action::{Action, Rpc},
        gate::Call,
        service::{EventStream, GuestAgentService, exec_info},
        status::ApiError,
        streams::Held,
    },
};

/// How often a feeder blocked on a program that does not read checks whether it ended.
const ENDED_POLL: Duration = Duration::from_millis(500);
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
    let feeder = Feeder {
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
fn terminal_size(t: Option<&pb::TerminalSize>) -> TerminalSize {
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

/// Passes the client's input to the program until EOF, the client leaving, the program's
/// end or the policy's idle time; then closes (or, with a chunk in flight, aborts) stdin.
struct Feeder {
    feed: StdinFeed,
    entry: Arc<ExecEntry>,
    tx: registry::EventTx,
    recording: Option<Arc<Recording>>,
    idle: Option<Duration>,
}

/// What the feeder does after one client message.
enum Next {
    Go,
    Stop,
}

impl Feeder {
    async fn run(mut self, mut input: Streaming<pb::ExecInput>) {
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
        loop {
            let msg = tokio::select! {
                m = input.message() => m,
                () = ended() => break,
                () = quiet() => {
                    tracing::info!(exec_id = %self.entry.id, "interactive session idle past its policy's idle_timeout_ms; ending it");
                    let _ = self.entry.cmds.send(registry::Cmd::Idle).await;
                    break;
                }
            };
            let next = match msg {
                Ok(Some(pb::ExecInput { msg: Some(m) })) => {
                    tokio::select! {
                        n = self.handle(m) => n,
                        () = ended() => Next::Stop,
                    }
                }
                Ok(Some(pb::ExecInput { msg: None })) => {
                    self.refuse(ApiError::InvalidArgument(
                        "an ExecInput message must carry `stdin`, `eof`, `resize` or `signal`"
                            .into(),
                    ));
                    Next::Stop
                }
                // A half-closed stream: EOF.
                Ok(None) => Next::Stop,
                // A client that went away: EOF, and a terminal hangs up as a closed one
                // would (its shell must not stay behind, waiting for nobody).
                Err(_) => {
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
            };
            if matches!(next, Next::Stop) {
                break;
            }
        }
        self.feed.abort().await;
    }

    async fn handle(&mut self, m: Msg) -> Next {
        match m {
            Msg::Stdin(data) => {
                if let Some(r) = &self.recording {
                    r.input(&data).await;
                }
                match self.feed.write(&data).await {
                    Ok(()) => {
                        self.entry.input.notify_one();
                        Next::Go
                    }
                    Err(e) => {
                        tracing::debug!(exec_id = %self.entry.id, error = %e, "stdin not written");
                        Next::Stop
                    }
                }
            }
            Msg::Eof(_) => Next::Stop,
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
