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
    /// `[limits]`
    #[serde(default)]
    pub limits: RawLimits,
    /// `[files]`
    #[serde(default)]
    pub files: RawFiles,
    /// `[state]`
    pub state: Option<RawState>,
}

/// `[state]`: the daemon's state directory (execs that survive a restart).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// The directory; default `state` beside the audit log, else `/var/lib/atp`.
    pub dir: Option<String>,
}

/// `[limits]`: bounds on what one request, caller or connection may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Guest file handles open at once per guest.
    pub open_handles_per_guest: Option<u64>,
    /// Open server streams per caller.
    pub streams_per_caller: Option<u64>,
    /// Running or parked execs per caller.
    pub execs_per_caller: Option<u64>,
    /// Bytes buffered per response stream.
    pub stream_buffer_bytes: Option<u64>,
    /// A stream whose client reads nothing this long is ended, in milliseconds.
    pub stream_idle_timeout_ms: Option<u64>,
    /// Deadline for a WriteFile header, in milliseconds.
    pub write_header_timeout_ms: Option<u64>,
    /// Connections served at once per listener.
    pub max_connections: Option<u64>,
    /// Deadline of a connection's HTTP/2 (and TLS) handshake, in milliseconds.
    pub handshake_timeout_ms: Option<u64>,
    /// HTTP/2 keepalive ping interval, in milliseconds.
    pub http2_keepalive_ms: Option<u64>,
    /// Longest FsFreeze thaw deadline a request may ask for, in seconds.
    pub max_thaw_deadline_s: Option<u64>,
}

/// `[files]`: how WriteFile creates files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    /// Mode of a new file when the request gives none, octal ("0644").
    pub new_file_mode: Option<String>,
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
    /// Anonymous denials recorded one by one per minute (default 60); 0 records none.
    pub anonymous_denials_per_minute: Option<u32>,
    /// Directory for interactive sessions' recordings (default: `sessions` beside the log).
    pub recordings: Option<String>,
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
    /// Roles for local users on the UNIX listeners, by uid.
    #[serde(default)]
    pub unix_roles: Vec<RawUnixRoles>,
}

/// `[[server.unix_roles]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnixRoles {
    /// The local user's uid (from the socket's peer credentials).
    pub uid: u32,
    /// Roles given to that user's calls.
    pub roles: Vec<String>,
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
    /// Seconds of silence before libvirt sends a keepalive probe (default 5).
    pub keepalive_interval_s: Option<u32>,
    /// Unanswered probes after which the connection is closed (default 3).
    pub keepalive_count: Option<u32>,
    /// libvirt calls in flight on the connection at once (default 5, libvirtd's
    /// `max_client_requests`).
    pub max_requests: Option<u32>,
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
