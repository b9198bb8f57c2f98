//! Errors of the QGA layer.

use crate::transport::TransportError;

/// Why a QGA command did not produce its reply.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    /// The agent could not be reached, or did not answer in time.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The agent answered with an error object.
    #[error("{command}: {desc} ({class})")]
    Agent {
        /// The command that failed.
        command: String,
        /// QGA error class, e.g. `GenericError`.
        class: String,
        /// The agent's description.
        desc: String,
    },
    /// The guest agent disables this command (its `--block-rpcs`/`--allow-rpcs` settings).
    #[error(
        "{command} is disabled in the guest agent: check qemu-ga's --block-rpcs/--allow-rpcs \
         (BLOCK_RPCS/ALLOW_RPCS in /etc/sysconfig/qemu-ga on RHEL-like guests)"
    )]
    CommandDisabled {
        /// The refused command.
        command: String,
    },
    /// A bound on what this client may hold in the agent is reached; nothing was sent.
    /// Fails at once (no waiting), so one user of the agent cannot starve the others.
    #[error("{what}: the limit {limit} = {value} is reached; close some and retry")]
    LimitExceeded {
        /// What ran out, e.g. "too many open guest file handles".
        what: &'static str,
        /// The setting that bounds it, e.g. `limits.open_handles_per_guest`.
        limit: &'static str,
        /// Its value.
        value: usize,
    },
    /// A request argument is out of range or malformed; nothing was sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// The agent's reply did not have the documented shape.
    #[error("{command}: unexpected reply: {source}")]
    Decode {
        /// The command whose reply was malformed.
        command: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The request could not be encoded (a bug, or arguments that are not JSON-safe).
    #[error("{command}: cannot encode request: {source}")]
    Encode {
        /// The command.
        command: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl QgaError {
    /// Whether the agent said the command does not exist or is disabled in the guest.
    pub fn is_command_not_found(&self) -> bool {
        matches!(self, QgaError::Agent { class, .. } if class == "CommandNotFound")
            || matches!(self, QgaError::CommandDisabled { .. })
    }
}
