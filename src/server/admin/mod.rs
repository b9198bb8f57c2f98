//! The typed admin RPCs: file-system freeze (`freeze`), a user's password and SSH keys
//! (`access`), and the guest clock (here). Each is admitted by the gate like any RPC;
//! what policies and the audit log see of them is built in `access` and `freeze`.

pub(crate) mod access;
pub(crate) mod freeze;
pub(crate) mod freezes;
#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Status;

use super::{action::Beyond, gate::Call, service::GuestAgentService};
use crate::pb;

/// SyncTime: reads the guest clock (for the offset it corrects), then sets it from the
/// host clock.
pub(crate) async fn sync_time(
    s: &GuestAgentService,
    call: &Call,
    _r: pb::SyncTimeRequest,
) -> Result<pb::SyncTimeResponse, Status> {
    call.beyond(Beyond::ReadGuestClock)?;
    let client = s.client(call).await?;
    let offset_before_ms = match client.guest_time().await {
        Ok(guest_ns) => {
            let host_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            Some(guest_ns.saturating_sub(host_ns) / 1_000_000)
        }
        // Only a report: the sync goes on without it.
        Err(e) => {
            tracing::debug!(domain = call.domain(), error = %e, "guest-get-time failed before a sync");
            None
        }
    };
    let host_time_ns = client
        .set_guest_time(SystemTime::now())
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::SyncTimeResponse {
        host_time_ns,
        offset_before_ms,
    })
}
