//! `[[hypervisors]]` and `[[guests]]`: the libvirt connections and direct-socket guests
//! the daemon reaches, each with a unique name usable in requests.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use super::{ConfigError, invalid, raw};

/// A validated `[[hypervisors]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorConfig {
    /// Name used as the `name/domain` prefix.
    pub name: String,
    /// libvirt URI.
    pub uri: String,
    /// Seconds of silence before a keepalive probe (1..=3600).
    pub keepalive_interval_s: u32,
    /// Unanswered probes before libvirt closes the connection (1..=100): a hypervisor that
    /// stops answering is declared down after about `interval × (count + 1)` seconds.
    pub keepalive_count: u32,
    /// libvirt calls in flight on the connection at once (1..=1000).
    pub max_requests: u32,
}

/// Defaults of `[[hypervisors]]`' connection settings.
pub const KEEPALIVE_INTERVAL_S: u32 = 5;
/// See [`HypervisorConfig::keepalive_count`].
pub const KEEPALIVE_COUNT: u32 = 3;
/// libvirtd's default `max_client_requests`.
pub const MAX_REQUESTS: u32 = 5;

/// A validated `[[guests]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Name used in requests.
    pub name: String,
    /// Agent socket path (absolute).
    pub socket: PathBuf,
}

/// `[[hypervisors]]`: unique names, libvirt URIs.
pub(super) fn hypervisors(
    raw: Vec<raw::RawHypervisor>,
) -> Result<Vec<HypervisorConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut hypervisors = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        check_name(&format!("hypervisors[{i}].name"), &h.name)?;
        if !names.insert(h.name.clone()) {
            return Err(invalid(
                &format!("hypervisors[{i}].name"),
                &h.name,
                "duplicate name",
            ));
        }
        if !h.uri.contains(":/") {
            return Err(invalid(
                &format!("hypervisors[{i}].uri"),
                &h.uri,
                "not a libvirt URI (e.g. qemu:///system)",
            ));
        }
        let ranged = |key: &str, v: Option<u32>, default: u32, max: u32| match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(invalid(
                &format!("hypervisors[{i}].{key}"),
                &n.to_string(),
                &format!("must be 1..={max}"),
            )),
        };
        hypervisors.push(HypervisorConfig {
            keepalive_interval_s: ranged(
                "keepalive_interval_s",
                h.keepalive_interval_s,
                KEEPALIVE_INTERVAL_S,
                3600,
            )?,
            keepalive_count: ranged("keepalive_count", h.keepalive_count, KEEPALIVE_COUNT, 100)?,
            max_requests: ranged("max_requests", h.max_requests, MAX_REQUESTS, 1000)?,
            name: h.name,
            uri: h.uri,
        });
    }
    Ok(hypervisors)
}

/// `[[guests]]`: unique names, socket paths taken from `base` when relative.
pub(super) fn guests(
    raw: Vec<raw::RawGuest>,
    base: &Path,
) -> Result<Vec<GuestConfig>, ConfigError> {
    let mut guest_names = HashSet::new();
    let mut guests = Vec::new();
    for (i, g) in raw.into_iter().enumerate() {
        check_name(&format!("guests[{i}].name"), &g.name)?;
        if !guest_names.insert(g.name.clone()) {
            return Err(invalid(
                &format!("guests[{i}].name"),
                &g.name,
                "duplicate name",
            ));
        }
        if g.socket.is_empty() {
            return Err(invalid(
                &format!("guests[{i}].socket"),
                &g.socket,
                "empty path",
            ));
        }
        guests.push(GuestConfig {
            name: g.name,
            socket: base.join(&g.socket),
        });
    }
    Ok(guests)
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(invalid(
            key,
            name,
            "must be non-empty, without '/' or spaces",
        ));
    }
    Ok(())
}
