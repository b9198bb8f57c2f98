//! `guest-info`: the agent's version and its command table.

use serde::{Deserialize, Serialize};

use crate::qga::Command;

/// `guest-info`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestInfo;

/// What `guest-info` returns.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AgentInfo {
    /// qemu-ga version, e.g. `7.2.22`.
    pub version: String,
    /// Every command the agent knows, enabled or not.
    #[serde(rename = "supported_commands")]
    pub supported_commands: Vec<SupportedCommand>,
}

/// One entry of the agent's command table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SupportedCommand {
    /// Command name, e.g. `guest-exec`.
    pub name: String,
    /// False when the guest blocks it (`--block-rpcs`, or not in `--allow-rpcs`).
    pub enabled: bool,
    /// False for commands that never answer (`guest-shutdown`, `guest-suspend-*`).
    #[serde(rename = "success-response", default = "yes")]
    pub success_response: bool,
}

fn yes() -> bool {
    true
}

impl AgentInfo {
    /// The table entry for `name`, if the agent knows the command.
    pub fn command(&self, name: &str) -> Option<&SupportedCommand> {
        self.supported_commands.iter().find(|c| c.name == name)
    }
}

impl Command for GuestInfo {
    const NAME: &'static str = "guest-info";
    type Reply = AgentInfo;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_agent_table_and_ignores_unknown_fields() {
        let info: AgentInfo = serde_json::from_str(
            r#"{"version":"7.2.22","supported_commands":[
                {"enabled":true,"name":"guest-ping","success-response":true},
                {"enabled":false,"name":"guest-shutdown","success-response":false,"new":1}]}"#,
        )
        .unwrap();
        assert_eq!(info.version, "7.2.22");
        assert!(info.command("guest-ping").unwrap().enabled);
        assert!(!info.command("guest-shutdown").unwrap().success_response);
        assert!(info.command("nope").is_none());
    }
}
