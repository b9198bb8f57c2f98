//! FsFreeze, FsThaw and FsFreezeStatus.
//!
//! A freeze runs in a task of its own that outlives the request: it freezes, hands the
//! result to the waiting handler (if the client is still there), then waits for the
//! deadline and thaws ([`super::freezes::FreezeRegistry::watch`]). An explicit FsThaw or the daemon's
//! shutdown takes the record out first, which ends the wait. The agent's own status is
//! the truth: a record whose guest says "thawed" is dropped.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::oneshot;
use tonic::Status;

use crate::{
    pb,
    qga::{QgaError, commands::FsfreezeStatus},
    server::{action::Beyond, gate::Call, service::GuestAgentService, status::ApiError},
    transport::TransportError,
};

/// How long the freeze command itself may take (it syncs every file system first).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(120);

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The deadline asked for, within the bounds: 1..=`max` (`limits.max_thaw_deadline_s`),
/// and not past a policy's `timeout_ms`.
fn deadline(asked_s: u32, max: Duration, policy_ms: Option<u64>) -> Result<Duration, Status> {
    if asked_s == 0 {
        return Err(ApiError::InvalidArgument(
            "thaw_deadline_s is required: the daemon thaws the guest at that deadline".into(),
        )
        .into());
    }
    let d = Duration::from_secs(u64::from(asked_s));
    if d > max {
        return Err(ApiError::InvalidArgument(format!(
            "thaw_deadline_s {asked_s} is over limits.max_thaw_deadline_s ({})",
            max.as_secs()
        ))
        .into());
    }
    if let Some(ms) = policy_ms
        && d > Duration::from_millis(ms)
    {
        return Err(ApiError::InvalidArgument(format!(
            "thaw_deadline_s {asked_s} is over the policy's timeout_ms ({ms})"
        ))
        .into());
    }
    Ok(d)
}

/// FsFreeze: checks the agent is thawed, records the freeze, then freezes in a task that
/// thaws at the deadline whatever becomes of this request.
pub(crate) async fn freeze(
    s: &GuestAgentService,
    call: &Call,
    r: pb::FsFreezeRequest,
) -> Result<pb::FsFreezeResponse, Status> {
    call.beyond(Beyond::ThawAtDeadline)?;
    let max = s.shared.limits.max_thaw_deadline;
    let wait = deadline(r.thaw_deadline_s, max, call.limits().timeout_ms)?;
    let domain = call.domain().to_owned();
    let client = s.client(call).await?;
    let reg = Arc::clone(&s.shared.freezes);
    let status = client
        .fsfreeze_status()
        .await
        .map_err(|e| s.agent_error(&domain, e))?;
    let (id, cancel, deadline_at) = reg.begin(
        &domain,
        status,
        wait,
        call.caller(),
        call.request_id(),
        &client,
    )?;
    let (tx, rx) = oneshot::channel();
    let mounts = r.mountpoints;
    let task_domain = domain.clone();
    tokio::spawn(async move {
        let res = client.fsfreeze(&mounts, FREEZE_TIMEOUT).await;
        let keep = match &res {
            Ok(_) => {
                let mine = reg.confirm(&task_domain, id);
                if !mine {
                    // A thaw (or shutdown) took the record while the freeze ran; it may
                    // have reached the agent first, so thaw again (0 when it did not).
                    if let Err(e) = client.fsthaw().await {
                        tracing::error!(domain = %task_domain, error = %e, "thaw after a cancelled freeze failed");
                    }
                }
                mine
            }
            // The agent may still freeze after we stopped waiting: keep the deadline.
            Err(QgaError::Transport(TransportError::Timeout(_))) => true,
            // qemu-ga thaws what it froze when a freeze fails.
            Err(_) => {
                reg.take(&task_domain, Some(id));
                false
            }
        };
        let _ = tx.send(res);
        if keep {
            reg.watch(task_domain, id, cancel, wait).await;
        }
    });
    let frozen = rx
        .await
        .map_err(|_| ApiError::Internal("the freeze task ended without a result".into()))?
        .map_err(|e| s.agent_error(&domain, e))?;
    Ok(pb::FsFreezeResponse {
        frozen,
        thaw_deadline_unix_ms: unix_ms(deadline_at),
    })
}

/// FsThaw: thaws (whoever froze), then drops the daemon's record and its deadline. A
/// failed thaw keeps the record, so the deadline still thaws.
pub(crate) async fn thaw(
    s: &GuestAgentService,
    call: &Call,
    _r: pb::FsThawRequest,
) -> Result<pb::FsThawResponse, Status> {
    let client = s.client(call).await?;
    let thawed = client
        .fsthaw()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    s.shared.freezes.take(call.domain(), None);
    Ok(pb::FsThawResponse { thawed })
}

/// FsFreezeStatus: the agent's state, and the daemon's deadline when it froze. A record
/// the agent contradicts (thawed: the guest was reset) is dropped.
pub(crate) async fn status(
    s: &GuestAgentService,
    call: &Call,
    _r: pb::FsFreezeStatusRequest,
) -> Result<pb::FsFreezeStatusResponse, Status> {
    let client = s.client(call).await?;
    let st = client
        .fsfreeze_status()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    let frozen = st == FsfreezeStatus::Frozen;
    let mine = s.shared.freezes.holder(call.domain(), frozen);
    Ok(pb::FsFreezeStatusResponse {
        frozen,
        thaw_deadline_unix_ms: mine.as_ref().map(|(d, _)| unix_ms(*d)),
        frozen_by: mine.map(|(_, by)| by).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_required_and_bounded() {
        let max = Duration::from_secs(600);
        assert!(deadline(0, max, None).is_err());
        assert_eq!(deadline(3, max, None).unwrap(), Duration::from_secs(3));
        assert_eq!(deadline(600, max, None).unwrap(), max);
        let e = deadline(601, max, None).unwrap_err();
        assert!(e.message().contains("limits.max_thaw_deadline_s"), "{e:?}");
        assert!(deadline(30, max, Some(10_000)).is_err());
        assert!(deadline(10, max, Some(10_000)).is_ok());
    }
}
