//! The request map plugins see (`req.v == 1`): who asks, for which guest, to do what.
//! Built from typed structs and converted once per request. Secrets never enter it: the
//! environment shows only its keys, stdin only whether there is any.

use serde::{Deserialize, Serialize};

/// Version of the request map's shape; plugins may check `req.v == 1`.
pub const REQUEST_VERSION: i64 = 1;

/// One request, as policies see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PolicyRequest {
    /// Always [`REQUEST_VERSION`].
    pub v: i64,
    /// Request id (also in the audit records).
    pub id: String,
    /// The RPC name, e.g. `Exec`.
    pub rpc: String,
    /// The authenticated caller.
    pub caller: CallerInfo,
    /// The guest addressed.
    pub domain: DomainInfo,
    /// For Exec.
    pub exec: Option<ExecInfo>,
    /// For ReadFile and WriteFile.
    pub file: Option<FileInfo>,
    /// For AgentCommand.
    pub agent: Option<AgentInfo>,
    /// For RunTask.
    pub task: Option<TaskInfo>,
    /// For ExecAttach and ExecCancel: the exec addressed and who started it.
    pub exec_ref: Option<ExecRefInfo>,
    /// For PushTree and PullTree: the tree's summary and the transfer's options.
    pub tree: Option<TreeInfo>,
    /// For FsFreeze.
    pub fsfreeze: Option<FreezeInfo>,
    /// For SetUserPassword, GetAuthorizedKeys, AddAuthorizedKeys, RemoveAuthorizedKeys.
    pub account: Option<AccountInfo>,
    /// `[policy] settings` from the config, for plugins to read (e.g. allowed paths).
    pub settings: serde_json::Value,
}

/// `req.caller`: the one caller type (see [`crate::caller`]).
pub use crate::caller::Caller as CallerInfo;

/// `req.domain`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DomainInfo {
    /// The name as requested.
    pub name: String,
    /// The hypervisor's configured name, when addressed `hv/domain`.
    pub hypervisor: String,
    /// The guest OS id when known (from an earlier guest-get-osinfo), else empty.
    pub os_id: String,
}

/// `req.exec`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ExecInfo {
    /// Program (empty for a shell command line).
    pub path: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Shell command line (empty for argv).
    pub shell: String,
    /// Names of the environment entries (never their values).
    pub env_keys: Vec<String>,
    /// Whether stdin is given (never its content).
    pub has_stdin: bool,
    /// ExecInteractive: stdin is streamed while the program runs.
    pub interactive: bool,
    /// The program gets a terminal (ExecInteractive with `tty`).
    pub tty: bool,
    /// Requested time limit (0 = server default).
    pub timeout_ms: i64,
    /// Working directory.
    pub cwd: String,
    /// `stream` or `collect`.
    pub mode: String,
    /// The user the program is to run as (empty: the agent's, root, unless an allowing
    /// plugin sets `run_as`); a name or a numeric uid, validated before the policy.
    pub user: String,
    /// Its primary group (empty: the user's own).
    pub group: String,
    /// Whether the program gets the user's login environment and starts in its home.
    pub login: bool,
}

/// `req.file`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FileInfo {
    /// The path, normalised (`..`, `//` and `.` resolved lexically). On POSIX guests a
    /// second decision follows when symbolic links lead elsewhere: there `path` is the
    /// resolved path, which is what the daemon opens.
    pub path: String,
    /// The path the caller asked for, normalised: equal to `path` on the first decision,
    /// the link's path when `path` is where it leads.
    pub requested: String,
    /// `read` or `write`.
    pub op: String,
    /// Read offset.
    pub offset: i64,
    /// Read length (0 = to end).
    pub length: i64,
    /// Write mode: `create`, `truncate`, `append`, `exclusive`.
    pub mode: String,
}

/// `req.tree` (PushTree, PullTree); the path is `req.file.path`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TreeInfo {
    /// `push` or `pull`.
    pub op: String,
    /// PushTree: entries the client announced (directories included); PullTree: 0 (the
    /// tree is not known before the decision; `max_bytes` bounds its file data).
    pub entries: i64,
    /// PushTree: bytes of file data announced.
    pub bytes: i64,
    /// PushTree: the largest file announced.
    pub largest: i64,
    /// Whether an existing destination is replaced.
    pub overwrite: bool,
    /// Whether FIFOs may pass.
    pub allow_special: bool,
}

/// `req.agent`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AgentInfo {
    /// The raw QGA command.
    pub command: String,
    /// Its arguments object (a password-setting command's are replaced).
    pub arguments: serde_json::Value,
}

/// `req.exec_ref`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ExecRefInfo {
    /// The exec id.
    pub id: String,
    /// The caller id that started it (empty when the id is unknown). An id alone does not
    /// name a caller: compare `owner_auth` with `req.caller.auth` too.
    pub owner: String,
    /// How the caller that started it authenticated (`unix`, `token`, `mtls`, `none`;
    /// empty when the id is unknown). A token whose identity is `uid:0` is not the UNIX
    /// caller `uid:0`.
    pub owner_auth: String,
}

/// `req.task`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TaskInfo {
    /// Task name.
    pub name: String,
    /// Parameters given.
    pub params: std::collections::BTreeMap<String, String>,
}

impl PolicyRequest {
    /// The map handed to plugins.
    pub fn to_dynamic(&self) -> rhai::Dynamic {
        rhai::serde::to_dynamic(self).unwrap_or_default()
    }
}

pub use super::path::normalize_path;
pub use super::request_admin::{AccountInfo, FreezeInfo};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_has_version_and_sections() {
        let r = PolicyRequest {
            v: REQUEST_VERSION,
            rpc: "Exec".into(),
            exec: Some(ExecInfo {
                path: "/bin/ls".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = r.to_dynamic();
        let m = d.cast::<rhai::Map>();
        assert_eq!(m["v"].as_int().unwrap(), 1);
        assert!(m["file"].is_unit());
        assert_eq!(
            m["exec"].clone().cast::<rhai::Map>()["path"]
                .clone()
                .into_string()
                .unwrap(),
            "/bin/ls"
        );
    }
}
