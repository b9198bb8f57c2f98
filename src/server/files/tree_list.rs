//! ListDir: one guest helper lists a directory (or stats a path) with names carried
//! between NULs, so any name is reported as it is ([`AgentClient::list_dir`]). The path
//! is resolved first and decided on again when symbolic links lead elsewhere, like
//! ReadFile.

use tonic::Status;

use super::{resolve, tree_common::kind_of_mode};
use crate::{
    pb,
    policy::{path::check_guest_path, request::FileInfo},
    qga::tree::guest::Listed,
    server::{action::Beyond, gate::Call, service::GuestAgentService, status::ApiError},
};

/// Entries returned when the request names no limit.
pub(crate) const DEFAULT_LIMIT: u32 = 1000;
/// The most entries one listing returns.
pub(crate) const MAX_LIMIT: u32 = 10_000;

fn entry(l: Listed) -> pb::TreeEntry {
    pb::TreeEntry {
        kind: kind_of_mode(l.mode) as i32,
        mode: l.mode & 0o7777,
        mtime: l.mtime,
        size: l.size,
        target: l.target,
        uid: l.uid,
        gid: l.gid,
        path: l.name,
    }
}

/// ListDir after the gate: `info` is what the first decision was made on.
pub(crate) async fn list(
    s: &GuestAgentService,
    call: &mut Call,
    r: pb::ListDirRequest,
    info: FileInfo,
) -> Result<pb::ListDirResponse, Status> {
    check_guest_path(&r.path, None).map_err(|m| Status::from(ApiError::InvalidArgument(m)))?;
    let client = s.client(call).await?;
    if !resolve::resolves(&client, &r.path).await {
        return Err(ApiError::GuestUnsupported(
            "ListDir needs a POSIX guest and an absolute path".into(),
        )
        .into());
    }
    call.beyond(Beyond::TreeHelpers)?;
    let target = resolve::decide_resolved(s, call, &client, info).await?;
    if target.existing.is_none() {
        return Err(ApiError::GuestPathNotFound(format!("{} does not exist", target.path)).into());
    }
    let limit = match r.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let listing = client
        .list_dir(&target.path, limit)
        .await
        .map_err(|e| resolve::helper_status(s, call.domain(), e))?;
    let mut entries: Vec<pb::TreeEntry> = listing.entries.into_iter().map(entry).collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(pb::ListDirResponse {
        stat: Some(entry(listing.stat)),
        entries,
        truncated: listing.truncated,
    })
}
