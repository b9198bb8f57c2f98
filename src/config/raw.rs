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
    /// `[metrics]`
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[policy]`
    pub policy: Option<RawPolicy>,
    /// `[audit]`
    pub audit: Option<RawAudit>,
}

/// `[policy]`: the plugin directory and what happens when no plugin decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Directory whose `*.rhai` files are the plugins.
    pub dir: String,
    /// `deny` (default) or `allow`.
    pub default: Option<String>,
    /// Free-form table handed to plugins as `req.settings`.
    pub settings: Option<toml::Table>,
}

/// `[audit]`: the hash-chained JSONL log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The log file.
    pub path: String,
    /// `refuse` (default: requests fail when the log cannot be written) or `continue`.
    pub on_failure: Option<String>,
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
    /// TLS for TCP listeners; with `client_ca`, clients must present a certificate.
    pub tls: Option<RawTls>,
    /// Bearer tokens, stored as SHA-256 hex digests.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    /// Allow TCP on a non-loopback address without TLS or tokens.
    #[serde(default)]
    pub insecure: bool,
}

/// `[server.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Server certificate chain (PEM).
    pub cert: String,
    /// Server private key (PEM).
    pub key: String,
    /// CA that signs client certificates (PEM); enables mTLS.
    pub client_ca: Option<String>,
}

/// `[[server.tokens]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// The caller identity the token stands for.
    pub identity: String,
    /// Roles given to that caller.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[metrics]`: Prometheus exposition on its own listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `host:port` serving `/metrics`; off when absent.
    pub listen: Option<String>,
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
    /// Run-time limit of an exec that gives none, in milliseconds.
    pub exec_timeout_ms: Option<u64>,
    /// Idle seconds after which an abandoned exec directory is swept; 0: never.
    pub sweep_exec_dirs_after_s: Option<u64>,
}
