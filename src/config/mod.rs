//! The daemon's configuration: TOML parsed into [`raw::RawConfig`], then validated into
//! [`Config`], which is passed down explicitly. Errors name the key and the value.

mod audit;
mod auth;
mod limits;
mod listen;
mod policy;
pub mod raw;
mod state;
mod targets;

pub use audit::{AuditConfig, DEFAULT_ANONYMOUS_DENIALS_PER_MINUTE};
pub use auth::{TlsConfig, TokenEntry};
pub use limits::{DEFAULT_NEW_FILE_MODE, Limits};
pub use listen::Listen;
pub use policy::PolicyConfig;
pub use state::{DEFAULT_STATE_DIR, StateConfig};
pub use targets::{GuestConfig, HypervisorConfig};

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use raw::RawConfig;

use crate::qga::DEFAULT_TIMEOUT;

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A key has a value we cannot use.
    #[error("invalid value for {key}: {value:?}: {reason}")]
    Invalid {
        /// The key, e.g. `server.listen[1]`.
        key: String,
        /// The offending value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners, at least one.
    pub listen: Vec<Listen>,
    /// libvirt connections, in lookup order.
    pub hypervisors: Vec<HypervisorConfig>,
    /// Direct-socket guests.
    pub guests: Vec<GuestConfig>,
    /// Deadline of one short agent command.
    pub agent_timeout: Duration,
    /// How long shutdown waits for open calls before closing them.
    pub shutdown_grace: Duration,
    /// TLS for TCP listeners.
    pub tls: Option<TlsConfig>,
    /// Accepted bearer tokens.
    pub tokens: Vec<TokenEntry>,
    /// Roles of local users calling on the UNIX listeners (`[[server.unix_roles]]`), by uid.
    pub unix_roles: std::collections::HashMap<u32, Vec<String>>,
    /// Run-time limit for execs that give none.
    pub exec_timeout: Duration,
    /// Minimum idle time of an abandoned exec directory before it is swept; `None`: off.
    pub sweep_exec_dirs_after: Option<Duration>,
    /// Where Prometheus metrics are served.
    pub metrics_listen: Option<SocketAddr>,
    /// Policy plugins; without them every authenticated request is allowed.
    pub policy: Option<PolicyConfig>,
    /// The audit log; without it nothing is recorded.
    pub audit: Option<AuditConfig>,
    /// Bounds on requests, streams and connections.
    pub limits: Limits,
    /// Mode of a file WriteFile creates without `permissions`.
    pub new_file_mode: u32,
    /// The state directory (`[state]`): with it, running execs survive a daemon restart.
    pub state: Option<StateConfig>,
}

/// Default for `agent.sweep_exec_dirs_after_s`: ten minutes.
pub const DEFAULT_SWEEP_EXEC_DIRS_AFTER: Duration = Duration::from_secs(600);

/// Default for `agent.exec_timeout_ms`: one hour.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Default for `server.shutdown_grace_ms`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Config {
    /// Reads and validates a config file. Relative paths are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        Self::validate(raw, base)
    }

    /// Validates section by section, in the order the errors are reported; each
    /// section's validator names the key and value it refuses.
    fn validate(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        let server = raw.server;
        let listen = listen::listeners(&server.listen, base)?;
        let hypervisors = targets::hypervisors(raw.hypervisors)?;
        let guests = targets::guests(raw.guests, base)?;
        let agent_timeout =
            nonzero_millis("agent.timeout_ms", raw.agent.timeout_ms, DEFAULT_TIMEOUT)?;
        let shutdown_grace = server
            .shutdown_grace_ms
            .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis);
        let tls = server.tls.map(|t| auth::tls(t, base)).transpose()?;
        let tokens = auth::tokens(server.tokens)?;
        let unix_roles = server
            .unix_roles
            .into_iter()
            .map(|u| (u.uid, u.roles))
            .collect();
        auth::check_exposure(
            &listen,
            tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
            !tokens.is_empty(),
            server.insecure,
            raw.policy.is_some(),
        )?;
        let exec_timeout = nonzero_millis(
            "agent.exec_timeout_ms",
            raw.agent.exec_timeout_ms,
            DEFAULT_EXEC_TIMEOUT,
        )?;
        let sweep_exec_dirs_after = sweep_after(raw.agent.sweep_exec_dirs_after_s);
        let metrics_listen = listen::metrics(raw.metrics.listen)?;
        let policy = raw.policy.map(|p| policy::policy(p, base)).transpose()?;
        let audit = raw.audit.map(|a| audit::audit(a, base)).transpose()?;
        let limits = limits::limits(raw.limits)?;
        let new_file_mode = limits::new_file_mode(raw.files.new_file_mode)?;
        let state = raw.state.map(|s| state::state(s, base, audit.as_ref()));
        Ok(Config {
            state,
            limits,
            new_file_mode,
            listen,
            hypervisors,
            guests,
            agent_timeout,
            shutdown_grace,
            tls,
            tokens,
            unix_roles,
            exec_timeout,
            sweep_exec_dirs_after,
            metrics_listen,
            policy,
            audit,
        })
    }
}

