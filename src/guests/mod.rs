//! The guest registry: which transport reaches a guest named in a request.
//!
//! Names resolve in this order: a configured direct-socket guest; `hypervisor/domain` for a
//! configured hypervisor; a bare domain name or UUID, tried on each hypervisor in
//! configuration order. Resolved libvirt domains are cached; a transport that reports the
//! domain gone is forgotten with [`GuestRegistry::forget`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

mod hypervisor;

use self::hypervisor::Hypervisor;
use crate::{
    config::Config,
    libvirt::LibvirtError,
    qga::AgentClient,
    sync::lock,
    transport::{libvirt_agent::LibvirtTransport, socket::SocketTransport},
};

/// Exec directories each guest's client keeps made ahead (see `AgentClient::with_exec_dir_pool`):
/// enough for a burst of small commands (Ansible's four around a module) while a refill runs,
/// and a refill (started at half) makes at least five with one `tar`.
const EXEC_DIR_POOL: usize = 8;

/// Why a guest name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// No configured guest and no domain on any hypervisor has this name.
    #[error("unknown guest '{0}'")]
    Unknown(String),
    /// The name is empty or malformed.
    #[error("invalid guest name '{0}'")]
    InvalidName(String),
    /// A hypervisor could not be asked.
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
}

/// One guest as listed by [`GuestRegistry::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    /// The name to use in requests (`hypervisor/domain` for libvirt guests).
    pub name: String,
    /// The hypervisor's configured name; `None` for direct-socket guests.
    pub hypervisor: Option<String>,
    /// libvirt's state name, or `socket` for a direct guest.
    pub state: String,
    /// Whether the guest can be asked at all (running domain, or direct guest).
    pub running: bool,
    /// The libvirt UUID.
    pub uuid: Option<String>,
}

/// Maps guest names to agent clients. Shared by all requests as an `Arc`.
#[derive(Debug)]
pub struct GuestRegistry {
    direct: HashMap<String, AgentClient>,
    hypervisors: Vec<Arc<Hypervisor>>,
    /// Resolved libvirt guests by canonical `hypervisor/domain` key and by request name.
    resolved: Mutex<HashMap<String, AgentClient>>,
    /// The same clients by canonical `hypervisor/uuid`, so aliases share one queue.
    by_domain: Mutex<HashMap<String, AgentClient>>,
    agent_timeout: std::time::Duration,
    /// `limits.open_handles_per_guest`, given to every client this registry builds.
    handle_limit: usize,
}

impl GuestRegistry {
    /// Builds the registry from a validated config. Must run inside a tokio runtime
    /// (socket transports start their worker tasks).
    pub fn from_config(config: &Config) -> Self {
        let agent_timeout = config.agent_timeout;
        let handle_limit = config.limits.open_handles_per_guest;
        let direct = config
            .guests
            .iter()
            .map(|g| {
                let client = AgentClient::new(SocketTransport::new(&g.socket))
                    .with_timeout(agent_timeout)
                    .with_handle_limit(handle_limit)
                    .with_exec_dir_pool(EXEC_DIR_POOL);
                (g.name.clone(), client)
            })
            .collect();
        let hypervisors = config
            .hypervisors
            .iter()
            .map(|h| Arc::new(Hypervisor::new(h)))
            .collect();
        Self {
            direct,
            hypervisors,
            resolved: Mutex::new(HashMap::new()),
            by_domain: Mutex::new(HashMap::new()),
            agent_timeout,
            handle_limit,
        }
    }

    /// The names of the configured direct-socket guests.
    pub fn direct_names(&self) -> impl Iterator<Item = &str> {
        self.direct.keys().map(String::as_str)
    }

