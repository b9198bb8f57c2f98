//! The async agent client: typed commands over any transport.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    Command, QgaError,
    commands::{AgentInfo, GuestGetOsinfo, GuestInfo, GuestPing, OsInfo},
};
use crate::sync::lock;
use crate::transport::{AgentReply, AgentRequest, Transport};

/// Default deadline for one short agent command (ping, info, a status poll).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on file handles one client (all its clones) holds open on its agent
/// through [`AgentClient::open`]: well below qemu-ga's ~1,023 fds, so exec and other
/// callers always have some left.
pub const DEFAULT_OPEN_HANDLES: usize = 256;

/// Runs typed QGA commands against one agent. Cheap to clone; clones share the
/// connection and what is known about the agent.
///
/// Before a command other than ping/info, the agent's command table (`guest-info`, fetched
/// once and kept until the connection fails) is consulted: a command the guest disables
/// fails here with [`QgaError::CommandDisabled`], without a round trip.
///
/// ```no_run
/// use ocloudview_atp::qga::{AgentClient, ExecEvent, GuestExecCommand};
/// use ocloudview_atp::transport::socket::SocketTransport;
///
/// # async fn demo() -> Result<(), ocloudview_atp::qga::QgaError> {
/// let agent = AgentClient::new(SocketTransport::new("/run/qemu/vm1/qga.sock"));
/// agent.ping().await?;
/// let cmd = GuestExecCommand::simple("/bin/sh", vec!["-c".into(), "for i in 1 2 3; do echo $i; sleep 1; done".into()]);
/// let mut run = agent.exec_stream(&cmd).await?;
/// while let Some(event) = run.next_event().await? {
///     match event {
///         ExecEvent::Stdout(bytes) => print!("{}", String::from_utf8_lossy(&bytes)),
///         ExecEvent::Stderr(bytes) => eprint!("{}", String::from_utf8_lossy(&bytes)),
///         ExecEvent::Exited(exit) => println!("exit {:?}", exit.exit_code),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AgentClient {
    transport: Transport,
    timeout: Duration,
    state: Arc<AgentState>,
}

/// What a client learned about its agent, and the handles it may hold there. Each mutex
/// guards plain data and is held only for a lookup or an insert, never across an `.await`.
#[derive(Debug)]
pub(crate) struct AgentState {
    caps: Mutex<Option<Arc<AgentInfo>>>,
    os: Mutex<Option<Arc<OsInfo>>>,
    /// Processes started with captured output redirected to guest files (pid → dir).
    pub(crate) redirected: Mutex<HashMap<i64, String>>,
    /// One permit per guest file handle [`AgentClient::open`] may hold at once.
    pub(crate) handles: Arc<tokio::sync::Semaphore>,
    /// The number of permits `handles` started with (for the error message).
    pub(crate) handle_limit: usize,
    /// A Windows guest's OEM code page, once learnt (`codepage`).
    pub(crate) oem_code_page: Mutex<Option<u16>>,
    /// Exec directories made ahead, when enabled ([`AgentClient::with_exec_dir_pool`]).
    pub(crate) pool: std::sync::OnceLock<super::dirpool::DirPool>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self::with_handle_limit(DEFAULT_OPEN_HANDLES)
    }
}

impl AgentState {
    fn with_handle_limit(limit: usize) -> Self {
        let limit = limit.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            caps: Mutex::default(),
            os: Mutex::default(),
            redirected: Mutex::default(),
            handles: Arc::new(tokio::sync::Semaphore::new(limit)),
            handle_limit: limit,
            oem_code_page: Mutex::default(),
            pool: std::sync::OnceLock::new(),
        }
    }

    fn forget(&self) {
        *lock(&self.caps) = None;
        *lock(&self.os) = None;
        *lock(&self.oem_code_page) = None;
        if let Some(pool) = self.pool.get() {
            pool.clear();
        }
    }
}

