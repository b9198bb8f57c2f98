//! The daemon's configuration: TOML parsed into [`raw::RawConfig`], then validated into
//! [`Config`], which is passed down explicitly. Errors name the key and the value.

mod auth;
mod limits;
pub mod raw;

pub use auth::{TlsConfig, TokenEntry};
pub use limits::{DEFAULT_NEW_FILE_MODE, Limits};

use std::{
    collections::HashSet,
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
}

/// A validated `[policy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// The plugin directory (checked to exist).
    pub dir: PathBuf,
    /// What happens when no plugin allows or denies.
    pub default_allow: bool,
    /// `req.settings` for plugins.
    pub settings: serde_json::Value,
}

/// A validated `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// Refuse requests (true) or carry on (false) when the log cannot be written.
    pub refuse_on_failure: bool,
    /// Anonymous denials recorded one by one per minute; the rest are counted.
    pub anonymous_denials_per_minute: u32,
}

/// Default for `audit.anonymous_denials_per_minute`.
pub const DEFAULT_ANONYMOUS_DENIALS_PER_MINUTE: u32 = 60;

/// Default for `agent.sweep_exec_dirs_after_s`: ten minutes.
pub const DEFAULT_SWEEP_EXEC_DIRS_AFTER: Duration = Duration::from_secs(600);

/// Default for `agent.exec_timeout_ms`: one hour.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Default for `server.shutdown_grace_ms`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the daemon accepts gRPC connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A UNIX socket (created with mode 0660).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix://{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

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

    fn validate(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        if raw.server.listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "[]",
                "at least one listener is needed",
            ));
        }
        let listen = raw
            .server
            .listen
            .iter()
            .enumerate()
            .map(|(i, l)| {
                parse_listen(l, base).map_err(|r| invalid(&format!("server.listen[{i}]"), l, &r))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut names = HashSet::new();
        let mut hypervisors = Vec::new();
        for (i, h) in raw.hypervisors.into_iter().enumerate() {
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
        let mut guest_names = HashSet::new();
        let mut guests = Vec::new();
        for (i, g) in raw.guests.into_iter().enumerate() {
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
        let agent_timeout = match raw.agent.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(0) => return Err(invalid("agent.timeout_ms", "0", "must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
        };
        let shutdown_grace = raw
            .server
            .shutdown_grace_ms
            .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis);
        let tls = raw.server.tls.map(|t| auth::tls(t, base)).transpose()?;
        let tokens = auth::tokens(raw.server.tokens)?;
        auth::check_exposure(
            &listen,
            tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
            !tokens.is_empty(),
            raw.server.insecure,
            raw.policy.is_some(),
        )?;
        let exec_timeout = match raw.agent.exec_timeout_ms {
            None => DEFAULT_EXEC_TIMEOUT,
            Some(0) => return Err(invalid("agent.exec_timeout_ms", "0", "must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
        };
        let sweep_exec_dirs_after = match raw.agent.sweep_exec_dirs_after_s {
            None => Some(DEFAULT_SWEEP_EXEC_DIRS_AFTER),
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
        };
        let metrics_listen = raw
            .metrics
            .listen
            .map(|l| {
                l.parse()
                    .map_err(|e| invalid("metrics.listen", &l, &format!("not host:port ({e})")))
            })
            .transpose()?;
        let policy = raw
            .policy
            .map(|p| {
                let dir = base.join(&p.dir);
                if !dir.is_dir() {
                    return Err(invalid("policy.dir", &p.dir, "not a directory"));
                }
                let default_allow = match p.default.as_deref() {
                    None | Some("deny") => false,
                    Some("allow") => true,
                    Some(other) => {
                        return Err(invalid(
                            "policy.default",
                            other,
                            "expected \"deny\" or \"allow\"",
                        ));
                    }
                };
                let settings = match p.settings {
                    Some(t) => serde_json::to_value(t)
                        .map_err(|e| invalid("policy.settings", "(table)", &e.to_string()))?,
                    None => serde_json::Value::Null,
                };
                Ok(PolicyConfig {
                    dir,
                    default_allow,
                    settings,
                })
            })
            .transpose()?;
        let audit = raw
            .audit
            .map(|a| {
                let refuse_on_failure = match a.on_failure.as_deref() {
                    None | Some("refuse") => true,
                    Some("continue") => false,
                    Some(other) => {
                        return Err(invalid(
                            "audit.on_failure",
                            other,
                            "expected \"refuse\" or \"continue\"",
                        ));
                    }
                };
                Ok(AuditConfig {
                    path: base.join(&a.path),
                    refuse_on_failure,
                    anonymous_denials_per_minute: a
                        .anonymous_denials_per_minute
                        .unwrap_or(DEFAULT_ANONYMOUS_DENIALS_PER_MINUTE),
                })
            })
            .transpose()?;
        let limits = limits::limits(raw.limits)?;
        let new_file_mode = limits::new_file_mode(raw.files.new_file_mode)?;
        Ok(Config {
            limits,
            new_file_mode,
            listen,
            hypervisors,
            guests,
            agent_timeout,
            shutdown_grace,
            tls,
            tokens,
            exec_timeout,
            sweep_exec_dirs_after,
            metrics_listen,
            policy,
            audit,
        })
    }
}

fn parse_listen(s: &str, base: &Path) -> Result<Listen, String> {
    if let Some(path) = s.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("empty socket path".into());
        }
        Ok(Listen::Unix(base.join(path)))
    } else if let Some(addr) = s.strip_prefix("tcp://") {
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("not host:port ({e})"))
    } else {
        Err("expected unix:///path or tcp://host:port".into())
    }
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
