//! Deciding on what is really opened: the gate decided on the requested path; here the
//! path is resolved in the guest and, when symbolic links lead elsewhere, the policy
//! decides again on the resolved path (its own decision record). After opening, the
//! handle is proven to be open on the resolved file, and the request refused if not.

use tonic::Status;

use super::super::{
    action::Beyond,
    gate::Call,
    service::GuestAgentService,
    status::{self, ApiError},
};
use crate::{
    policy::request::FileInfo,
    qga::{
        AgentClient, OpenFile, QgaError,
        guestpath::{Resolved, Stage},
    },
};

/// The status of a failed guest helper: by its errno text like any agent error
/// (`No such file or directory` → NOT_FOUND, `File exists` → ALREADY_EXISTS, ...), and
/// FAILED_PRECONDITION where the text says nothing more precise.
pub(super) fn helper_status(s: &GuestAgentService, domain: &str, e: QgaError) -> Status {
    status::helper_status(&s.shared.guests, domain, e)
}

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
    call.beyond(Beyond::FileHelpers)?;
    let resolved = client
        .resolve_path(&info.path)
        .await
        .map_err(|e| helper_status(s, call.domain(), e))?;
    if resolved.path != info.path {
        info.requested = std::mem::replace(&mut info.path, resolved.path.clone());
        call.redecide_file(info).await?;
    }
    Ok(resolved)
}

/// [`decide_resolved`] for an atomic upload: the resolution also makes the staging
/// directory when the requested path is already resolved (one guest helper instead of
/// two); when it leads elsewhere, the policy decides again and nothing was staged.
pub(super) async fn decide_staged(
    s: &GuestAgentService,
    call: &mut Call,
    client: &AgentClient,
    mut info: FileInfo,
) -> Result<(Resolved, Option<Stage>), Status> {
    call.beyond(Beyond::FileHelpers)?;
    let (resolved, stage) = client
        .resolve_and_stage(&info.path)
        .await
        .map_err(|e| helper_status(s, call.domain(), e))?;
    if resolved.path != info.path {
        debug_assert!(stage.is_none(), "staged for a path that resolves elsewhere");
        info.requested = std::mem::replace(&mut info.path, resolved.path.clone());
        call.redecide_file(info).await?;
    }
    Ok((resolved, stage))
}

/// [`decide_resolved`] for an in-place upload of a file that may be new: the resolution
/// also creates the target, empty, with mode `0666 & !umask`, when it is absent and
/// only root can reach, swap or remove it (see `AgentClient::probe_and_create`). Returns
/// the resolution and whether the target was created.
pub(super) async fn decide_created(
    s: &GuestAgentService,
    call: &mut Call,
    client: &AgentClient,
    mut info: FileInfo,
    umask: u32,
) -> Result<(Resolved, bool), Status> {
    call.beyond(Beyond::FileHelpers)?;
    let (probed, created) = client
        .probe_and_create(&info.path, umask)
        .await
        .map_err(|e| helper_status(s, call.domain(), e))?;
    let resolved = match probed {
        Some(r) => r,
        None => client
            .resolve_path(&info.path)
            .await
            .map_err(|e| helper_status(s, call.domain(), e))?,
    };
    if resolved.path != info.path {
        debug_assert!(!created, "created a path that resolves elsewhere");
        info.requested = std::mem::replace(&mut info.path, resolved.path.clone());
        call.redecide_file(info).await?;
    }
    Ok((resolved, created))
}

/// After `file` was opened on the resolved `path`: proves it is open on the file at
/// `path` (where the kernel says the agent's descriptor is open, see
/// [`AgentClient::handle_is`]; a handle that cannot be positioned is refused), or, when
/// `path` was a device, FIFO or socket at resolution (`regular` false), resolves it again.
/// With `ino`, the file must also be that inode; with `empty`, a proven regular file is
/// then truncated through the agent's descriptor. ABORTED when a component
/// was swapped between resolution and open. The handle's position is then undefined.
pub(super) async fn verify_open(
    s: &GuestAgentService,
    domain: &str,
    client: &AgentClient,
    (file, path): (&OpenFile, &str),
    regular: bool,
    (ino, empty): (Option<u64>, bool),
) -> Result<(), Status> {
    if !regular {
        return recheck(s, domain, client, path).await;
    }
    let same = match client.handle_is(file, path, ino, empty).await {
        Ok(same) => same,
        // The agent answered but the guest cannot show where the handle is open (no
        // /proc, or a handle that cannot be positioned).
        Err(e @ QgaError::Agent { .. }) => {
            return Err(ApiError::GuestUnsupported(format!(
                "cannot prove that the handle opened on {path} is that file ({}); refused",
                s.agent_error(domain, e).message()
            ))
            .into());
        }
        Err(e) => return Err(s.agent_error(domain, e)),
    };
    if same {
        Ok(())
    } else {
        Err(ApiError::GuestPathChanged(format!(
            "what was opened is not the file at {path} (a component of the path was swapped \
             while it was opened); refused"
        ))
        .into())
    }
}

/// Resolves `path` again after it was opened; ABORTED when it now leads elsewhere (a
/// component was swapped between resolution and open).
async fn recheck(
    s: &GuestAgentService,
    domain: &str,
    client: &AgentClient,
    path: &str,
) -> Result<(), Status> {
    let now = client
        .resolve_path(path)
        .await
        .map_err(|e| helper_status(s, domain, e))?;
    if now.path != path {
        return Err(ApiError::GuestPathChanged(format!(
            "{path} changed while it was being opened (it now leads to {}); refused",
            now.path
        ))
        .into());
    }
    Ok(())
}
