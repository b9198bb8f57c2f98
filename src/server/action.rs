//! What a request asks for, as the gate sees it. [`Rpc`] is the one place the RPC names
//! that policies match on (`req.rpc`), audit records and metrics carry are spelled;
//! [`Action`] pairs each RPC with its own part of the policy request, so an RPC cannot be
//! described with another's detail. [`Beyond`] names the work a handler does beyond what
//! its request names (documented in docs/policies.md, "Work beyond the request").

use crate::policy::request::{
    AccountInfo, AgentInfo, ExecInfo, ExecRefInfo, FileInfo, FreezeInfo, PolicyRequest, TaskInfo,
    TreeInfo,
};

/// Every RPC of the `GuestAgent` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rpc {
    Ping,
    GetAgentInfo,
    GetOsInfo,
    ListDomains,
    GetGuestInfo,
    AgentCommand,
    Exec,
    ExecInteractive,
    ExecAttach,
    ExecCancel,
    ReadFile,
    WriteFile,
    ListTasks,
    RunTask,
    // Directory trees (issue 15).
    PushTree,
    PullTree,
    ListDir,
    // Typed admin operations.
    FsFreeze,
    FsThaw,
    FsFreezeStatus,
    SetUserPassword,
    GetAuthorizedKeys,
    AddAuthorizedKeys,
    RemoveAuthorizedKeys,
    SyncTime,
}

impl Rpc {
    /// All of them, in the proto's order.
    #[cfg(test)]
    pub(crate) const ALL: [Rpc; 25] = [
        Rpc::Ping,
        Rpc::GetAgentInfo,
        Rpc::GetOsInfo,
        Rpc::ListDomains,
        Rpc::GetGuestInfo,
        Rpc::Exec,
        Rpc::ExecInteractive,
        Rpc::ExecAttach,
        Rpc::ExecCancel,
        Rpc::ReadFile,
        Rpc::WriteFile,
        Rpc::AgentCommand,
        Rpc::ListTasks,
        Rpc::RunTask,
        Rpc::FsFreeze,
        Rpc::FsThaw,
        Rpc::FsFreezeStatus,
        Rpc::SetUserPassword,
        Rpc::GetAuthorizedKeys,
        Rpc::AddAuthorizedKeys,
        Rpc::RemoveAuthorizedKeys,
        Rpc::SyncTime,
        // Directory trees (issue 15).
        Rpc::PushTree,
        Rpc::PullTree,
        Rpc::ListDir,
    ];

    /// The proto's method name: `req.rpc` for policies, `rpc` in audit records and metrics.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Rpc::Ping => "Ping",
            Rpc::GetAgentInfo => "GetAgentInfo",
            Rpc::GetOsInfo => "GetOsInfo",
            Rpc::ListDomains => "ListDomains",
            Rpc::GetGuestInfo => "GetGuestInfo",
            Rpc::AgentCommand => "AgentCommand",
            Rpc::Exec => "Exec",
            Rpc::ExecInteractive => "ExecInteractive",
            Rpc::ExecAttach => "ExecAttach",
            Rpc::ExecCancel => "ExecCancel",
            Rpc::ReadFile => "ReadFile",
            Rpc::WriteFile => "WriteFile",
            Rpc::ListTasks => "ListTasks",
            Rpc::RunTask => "RunTask",
            // Directory trees (issue 15).
            Rpc::PushTree => "PushTree",
            Rpc::PullTree => "PullTree",
            Rpc::ListDir => "ListDir",
            Rpc::FsFreeze => "FsFreeze",
            Rpc::FsThaw => "FsThaw",
            Rpc::FsFreezeStatus => "FsFreezeStatus",
            Rpc::SetUserPassword => "SetUserPassword",
            Rpc::GetAuthorizedKeys => "GetAuthorizedKeys",
            Rpc::AddAuthorizedKeys => "AddAuthorizedKeys",
            Rpc::RemoveAuthorizedKeys => "RemoveAuthorizedKeys",
            Rpc::SyncTime => "SyncTime",
        }
    }

    /// What handling this RPC does beyond what its request names.
    pub(crate) const fn beyond(self) -> &'static [Beyond] {
        match self {
            Rpc::ListDomains => &[Beyond::PingEachGuest],
            Rpc::Exec | Rpc::RunTask => &[
                Beyond::SweepExecDirs,
                Beyond::KillHelper,
                Beyond::StdinHelpers,
            ],
            Rpc::ExecInteractive => &[
                Beyond::SweepExecDirs,
                Beyond::KillHelper,
                Beyond::StdinHelpers,
            ],
            Rpc::ExecCancel => &[Beyond::KillHelper],
            Rpc::ReadFile | Rpc::WriteFile => &[Beyond::FileHelpers],
            // Directory trees (issue 15).
            Rpc::PushTree | Rpc::PullTree | Rpc::ListDir => {
                &[Beyond::FileHelpers, Beyond::TreeHelpers]
            }
            Rpc::FsFreeze => &[Beyond::ThawAtDeadline],
            Rpc::SyncTime => &[Beyond::ReadGuestClock],
            _ => &[],
        }
    }
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A request as policies are asked about it: the RPC and its section of the request map.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Ping,
    GetAgentInfo,
    GetOsInfo,
    /// Not addressed to one guest: `req.domain.name` is empty.
    ListDomains,
    GetGuestInfo,
    AgentCommand(AgentInfo),
    Exec(ExecInfo),
    /// An Exec with streamed stdin: `exec.interactive` is set.
    ExecInteractive(ExecInfo),
    ExecAttach(ExecRefInfo),
    ExecCancel(ExecRefInfo),
    ReadFile(FileInfo),
    WriteFile(FileInfo),
    ListTasks,
    /// A task runs as an Exec of the task's argv; policies see the task and its parameters.
    RunTask(TaskInfo),
    // Directory trees (issue 15): `req.file` names the guest directory (`op` is
    // `push_tree`, `pull_tree` or `list`), `req.tree` the summary and options.
    PushTree(FileInfo, TreeInfo),
    PullTree(FileInfo, TreeInfo),
    ListDir(FileInfo),
    // Typed admin operations.
    FsFreeze(FreezeInfo),
    FsThaw,
    FsFreezeStatus,
    SetUserPassword(AccountInfo),
    GetAuthorizedKeys(AccountInfo),
    AddAuthorizedKeys(AccountInfo),
    RemoveAuthorizedKeys(AccountInfo),
    SyncTime,
}

