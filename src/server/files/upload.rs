//! The WriteFile call: the stream counts against its caller from the start, the header
//! must come within `limits.write_header_timeout`, the gate decides on it, then [`write`]
//! does the upload and the outcome is recorded. Refusals before the header are audited
//! through [`Gate::refused`](crate::server::gate::Gate::refused).

use tonic::{Request, Status, Streaming};

use super::write;
use crate::{
    pb,
    policy::request::{FileInfo, normalize_path},
    server::{
        action::{Action, Rpc},
        gate::Outcome,
        service::GuestAgentService,
        status::ApiError,
    },
};

/// Runs one WriteFile call to its end (spawned by the service, so that it finishes even
/// when the client goes away).
pub(crate) async fn upload(
    svc: GuestAgentService,
    request: Request<Streaming<pb::WriteFileRequest>>,
) -> Result<pb::WriteFileResponse, Status> {
    let crate::server::opening::Opened {
        probe,
        stream,
        permit,
        first,
    } = crate::server::opening::open(&svc, Rpc::WriteFile, "WriteFile header", request).await?;
    let svc_gate = &svc.shared.gate;
    let header = match first {
        Some(pb::WriteFileRequest {
            msg: Some(pb::write_file_request::Msg::Header(mut h)),
        }) => {
            h.path = normalize_path(&h.path);
            h
        }
        _ => {
            let st: Status =
                ApiError::InvalidArgument("the first WriteFile message must be the header".into())
                    .into();
            svc_gate.refused(Rpc::WriteFile, &probe, &st).await;
            return Err(st);
        }
    };
    let mode = pb::WriteMode::try_from(header.mode).map_or("unknown", |m| match m {
        pb::WriteMode::Create => "create",
        pb::WriteMode::Truncate => "truncate",
        pb::WriteMode::Append => "append",
        pb::WriteMode::Exclusive => "exclusive",
    });
    let info = FileInfo {
        path: header.path.clone(),
        requested: header.path.clone(),
        op: "write".into(),
        mode: mode.into(),
        ..Default::default()
    };
    let domain = header.domain.clone();
    let mut call = svc
        .admit(Action::WriteFile(info.clone()), &probe, &domain)
        .await?;
    let res = write(&svc, &mut call, header, stream, info).await;
    drop(permit);
    let outcome = Outcome {
        bytes: res.as_ref().ok().map(|r| r.bytes_written),
        ..Default::default()
    };
    call.end(&res, outcome).await;
    res
}
