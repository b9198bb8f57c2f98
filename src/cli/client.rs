//! How the client subcommands reach the daemon, and how their failures become one-line
//! messages with distinct exit codes.
//!
//! The server comes from `--server`, else `ATP_SERVER`, else `server` in
//! `~/.config/atp/client.toml`, else `unix:///run/atp/atp.sock`; the token likewise from
//! `--token`, `ATP_TOKEN`, or `token` in that file.

use std::{path::PathBuf, time::Duration};

use hyper_util::rt::TokioIo;
use ocloudview_atp::{
    pb::guest_agent_client::GuestAgentClient,
    server::reason::{DOMAIN, Reason},
};
use tonic::{
    Code, Request, Status,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint, Uri},
};
use tonic_types::StatusExt;

/// Where and how to reach the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Daemon address: unix:///path/atp.sock, host:port or http://host:port.
    #[arg(long, global = true, env = "ATP_SERVER")]
    pub server: Option<String>,
    /// Bearer token.
    #[arg(long, global = true, env = "ATP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The client, with the token attached to every call.
pub type Client = GuestAgentClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer ...` when a token is set.
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
}

fn client_file() -> ClientFile {
    let path = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("atp/client.toml"));
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default()
}

/// Exit codes of the client subcommands (sysexits-style, one per kind of failure).
pub mod exit {
    /// The daemon cannot be reached.
    pub const UNREACHABLE: u8 = 69;
    /// The daemon refused the credentials.
    pub const BAD_CREDENTIALS: u8 = 67;
    /// No such guest (or exec/task).
    pub const UNKNOWN_GUEST: u8 = 68;
    /// A policy denied the request.
    pub const DENIED: u8 = 77;
    /// A file is missing or unreadable: a local one, or one in the guest.
    pub const NO_INPUT: u8 = 66;
    /// The guest agent is unavailable or timed out (try again).
    pub const TEMPFAIL: u8 = 75;
    /// Any other failure.
    pub const OTHER: u8 = 1;
}

/// A client failure: one line for a person, and its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// What happened and what to do.
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

impl ClientError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }

    /// A missing or unreadable local file.
    pub fn local(path: &std::path::Path, e: &std::io::Error) -> Self {
        Self::new(exit::NO_INPUT, format!("{}: {e}", path.display()))
    }
}

/// The exit code of a failure with this reason: the one table (docs/api.md lists it,
/// checked by a test). Exhaustive, so a new reason needs a code to compile.
pub fn exit_code(reason: Reason) -> u8 {
    use Reason as R;
    match reason {
        R::Unauthenticated => exit::BAD_CREDENTIALS,
        R::PolicyDenied | R::GuestPermissionDenied => exit::DENIED,
        R::GuestNotFound | R::ExecNotFound | R::TaskNotFound => exit::UNKNOWN_GUEST,
        R::GuestPathNotFound => exit::NO_INPUT,
        R::AuditUnavailable
        | R::HypervisorUnavailable
        | R::AgentUnavailable
        | R::AgentBusy
        | R::LimitExceeded
        | R::GuestPathChanged
        | R::DaemonShuttingDown
        | R::ClientTooSlow
        | R::FsFrozen => exit::TEMPFAIL,
        R::InvalidArgument
        | R::GuestNotRunning
        | R::CommandDisabled
        | R::CommandUnknown
        | R::GuestPathExists
        | R::GuestPathUnsuitable
        | R::GuestUnsupported
        | R::GuestWriteIncomplete
        | R::GuestError
        | R::ExecAttached
        | R::ClientCancelled
        | R::Internal => exit::OTHER,
        // Directory trees (issue 15).
        R::TreeEntryRefused | R::GuestTreeRefused => exit::OTHER,
        R::TreeChecksumMismatch => exit::TEMPFAIL,
    }
}

/// The daemon's reason for a failed call: the `reason` of the status's `ErrorInfo`
/// (domain [`DOMAIN`]). `None` when there is none (the call failed before the daemon
/// answered) or it is one this build does not know.
pub fn reason_of(st: &Status) -> Option<Reason> {
    let info = st.get_details_error_info()?;
    (info.domain == DOMAIN).then(|| Reason::parse(&info.reason))?
}

/// Turns a status into a one-line message saying what to do, and its exit code by the
/// daemon's reason (by the gRPC code only when there is none: see [`reason_of`]).
pub fn explain(server: &str, st: &Status) -> ClientError {
    let msg = st.message();
    let Some(reason) = reason_of(st) else {
        return by_code(server, st);
    };
    use Reason as R;
    let message = match reason {
        R::Unauthenticated => format!(
            "the daemon refused the credentials ({msg}); pass a valid token with --token or ATP_TOKEN"
        ),
        R::PolicyDenied => format!("denied: {msg}"),
        // The guest is there; the file in it is not.
        R::GuestPathNotFound => format!("in the guest: {msg}"),
        R::GuestNotFound => format!("{msg}; `atp ls` lists the guests"),
        R::AgentUnavailable | R::AgentBusy => {
            format!("{msg} (the guest agent may be starting or busy: try again)")
        }
        R::InvalidArgument => format!("invalid request: {msg}"),
        _ if exit_code(reason) == exit::TEMPFAIL => format!("{msg} (try again)"),
        _ => msg.to_owned(),
    };
    ClientError::new(exit_code(reason), message)
}

/// A status without a reason: the call failed in the transport, before the daemon
/// answered (or an older daemon answered).
fn by_code(server: &str, st: &Status) -> ClientError {
    let msg = st.message();
    match st.code() {
        Code::Unavailable => unreachable(server, msg),
        Code::Unauthenticated => ClientError::new(
            exit::BAD_CREDENTIALS,
            format!(
                "the daemon refused the credentials ({msg}); pass a valid token with --token or ATP_TOKEN"
            ),
        ),
        Code::PermissionDenied => ClientError::new(exit::DENIED, format!("denied: {msg}")),
        Code::DeadlineExceeded => ClientError::new(exit::TEMPFAIL, format!("{msg} (try again)")),
        other => ClientError::new(exit::OTHER, format!("{other:?}: {msg}")),
    }
}

fn unreachable(server: &str, why: &str) -> ClientError {
    ClientError::new(
        exit::UNREACHABLE,
        format!(
            "cannot reach the atp daemon at {server} ({why}); is `atp serve` running? set --server or ATP_SERVER"
        ),
    )
}

impl Connection {
    /// The effective server address.
    pub fn server(&self) -> String {
        self.server
            .clone()
            .or_else(|| client_file().server)
            .unwrap_or_else(|| "unix:///run/atp/atp.sock".into())
    }

    /// Connects (lazily for TCP, eagerly for a UNIX socket so a missing daemon is reported).
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let server = self.server();
        let token = self.token.clone().or_else(|| client_file().token);
        let bearer = match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                ClientError::new(
                    exit::BAD_CREDENTIALS,
                    "the token contains characters that cannot be sent",
                )
            })?),
            None => None,
        };
        let channel = if let Some(path) = server.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(unreachable(&server, "no such socket"));
            }
            Endpoint::try_from("http://localhost")
                .map_err(|e| unreachable(&server, &e.to_string()))?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await
                .map_err(|e| unreachable(&server, &error_chain(&e)))?
        } else {
            let url = if server.contains("://") {
                server.clone()
            } else {
                format!("http://{server}")
            };
            Endpoint::from_shared(url)
                .map_err(|e| {
                    ClientError::new(exit::OTHER, format!("bad --server {server:?}: {e}"))
                })?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| unreachable(&server, &error_chain(&e)))?
        };
        Ok(GuestAgentClient::with_interceptor(channel, Bearer(bearer)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;

    fn status(reason: Reason, message: &str) -> Status {
        let details = ErrorDetails::with_error_info(
            reason.as_str(),
            DOMAIN,
            std::collections::HashMap::new(),
        );
        Status::with_error_details(reason.code(), message, details)
    }

    #[test]
    fn the_reason_decides_not_the_message() {
        // A path-not-found whose text says nothing of files, and a denial by the guest.
        let e = explain("s", &status(Reason::GuestPathNotFound, "gone"));
        assert_eq!(e.code, exit::NO_INPUT);
        let e = explain(
            "s",
            &status(Reason::GuestError, "No such file or directory"),
        );
        assert_eq!(e.code, exit::OTHER);
        let e = explain("s", &status(Reason::ExecNotFound, "x"));
        assert_eq!(e.code, exit::UNKNOWN_GUEST);
        // The same code with another reason: unreachable only without a reason.
        let e = explain("s", &status(Reason::AgentUnavailable, "down"));
        assert_eq!(e.code, exit::TEMPFAIL);
        let e = explain("s", &Status::unavailable("tcp connect error"));
        assert_eq!(e.code, exit::UNREACHABLE);
    }

    /// docs/api.md's reason table has the exit code of every reason.
    #[test]
    fn docs_list_every_reasons_exit_code() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
        let start = doc.find("## Error reasons").unwrap();
        let end = start + 1 + doc[start + 1..].find("\n## ").unwrap();
        let rows: Vec<(String, String)> = doc[start..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[4].to_owned())
            })
            .collect();
        let want: Vec<(String, String)> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), exit_code(*r).to_string()))
            .collect();
        assert_eq!(
            rows, want,
            "docs/api.md ## Error reasons: reason | code | metadata | exit"
        );
    }
}
