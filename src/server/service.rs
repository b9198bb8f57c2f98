//! The `GuestAgent` service. Each RPC method is thin: it describes the request for the
//! [`Gate`](super::gate::Gate) (which authenticates, decides, audits), then hands the
//! admitted [`Call`] to its module (`facts`, `exec`, `files`, `tasks`).

use std::{sync::Arc, time::Duration};

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{
    action::Action,
    admin::{self, access, freezes::FreezeRegistry},
    exec::{self as exec_rpc, ExecRegistry},
    exec_dir_sweeps::ExecDirSweeps,
    facts, files,
    gate::{Call, Gate},
    guests::Guests,
    passthrough,
    status::ApiError,
    streams::{BoundedStream, Held, StreamPermit, StreamRegistry},
    tasks,
};
use crate::{
    guests::GuestRegistry,
    pb::{self, guest_agent_server::GuestAgent},
    policy::request::{
        AgentInfo, ExecInfo, ExecRefInfo, FileInfo, FreezeInfo, TaskInfo, TreeInfo, normalize_path,
    },
    qga::{AgentClient, QgaError},
};

/// A server-streaming response.
pub type EventStream<T> = ReceiverStream<Result<T, Status>>;

/// The service; clones share everything.
#[derive(Debug, Clone)]
pub struct GuestAgentService {
    pub(crate) shared: Arc<Shared>,
}

/// State shared by all requests.
#[derive(Debug)]
#[allow(dead_code)] // `limits` and `new_file_mode` are read by the handlers of issue 11's work
pub(crate) struct Shared {
    /// Reachable through an admitted call only.
    pub(crate) guests: Guests,
    pub(crate) execs: ExecRegistry,
    pub(crate) exec_dir_sweeps: ExecDirSweeps,
    pub(crate) shutdown: CancellationToken,
    pub(crate) exec_timeout: Duration,
    pub(crate) gate: Gate,
    /// Bounds on handles, streams and execs (`[limits]`).
    pub(crate) limits: crate::config::Limits,
    /// Mode of files WriteFile creates without `permissions` (`[files] new_file_mode`).
    pub(crate) new_file_mode: u32,
    /// Open streams per caller (`limits.streams_per_caller`).
    pub(crate) streams: Arc<StreamRegistry>,
    /// The file-system freezes this daemon made, with their thaw deadlines.
    pub(crate) freezes: Arc<FreezeRegistry>,
    /// Where interactive sessions are recorded (with an audit log only).
    pub(crate) recordings: Option<exec_rpc::Recordings>,
}

impl GuestAgentService {
    /// A service over `guests`; `shutdown` ends open streams with UNAVAILABLE.
    pub(crate) fn new(
        guests: Arc<GuestRegistry>,
        shutdown: CancellationToken,
        config: &crate::config::Config,
        gate: Gate,
    ) -> Self {
        let freezes = FreezeRegistry::new(gate.audit.clone());
        Self {
            shared: Arc::new(Shared {
                guests: Guests::new(guests),
                execs: ExecRegistry::default(),
                exec_dir_sweeps: ExecDirSweeps::new(config.sweep_exec_dirs_after),
                shutdown,
                exec_timeout: config.exec_timeout,
                gate,
                limits: config.limits.clone(),
                new_file_mode: config.new_file_mode,
                streams: StreamRegistry::new(config.limits.streams_per_caller),
                freezes,
                recordings: config.audit.as_ref().map(|a| exec_rpc::Recordings {
                    dir: a.recordings.clone(),
                    refuse: a.refuse_on_failure,
                }),
            }),
        }
    }

    /// Waits (bounded) until every exec task has closed its guest handles after the
    /// shutdown token fired (daemon shutdown); the programs keep running.
    pub async fn close_parked(&self) {
        self.shared.execs.wait_tasks(Duration::from_secs(5)).await;
    }

    /// Thaws every guest this daemon froze (daemon shutdown), recording each thaw.
    pub async fn thaw_frozen(&self) {
        self.shared.freezes.thaw_all().await;
    }

    /// Counts one more open stream for the caller of `call` (held for the stream's life),
    /// or records the refusal in `call`'s outcome and fails RESOURCE_EXHAUSTED naming
    /// `limits.streams_per_caller`. For every streaming RPC (Exec and ExecAttach too).
    pub(crate) async fn stream_permit(&self, call: Call) -> Result<(Call, StreamPermit), Status> {
        match self.shared.streams.acquire(call.caller()) {
            Ok(permit) => Ok((call, permit)),
            Err(st) => Err(call.fail(st).await),
        }
    }

    /// Passes a request for `action` on `domain` through the gate.
    pub(crate) async fn admit<T>(
        &self,
        action: Action,
        req: &Request<T>,
        domain: &str,
    ) -> Result<Call, Status> {
        let os_id = self.shared.guests.cached_os_id(domain);
        self.shared.gate.admit(action, req, domain, os_id).await
    }

