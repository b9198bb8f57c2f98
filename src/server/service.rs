//! The `GuestAgent` service. Each RPC method is thin: it opens a [`Call`] (the caller's
//! identity, a span, metrics), converts the request and hands it to its module
//! (`facts`, `exec`, `files`). Policy and audit attach to [`GuestAgentService::begin`].

use std::{sync::Arc, time::Duration};

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{
    auth::{self, Caller},
    exec as exec_rpc,
    exec::ExecRegistry,
    facts, files,
    metrics::{self, RpcTimer},
    status::ApiError,
};
use crate::{
    guests::GuestRegistry,
    pb::{self, guest_agent_server::GuestAgent},
    qga::{AgentClient, QgaError},
    transport::TransportError,
};

/// Events buffered per response stream; a slow client makes the producer wait.
pub(crate) const STREAM_BUFFER: usize = 8;

/// A server-streaming response.
pub type EventStream<T> = ReceiverStream<Result<T, Status>>;

/// The service; clones share everything.
#[derive(Debug, Clone)]
pub struct GuestAgentService {
    pub(crate) shared: Arc<Shared>,
}

/// State shared by all requests.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) guests: Arc<GuestRegistry>,
    pub(crate) execs: ExecRegistry,
    pub(crate) shutdown: CancellationToken,
    pub(crate) exec_timeout: Duration,
}

/// One admitted request: who asked, for which RPC, timed for metrics.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) caller: Caller,
    pub(crate) rpc: &'static str,
    timer: RpcTimer,
}

impl Call {
    /// Records the outcome for metrics.
    pub(crate) fn finish<T>(self, result: &Result<T, Status>) {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        if code != tonic::Code::Ok {
            tracing::debug!(rpc = self.rpc, caller = %self.caller.id, ?code, "request failed");
        }
        self.timer.finish(code);
    }
}

impl GuestAgentService {
    /// A service over `guests`; `shutdown` ends open streams with UNAVAILABLE.
    pub fn new(
        guests: Arc<GuestRegistry>,
        shutdown: CancellationToken,
        exec_timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                guests,
                execs: ExecRegistry::default(),
                shutdown,
                exec_timeout,
            }),
        }
    }

    /// Closes the handles of parked execs (daemon shutdown).
    pub async fn close_parked(&self) {
        self.shared.execs.close_parked().await;
    }

    /// Admits a request: the authenticated caller, a span and a metrics timer.
    pub(crate) fn begin<T>(&self, rpc: &'static str, req: &Request<T>) -> Result<Call, Status> {
        let caller = auth::caller(req)?;
        tracing::debug!(rpc, caller = %caller.id, auth = caller.auth.as_str(), peer = %caller.peer, "request");
        Ok(Call {
            caller,
            rpc,
            timer: RpcTimer::start(rpc),
        })
    }

    /// The agent client of `domain`.
    pub(crate) async fn client(&self, domain: &str) -> Result<AgentClient, Status> {
        if domain.is_empty() {
            return Err(ApiError::InvalidArgument("domain must not be empty".into()).into());
        }
        let client = self
            .shared
            .guests
            .resolve(domain)
            .await
            .map_err(ApiError::from)?;
        metrics::queue_depth(domain, client.transport().queue_depth());
        Ok(client)
    }

    /// Maps an agent error, forgetting a cached guest that libvirt says is gone.
    pub(crate) fn agent_error(&self, domain: &str, e: QgaError) -> Status {
        if matches!(e, QgaError::Transport(TransportError::DomainNotFound(_))) {
            self.shared.guests.forget(domain);
        }
        ApiError::Qga(e).into()
    }
}

/// Runs a unary handler inside a [`Call`].
macro_rules! unary {
    ($self:ident, $rpc:literal, $req:ident, $handler:path) => {{
        let call = $self.begin($rpc, &$req)?;
        let res = $handler($self, &call, $req.into_inner())
            .await
            .map(Response::new);
        call.finish(&res);
        res
    }};
}

#[tonic::async_trait]
impl GuestAgent for GuestAgentService {
    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        unary!(self, "Ping", request, facts::ping)
    }

    async fn get_agent_info(
        &self,
        request: Request<pb::GetAgentInfoRequest>,
    ) -> Result<Response<pb::GetAgentInfoResponse>, Status> {
        unary!(self, "GetAgentInfo", request, facts::agent_info)
    }

    async fn get_os_info(
        &self,
        request: Request<pb::GetOsInfoRequest>,
    ) -> Result<Response<pb::GetOsInfoResponse>, Status> {
        unary!(self, "GetOsInfo", request, facts::os_info)
    }

    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        unary!(self, "ListDomains", request, facts::list_domains)
    }

    async fn get_guest_info(
        &self,
        request: Request<pb::GetGuestInfoRequest>,
    ) -> Result<Response<pb::GetGuestInfoResponse>, Status> {
        unary!(self, "GetGuestInfo", request, facts::guest_info)
    }

    async fn agent_command(
        &self,
        request: Request<pb::AgentCommandRequest>,
    ) -> Result<Response<pb::AgentCommandResponse>, Status> {
        unary!(self, "AgentCommand", request, facts::agent_command)
    }

    type ExecStream = EventStream<pb::ExecEvent>;

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let call = self.begin("Exec", &request)?;
        exec_rpc::exec(self, call, request.into_inner())
            .await
            .map(Response::new)
    }

    type ExecAttachStream = EventStream<pb::ExecEvent>;

    async fn exec_attach(
        &self,
        request: Request<pb::ExecAttachRequest>,
    ) -> Result<Response<Self::ExecAttachStream>, Status> {
        let call = self.begin("ExecAttach", &request)?;
        exec_rpc::attach(self, call, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec_cancel(
        &self,
        request: Request<pb::ExecCancelRequest>,
    ) -> Result<Response<pb::ExecCancelResponse>, Status> {
        unary!(self, "ExecCancel", request, exec_rpc::cancel)
    }

    type ReadFileStream = EventStream<pb::FileChunk>;

    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let call = self.begin("ReadFile", &request)?;
        files::read(self, call, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn write_file(
        &self,
        request: Request<Streaming<pb::WriteFileRequest>>,
    ) -> Result<Response<pb::WriteFileResponse>, Status> {
        let call = self.begin("WriteFile", &request)?;
        // A task of its own, so that a client that vanishes mid-upload still gets its
        // temp file removed and its handle closed (the stream then reports an error).
        let svc = self.clone();
        let stream = request.into_inner();
        let task = tokio::spawn(async move {
            let res = files::write(&svc, &call, stream).await;
            call.finish(&res);
            res
        });
        task.await
            .map_err(|e| Status::internal(format!("write task failed: {e}")))?
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let call = self.begin("ListTasks", &request)?;
        let res = Err(Status::unimplemented(
            "tasks come from policy plugins, which are not configured yet",
        ));
        call.finish(&res);
        res
    }

    type RunTaskStream = EventStream<pb::ExecEvent>;

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<Self::RunTaskStream>, Status> {
        let call = self.begin("RunTask", &request)?;
        let res = Err(Status::unimplemented(
            "tasks come from policy plugins, which are not configured yet",
        ));
        call.finish(&res);
        res
    }
}
