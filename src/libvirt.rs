//! [`LibvirtManager`]: a connection to libvirtd, domain lookup and listing. (Sending agent
//! commands to a domain through libvirt is [`crate::transport::libvirt_agent`].)
//!
//! All calls block (libvirt's C API); async callers run them on the blocking pool.
//!
//! libvirt's default event loop is registered before the first connection and run on a
//! thread of its own, so connections can use keepalive ([`LibvirtManager::keep_alive`]):
//! without it a hypervisor that stops answering (hung libvirtd, dead network to a remote
//! host) hangs every call on its connection until TCP gives up, which can take hours.

use std::sync::{Once, OnceLock};

use virt::{connect::Connect, error::ErrorNumber};

pub use virt::domain::Domain;

/// What went wrong talking to libvirt itself.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// The connection could not be opened.
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect {
        /// The URI tried (`default` when none was given).
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// No domain by that name or UUID.
    #[error("domain '{name}' not found on {uri}")]
    DomainNotFound {
        /// The name or UUID asked for.
        name: String,
        /// The connection's URI.
        uri: String,
    },
    /// Any other libvirt failure.
    #[error("libvirt: {0}")]
    Other(String),
}

/// A domain as listed by [`LibvirtManager::list_domains`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: String,
    /// Whether it is running.
    pub active: bool,
}

/// One libvirt connection. Cheap to clone (libvirt reference-counts it).
///
/// ```no_run
/// use ocloudview_atp::libvirt::LibvirtManager;
/// let libvirt = LibvirtManager::connect_uri("qemu:///system")?;
/// for d in libvirt.list_domains()? {
///     println!("{} running={}", d.name, d.active);
/// }
/// let domain = libvirt.lookup_domain_by_name("test-vm")?;
/// # Ok::<(), ocloudview_atp::libvirt::LibvirtError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LibvirtManager {
    conn: Connect,
    uri: String,
}

/// libvirt prints every error to stderr unless told not to; we report errors ourselves.
fn silence_libvirt_stderr() {
    static ONCE: Once = Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

/// Registers libvirt's default event loop (once per process, before any connection) and
/// runs it on the `atp-libvirt-events` thread. Keepalive needs it.
fn event_loop() -> Result<(), LibvirtError> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            virt::event::event_register_default_impl().map_err(|e| e.message().to_owned())?;
            std::thread::Builder::new()
                .name("atp-libvirt-events".into())
                .spawn(|| {
                    loop {
                        if let Err(e) = virt::event::event_run_default_impl() {
                            tracing::warn!(error = %e, "libvirt event loop iteration failed");
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                })
                .map(drop)
                .map_err(|e| format!("cannot start the libvirt event thread: {e}"))
        })
        .clone()
        .map_err(LibvirtError::Other)
}

impl LibvirtManager {
    /// Connects to the default hypervisor (`$LIBVIRT_DEFAULT_URI`, else libvirt's default,
    /// `qemu:///system` for root).
    pub fn connect() -> Result<Self, LibvirtError> {
        Self::open(None)
    }

    /// Connects to `uri`, e.g. `qemu:///system` or `qemu+ssh://host/system`.
    pub fn connect_uri(uri: &str) -> Result<Self, LibvirtError> {
        Self::open(Some(uri))
    }

    fn open(uri: Option<&str>) -> Result<Self, LibvirtError> {
        silence_libvirt_stderr();
        event_loop()?;
        let conn = Connect::open(uri).map_err(|e| LibvirtError::Connect {
            uri: uri.unwrap_or("default").to_owned(),
            message: e.message().to_owned(),
        })?;
        let uri = conn
            .uri()
            .unwrap_or_else(|_| uri.unwrap_or("default").to_owned());
        Ok(Self { conn, uri })
    }

    /// The URI libvirt reports for this connection.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Turns libvirt keepalive on: a probe after `interval_s` seconds without traffic, and
    /// the connection closed after `count` unanswered probes, so calls on a hypervisor that
    /// stopped answering fail (with "connection closed due to keepalive timeout") instead
    /// of hanging. Drivers without keepalive (`test:///`) are left as they are.
    pub fn keep_alive(&self, interval_s: u32, count: u32) {
        let interval = i32::try_from(interval_s).unwrap_or(i32::MAX);
        if let Err(e) = self.conn.set_keep_alive(interval, count) {
            tracing::debug!(uri = %self.uri, error = %e, "libvirt keepalive not set");
        }
    }

    /// Whether the connection is still usable.
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }

    /// Looks a domain up by name.
    pub fn lookup_domain_by_name(&self, name: &str) -> Result<Domain, LibvirtError> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(|e| self.lookup_error(name, &e))
    }

    /// Looks a domain up by name, then by UUID.
    pub fn lookup_domain(&self, name_or_uuid: &str) -> Result<Domain, LibvirtError> {
        match self.lookup_domain_by_name(name_or_uuid) {
            Err(LibvirtError::DomainNotFound { .. }) if name_or_uuid.len() == 36 => self
                .conn
                .lookup_domain_by_uuid_string(name_or_uuid)
                .map_err(|e| self.lookup_error(name_or_uuid, &e)),
            other => other,
        }
    }

    /// Every domain, running or not.
    pub fn list_domains(&self) -> Result<Vec<DomainSummary>, LibvirtError> {
        let domains = self
            .conn
            .list_all_domains(0)
            .map_err(|e| LibvirtError::Other(e.message().to_owned()))?;
        Ok(domains
            .iter()
            .map(|d| DomainSummary {
                name: d.name().unwrap_or_default(),
                uuid: d.uuid_string().unwrap_or_default(),
                active: d.is_active().unwrap_or(false),
            })
            .collect())
    }

    /// The underlying `virt` connection, for calls this type does not wrap.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    fn lookup_error(&self, name: &str, e: &virt::error::Error) -> LibvirtError {
        if e.code().is(ErrorNumber::NoDomain) {
            LibvirtError::DomainNotFound {
                name: name.to_owned(),
                uri: self.uri.clone(),
            }
        } else {
            LibvirtError::Other(e.message().to_owned())
        }
    }
}
