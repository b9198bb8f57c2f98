//! The configuration file exactly as written: serde types, no validation.

use serde::Deserialize;

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[[hypervisors]]`
    #[serde(default)]
    pub hypervisors: Vec<RawHypervisor>,
    /// `[[guests]]`
    #[serde(default)]
    pub guests: Vec<RawGuest>,
    /// `[agent]`
    #[serde(default)]
    pub agent: RawAgent,
}

/// `[server]`: where the daemon listens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `unix:///path` and `tcp://host:port` entries.
    #[serde(default)]
    pub listen: Vec<String>,
    /// How long shutdown waits for open calls and connections, in milliseconds.
    pub shutdown_grace_ms: Option<u64>,
}

/// `[[hypervisors]]`: one libvirt connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHypervisor {
    /// Prefix for addressing its guests as `name/domain`.
    pub name: String,
    /// libvirt URI.
    pub uri: String,
}

/// `[[guests]]`: one guest reached through its agent socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuest {
    /// The name requests use.
    pub name: String,
    /// Path of the agent's UNIX socket.
    pub socket: String,
}

/// `[agent]`: how the daemon talks to agents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Deadline of one short agent command, in milliseconds.
    pub timeout_ms: Option<u64>,
}
