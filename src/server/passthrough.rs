//! AgentCommand: the raw QGA JSON passthrough for commands without a typed RPC (denied by
//! the baseline policy). The command name and arguments are checked and re-encoded here,
//! so the agent gets exactly what the policy saw.

use std::time::Duration;

use serde_json::Value;
use tonic::Status;

use super::{gate::Call, service::GuestAgentService, status::ApiError};
use crate::pb;

/// Commands AgentCommand refuses: the sync commands would break the daemon's own
/// connection discipline; typed RPCs exist for the rest and keep replies bounded.
const PASSTHROUGH_REFUSED: &[&str] = &[
    "guest-sync",
    "guest-sync-delimited",
    "guest-exec-status",
    "guest-file-read",
];

pub(crate) async fn agent_command(
    s: &GuestAgentService,
    call: &Call,
    r: pb::AgentCommandRequest,
) -> Result<pb::AgentCommandResponse, Status> {
    let valid_name = r.command.starts_with("guest-")
        && r.command.len() < 64
        && r.command
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        return Err(ApiError::InvalidArgument(format!(
            "not a guest agent command: {:?}",
            r.command
        ))
        .into());
    }
    if PASSTHROUGH_REFUSED.contains(&r.command.as_str()) {
        return Err(ApiError::InvalidArgument(format!(
            "{} is not available through AgentCommand; use the typed RPC (Exec, ReadFile)",
            r.command
        ))
        .into());
    }
    let arguments = if r.arguments_json.trim().is_empty() {
        None
    } else {
        // Sent re-encoded, never as given: the agent then gets exactly what the policy saw
        // (a duplicate key is resolved once, here), and nothing it cannot parse — qemu-ga
        // answers an unparsable request without an id, which no caller could be matched to.
        match serde_json::from_str::<Value>(&r.arguments_json) {
            Ok(v @ Value::Object(_)) => Some(v.to_string()),
            _ => {
                return Err(ApiError::InvalidArgument(
                    "arguments_json must be a JSON object".into(),
                )
                .into());
            }
        }
    };
    let client = s.client(call).await?;
    let timeout = if r.timeout_ms == 0 {
        client.timeout()
    } else {
        Duration::from_millis(r.timeout_ms)
    };
    let raw = client
        .call_raw(&r.command, arguments, timeout)
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::AgentCommandResponse {
        return_json: String::from_utf8_lossy(&raw).into_owned(),
    })
}
