//! The async agent client: typed commands over any transport.

use std::time::Duration;

use super::{
    Command, QgaError,
    commands::{AgentInfo, GuestGetOsinfo, GuestInfo, GuestPing, OsInfo},
};
use crate::transport::{AgentReply, AgentRequest, Transport};

/// Default deadline for one short agent command (ping, info, a status poll).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs typed QGA commands against one agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    transport: Transport,
    timeout: Duration,
}

impl AgentClient {
    /// A client with [`DEFAULT_TIMEOUT`] per command.
    pub fn new(transport: impl Into<Transport>) -> Self {
        Self {
            transport: transport.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-command deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-command deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The transport underneath.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Runs `cmd` with the client's deadline.
    pub async fn call<C: Command>(&self, cmd: &C) -> Result<C::Reply, QgaError> {
        self.call_with_timeout(cmd, self.timeout).await
    }

    /// Runs `cmd` with an explicit deadline.
    pub async fn call_with_timeout<C: Command>(
        &self,
        cmd: &C,
        timeout: Duration,
    ) -> Result<C::Reply, QgaError> {
        let request = encode(cmd)?;
        match self.transport.call(request, timeout).await? {
            AgentReply::Return(raw) => {
                serde_json::from_slice(&raw).map_err(|source| QgaError::Decode {
                    command: C::NAME,
                    source,
                })
            }
            AgentReply::Error { class, desc } => Err(QgaError::Agent {
                command: C::NAME,
                class,
                desc,
            }),
        }
    }

    /// `guest-ping`.
    pub async fn ping(&self) -> Result<(), QgaError> {
        self.call(&GuestPing).await.map(drop)
    }

    /// `guest-info`.
    pub async fn info(&self) -> Result<AgentInfo, QgaError> {
        self.call(&GuestInfo).await
    }

    /// `guest-get-osinfo`.
    pub async fn osinfo(&self) -> Result<OsInfo, QgaError> {
        self.call(&GuestGetOsinfo).await
    }
}

/// Serialises a command; unit structs (serialised as `null`) get no `arguments`.
fn encode<C: Command>(cmd: &C) -> Result<AgentRequest, QgaError> {
    let args = serde_json::to_string(cmd).map_err(|source| QgaError::Encode {
        command: C::NAME,
        source,
    })?;
    Ok(AgentRequest {
        execute: C::NAME.to_owned(),
        arguments: (args != "null").then_some(args),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct WithArgs {
        handle: i64,
    }
    impl Command for WithArgs {
        const NAME: &'static str = "guest-file-close";
        type Reply = serde_json::Value;
    }

    #[test]
    fn unit_commands_have_no_arguments() {
        assert!(encode(&GuestPing).unwrap().arguments.is_none());
        let r = encode(&WithArgs { handle: 1000 }).unwrap();
        assert_eq!(r.arguments.as_deref(), Some(r#"{"handle":1000}"#));
    }
}
