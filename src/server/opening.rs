//! The opening of a client-streaming call (WriteFile, PushTree, ExecInteractive): the
//! stream counts against its caller from the start, and its first message must come within
//! `limits.write_header_timeout` — so a client that opens streams and sends nothing is
//! bounded too. A refusal here is recorded for the RPC, like a denial.

use tonic::{Request, Status, Streaming};

use super::{
    action::Rpc, auth, service::GuestAgentService, status::ApiError, streams::StreamPermit,
};

/// An opened client stream: the call's metadata (for the gate), the rest of the stream,
/// its permit, and the first message (`None`: the client sent nothing and closed).
pub(crate) struct Opened<T> {
    pub(crate) probe: Request<()>,
    pub(crate) stream: Streaming<T>,
    pub(crate) permit: StreamPermit,
    pub(crate) first: Option<T>,
}

/// Takes the caller's stream permit, then waits for the first message; `what` names it
/// in the timeout's message ("WriteFile header").
pub(crate) async fn open<T>(
    svc: &GuestAgentService,
    rpc: Rpc,
    what: &str,
    request: Request<Streaming<T>>,
) -> Result<Opened<T>, Status> {
    let (meta, ext, mut stream) = request.into_parts();
    let probe = Request::from_parts(meta, ext, ());
    let gate = &svc.shared.gate;
    let caller = auth::caller(&probe)?;
    let permit = match svc.shared.streams.acquire(&caller) {
        Ok(p) => p,
        Err(st) => {
            gate.refused(rpc, &probe, &st).await;
            return Err(st);
        }
    };
    let wait = svc.shared.limits.write_header_timeout;
    let first = match tokio::time::timeout(wait, stream.message()).await {
        Ok(m) => m.map_err(ApiError::ClientStream)?,
        Err(_) => {
            let st: Status = ApiError::ClientTooSlow {
                message: format!(
                    "no {what} within {} (limits.write_header_timeout_ms)",
                    humantime::format_duration(wait)
                ),
                limit: Some("limits.write_header_timeout_ms"),
            }
            .into();
            gate.refused(rpc, &probe, &st).await;
            return Err(st);
        }
    };
    Ok(Opened {
        probe,
        stream,
        permit,
        first,
    })
}
