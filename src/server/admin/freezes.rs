//! The daemon's record of the freezes it made, one per guest, and the thaws it makes by
//! itself: at a freeze's deadline (the watchdog) and at shutdown. Each is recorded in the
//! audit log as a record of kind `daemon`. The map's lock is held for lookups and
//! inserts only, never across an `.await`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use super::freeze::unix_ms;
use crate::{
    audit::{AuditEntry, AuditLog, EntryKind},
    caller::Caller,
    qga::{AgentClient, QgaError, commands::FsfreezeStatus},
    server::{gate::code_name, status::ApiError},
    sync::lock,
};

/// Thaw attempts at a deadline, one second apart, each with the agent's usual timeout.
const THAW_ATTEMPTS: u32 = 5;

/// At shutdown: fewer and shorter attempts, so an unreachable guest cannot hold the
/// daemon's exit for long (at most about 11 s, all guests at once).
const SHUTDOWN_THAW_ATTEMPTS: u32 = 2;
const SHUTDOWN_THAW_TIMEOUT: Duration = Duration::from_secs(5);

/// One freeze this daemon made (or is making) on a guest.
#[derive(Debug)]
pub(crate) struct Frozen {
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
pub(crate) enum AutoThaw {
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
    pub(crate) fn take(&self, domain: &str, id: Option<u64>) -> Option<Frozen> {
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
    pub(crate) async fn auto_thaw(&self, domain: &str, f: Frozen, why: AutoThaw) {
        let (attempts, client) = match why {
            AutoThaw::Deadline => (THAW_ATTEMPTS, f.client.clone()),
            AutoThaw::Shutdown => (
                SHUTDOWN_THAW_ATTEMPTS,
                f.client.clone().with_timeout(SHUTDOWN_THAW_TIMEOUT),
            ),
        };
        let mut result = Err(QgaError::InvalidArgument("not tried".into()));
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            result = client.fsthaw().await;
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

impl FreezeRegistry {
    /// Records a freeze of `domain` about to start, given the agent's `status`: refused
    /// (FS_FROZEN) while the guest is frozen or another freeze of it runs; a record the
    /// agent contradicts (thawed: the guest was reset, or another client thawed it) is
    /// dropped first. Returns the record's id, its cancel token and its deadline.
    pub(crate) fn begin(
        &self,
        domain: &str,
        status: FsfreezeStatus,
        wait: Duration,
        by: &Caller,
        request_id: &str,
        client: &AgentClient,
    ) -> Result<(u64, CancellationToken, SystemTime), ApiError> {
        let mut map = lock(&self.frozen);
        match map.get(domain) {
            Some(f) if !f.confirmed => {
                return Err(ApiError::FsFrozen(format!(
                    "a freeze of {domain} by {} is in progress",
                    f.by
                )));
            }
            Some(_) if status == FsfreezeStatus::Thawed => {
                if let Some(old) = map.remove(domain) {
                    old.cancel.cancel();
                }
            }
            _ => {}
        }
        if status == FsfreezeStatus::Frozen {
            let who = map
                .get(domain)
                .map(|f| {
                    format!(
                        "by {} until {} ms since the epoch",
                        f.by,
                        unix_ms(f.deadline)
                    )
                })
                .unwrap_or_else(|| "by another agent client".into());
            return Err(ApiError::FsFrozen(format!(
                "{domain} is already frozen ({who}); FsThaw first"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let deadline = SystemTime::now() + wait;
        map.insert(
            domain.to_owned(),
            Frozen {
                id,
                deadline,
                by: by.id.clone(),
                request_id: request_id.to_owned(),
                confirmed: false,
                cancel: cancel.clone(),
                client: client.clone(),
            },
        );
        Ok((id, cancel, deadline))
    }

    /// Marks freeze `id` of `domain` done; false when its record was taken meanwhile.
    pub(crate) fn confirm(&self, domain: &str, id: u64) -> bool {
        match lock(&self.frozen).get_mut(domain) {
            Some(f) if f.id == id => {
                f.confirmed = true;
                true
            }
            _ => false,
        }
    }

    /// The deadline and freezer of `domain`'s record, after dropping it when the agent
    /// says `thawed` (a reset guest) and the freeze had completed.
    pub(crate) fn holder(&self, domain: &str, frozen: bool) -> Option<(SystemTime, String)> {
        let mut map = lock(&self.frozen);
        if !frozen
            && map.get(domain).is_some_and(|f| f.confirmed)
            && let Some(f) = map.remove(domain)
        {
            f.cancel.cancel();
        }
        map.get(domain).map(|f| (f.deadline, f.by.clone()))
    }

    /// Waits for freeze `id`'s deadline and thaws, unless its record is taken first.
    pub(crate) async fn watch(
        self: Arc<Self>,
        domain: String,
        id: u64,
        cancel: CancellationToken,
        wait: Duration,
    ) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                if let Some(f) = self.take(&domain, Some(id)) {
                    self.auto_thaw(&domain, f, AutoThaw::Deadline).await;
                }
            }
            () = cancel.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::socket::SocketTransport;

    fn client() -> AgentClient {
        AgentClient::new(SocketTransport::new("/nonexistent/qga.sock"))
    }

    fn alice() -> Caller {
        Caller {
            id: "alice".into(),
            ..Caller::default()
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_freeze_per_guest_and_the_agent_status_wins() {
        let reg = FreezeRegistry::new(None);
        let c = client();
        let thawed = FsfreezeStatus::Thawed;
        let (id, cancel, _) = reg.begin("vm", thawed, MIN, &alice(), "r1", &c).unwrap();
        // While the freeze command runs, another freeze is refused.
        let e = reg
            .begin("vm", thawed, MIN, &alice(), "r2", &c)
            .unwrap_err();
        assert!(e.to_string().contains("in progress"), "{e}");
        assert!(reg.confirm("vm", id));
        // Frozen, as the agent says: refused, naming who froze it.
        let e = reg
            .begin("vm", FsfreezeStatus::Frozen, MIN, &alice(), "r3", &c)
            .unwrap_err();
        assert!(
            matches!(e, ApiError::FsFrozen(_)) && e.to_string().contains("alice"),
            "{e}"
        );
        assert_eq!(
            reg.holder("vm", true).map(|(_, by)| by).as_deref(),
            Some("alice")
        );
        // The guest was reset (the agent says thawed): the record is stale, its watchdog
        // ends, and a new freeze is recorded.
        let (id2, _, _) = reg.begin("vm", thawed, MIN, &alice(), "r4", &c).unwrap();
        assert!(cancel.is_cancelled());
        assert!(!reg.confirm("vm", id), "the old freeze's id is gone");
        assert!(reg.confirm("vm", id2));
        // FsFreezeStatus on a reset guest drops the record too.
        assert!(reg.holder("vm", false).is_none());
        assert!(reg.take("vm", None).is_none());
        // Another guest is independent; a frozen guest nobody here froze is refused.
        let e = reg
            .begin("other", FsfreezeStatus::Frozen, MIN, &alice(), "r5", &c)
            .unwrap_err();
        assert!(e.to_string().contains("another agent client"), "{e}");
    }

    #[tokio::test]
    async fn take_ends_the_watchdog_and_only_the_right_freeze() {
        let reg = FreezeRegistry::new(None);
        let c = client();
        let (id, cancel, _) = reg
            .begin("vm", FsfreezeStatus::Thawed, MIN, &alice(), "r1", &c)
            .unwrap();
        assert!(
            reg.take("vm", Some(id + 1)).is_none(),
            "another freeze's id"
        );
        let watch = tokio::spawn(Arc::clone(&reg).watch("vm".into(), id, cancel.clone(), MIN));
        let f = reg.take("vm", Some(id)).unwrap();
        assert_eq!(f.request_id, "r1");
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the watchdog ends when its record is taken")
            .unwrap();
        assert!(cancel.is_cancelled());
    }
}
