//! The gRPC server: binds every configured listener, serves `GuestAgent`, health and
//! reflection on each, and shuts down gracefully when told to.

mod accept;
mod action;
mod admin;
pub mod auth;
mod authority;
mod budget;
mod daemon;
mod denials;
mod exec;
mod exec_dir_sweeps;
mod facts;
mod files;
mod gate;
mod guests;
mod listeners;
mod metrics;
mod opening;
mod passthrough;
pub mod reason;
mod service;
pub mod status;
mod streams;
mod tasks;

use std::future::Future;

pub use service::GuestAgentService;

use crate::config::Config;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The listener.
        listen: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Reflection could not be set up (a bad embedded descriptor: a build bug).
    #[error("reflection: {0}")]
    Reflection(String),
    /// The policy plugins do not load.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The audit log cannot be opened.
    #[error("audit log: {0}")]
    Audit(String),
    /// The audit log no longer holds the record its head file names: refused, so that a
    /// cut log is never continued silently.
    #[error("{0}")]
    AuditTampered(String),
    /// The state directory (`[state]`) cannot be used.
    #[error("state directory: {0}")]
    State(String),
    /// The transport failed while serving.
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Runs the daemon until `shutdown` completes, then stops accepting, reports NOT_SERVING,
/// ends open streams with UNAVAILABLE, waits up to the grace period for calls to finish
/// and closes the guest handles it still holds. Everything the config can make fail
/// fails before anything is served (`daemon::build`); `Daemon::run` then serves.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    daemon::build(&config).await?.run(shutdown).await
}
