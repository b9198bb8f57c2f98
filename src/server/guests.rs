//! The guests as handlers see them: reachable only through an admitted [`Call`], at the
//! domain the gate admitted. A handler that tries to reach a guest without a call does
//! not compile — there is no method here that takes a bare name and returns a client.

use std::{sync::Arc, time::Duration};

use tonic::Status;

use super::{action::Beyond, gate::Call, metrics, status::ApiError};
use crate::{
    guests::{GuestEntry, GuestRegistry},
    qga::AgentClient,
};

/// Longest guest name accepted (libvirt names and UUIDs are far shorter).
const MAX_DOMAIN: usize = 512;

/// How long ListDomains waits for each agent's ping (all are pinged at once).
const LIST_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The guest registry behind the gate (clones share it).
#[derive(Debug, Clone)]
pub(crate) struct Guests {
    registry: Arc<GuestRegistry>,
}

/// A listed guest and what its agent answered.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) entry: GuestEntry,
    /// The agent answered a ping within [`LIST_PING_TIMEOUT`].
    pub(crate) agent_connected: bool,
    /// The guest OS id, when the daemon has learnt it.
    pub(crate) os_id: Option<String>,
}

impl Guests {
    pub(crate) fn new(registry: Arc<GuestRegistry>) -> Self {
        Self { registry }
    }

    /// The agent client of the guest `call` admitted.
    pub(crate) async fn client(&self, call: &Call) -> Result<AgentClient, Status> {
        let domain = call.domain();
        if domain.is_empty() {
            return Err(ApiError::InvalidArgument("domain must not be empty".into()).into());
        }
        if domain.len() > MAX_DOMAIN {
            return Err(ApiError::InvalidArgument(format!(
                "domain is longer than {MAX_DOMAIN} bytes"
            ))
            .into());
        }
        let client = self
            .registry
            .resolve(domain)
            .await
            .map_err(ApiError::from)?;
        metrics::queue_depth(domain, client.transport().queue_depth());
        Ok(client)
    }

    /// What is known of a guest's OS before anything reaches it (for the policy request).
    pub(crate) fn cached_os_id(&self, domain: &str) -> Option<String> {
        self.registry.cached_os_id(domain)
    }

    /// Every guest, each running one pinged at once ([`Beyond::PingEachGuest`]: only a
    /// call whose RPC declares it may do this).
    pub(crate) async fn list_and_ping(&self, call: &Call) -> Result<Vec<Listed>, Status> {
        call.beyond(Beyond::PingEachGuest)?;
        let entries = self.registry.list().await.map_err(ApiError::from)?;
        let mut pings = tokio::task::JoinSet::new();
        for (i, e) in entries.iter().enumerate() {
            if !e.running {
                continue;
            }
            let registry = self.registry.clone();
            let name = e.name.clone();
            pings.spawn(async move {
                let Ok(client) = registry.resolve(&name).await else {
                    return (i, false, None);
                };
                let client = client.with_timeout(LIST_PING_TIMEOUT);
                let ok = client.ping().await.is_ok();
                (i, ok, client.cached_os().and_then(|o| o.id.clone()))
            });
        }
        let mut listed: Vec<Listed> = entries
            .into_iter()
            .map(|entry| Listed {
                entry,
                agent_connected: false,
                os_id: None,
            })
            .collect();
        while let Some(Ok((i, ok, os))) = pings.join_next().await {
            if let Some(l) = listed.get_mut(i) {
                l.agent_connected = ok;
                l.os_id = os;
            }
        }
        Ok(listed)
    }

    /// After an agent error: forgets `domain` when libvirt says it is gone.
    pub(crate) fn forget(&self, domain: &str) {
        self.registry.forget(domain);
    }

    /// After a lost libvirt connection: reconnects on next use.
    pub(crate) fn reconnect(&self) {
        self.registry.reconnect();
    }
}