impl Action {
    /// The RPC this action is.
    pub(crate) fn rpc(&self) -> Rpc {
        match self {
            Action::Ping => Rpc::Ping,
            Action::GetAgentInfo => Rpc::GetAgentInfo,
            Action::GetOsInfo => Rpc::GetOsInfo,
            Action::ListDomains => Rpc::ListDomains,
            Action::GetGuestInfo => Rpc::GetGuestInfo,
            Action::AgentCommand(_) => Rpc::AgentCommand,
            Action::Exec(_) => Rpc::Exec,
            Action::ExecInteractive(_) => Rpc::ExecInteractive,
            Action::ExecAttach(_) => Rpc::ExecAttach,
            Action::ExecCancel(_) => Rpc::ExecCancel,
            Action::ReadFile(_) => Rpc::ReadFile,
            Action::WriteFile(_) => Rpc::WriteFile,
            Action::ListTasks => Rpc::ListTasks,
            Action::RunTask(_) => Rpc::RunTask,
            // Directory trees (issue 15).
            Action::PushTree(..) => Rpc::PushTree,
            Action::PullTree(..) => Rpc::PullTree,
            Action::ListDir(_) => Rpc::ListDir,
            Action::FsFreeze(_) => Rpc::FsFreeze,
            Action::FsThaw => Rpc::FsThaw,
            Action::FsFreezeStatus => Rpc::FsFreezeStatus,
            Action::SetUserPassword(_) => Rpc::SetUserPassword,
            Action::GetAuthorizedKeys(_) => Rpc::GetAuthorizedKeys,
            Action::AddAuthorizedKeys(_) => Rpc::AddAuthorizedKeys,
            Action::RemoveAuthorizedKeys(_) => Rpc::RemoveAuthorizedKeys,
            Action::SyncTime => Rpc::SyncTime,
        }
    }

    /// Fills `preq`'s `rpc` and this action's own section.
    pub(crate) fn describe(self, preq: &mut PolicyRequest) {
        preq.rpc = self.rpc().name().to_owned();
        match self {
            Action::Ping
            | Action::GetAgentInfo
            | Action::GetOsInfo
            | Action::ListDomains
            | Action::GetGuestInfo
            | Action::ListTasks
            | Action::FsThaw
            | Action::FsFreezeStatus
            | Action::SyncTime => {}
            Action::AgentCommand(a) => preq.agent = Some(a),
            Action::Exec(e) | Action::ExecInteractive(e) => preq.exec = Some(e),
            Action::ExecAttach(r) | Action::ExecCancel(r) => preq.exec_ref = Some(r),
            Action::ReadFile(f) | Action::WriteFile(f) => preq.file = Some(f),
            Action::RunTask(t) => preq.task = Some(t),
            // Directory trees (issue 15).
            Action::PushTree(f, t) | Action::PullTree(f, t) => {
                preq.file = Some(f);
                preq.tree = Some(t);
            }
            Action::ListDir(f) => preq.file = Some(f),
            Action::FsFreeze(f) => preq.fsfreeze = Some(f),
            Action::SetUserPassword(a)
            | Action::GetAuthorizedKeys(a)
            | Action::AddAuthorizedKeys(a)
            | Action::RemoveAuthorizedKeys(a) => preq.account = Some(a),
        }
    }
}

