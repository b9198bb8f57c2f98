//! Guest facts: Ping, GetAgentInfo, GetOsInfo, GetGuestInfo, ListDomains. (The raw
//! AgentCommand passthrough is in `passthrough.rs`.)

use std::time::Instant;

use tonic::Status;

use super::{gate::Call, guests::Listed, service::GuestAgentService};
use crate::{
    pb,
    qga::{
        QgaError,
        commands::{
            GuestGetDisks, GuestGetFsinfo, GuestGetHostName, GuestGetTimezone, GuestGetUsers,
            GuestGetVcpus, GuestNetworkGetInterfaces,
        },
    },
};

pub(crate) async fn ping(
    s: &GuestAgentService,
    call: &Call,
    _: pb::PingRequest,
) -> Result<pb::PingResponse, Status> {
    let client = s.client(call).await?;
    let started = Instant::now();
    client
        .ping()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok(pb::PingResponse { latency_us })
}

pub(crate) async fn agent_info(
    s: &GuestAgentService,
    call: &Call,
    _: pb::GetAgentInfoRequest,
) -> Result<pb::GetAgentInfoResponse, Status> {
    let client = s.client(call).await?;
    let info = client
        .info()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::GetAgentInfoResponse {
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
    })
}

pub(crate) async fn os_info(
    s: &GuestAgentService,
    call: &Call,
    _: pb::GetOsInfoRequest,
) -> Result<pb::GetOsInfoResponse, Status> {
    let client = s.client(call).await?;
    let os = client
        .osinfo()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::GetOsInfoResponse {
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
    })
}

pub(crate) async fn list_domains(
    s: &GuestAgentService,
    call: &Call,
    _: pb::ListDomainsRequest,
) -> Result<pb::ListDomainsResponse, Status> {
    let listed = s.shared.guests.list_and_ping(call).await?;
    let domains = listed.into_iter().map(domain_info).collect();
    Ok(pb::ListDomainsResponse { domains })
}

fn domain_info(l: Listed) -> pb::DomainInfo {
    let e = l.entry;
    pb::DomainInfo {
        name: e.name,
        hypervisor: e.hypervisor.unwrap_or_default(),
        state: e.state,
        agent_connected: l.agent_connected,
        os_id: l.os_id.unwrap_or_default(),
        uuid: e.uuid.unwrap_or_default(),
    }
}

pub(crate) async fn guest_info(
    s: &GuestAgentService,
    call: &Call,
    _: pb::GetGuestInfoRequest,
) -> Result<pb::GetGuestInfoResponse, Status> {
    let client = s.client(call).await?;
    // Fail fast (with a mapped error) when the agent is not there at all.
    client
        .ping()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    let mut out = pb::GetGuestInfoResponse::default();
    let u = &mut out.unavailable;
    let host = section(client.call(&GuestGetHostName).await, "hostname", u);
    let tz = section(client.call(&GuestGetTimezone).await, "timezone", u);
    let users = section(client.call(&GuestGetUsers).await, "users", u);
    let fs = section(client.call(&GuestGetFsinfo).await, "filesystems", u);
    let nics = section(
        client.call(&GuestNetworkGetInterfaces).await,
        "interfaces",
        u,
    );
    let cpus = section(client.call(&GuestGetVcpus).await, "vcpus", u);
    let disks = section(client.call(&GuestGetDisks).await, "disks", u);
    out.hostname = host.map(|h| h.host_name);
    if let Some(tz) = tz {
        out.timezone = tz.zone;
        out.timezone_offset_s = Some(tz.offset);
    }
    out.users = users
        .unwrap_or_default()
        .into_iter()
        .map(|u| pb::GuestUser {
            user: u.user,
            login_time: u.login_time,
            domain: u.domain.unwrap_or_default(),
        })
        .collect();
    out.filesystems = fs
        .unwrap_or_default()
        .into_iter()
        .map(|f| pb::GuestFilesystem {
            name: f.name,
            mountpoint: f.mountpoint,
            r#type: f.fs_type,
            used_bytes: f.used_bytes,
            total_bytes: f.total_bytes,
        })
        .collect();
    out.interfaces = nics
        .unwrap_or_default()
        .into_iter()
        .map(|n| pb::GuestInterface {
            name: n.name,
            hardware_address: n.hardware_address.unwrap_or_default(),
            ip_addresses: n
                .ip_addresses
                .iter()
                .map(|a| format!("{}/{}", a.ip_address, a.prefix))
                .collect(),
        })
        .collect();
    out.vcpus_online = cpus.map(|c| c.iter().filter(|p| p.online).count() as u32);
    out.disks = disks
        .unwrap_or_default()
        .into_iter()
        .map(|d| pb::GuestDisk {
            name: d.name,
            partition: d.partition,
            alias: d.alias.unwrap_or_default(),
        })
        .collect();
    Ok(out)
}

/// A section of GetGuestInfo, or the reason it is missing (disabled, unsupported, failed).
fn section<T>(
    res: Result<T, QgaError>,
    name: &str,
    unavailable: &mut std::collections::HashMap<String, String>,
) -> Option<T> {
    res.map_err(|e| {
        tracing::debug!(section = name, error = %e, "guest info section unavailable");
        unavailable.insert(name.to_owned(), e.to_string());
    })
    .ok()
}
