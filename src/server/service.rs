//! The `GuestAgent` gRPC service: each method converts the request, resolves the guest,
//! runs the typed agent command and converts the reply.

use std::{sync::Arc, time::Instant};

use tonic::{Request, Response, Status};

use super::status::ApiError;
use crate::{
    guests::GuestRegistry,
    pb::{self, guest_agent_server::GuestAgent},
    qga::{AgentClient, QgaError},
    transport::TransportError,
};

/// The service; clones share the registry.
#[derive(Debug, Clone)]
pub struct GuestAgentService {
    guests: Arc<GuestRegistry>,
}

impl GuestAgentService {
    /// A service over `guests`.
    pub fn new(guests: Arc<GuestRegistry>) -> Self {
        Self { guests }
    }

    async fn client(&self, domain: &str) -> Result<AgentClient, ApiError> {
        if domain.is_empty() {
            return Err(ApiError::InvalidArgument("domain must not be empty".into()));
        }
        Ok(self.guests.resolve(domain).await?)
    }

    /// Maps an agent error, forgetting a cached guest that libvirt says is gone.
    fn agent_error(&self, domain: &str, e: QgaError) -> Status {
        if matches!(e, QgaError::Transport(TransportError::DomainNotFound(_))) {
            self.guests.forget(domain);
        }
        ApiError::Qga(e).into()
    }
}

#[tonic::async_trait]
impl GuestAgent for GuestAgentService {
    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let domain = request.into_inner().domain;
        let client = self.client(&domain).await?;
        let started = Instant::now();
        client
            .ping()
            .await
            .map_err(|e| self.agent_error(&domain, e))?;
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::PingResponse { latency_us }))
    }

    async fn get_agent_info(
        &self,
        request: Request<pb::GetAgentInfoRequest>,
    ) -> Result<Response<pb::GetAgentInfoResponse>, Status> {
        let domain = request.into_inner().domain;
        let client = self.client(&domain).await?;
        let info = client
            .info()
            .await
            .map_err(|e| self.agent_error(&domain, e))?;
        Ok(Response::new(pb::GetAgentInfoResponse {
            version: info.version,
            supported_commands: info
                .supported_commands
                .into_iter()
                .map(|c| pb::AgentCommandInfo {
                    name: c.name,
                    enabled: c.enabled,
                    success_response: c.success_response,
                })
                .collect(),
        }))
    }

    async fn get_os_info(
        &self,
        request: Request<pb::GetOsInfoRequest>,
    ) -> Result<Response<pb::GetOsInfoResponse>, Status> {
        let domain = request.into_inner().domain;
        let client = self.client(&domain).await?;
        let os = client
            .osinfo()
            .await
            .map_err(|e| self.agent_error(&domain, e))?;
        Ok(Response::new(pb::GetOsInfoResponse {
            id: os.id.unwrap_or_default(),
            name: os.name.unwrap_or_default(),
            pretty_name: os.pretty_name.unwrap_or_default(),
            version: os.version.unwrap_or_default(),
            version_id: os.version_id.unwrap_or_default(),
            kernel_release: os.kernel_release.unwrap_or_default(),
            kernel_version: os.kernel_version.unwrap_or_default(),
            machine: os.machine.unwrap_or_default(),
            variant: os.variant.unwrap_or_default(),
            variant_id: os.variant_id.unwrap_or_default(),
        }))
    }
}
