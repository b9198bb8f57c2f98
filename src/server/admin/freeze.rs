//! FsFreeze, FsThaw and FsFreezeStatus, and the daemon's record of its freezes.
//!
//! A freeze runs in a task of its own that outlives the request: it freezes, hands the
//! result to the waiting handler (if the client is still there), then waits for the
//! deadline and thaws. An explicit FsThaw or the daemon's shutdown takes the record out
//! first, which ends the task's wait. The agent's own status is the truth: a record whose
//! guest says "thawed" (the guest was reset, or another client thawed it) is dropped.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    audit::{AuditEntry, AuditLog, EntryKind},
    caller::Caller,
    pb,
    qga::{AgentClient, QgaError, commands::FsfreezeStatus},
    server::{
        action::Beyond,
        gate::{Call, code_name},
        service::GuestAgentService,
        status::ApiError,
    },
    sync::lock,
    transport::TransportError,
};

/// Longest thaw deadline a request may ask for.
pub(crate) const MAX_THAW_DEADLINE_S: u32 = 600;

/// How long the freeze command itself may take (it syncs every file system first).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(120);

/// Thaw attempts at a deadline or at shutdown, one second apart.
const THAW_ATTEMPTS: u32 = 5;

/// One freeze this daemon made (or is making) on a guest.
#[derive(Debug)]
struct Frozen {
    id: u64,
    /// When the watchdog thaws.
    deadline: SystemTime,
    /// The caller id that froze.
    by: String,
    /// The FsFreeze request, named by the audit record of a thaw the daemon makes.
    request_id: String,
    /// False while the freeze command is still running.
    confirmed: bool,
    /// Ends the watchdog's wait (explicit thaw, shutdown, stale record).
    cancel: CancellationToken,
    client: AgentClient,
}

/// The daemon's freezes, by guest.
#[derive(Debug)]
pub(crate) struct FreezeRegistry {
    frozen: Mutex<HashMap<String, Frozen>>,
    next_id: AtomicU64,
    audit: Option<AuditLog>,
}

/// Why the daemon thawed by itself.
#[derive(Debug, Clone, Copy)]
enum AutoThaw {
    Deadline,
    Shutdown,
}

impl FreezeRegistry {
    /// An empty registry; thaws the daemon makes by itself are recorded in `audit`.
    pub(crate) fn new(audit: Option<AuditLog>) -> Arc<Self> {
        Arc::new(Self {
            frozen: Mutex::default(),
            next_id: AtomicU64::new(1),
            audit,
        })
    }

    /// Takes out `domain`'s record (only the one numbered `id`, when given) and ends its
    /// watchdog; whether there was one.
    fn take(&self, domain: &str, id: Option<u64>) -> Option<Frozen> {
        let mut map = lock(&self.frozen);
        if id.is_some_and(|id| map.get(domain).is_none_or(|f| f.id != id)) {
            return None;
        }
        let f = map.remove(domain)?;
        f.cancel.cancel();
        Some(f)
    }

