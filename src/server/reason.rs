//! The machine-readable reasons every error status carries, as the `reason` of a
//! `google.rpc.ErrorInfo` detail (domain [`DOMAIN`]). A contract with clients: a reason
//! is never renamed or removed, only added. docs/api.md lists them (checked by a test).

use tonic::Code;

/// The `domain` of every `ErrorInfo` the daemon sends.
pub const DOMAIN: &str = "atp.ocloudview.io";

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $text:literal, $code:ident, $meaning:literal;)*) => {
        /// Why a request failed, as clients read it from the status's `ErrorInfo`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in the order docs/api.md lists them.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The reason as sent (UPPER_SNAKE).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => $text,)*
                }
            }

            /// The gRPC code a status with this reason has. `GUEST_ERROR` is the one
            /// exception: its code follows the agent's error text (this is its fallback).
            pub fn code(self) -> Code {
                match self {
                    $(Reason::$name => Code::$code,)*
                }
            }

            /// One line: what happened.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Reason::$name => $meaning,)*
                }
            }
        }
    };
}

reasons! {
    /// The request is malformed (path, mode, arguments, empty or long guest name...).
    InvalidArgument = "INVALID_ARGUMENT", InvalidArgument,
        "the request is malformed; fix it, retrying as is fails again";
    /// No or unknown credentials.
    Unauthenticated = "UNAUTHENTICATED", Unauthenticated,
        "no valid credentials (bearer token, client certificate or UNIX peer)";
    /// A policy plugin (or the default policy) denied the request.
    PolicyDenied = "POLICY_DENIED", PermissionDenied,
        "a policy denied the request; metadata `plugin` names the deciding plugin";
    /// The audit log cannot be written, so the request is refused.
    AuditUnavailable = "AUDIT_UNAVAILABLE", Unavailable,
        "the audit log cannot be written and the daemon refuses unaudited requests";
    /// No guest of that name.
    GuestNotFound = "GUEST_NOT_FOUND", NotFound,
        "no guest of that name on any configured hypervisor or socket";
    /// The guest exists but is not running.
    GuestNotRunning = "GUEST_NOT_RUNNING", FailedPrecondition,
        "the guest exists but is not running";
    /// libvirt cannot be reached or failed.
    HypervisorUnavailable = "HYPERVISOR_UNAVAILABLE", Unavailable,
        "libvirt cannot be reached or failed; the daemon reconnects on the next request";
    /// The guest agent is not connected or its connection failed.
    AgentUnavailable = "AGENT_UNAVAILABLE", Unavailable,
        "the guest agent is not running, not connected, or its connection failed";
    /// The agent did not answer in time.
    AgentBusy = "AGENT_BUSY", DeadlineExceeded,
        "the guest agent did not answer in time (it runs one command at a time)";
    /// The agent disables this command (`--block-rpcs`/`--allow-rpcs`).
    CommandDisabled = "COMMAND_DISABLED", FailedPrecondition,
        "the guest agent disables this command (qemu-ga --block-rpcs/--allow-rpcs)";
    /// The agent does not know this command.
    CommandUnknown = "COMMAND_UNKNOWN", Unimplemented,
        "the guest agent does not know this command (older qemu-ga or another OS)";
    /// A configured bound or a policy's `max_bytes` is reached.
    LimitExceeded = "LIMIT_EXCEEDED", ResourceExhausted,
        "a `[limits]` bound or a policy's max_bytes is reached; metadata `limit`, `value`";
    /// The guest path does not exist.
    GuestPathNotFound = "GUEST_PATH_NOT_FOUND", NotFound,
        "the path does not exist in the guest";
    /// The guest refused access to the path.
    GuestPermissionDenied = "GUEST_PERMISSION_DENIED", PermissionDenied,
        "the guest's own permissions refuse the operation (not a policy)";
    /// The guest path exists where it must not.
    GuestPathExists = "GUEST_PATH_EXISTS", AlreadyExists,
        "the path exists in the guest (EXCLUSIVE write, or a helper's target)";
    /// The guest path is of the wrong kind.
    GuestPathUnsuitable = "GUEST_PATH_UNSUITABLE", FailedPrecondition,
        "the path is of the wrong kind (a directory, not a regular file...)";
    /// The guest path changed while it was being opened.
    GuestPathChanged = "GUEST_PATH_CHANGED", Aborted,
        "a component of the path was swapped while it was opened; nothing was written";
    /// The guest lacks what the operation needs.
    GuestUnsupported = "GUEST_UNSUPPORTED", FailedPrecondition,
        "the guest lacks what the operation needs (e.g. /proc to prove an open handle)";
    /// The guest wrote fewer bytes than it was given.
    GuestWriteIncomplete = "GUEST_WRITE_INCOMPLETE", DataLoss,
        "the guest wrote fewer bytes than it was sent (disk full?)";
    /// Another agent error.
    GuestError = "GUEST_ERROR", Unknown,
        "another error reported by the guest agent; metadata `class` is the agent's error class";
    /// No exec with that id (or it ended without a result).
    ExecNotFound = "EXEC_NOT_FOUND", NotFound,
        "no exec with that id (never, or no longer kept)";
    /// The exec is attached to another client.
    ExecAttached = "EXEC_ATTACHED", FailedPrecondition,
        "the exec's output goes to another client; one reader at a time";
    /// No task of that name.
    TaskNotFound = "TASK_NOT_FOUND", NotFound,
        "no policy plugin defines a task of that name";
    /// The daemon is shutting down.
    DaemonShuttingDown = "DAEMON_SHUTTING_DOWN", Unavailable,
        "the daemon is shutting down; retry against its successor";
    /// The client sent or read too slowly.
    ClientTooSlow = "CLIENT_TOO_SLOW", DeadlineExceeded,
        "the client sent or read nothing for too long (header, upload or stream idle timeout)";
    /// The client cancelled or went away.
    ClientCancelled = "CLIENT_CANCELLED", Cancelled,
        "the client cancelled or went away (seen in audit records, not by that client)";
    /// A daemon bug or an unexpected agent reply.
    Internal = "INTERNAL", Internal,
        "a daemon bug or an agent reply of the wrong shape; report it";
    // Directory trees (issue 15).
    /// A PushTree entry breaks the entry rules.
    TreeEntryRefused = "TREE_ENTRY_REFUSED", InvalidArgument,
        "a PushTree entry breaks the entry rules (absolute, `..`, link leading out, special file); metadata `entry`";
    /// The guest's tree holds an entry the rules refuse.
    GuestTreeRefused = "GUEST_TREE_REFUSED", FailedPrecondition,
        "the guest's tree holds an entry the rules refuse (PullTree); metadata `entry`; nothing was kept";
    /// The archive's checksum differs between daemon and guest.
    TreeChecksumMismatch = "TREE_CHECKSUM_MISMATCH", DataLoss,
        "the tree archive differs between the daemon and the guest (SHA-256 on push, size on pull); nothing was kept";
    /// The guest's file systems are frozen (FsFreeze, or another agent client).
    FsFrozen = "FS_FROZEN", FailedPrecondition,
        "the guest's file systems are frozen: the agent answers little until FsThaw";
}

impl Reason {
    /// The reason spelled `s`, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `reason` this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown error reason {0:?}")]
pub struct UnknownReason(pub String);

impl std::str::FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_upper_snake() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
            assert_eq!(r.as_str().parse::<Reason>().ok(), Some(*r));
            assert!(
                r.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{r}"
            );
            assert!(!r.meaning().is_empty());
            assert_ne!(r.code(), Code::Ok);
        }
        assert!("NOPE".parse::<Reason>().is_err());
    }
}
