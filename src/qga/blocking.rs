//! [`QgaClient`]: the blocking API of the seed guide, a thin facade over [`AgentClient`].
//!
//! Calls run on one small runtime shared by all blocking clients in the process (two
//! worker threads, started on first use), so the API can be used from plain threads.
//! Do not call it from async code: use [`AgentClient`] there.

use std::{path::Path, sync::OnceLock, time::Duration};

use tokio::runtime::Runtime;

use super::{
    AgentClient, ExecResult, GuestExecCommand, QgaError,
    commands::{AgentInfo, ExecStatus, FileRead, FileWrite, OsInfo},
};
use crate::{
    libvirt::Domain,
    transport::{libvirt_agent::LibvirtTransport, socket::SocketTransport},
};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atp-qga-blocking")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the QGA client runtime: {e}"))
    })
}

/// A blocking guest-agent client for one guest, over libvirt or a direct agent socket.
///
/// ```no_run
/// use std::time::Duration;
/// use ocloudview_atp::libvirt::LibvirtManager;
/// use ocloudview_atp::qga::{GuestExecCommand, QgaClient};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let libvirt = LibvirtManager::connect()?;
/// let domain = libvirt.lookup_domain_by_name("test-vm")?;
/// let qga = QgaClient::new(&domain).with_timeout(30);
/// qga.ping()?;
///
/// let result = qga.exec_shell("ls -la /tmp")?;
/// println!("{:?} {:?}", result.exit_code, result.decode_stdout());
///
/// let cmd = GuestExecCommand::simple("/bin/sleep", vec!["1".to_string()]);
/// let done = qga.exec_and_wait(cmd, Duration::from_millis(500))?;
/// assert!(done.success());
///
/// qga.write_file("/tmp/test.txt", "Hello from QGA")?;
/// let hostname = qga.read_file("/etc/hostname")?;
/// println!("{}", hostname.trim());
/// # Ok(())
/// # }
/// ```
///
/// A guest reached through its agent socket (plain QEMU, no libvirt):
///
/// ```no_run
/// # use ocloudview_atp::qga::QgaClient;
/// let qga = QgaClient::from_socket("/run/qemu/vm1/qga.sock");
/// println!("{:?}", qga.get_osinfo()?.pretty_name);
/// # Ok::<(), ocloudview_atp::qga::QgaError>(())
/// ```
#[derive(Debug, Clone)]
pub struct QgaClient {
    inner: AgentClient,
}

impl QgaClient {
    /// A client for a libvirt domain (through `virDomainQemuAgentCommand`).
    pub fn new(domain: &Domain) -> Self {
        let name = domain.name().unwrap_or_else(|_| "domain".into());
        let _guard = runtime().enter();
        Self {
            inner: AgentClient::new(LibvirtTransport::new(domain.clone(), name)),
        }
    }

    /// A client for an agent's UNIX socket (plain QEMU chardev or `qemu-ga -m unix-listen`).
    pub fn from_socket(path: impl AsRef<Path>) -> Self {
        let _guard = runtime().enter();
        Self {
            inner: AgentClient::new(SocketTransport::new(path.as_ref())),
        }
    }

    /// The same client with a per-command deadline of `secs` seconds.
    pub fn with_timeout(self, secs: u64) -> Self {
        Self {
            inner: self.inner.with_timeout(Duration::from_secs(secs.max(1))),
        }
    }

    /// The async client underneath.
    pub fn async_client(&self) -> &AgentClient {
        &self.inner
    }

    fn run<T>(&self, f: impl Future<Output = Result<T, QgaError>>) -> Result<T, QgaError> {
        runtime().block_on(f)
    }

    /// `guest-ping`.
    pub fn ping(&self) -> Result<(), QgaError> {
        self.run(self.inner.ping())
    }

    /// `guest-info`: version and supported commands.
    pub fn get_info(&self) -> Result<AgentInfo, QgaError> {
        self.run(self.inner.info())
    }

    /// `guest-get-osinfo`.
    pub fn get_osinfo(&self) -> Result<OsInfo, QgaError> {
        self.run(self.inner.osinfo())
    }

    /// Runs `cmdline` with the guest's shell and waits for it.
    pub fn exec_shell(&self, cmdline: &str) -> Result<ExecResult, QgaError> {
        self.run(self.inner.exec_shell(cmdline))
    }

    /// Starts `cmd`; returns the guest pid.
    pub fn exec(&self, cmd: GuestExecCommand) -> Result<i64, QgaError> {
        self.run(self.inner.exec(&cmd))
    }

    /// Status of `pid`; captured output comes with the first `exited: true`.
    pub fn exec_status(&self, pid: i64) -> Result<ExecStatus, QgaError> {
        self.run(self.inner.exec_status(pid))
    }

    /// Runs `cmd` and polls every `poll` until it exits.
    pub fn exec_and_wait(
        &self,
        cmd: GuestExecCommand,
        poll: Duration,
    ) -> Result<ExecResult, QgaError> {
        self.run(self.inner.exec_and_wait(&cmd, poll))
    }

    /// Reads a whole file as text (invalid UTF-8 replaced; see [`QgaClient::read_file_bytes`]).
    pub fn read_file(&self, path: &str) -> Result<String, QgaError> {
        let bytes = self.read_file_bytes(path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Reads a whole file, in bounded chunks.
    pub fn read_file_bytes(&self, path: &str) -> Result<Vec<u8>, QgaError> {
        self.run(self.inner.read_file(path))
    }

    /// Creates or truncates `path` with `content`.
    pub fn write_file(&self, path: &str, content: impl AsRef<[u8]>) -> Result<(), QgaError> {
        self.run(self.inner.write_file(path, content.as_ref()))
    }

    /// `guest-file-open` (`mode` defaults to `r`); close the handle with `file_close`.
    pub fn file_open(&self, path: &str, mode: Option<&str>) -> Result<i64, QgaError> {
        self.run(self.inner.file_open(path, mode))
    }

    /// `guest-file-read` of up to `count` bytes (4096 by default; clamped per transport).
    pub fn file_read(&self, handle: i64, count: Option<usize>) -> Result<FileRead, QgaError> {
        self.run(self.inner.file_read(handle, count))
    }

    /// `guest-file-write` of `data`.
    pub fn file_write(&self, handle: i64, data: &[u8]) -> Result<FileWrite, QgaError> {
        self.run(self.inner.file_write(handle, data))
    }

    /// `guest-file-flush`.
    pub fn file_flush(&self, handle: i64) -> Result<(), QgaError> {
        self.run(self.inner.file_flush(handle))
    }

    /// `guest-file-close`.
    pub fn file_close(&self, handle: i64) -> Result<(), QgaError> {
        self.run(self.inner.file_close(handle))
    }
}