    /// Finds the agent client for `name`.
    pub async fn resolve(&self, name: &str) -> Result<AgentClient, GuestError> {
        if name.is_empty() || name.contains('\0') {
            return Err(GuestError::InvalidName(name.into()));
        }
        if let Some(c) = self.direct.get(name) {
            return Ok(c.clone());
        }
        if let Some(c) = lock(&self.resolved).get(name) {
            return Ok(c.clone());
        }
        let (candidates, domain): (Vec<Arc<Hypervisor>>, &str) = match name.split_once('/') {
            Some((hv, dom)) => match self.hypervisors.iter().find(|h| h.name == hv) {
                Some(h) => (vec![Arc::clone(h)], dom),
                None => return Err(GuestError::Unknown(name.into())),
            },
            None => (self.hypervisors.clone(), name),
        };
        for hv in candidates {
            let dom_name = domain.to_owned();
            let hv2 = Arc::clone(&hv);
            let found = hv
                .blocking(move || {
                    hv2.lookup(&dom_name)
                        .map(|d| d.map(|d| (d.uuid_string().unwrap_or_default(), d)))
                })
                .await?;
            if let Some((uuid, dom)) = found {
                // One client (one queue) per domain, however it is named: `web-01`,
                // `local/web-01` and its UUID all share it.
                let key = format!("{}/{uuid}", hv.name);
                let mut by_key = lock(&self.by_domain);
                let client = by_key
                    .entry(key)
                    .or_insert_with(|| {
                        // Errors name the guest as `hypervisor/domain`, so a lost
                        // connection says which hypervisor went away.
                        let transport = LibvirtTransport::new(dom, format!("{}/{domain}", hv.name))
                            .with_limiter(Arc::clone(&hv.limiter));
                        AgentClient::new(transport)
                            .with_timeout(self.agent_timeout)
                            .with_handle_limit(self.handle_limit)
                            .with_exec_dir_pool(EXEC_DIR_POOL)
                    })
                    .clone();
                drop(by_key);
                lock(&self.resolved).insert(name.to_owned(), client.clone());
                return Ok(client);
            }
        }
        Err(GuestError::Unknown(name.into()))
    }

    /// Every configured direct guest and every domain of every hypervisor. A hypervisor
    /// that cannot be reached is an error (the listing would silently be incomplete).
    pub async fn list(&self) -> Result<Vec<GuestEntry>, GuestError> {
        let mut out: Vec<GuestEntry> = self
            .direct
            .keys()
            .map(|name| GuestEntry {
                name: name.clone(),
                hypervisor: None,
                state: "socket".into(),
                running: true,
                uuid: None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        for hv in &self.hypervisors {
            let hv2 = Arc::clone(hv);
            let domains = hv.blocking(move || hv2.list_domains()).await?;
            for d in domains {
                out.push(GuestEntry {
                    name: format!("{}/{}", hv.name, d.name),
                    hypervisor: Some(hv.name.clone()),
                    state: if d.active { "running" } else { "shut off" }.into(),
                    running: d.active,
                    uuid: Some(d.uuid),
                });
            }
        }
        Ok(out)
    }

    /// The OS id learnt from an earlier `guest-get-osinfo` of `name`, without a round trip.
    pub fn cached_os_id(&self, name: &str) -> Option<String> {
        let client = self
            .direct
            .get(name)
            .cloned()
            .or_else(|| lock(&self.resolved).get(name).cloned())?;
        client.cached_os().and_then(|o| o.id.clone())
    }

    /// Forgets every libvirt connection and resolved domain (libvirtd went away): the
    /// next request reconnects and looks the domain up again.
    pub fn reconnect(&self) {
        for hv in &self.hypervisors {
            hv.drop_connection();
        }
        lock(&self.by_domain).clear();
        lock(&self.resolved).clear();
        tracing::warn!("libvirt connection lost; reconnecting on the next request");
    }

    /// Drops a cached resolution (the domain went away or was recreated).
    /// Every alias of the domain shares its client, so all cached resolutions go (the
    /// next request looks the domain up again).
    pub fn forget(&self, name: &str) {
        tracing::debug!(guest = name, "forgetting cached libvirt domains");
        lock(&self.by_domain).clear();
        lock(&self.resolved).clear();
    }
}