/// A command queued by [`AgentClient::submit`] whose reply has not been awaited yet.
#[derive(Debug)]
pub struct Submitted<C: Command> {
    client: AgentClient,
    ticket: crate::transport::Ticket,
    _cmd: std::marker::PhantomData<fn() -> C>,
}

impl<C: Command> Submitted<C> {
    /// Waits for the typed reply.
    pub async fn reply(self) -> Result<C::Reply, QgaError> {
        let r = self.ticket.wait().await;
        self.client.decode::<C>(r)
    }
}

/// Commands that need no capability check (they are how we learn capabilities).
const UNCHECKED: &[&str] = &[
    "guest-ping",
    "guest-info",
    "guest-sync",
    "guest-sync-delimited",
];

impl AgentClient {
    /// A client with [`DEFAULT_TIMEOUT`] per command.
    pub fn new(transport: impl Into<Transport>) -> Self {
        Self {
            transport: transport.into(),
            timeout: DEFAULT_TIMEOUT,
            state: Arc::default(),
        }
    }

    pub(crate) fn state(&self) -> &AgentState {
        &self.state
    }

    /// The same client with at most `limit` guest file handles open at once through
    /// [`AgentClient::open`] (default 256); an open beyond it fails at
    /// once with [`QgaError::LimitExceeded`]. The bound is shared by the clones made from
    /// the returned client: call this while building the client, before cloning it (it
    /// starts a fresh shared state, so cached agent facts are fetched again).
    pub fn with_handle_limit(mut self, limit: usize) -> Self {
        self.state = Arc::new(AgentState::with_handle_limit(limit));
        self
    }

    /// The same client keeping `target` exec directories made ahead and removing finished
    /// ones in the background (see `dirpool`): a streamed exec then starts one guest
    /// process instead of three. For long-lived clients (the daemon): a process that exits
    /// right after its exec may leave a directory for a later sweep. Call it while
    /// building the client, before cloning it.
    pub fn with_exec_dir_pool(self, target: usize) -> Self {
        let _ = self.state.pool.set(super::dirpool::DirPool::new(target));
        self
    }

    /// Guest file handles [`AgentClient::open`] holds right now (for metrics and tests).
    pub fn open_handles(&self) -> usize {
        self.state.handle_limit - self.state.handles.available_permits()
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
        if !UNCHECKED.contains(&C::NAME) {
            self.ensure_enabled(C::NAME).await?;
        }
        self.send(cmd, timeout).await
    }

    /// Queues `cmd` (capability-checked) and returns once it is queued; await the typed
    /// reply with [`Submitted::reply`]. Commands one task submits in turn run in that order,
    /// which lets a reader keep the next chunk request in flight.
    pub async fn submit<C: Command>(&self, cmd: &C) -> Result<Submitted<C>, QgaError> {
        if !UNCHECKED.contains(&C::NAME) {
            self.ensure_enabled(C::NAME).await?;
        }
        let ticket = self.transport.submit(encode(cmd)?, self.timeout).await?;
        Ok(Submitted {
            client: self.clone(),
            ticket,
            _cmd: std::marker::PhantomData,
        })
    }

    /// Sends without the capability check.
    async fn send<C: Command>(&self, cmd: &C, timeout: Duration) -> Result<C::Reply, QgaError> {
        let request = encode(cmd)?;
        let started = std::time::Instant::now();
        let reply = self.transport.call(request, timeout).await;
        // `ATP_LOG=ocloudview_atp::qga::client=trace`: every call and its wall time.
        tracing::trace!(command = C::NAME, took = ?started.elapsed(), "agent call");
        self.decode::<C>(reply)
    }