    /// What policies see of the exec `id` (ExecAttach, ExecCancel), and its guest.
    fn exec_ref(&self, id: &str) -> (String, ExecRefInfo) {
        let (domain, owner) = match self.shared.execs.domain_and_owner(id) {
            Some((d, o)) => (d, Some(o)),
            None => (String::new(), None),
        };
        let info = ExecRefInfo {
            id: id.to_owned(),
            owner: owner.as_ref().map(|o| o.id.clone()).unwrap_or_default(),
            owner_auth: owner.map(|o| o.auth).unwrap_or_default(),
        };
        (domain, info)
    }

    /// The agent client of the guest `call` admitted.
    pub(crate) async fn client(&self, call: &Call) -> Result<AgentClient, Status> {
        self.shared.guests.client(call).await
    }

    /// Maps an agent error, forgetting a cached guest that libvirt says is gone (see
    /// [`super::status::agent_status`], the one mapping).
    pub(crate) fn agent_error(&self, domain: &str, e: QgaError) -> Status {
        super::status::agent_status(&self.shared.guests, domain, e)
    }
}

/// Runs a unary handler inside an admitted [`Call`] and records its outcome.
macro_rules! unary {
    ($self:ident, $action:expr, $req:ident, $domain:expr, $handler:path) => {{
        let domain: String = $domain;
        let call = $self.admit($action, &$req, &domain).await?;
        let res = $handler($self, &call, $req.into_inner()).await;
        call.end(&res, Default::default()).await;
        res.map(Response::new)
    }};
}

/// What policies see of an Exec request.
pub(crate) fn exec_info(r: &pb::ExecRequest) -> ExecInfo {
    let (path, args, shell) = match &r.command {
        Some(pb::exec_request::Command::Argv(a)) => (a.path.clone(), a.args.clone(), String::new()),
        Some(pb::exec_request::Command::Shell(s)) => (String::new(), Vec::new(), s.clone()),
        None => Default::default(),
    };
    ExecInfo {
        path,
        args,
        shell,
        env_keys: r
            .env
            .iter()
            .map(|e| e.split('=').next().unwrap_or_default().to_owned())
            .collect(),
        has_stdin: !r.stdin.is_empty(),
        interactive: false,
        tty: r.tty,
        timeout_ms: i64::try_from(r.timeout_ms).unwrap_or(i64::MAX),
        cwd: r.cwd.clone(),
        mode: if r.mode == pb::ExecMode::Collect as i32 {
            "collect"
        } else {
            "stream"
        }
        .into(),
        user: r.user.clone(),
        group: r.group.clone(),
        login: r.login,
    }
}

