//! Deciding on what is really opened: the gate decided on the requested path; here the
//! path is resolved in the guest and, when symbolic links lead elsewhere, the policy
//! decides again on the resolved path (its own decision record). After opening, the path
//! is resolved again and the request refused if it changed meanwhile.

use tonic::Status;

use super::super::{gate::Call, service::GuestAgentService};
use crate::{
    policy::request::FileInfo,
    qga::{
        AgentClient,
        guestpath::{Existing, Resolved},
    },
};

/// Whether `path` is resolved in the guest: POSIX paths on guests not known to run
/// Windows. Windows guests get no resolution (documented in docs/api.md).
pub(super) async fn resolves(client: &AgentClient, path: &str) -> bool {
    let windows = client.os().await.is_ok_and(|o| o.is_windows());
    path.starts_with('/') && !windows
}

/// Resolves `info.path` (the requested, normalised path) in the guest; when it leads
/// elsewhere, the policy decides again with `path` = resolved and `requested` = asked.
pub(super) async fn decide_resolved(
    s: &GuestAgentService,
    call: &mut Call,
    client: &AgentClient,
    mut info: FileInfo,
) -> Result<Resolved, Status> {
    let resolved = client
        .resolve_path(&info.path)
        .await
        .map_err(|e| s.agent_error(&call.domain, e))?;
    if resolved.path != info.path {
        info.requested = std::mem::replace(&mut info.path, resolved.path.clone());
        call.redecide_file(info).await?;
    }
    Ok(resolved)
}

/// Resolves `path` again after it was opened; ABORTED when it now leads elsewhere (a
/// component was swapped between resolution and open). Returns what is there now.
pub(super) async fn recheck(
    s: &GuestAgentService,
    domain: &str,
    client: &AgentClient,
    path: &str,
) -> Result<Option<Existing>, Status> {
    let now = client
        .resolve_path(path)
        .await
        .map_err(|e| s.agent_error(domain, e))?;
    if now.path != path {
        return Err(Status::aborted(format!(
            "{path} changed while it was being opened (it now leads to {}); refused",
            now.path
        )));
    }
    Ok(now.existing)
}