/// Work a handler does beyond what its request names. It is not decided on by itself:
/// the admission of the request it serves covers it, so it is named here, checked where it
/// happens ([`super::gate::Call::beyond`]) and documented for policy authors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beyond {
    /// ListDomains pings every running guest it lists (at once, 1 s each) to report
    /// whether its agent answers and its OS id.
    PingEachGuest,
    /// Exec and RunTask start, at most hourly per guest, a background sweep of the exec
    /// directories an earlier daemon abandoned in the same guest
    /// (`agent.sweep_exec_dirs_after_s`).
    SweepExecDirs,
    /// Exec, RunTask (deadline, `max_bytes`) and ExecCancel run the kill helper
    /// (`guest-exec` of `/bin/sh`) that signals the program's group after checking it is
    /// still the agent's child with its recorded start time.
    KillHelper,
    /// ExecInteractive (and an Exec whose `stdin` is larger than one agent request) starts
    /// a holder (`guest-exec` of `/bin/sh`, holding the program's stdin FIFO open) and one
    /// short `guest-exec` of `cat` per stdin chunk.
    StdinHelpers,
    /// ReadFile and WriteFile on POSIX guests run helper commands (`guest-exec` of
    /// `/bin/sh`) that resolve the path, stage an upload in a private directory and
    /// finalize it.
    FileHelpers,
    /// PushTree, PullTree and ListDir run tree helpers (`guest-exec` of `/bin/sh`): one
    /// `tar c` into a private directory (and its removal), one checksum-verify, `tar x`
    /// and rename in the staging directory, or one listing with `stat` and `readlink`.
    TreeHelpers,
    /// FsFreeze asks `guest-fsfreeze-status` first, and thaws (`guest-fsfreeze-thaw`) at
    /// the request's deadline or when the daemon shuts down, whether or not its client
    /// is still there (an audit record of kind `daemon` says so).
    ThawAtDeadline,
    /// SyncTime reads the guest clock (`guest-get-time`) before setting it, to report
    /// the offset it corrected.
    ReadGuestClock,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The names exist in one place, and that place agrees with the proto.
    #[test]
    fn every_rpc_of_the_proto_and_no_other() {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == "GuestAgent")
            .flat_map(|s| &s.method)
            .map(|m| m.name().to_owned())
            .collect();
        let ours: Vec<String> = Rpc::ALL.iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(ours, methods);
    }

    #[test]
    fn an_action_fills_only_its_own_section() {
        let mut p = PolicyRequest::default();
        Action::ReadFile(FileInfo {
            path: "/etc/hostname".into(),
            ..Default::default()
        })
        .describe(&mut p);
        assert_eq!(p.rpc, "ReadFile");
        assert_eq!(
            p.file.as_ref().map(|f| f.path.as_str()),
            Some("/etc/hostname")
        );
        assert!(p.exec.is_none() && p.agent.is_none() && p.task.is_none());
        assert!(p.exec_ref.is_none());

        let mut p = PolicyRequest::default();
        Action::ExecCancel(ExecRefInfo {
            id: "x".into(),
            ..Default::default()
        })
        .describe(&mut p);
        assert_eq!(p.rpc, "ExecCancel");
        assert!(p.exec_ref.is_some() && p.file.is_none());
    }

    #[test]
    fn work_beyond_the_request_is_declared_by_the_rpcs_that_do_it() {
        assert_eq!(Rpc::ListDomains.beyond(), &[Beyond::PingEachGuest]);
        assert!(Rpc::Ping.beyond().is_empty());
        assert!(Rpc::WriteFile.beyond().contains(&Beyond::FileHelpers));
        assert!(Rpc::Exec.beyond().contains(&Beyond::SweepExecDirs));
        assert!(!Rpc::ExecAttach.beyond().contains(&Beyond::KillHelper));
    }
}