#[tonic::async_trait]
impl GuestAgent for GuestAgentService {
    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        unary!(
            self,
            Action::Ping,
            request,
            request.get_ref().domain.clone(),
            facts::ping
        )
    }

    async fn get_agent_info(
        &self,
        request: Request<pb::GetAgentInfoRequest>,
    ) -> Result<Response<pb::GetAgentInfoResponse>, Status> {
        unary!(
            self,
            Action::GetAgentInfo,
            request,
            request.get_ref().domain.clone(),
            facts::agent_info
        )
    }

    async fn get_os_info(
        &self,
        request: Request<pb::GetOsInfoRequest>,
    ) -> Result<Response<pb::GetOsInfoResponse>, Status> {
        unary!(
            self,
            Action::GetOsInfo,
            request,
            request.get_ref().domain.clone(),
            facts::os_info
        )
    }

    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        unary!(
            self,
            Action::ListDomains,
            request,
            String::new(),
            facts::list_domains
        )
    }

    async fn get_guest_info(
        &self,
        request: Request<pb::GetGuestInfoRequest>,
    ) -> Result<Response<pb::GetGuestInfoResponse>, Status> {
        unary!(
            self,
            Action::GetGuestInfo,
            request,
            request.get_ref().domain.clone(),
            facts::guest_info
        )
    }

    async fn agent_command(
        &self,
        request: Request<pb::AgentCommandRequest>,
    ) -> Result<Response<pb::AgentCommandResponse>, Status> {
        let r = request.get_ref();
        // Secrets and bulk data never reach policies or the audit log: only their names
        // and sizes (see `policy::agent_args`).
        let arguments = crate::policy::agent_args::redact(
            &r.command,
            serde_json::from_str(&r.arguments_json).unwrap_or_default(),
        );
        let detail = AgentInfo {
            command: r.command.clone(),
            arguments,
        };
        unary!(
            self,
            Action::AgentCommand(detail),
            request,
            request.get_ref().domain.clone(),
            passthrough::agent_command
        )
    }

    type ExecStream = Held<EventStream<pb::ExecEvent>>;

    async fn exec(
        &self,
        mut request: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        exec_rpc::normalize(request.get_mut());
        let r = request.get_ref();
        // Entries a guest shell could take as code never reach the policy or the guest.
        exec_rpc::check_env(&r.env)?;
        exec_rpc::check_user(r)?;
        if r.tty {
            return Err(ApiError::InvalidArgument(
                "`tty` needs ExecInteractive: a terminal takes its input as it comes".into(),
            )
            .into());
        }
        let action = Action::Exec(exec_info(request.get_ref()));
        let domain = request.get_ref().domain.clone();
        let call = self.admit(action, &request, &domain).await?;
        let (call, permit) = self.stream_permit(call).await?;
        exec_rpc::exec(self, call, request.into_inner())
            .await
            .map(|s| Response::new(Held::new(s, permit)))
    }

    type ExecInteractiveStream = Held<EventStream<pb::ExecEvent>>;

    async fn exec_interactive(
        &self,
        request: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecInteractiveStream>, Status> {
        exec_rpc::interactive::open(self, request)
            .await
            .map(Response::new)
    }

    type ExecAttachStream = Held<EventStream<pb::ExecEvent>>;

    async fn exec_attach(
        &self,
        request: Request<pb::ExecAttachRequest>,
    ) -> Result<Response<Self::ExecAttachStream>, Status> {
        let (domain, detail) = self.exec_ref(&request.get_ref().exec_id);
        let call = self
            .admit(Action::ExecAttach(detail), &request, &domain)
            .await?;
        let (call, permit) = self.stream_permit(call).await?;
        exec_rpc::attach(self, call, request.into_inner())
            .await
            .map(|s| Response::new(Held::new(s, permit)))
    }

    async fn exec_cancel(
        &self,
        request: Request<pb::ExecCancelRequest>,
    ) -> Result<Response<pb::ExecCancelResponse>, Status> {
        let (domain, detail) = self.exec_ref(&request.get_ref().exec_id);
        unary!(
            self,
            Action::ExecCancel(detail),
            request,
            domain,
            exec_rpc::cancel
        )
    }

    type ReadFileStream = BoundedStream<pb::FileChunk>;

    async fn read_file(
        &self,
        mut request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        // Policies decide on the normalised path, and that is the path the guest opens.
        let r = request.get_mut();
        r.path = normalize_path(&r.path);
        // On POSIX guests the path is then resolved in the guest, and decided on again
        // when symbolic links lead elsewhere (`files::read`).
        let info = FileInfo {
            path: r.path.clone(),
            requested: r.path.clone(),
            op: "read".into(),
            offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
            length: i64::try_from(r.length).unwrap_or(i64::MAX),
            mode: String::new(),
        };
        let domain = r.domain.clone();
        let call = self
            .admit(Action::ReadFile(info.clone()), &request, &domain)
            .await?;
        files::read(self, call, request.into_inner(), info)
            .await
            .map(Response::new)
    }

    async fn write_file(
        &self,
        request: Request<Streaming<pb::WriteFileRequest>>,
    ) -> Result<Response<pb::WriteFileResponse>, Status> {
        // A task of its own, so that a client that vanishes mid-upload still gets its
        // staging directory removed, its handle closed and its outcome recorded.
        let task = tokio::spawn(files::upload(self.clone(), request));
        task.await
            .map_err(|e| Status::from(ApiError::Internal(format!("write task failed: {e}"))))?
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        unary!(
            self,
            Action::ListTasks,
            request,
            request.get_ref().domain.clone(),
            tasks::list
        )
    }

    type RunTaskStream = Held<EventStream<pb::ExecEvent>>;

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<Self::RunTaskStream>, Status> {
        let r = request.get_ref();
        let detail = TaskInfo {
            name: r.task.clone(),
            params: r
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let domain = r.domain.clone();
        let call = self
            .admit(Action::RunTask(detail), &request, &domain)
            .await?;
        let (call, permit) = self.stream_permit(call).await?;
        tasks::run(self, call, request.into_inner())
            .await
            .map(|s| Response::new(Held::new(s, permit)))
    }

    // --- Directory trees (issue 15) ---

    async fn push_tree(
        &self,
        request: Request<Streaming<pb::PushTreeRequest>>,
    ) -> Result<Response<pb::PushTreeResponse>, Status> {
        // A task of its own, like WriteFile: a client that vanishes mid-push still gets
        // its staging directory removed and its outcome recorded.
        let task = tokio::spawn(files::push_tree(self.clone(), request));
        task.await
            .map_err(|e| Status::from(ApiError::Internal(format!("push task failed: {e}"))))?
            .map(Response::new)
    }

    type PullTreeStream = BoundedStream<pb::PullTreeResponse>;

    async fn pull_tree(
        &self,
        mut request: Request<pb::PullTreeRequest>,
    ) -> Result<Response<Self::PullTreeStream>, Status> {
        let r = request.get_mut();
        r.path = normalize_path(&r.path);
        let info = FileInfo {
            path: r.path.clone(),
            requested: r.path.clone(),
            op: "pull_tree".into(),
            ..Default::default()
        };
        let tree = TreeInfo {
            op: "pull".into(),
            allow_special: r.allow_special,
            ..Default::default()
        };
        let domain = r.domain.clone();
        let call = self
            .admit(Action::PullTree(info.clone(), tree), &request, &domain)
            .await?;
        files::pull_tree(self, call, request.into_inner(), info)
            .await
            .map(Response::new)
    }

    async fn list_dir(
        &self,
        mut request: Request<pb::ListDirRequest>,
    ) -> Result<Response<pb::ListDirResponse>, Status> {
        let r = request.get_mut();
        r.path = normalize_path(&r.path);
        let info = FileInfo {
            path: r.path.clone(),
            requested: r.path.clone(),
            op: "list".into(),
            ..Default::default()
        };
        let domain = r.domain.clone();
        let mut call = self
            .admit(Action::ListDir(info.clone()), &request, &domain)
            .await?;
        let res = files::list_dir(self, &mut call, request.into_inner(), info).await;
        call.end(&res, Default::default()).await;
        res.map(Response::new)
    }
    // ---- Typed admin operations (src/server/admin) ----

    async fn fs_freeze(
        &self,
        request: Request<pb::FsFreezeRequest>,
    ) -> Result<Response<pb::FsFreezeResponse>, Status> {
        let r = request.get_ref();
        let detail = FreezeInfo {
            mountpoints: r.mountpoints.clone(),
            thaw_deadline_s: i64::from(r.thaw_deadline_s),
        };
        unary!(
            self,
            Action::FsFreeze(detail),
            request,
            request.get_ref().domain.clone(),
            admin::freeze::freeze
        )
    }

    async fn fs_thaw(
        &self,
        request: Request<pb::FsThawRequest>,
    ) -> Result<Response<pb::FsThawResponse>, Status> {
        unary!(
            self,
            Action::FsThaw,
            request,
            request.get_ref().domain.clone(),
            admin::freeze::thaw
        )
    }

    async fn fs_freeze_status(
        &self,
        request: Request<pb::FsFreezeStatusRequest>,
    ) -> Result<Response<pb::FsFreezeStatusResponse>, Status> {
        unary!(
            self,
            Action::FsFreezeStatus,
            request,
            request.get_ref().domain.clone(),
            admin::freeze::status
        )
    }

    async fn set_user_password(
        &self,
        request: Request<pb::SetUserPasswordRequest>,
    ) -> Result<Response<pb::SetUserPasswordResponse>, Status> {
        let detail = access::password_info(request.get_ref());
        unary!(
            self,
            Action::SetUserPassword(detail),
            request,
            request.get_ref().domain.clone(),
            access::set_password
        )
    }

    async fn get_authorized_keys(
        &self,
        request: Request<pb::GetAuthorizedKeysRequest>,
    ) -> Result<Response<pb::GetAuthorizedKeysResponse>, Status> {
        let detail = access::keys_info(&request.get_ref().username, &[], false);
        unary!(
            self,
            Action::GetAuthorizedKeys(detail),
            request,
            request.get_ref().domain.clone(),
            access::get_keys
        )
    }

    async fn add_authorized_keys(
        &self,
        request: Request<pb::AddAuthorizedKeysRequest>,
    ) -> Result<Response<pb::AddAuthorizedKeysResponse>, Status> {
        let r = request.get_ref();
        let keys = access::parse_keys(&r.keys)?;
        let detail = access::keys_info(&r.username, &keys, r.reset);
        unary!(
            self,
            Action::AddAuthorizedKeys(detail),
            request,
            request.get_ref().domain.clone(),
            access::add_keys
        )
    }

    async fn remove_authorized_keys(
        &self,
        request: Request<pb::RemoveAuthorizedKeysRequest>,
    ) -> Result<Response<pb::RemoveAuthorizedKeysResponse>, Status> {
        let r = request.get_ref();
        let keys = access::parse_keys(&r.keys)?;
        let detail = access::keys_info(&r.username, &keys, false);
        unary!(
            self,
            Action::RemoveAuthorizedKeys(detail),
            request,
            request.get_ref().domain.clone(),
            access::remove_keys
        )
    }

    async fn sync_time(
        &self,
        request: Request<pb::SyncTimeRequest>,
    ) -> Result<Response<pb::SyncTimeResponse>, Status> {
        unary!(
            self,
            Action::SyncTime,
            request,
            request.get_ref().domain.clone(),
            admin::sync_time
        )
    }
}
