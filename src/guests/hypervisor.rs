//! One configured hypervisor: its libvirt connection, opened on first use with keepalive,
//! reopened when it dies, and refused fast while the hypervisor is down; and the limiter
//! that keeps the calls in flight on it within libvirtd's `max_client_requests`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::{
    config::HypervisorConfig,
    libvirt::{Domain, DomainSummary, LibvirtError, LibvirtManager},
    sync::lock,
};

/// First wait before reconnecting to a hypervisor that refused or dropped us; it doubles
/// up to [`MAX_BACKOFF`] while the hypervisor stays down.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why, since when and until when a hypervisor is not tried again.
#[derive(Debug, Clone)]
struct Down {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    why: String,
}

#[derive(Debug, Default)]
struct State {
    manager: Option<LibvirtManager>,
    down: Option<Down>,
}

/// A hypervisor of the registry.
#[derive(Debug)]
pub(super) struct Hypervisor {
    pub(super) name: String,
    uri: String,
    keepalive: (u32, u32),
    /// libvirt calls in flight on this connection (`max_requests`): agent commands hold a
    /// permit for as long as libvirt runs them, lookups and listings too.
    pub(super) limiter: Arc<Semaphore>,
    /// Held only for short, non-blocking sections (never while connecting).
    state: Mutex<State>,
}

impl Hypervisor {
    pub(super) fn new(c: &HypervisorConfig) -> Self {
        Self {
            name: c.name.clone(),
            uri: c.uri.clone(),
            keepalive: (c.keepalive_interval_s, c.keepalive_count),
            limiter: Arc::new(Semaphore::new(c.max_requests as usize)),
            state: Mutex::new(State::default()),
        }
    }

    /// Runs a blocking libvirt call on the blocking pool, within the limiter.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, LibvirtError> + Send + 'static,
    ) -> Result<T, LibvirtError> {
        let permit = Arc::clone(&self.limiter)
            .acquire_owned()
            .await
            .map_err(|_| LibvirtError::Other("the hypervisor limiter is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| LibvirtError::Other(format!("libvirt task failed: {e}")))?
    }

    /// Blocking: looks `domain` up (`None`: no such domain).
    pub(super) fn lookup(&self, domain: &str) -> Result<Option<Domain>, LibvirtError> {
        self.retrying(|mgr| match mgr.lookup_domain(domain) {
            Ok(d) => Ok(Some(d)),
            Err(LibvirtError::DomainNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// Blocking: lists the domains.
    pub(super) fn list_domains(&self) -> Result<Vec<DomainSummary>, LibvirtError> {
        self.retrying(LibvirtManager::list_domains)
    }

    /// Blocking: `f` on the connection; if the connection died during the call, once more
    /// on a new one (a libvirtd restart between two calls is not the caller's failure).
    fn retrying<T>(
        &self,
        f: impl Fn(&LibvirtManager) -> Result<T, LibvirtError>,
    ) -> Result<T, LibvirtError> {
        let mgr = self.manager()?;
        match f(&mgr) {
            Err(e) if !mgr.is_alive() => {
                let _ = self.failed(&mgr, e);
                f(&self.manager()?)
            }
            other => other,
        }
    }

    /// Forgets the connection (it was lost): the next use reconnects.
    pub(super) fn drop_connection(&self) {
        lock(&self.state).manager = None;
    }

    /// A failed call: if the connection died with it, it is dropped, so the next call
    /// reconnects (or is refused fast while the hypervisor is down).
    fn failed(&self, mgr: &LibvirtManager, e: LibvirtError) -> LibvirtError {
        if !mgr.is_alive() {
            tracing::warn!(hypervisor = %self.name, error = %e, "libvirt connection lost");
            self.drop_connection();
        }
        e
    }

    /// Blocking: the live connection, reopened if it died (keepalive closed it, or
    /// libvirtd went away). While the hypervisor is down, callers are refused at once until
    /// the backoff has passed, naming the hypervisor and the last failure.
    fn manager(&self) -> Result<LibvirtManager, LibvirtError> {
        let now = Instant::now();
        {
            let mut st = lock(&self.state);
            if let Some(m) = &st.manager {
                if m.is_alive() {
                    return Ok(m.clone());
                }
                tracing::warn!(hypervisor = %self.name,
                    "libvirt connection closed (keepalive timeout or libvirtd gone); reconnecting");
                st.manager = None;
            }
            if let Some(d) = &st.down
                && now < d.retry_at
            {
                return Err(LibvirtError::Connect {
                    uri: self.uri.clone(),
                    message: format!(
                        "hypervisor '{}' is down for {} s ({}); next attempt in {} s",
                        self.name,
                        now.duration_since(d.since).as_secs(),
                        d.why,
                        d.retry_at.duration_since(now).as_secs().max(1)
                    ),
                });
            }
        }
        match LibvirtManager::connect_uri(&self.uri) {
            Ok(m) => {
                m.keep_alive(self.keepalive.0, self.keepalive.1);
                let mut st = lock(&self.state);
                if let Some(d) = st.down.take() {
                    tracing::info!(hypervisor = %self.name,
                        down_for_s = d.since.elapsed().as_secs(), "hypervisor reachable again");
                }
                st.manager = Some(m.clone());
                Ok(m)
            }
            Err(e) => {
                let mut st = lock(&self.state);
                let (since, backoff) = match &st.down {
                    Some(d) => (d.since, (d.backoff * 2).min(MAX_BACKOFF)),
                    None => (now, FIRST_BACKOFF),
                };
                tracing::warn!(hypervisor = %self.name, error = %e,
                    retry_in_s = backoff.as_secs(), "hypervisor unreachable");
                st.down = Some(Down {
                    since,
                    retry_at: Instant::now() + backoff,
                    backoff,
                    why: e.to_string(),
                });
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn hv(max_requests: u32) -> Arc<Hypervisor> {
        Arc::new(Hypervisor::new(&HypervisorConfig {
            name: "lab".into(),
            uri: "qemu:///nowhere".into(),
            keepalive_interval_s: 5,
            keepalive_count: 3,
            max_requests,
        }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_calls_stay_within_max_requests() {
        let hv = hv(2);
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (hv, now, peak) = (Arc::clone(&hv), Arc::clone(&now), Arc::clone(&peak));
            calls.spawn(async move {
                hv.blocking(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            });
        }
        while let Some(r) = calls.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_down_hypervisor_is_refused_fast_naming_it_until_the_backoff_passes() {
        let hv = hv(5);
        // libvirt refuses a qemu URI with an unknown path at once.
        let first = hv.manager().unwrap_err().to_string();
        let t = Instant::now();
        let second = hv.manager().unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_millis(50));
        assert!(second.contains("hypervisor 'lab' is down"), "{second}");
        assert!(second.contains("next attempt in"), "{second}");
        assert_ne!(first, second);
    }
}
