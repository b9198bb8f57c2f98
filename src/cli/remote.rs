//! Read-only client commands: `atp ls`, `ping`, `info`, `osinfo`, `tasks`.

use clap::ValueEnum;
use ocloudview_atp::pb;
use serde_json::json;

use super::client::{ClientError, Connection, explain};

/// How read commands print.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

fn print(output: Output, json: serde_json::Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
        Output::Text => print!("{}", text()),
    }
}

/// `atp ls`
pub async fn ls(conn: &Connection, output: Output) -> Result<(), ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let r = c
        .list_domains(pb::ListDomainsRequest {})
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let json = json!(
        r.domains
            .iter()
            .map(|d| json!({
                "name": d.name, "hypervisor": d.hypervisor, "state": d.state,
                "agent_connected": d.agent_connected, "os_id": d.os_id, "uuid": d.uuid,
            }))
            .collect::<Vec<_>>()
    );
    print(output, json, || {
        let mut s = format!("{:<32} {:<10} {:<6} {}\n", "NAME", "STATE", "AGENT", "OS");
        for d in &r.domains {
            let agent = if d.agent_connected { "yes" } else { "no" };
            s.push_str(&format!(
                "{:<32} {:<10} {:<6} {}\n",
                d.name, d.state, agent, d.os_id
            ));
        }
        s
    });
    Ok(())
}

/// `atp ping DOM`
pub async fn ping(conn: &Connection, domain: String, output: Output) -> Result<(), ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let r = c
        .ping(pb::PingRequest {
            domain: domain.clone(),
        })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    print(
        output,
        json!({ "domain": domain, "latency_us": r.latency_us }),
        || {
            format!(
                "{domain}: agent answered in {:.2} ms\n",
                r.latency_us as f64 / 1000.0
            )
        },
    );
    Ok(())
}

/// `atp info DOM`
pub async fn info(conn: &Connection, domain: String, output: Output) -> Result<(), ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let a = c
        .get_agent_info(pb::GetAgentInfoRequest {
            domain: domain.clone(),
        })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let g = c
        .get_guest_info(pb::GetGuestInfoRequest {
            domain: domain.clone(),
        })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let enabled: Vec<&str> = a
        .supported_commands
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.name.as_str())
        .collect();
    let disabled: Vec<&str> = a
        .supported_commands
        .iter()
        .filter(|c| !c.enabled)
        .map(|c| c.name.as_str())
        .collect();
    let json = json!({
        "domain": domain, "agent_version": a.version, "enabled_commands": enabled, "disabled_commands": disabled,
        "hostname": g.hostname, "timezone": g.timezone, "vcpus_online": g.vcpus_online,
        "users": g.users.iter().map(|u| &u.user).collect::<Vec<_>>(),
        "interfaces": g.interfaces.iter().map(|i| json!({"name": i.name, "mac": i.hardware_address, "ips": i.ip_addresses})).collect::<Vec<_>>(),
        "filesystems": g.filesystems.iter().map(|f| json!({"mountpoint": f.mountpoint, "type": f.r#type, "used_bytes": f.used_bytes, "total_bytes": f.total_bytes})).collect::<Vec<_>>(),
        "unavailable": g.unavailable,
    });
    print(output, json, || {
        let mut s = format!("agent     qemu-ga {}\n", a.version);
        s.push_str(&format!(
            "hostname  {}\n",
            g.hostname.clone().unwrap_or_default()
        ));
        s.push_str(&format!(
            "timezone  {}\n",
            g.timezone.clone().unwrap_or_default()
        ));
        if let Some(v) = g.vcpus_online {
            s.push_str(&format!("vcpus     {v} online\n"));
        }
        for i in &g.interfaces {
            s.push_str(&format!(
                "nic       {} {} {}\n",
                i.name,
                i.hardware_address,
                i.ip_addresses.join(" ")
            ));
        }
        s.push_str(&format!(
            "commands  {} enabled, {} disabled\n",
            enabled.len(),
            disabled.len()
        ));
        if !disabled.is_empty() {
            s.push_str(&format!("disabled  {}\n", disabled.join(" ")));
        }
        s
    });
    Ok(())
}

/// `atp osinfo DOM`
pub async fn osinfo(conn: &Connection, domain: String, output: Output) -> Result<(), ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let o = c
        .get_os_info(pb::GetOsInfoRequest { domain })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let json = json!({
        "id": o.id, "name": o.name, "pretty_name": o.pretty_name, "version": o.version, "version_id": o.version_id,
        "kernel_release": o.kernel_release, "kernel_version": o.kernel_version, "machine": o.machine,
    });
    print(output, json, || {
        format!(
            "{}\nid {} version {}\nkernel {} ({})\n",
            o.pretty_name, o.id, o.version_id, o.kernel_release, o.machine
        )
    });
    Ok(())
}

/// `atp tasks DOM`
pub async fn tasks(conn: &Connection, domain: String, output: Output) -> Result<(), ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let r = c
        .list_tasks(pb::ListTasksRequest { domain })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let json = json!(r.tasks.iter().map(|t| json!({
        "name": t.name, "description": t.description,
        "params": t.params.iter().map(|p| json!({"name": p.name, "allowed_values": p.allowed_values})).collect::<Vec<_>>(),
    })).collect::<Vec<_>>());
    print(output, json, || {
        let mut s = String::new();
        for t in &r.tasks {
            let params: Vec<String> = t
                .params
                .iter()
                .map(|p| format!("{}={}", p.name, p.allowed_values.join("|")))
                .collect();
            s.push_str(&format!(
                "{:<20} {:<40} {}\n",
                t.name,
                t.description,
                params.join(" ")
            ));
        }
        s
    });
    Ok(())
}
