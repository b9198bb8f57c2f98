//! `[server] listen` and `[metrics] listen`: where the daemon accepts connections.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use super::{ConfigError, invalid};

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

/// `server.listen`: at least one `unix://` or `tcp://` address; relative socket paths are
/// taken from `base`.
pub(super) fn listeners(listen: &[String], base: &Path) -> Result<Vec<Listen>, ConfigError> {
    if listen.is_empty() {
        return Err(invalid(
            "server.listen",
            "[]",
            "at least one listener is needed",
        ));
    }
    listen
        .iter()
        .enumerate()
        .map(|(i, l)| {
            parse_listen(l, base).map_err(|r| invalid(&format!("server.listen[{i}]"), l, &r))
        })
        .collect()
}

/// `metrics.listen`: host:port of the Prometheus endpoint, if any.
pub(super) fn metrics(listen: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    listen
        .map(|l| {
            l.parse()
                .map_err(|e| invalid("metrics.listen", &l, &format!("not host:port ({e})")))
        })
        .transpose()
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