    fn decode<C: Command>(
        &self,
        reply: Result<AgentReply, crate::transport::TransportError>,
    ) -> Result<C::Reply, QgaError> {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, crate::transport::TransportError::Timeout(_)) {
                    // The agent may have restarted with other settings.
                    self.state.forget();
                }
                return Err(e.into());
            }
        };
        match reply {
            AgentReply::Return(raw) => {
                serde_json::from_slice(&raw).map_err(|source| QgaError::Decode {
                    command: C::NAME.into(),
                    source,
                })
            }
            AgentReply::Error { class, desc } => Err(QgaError::Agent {
                command: C::NAME.into(),
                class,
                desc,
            }),
        }
    }

    /// Sends `command` with raw JSON `arguments` (an object) and returns the raw JSON of
    /// the agent's `return` value. For commands without a typed API; capability-checked.
    pub async fn call_raw(
        &self,
        command: &str,
        arguments: Option<String>,
        timeout: Duration,
    ) -> Result<Vec<u8>, QgaError> {
        if !UNCHECKED.contains(&command) {
            self.ensure_enabled(command).await?;
        }
        let request = AgentRequest {
            execute: command.to_owned(),
            arguments,
            expects_reply: true,
        };
        match self.transport.call(request, timeout).await? {
            AgentReply::Return(raw) => Ok(raw),
            AgentReply::Error { class, desc } => Err(QgaError::Agent {
                command: command.to_owned(),
                class,
                desc,
            }),
        }
    }

    /// The OS info cached from an earlier call, if any (no round trip).
    pub fn cached_os(&self) -> Option<Arc<OsInfo>> {
        lock(&self.state.os).clone()
    }

    /// `guest-ping`.
    pub async fn ping(&self) -> Result<(), QgaError> {
        self.call(&GuestPing).await.map(drop)
    }

    /// `guest-info`; also refreshes the cached command table.
    pub async fn info(&self) -> Result<AgentInfo, QgaError> {
        let info = self.send(&GuestInfo, self.timeout).await?;
        *lock(&self.state.caps) = Some(Arc::new(info.clone()));
        Ok(info)
    }

    /// The agent's command table, from the cache when known.
    pub async fn capabilities(&self) -> Result<Arc<AgentInfo>, QgaError> {
        if let Some(c) = lock(&self.state.caps).clone() {
            return Ok(c);
        }
        self.info().await.map(Arc::new)
    }

    /// Fails with [`QgaError::CommandDisabled`] when the guest disables `command`.
    /// Commands the agent does not list are let through: the agent answers for them.
    pub async fn ensure_enabled(&self, command: &str) -> Result<(), QgaError> {
        let caps = self.capabilities().await?;
        match caps.command(command) {
            Some(c) if !c.enabled => Err(QgaError::CommandDisabled {
                command: command.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// `guest-get-osinfo`.
    pub async fn osinfo(&self) -> Result<OsInfo, QgaError> {
        let os = self.call(&GuestGetOsinfo).await?;
        *lock(&self.state.os) = Some(Arc::new(os.clone()));
        Ok(os)
    }

    /// The guest's OS, from the cache when known (used to pick the shell).
    pub async fn os(&self) -> Result<Arc<OsInfo>, QgaError> {
        if let Some(o) = lock(&self.state.os).clone() {
            return Ok(o);
        }
        self.osinfo().await.map(Arc::new)
    }
}

/// Serialises a command; unit structs (serialised as `null`) get no `arguments`.
fn encode<C: Command>(cmd: &C) -> Result<AgentRequest, QgaError> {
    let args = serde_json::to_string(cmd).map_err(|source| QgaError::Encode {
        command: C::NAME.into(),
        source,
    })?;
    // qemu-ga's JSON parser rejects Unicode noncharacters with an error that carries no
    // request id; refuse them here with a clear message instead.
    if !args.is_ascii() && args.chars().any(is_noncharacter) {
        return Err(QgaError::InvalidArgument(format!(
            "{}: arguments contain a Unicode noncharacter, which the guest agent rejects",
            C::NAME
        )));
    }
    Ok(AgentRequest {
        execute: C::NAME.to_owned(),
        arguments: (args != "null").then_some(args),
        expects_reply: C::SUCCESS_RESPONSE,
    })
}

/// U+FDD0..=U+FDEF and the last two code points of every plane.
fn is_noncharacter(c: char) -> bool {
    let u = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE
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
