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
}

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
        hypervisors.push(HypervisorConfig {
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