    /// Thaws every guest this daemon froze (at shutdown), recording each thaw.
    pub(crate) async fn thaw_all(self: &Arc<Self>) {
        let all: Vec<(String, Frozen)> = {
            let mut map = lock(&self.frozen);
            map.drain().collect()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (domain, f) in all {
            f.cancel.cancel();
            let me = Arc::clone(self);
            tasks.spawn(async move { me.auto_thaw(&domain, f, AutoThaw::Shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Thaws `f`'s guest (retried), and records it as the daemon's own act.
    async fn auto_thaw(&self, domain: &str, f: Frozen, why: AutoThaw) {
        let mut result = Err(QgaError::InvalidArgument("not tried".into()));
        for attempt in 0..THAW_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            result = f.client.fsthaw().await;
            if result.is_ok() {
                break;
            }
        }
        let why_text = match why {
            AutoThaw::Deadline => "deadline",
            AutoThaw::Shutdown => "shutdown",
        };
        match &result {
            Ok(n) => tracing::info!(
                domain,
                thawed = n,
                why = why_text,
                "file systems thawed by the daemon"
            ),
            Err(e) => {
                tracing::error!(domain, error = %e, why = why_text, "thaw failed: the guest may stay frozen")
            }
        }
        let Some(log) = &self.audit else { return };
        let caller = Caller {
            id: "daemon".into(),
            ..Caller::default()
        };
        let mut e = AuditEntry::new(
            EntryKind::Daemon,
            f.request_id.clone(),
            caller,
            "FsThaw",
            domain,
        );
        e.status = Some(
            code_name(if result.is_ok() {
                tonic::Code::Ok
            } else {
                tonic::Code::Unavailable
            })
            .into(),
        );
        e.message = Some(match &result {
            Ok(_) => format!("thawed at the freeze's {why_text}"),
            Err(err) => format!("thaw at the freeze's {why_text} failed: {err}"),
        });
        e.extra = Some(serde_json::json!({
            "why": why_text,
            "frozen_by": f.by,
            "thawed": result.as_ref().ok(),
        }));
        if let Err(err) = log.record(e).await {
            tracing::error!(error = %err, domain, "audit record of a thaw not written");
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The deadline asked for, within the bounds: 1..=[`MAX_THAW_DEADLINE_S`], and not past a
/// policy's `timeout_ms`.
fn deadline(asked_s: u32, policy_ms: Option<u64>) -> Result<Duration, Status> {
    if asked_s == 0 {
        return Err(ApiError::InvalidArgument(
            "thaw_deadline_s is required: the daemon thaws the guest at that deadline".into(),
        )
        .into());
    }
    if asked_s > MAX_THAW_DEADLINE_S {
        return Err(ApiError::InvalidArgument(format!(
            "thaw_deadline_s {asked_s} is over the most, {MAX_THAW_DEADLINE_S}"
        ))
        .into());
    }
    let d = Duration::from_secs(u64::from(asked_s));
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
    let wait = deadline(r.thaw_deadline_s, call.limits().timeout_ms)?;
    let domain = call.domain().to_owned();
    let client = s.client(call).await?;
    let reg = Arc::clone(&s.shared.freezes);
    let status = client
        .fsfreeze_status()
        .await
        .map_err(|e| s.agent_error(&domain, e))?;
    let (id, cancel, deadline_at) = {
        let mut map = lock(&reg.frozen);
        match map.get(&domain) {
            Some(f) if !f.confirmed => {
                return Err(ApiError::FsFrozen(format!(
                    "a freeze of {domain} by {} is in progress",
                    f.by
                ))
                .into());
            }
            // The guest was reset or thawed by another client: the record is stale.
            Some(_) if status == FsfreezeStatus::Thawed => {
                if let Some(old) = map.remove(&domain) {
                    old.cancel.cancel();
                }
            }
            _ => {}
        }
        if status == FsfreezeStatus::Frozen {
            let by = map
                .get(&domain)
                .map(|f| {
                    format!(
                        "by {} until {} ms since the epoch",
                        f.by,
                        unix_ms(f.deadline)
                    )
                })
                .unwrap_or_else(|| "by another agent client".into());
            return Err(ApiError::FsFrozen(format!(
                "{domain} is already frozen ({by}); FsThaw first"
            ))
            .into());
        }
        let id = reg.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let deadline_at = SystemTime::now() + wait;
        map.insert(
            domain.clone(),
            Frozen {
                id,
                deadline: deadline_at,
                by: call.caller().id.clone(),
                request_id: call.request_id().to_owned(),
                confirmed: false,
                cancel: cancel.clone(),
                client: client.clone(),
            },
        );
        (id, cancel, deadline_at)
    };
    let (tx, rx) = oneshot::channel();
    let mounts = r.mountpoints;
    let task_domain = domain.clone();
    tokio::spawn(async move {
        let res = client.fsfreeze(&mounts, FREEZE_TIMEOUT).await;
        let keep = match &res {
            Ok(_) => {
                let mine = match lock(&reg.frozen).get_mut(&task_domain) {
                    Some(f) if f.id == id => {
                        f.confirmed = true;
                        true
                    }
                    _ => false,
                };
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
        if !keep {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                if let Some(f) = reg.take(&task_domain, Some(id)) {
                    reg.auto_thaw(&task_domain, f, AutoThaw::Deadline).await;
                }
            }
            () = cancel.cancelled() => {}
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
    let reg = &s.shared.freezes;
    let frozen = st == FsfreezeStatus::Frozen;
    let mut map = lock(&reg.frozen);
    if !frozen
        && map.get(call.domain()).is_some_and(|f| f.confirmed)
        && let Some(f) = map.remove(call.domain())
    {
        f.cancel.cancel();
    }
    let mine = map.get(call.domain());
    Ok(pb::FsFreezeStatusResponse {
        frozen,
        thaw_deadline_unix_ms: mine.map(|f| unix_ms(f.deadline)),
        frozen_by: mine.map(|f| f.by.clone()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_required_and_bounded() {
        assert!(deadline(0, None).is_err());
        assert_eq!(deadline(3, None).unwrap(), Duration::from_secs(3));
        assert_eq!(deadline(600, None).unwrap(), Duration::from_secs(600));
        assert!(deadline(601, None).is_err());
        assert!(deadline(30, Some(10_000)).is_err());
        assert!(deadline(10, Some(10_000)).is_ok());
    }
}