/// A duration in milliseconds that must not be 0 (`agent.timeout_ms`, the `[limits]`
/// timeouts); `default` when absent.
pub(super) fn nonzero_millis(
    key: &str,
    ms: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match ms {
        None => Ok(default),
        Some(0) => Err(invalid(key, "0", "must be at least 1")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// `agent.sweep_exec_dirs_after_s`: the idle time after which an abandoned exec directory
/// is swept; 0 turns the sweep off (`None`).
fn sweep_after(secs: Option<u64>) -> Option<Duration> {
    match secs {
        None => Some(DEFAULT_SWEEP_EXEC_DIRS_AFTER),
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
    }
}

pub(crate) fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/atp"))
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
            [server]
            listen = ["unix:///run/atp/atp.sock", "tcp://127.0.0.1:50051", "unix://rel.sock"]
            [[server.tokens]]
            sha256 = "abababababababababababababababababababababababababababababababab"
            identity = "ci"
            [[hypervisors]]
            name = "local"
            uri = "qemu:///system"
            [[guests]]
            name = "demo"
            socket = "demo/qga.sock"
            [agent]
            timeout_ms = 2500
            "#,
        )
        .unwrap();
        assert_eq!(c.listen[0], Listen::Unix("/run/atp/atp.sock".into()));
        assert_eq!(c.listen[1], Listen::Tcp("127.0.0.1:50051".parse().unwrap()));
        assert_eq!(c.listen[2], Listen::Unix("/etc/atp/rel.sock".into()));
        assert_eq!(c.guests[0].socket, PathBuf::from("/etc/atp/demo/qga.sock"));
        assert_eq!(c.agent_timeout, Duration::from_millis(2500));
        assert_eq!(c.sweep_exec_dirs_after, Some(DEFAULT_SWEEP_EXEC_DIRS_AFTER));
        let off = parse(
            "[server]\nlisten = [\"unix:///run/atp.sock\"]\n[agent]\nsweep_exec_dirs_after_s = 0",
        )
        .unwrap();
        assert_eq!(off.sweep_exec_dirs_after, None);
        assert_eq!(off.state, None);
        let beside = parse(
            "[server]\nlisten = [\"unix:///a\"]\n[audit]\npath = \"/var/log/atp/audit.jsonl\"\n[state]",
        )
        .unwrap();
        assert_eq!(
            beside.state.unwrap().dir,
            PathBuf::from("/var/log/atp/state")
        );
        let given = parse("[server]\nlisten = [\"unix:///a\"]\n[state]\ndir = \"st\"").unwrap();
        assert_eq!(given.state.unwrap().dir, PathBuf::from("/etc/atp/st"));
        let bare = parse("[server]\nlisten = [\"unix:///a\"]\n[state]").unwrap();
        assert_eq!(bare.state.unwrap().dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = parse("[server]\nlisten = [\"tcp://nowhere\"]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.listen[0]") && e.contains("tcp://nowhere"),
            "{e}"
        );
        let e = parse("[server]\nlisten = []").unwrap_err().to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = parse("[server]\nlisten=[\"unix:///a\"]\n[[guests]]\nname=\"a/b\"\nsocket=\"/s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("guests[0].name") && e.contains("a/b"), "{e}");
        let e = parse("[server]\nlisten=[\"unix:///a\"]\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn shipped_configs_parse() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Config::load(&base.join("atp.toml")).unwrap();
        // The shipped file admits nobody anonymous: a TCP listener needs a token first.
        let shipped = std::fs::read_to_string(base.join("atp.toml")).unwrap();
        let tcp = shipped.replace(
            "listen = [\"unix:///run/atp/atp.sock\"]",
            "listen = [\"unix:///run/atp/atp.sock\", \"tcp://127.0.0.1:50051\"]",
        );
        assert_ne!(tcp, shipped, "the shipped listen line changed");
        let e = Config::parse(&tcp, &base).unwrap_err().to_string();
        assert!(
            e.contains("server.listen[1]") && e.contains("tokens"),
            "{e}"
        );
        let demo = include_str!("../../config/demo.toml")
            .replace("@SOCKET@", "/tmp/a.sock")
            .replace("@TCP@", "127.0.0.1:1")
            .replace("@AGENT@", "/tmp/q.sock");
        // `atp demo` writes its policies next to the config: the repository root has them.
        let c = Config::parse(&demo, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(c.policy.is_some() && c.audit.is_some());
    }
}
