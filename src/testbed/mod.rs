//! A real test bed: qemu-ga on the host, tiny QEMU guests under TCG and an unprivileged
//! libvirtd, each started on demand and stopped when dropped.
//!
//! Used by the integration tests and by `atp demo`. Nothing here is a fake: every part is
//! the real program, in a temporary directory of its own, so many can run side by side.
//!
//! - [`HostAgent`]: `qemu-ga -m unix-listen` on the host, dangerous commands blocked;
//! - [`GuestImage`]: Debian's cloud kernel + a busybox/qemu-ga initramfs, built once and cached;
//! - [`DebianImage`]: a real Debian 12 (systemd, Debian's qemu-guest-agent, nginx, python3)
//!   built from Debian's mirror and cached the same way; slower to boot (about 10 s);
//! - [`QemuGuest`]: either image booted by plain QEMU, agent socket on the host;
//! - [`LibvirtSession`] / [`LibvirtDomain`]: a session libvirtd and a transient domain with two
//!   agent channels (one for libvirt, one bound to a host socket), of either image;
//! - [`SshServer`]: an sshd on 127.0.0.1 with throwaway keys, reaching a session libvirtd
//!   through libvirt's real remote transport (`qemu+ssh://`).

mod debian;
mod host_agent;
mod image;
mod libvirtd;
mod machine;
mod process;
mod qemu;
mod sshd;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

pub use debian::{DEBIAN_DIRECT_PORT, DEBIAN_HOSTNAME, DebianImage, qga_conf_blocking};
pub use host_agent::{HOST_BLOCKED_COMMANDS, HostAgent, listening};
pub use image::{Flavour, GuestImage};
pub use libvirtd::{LibvirtDomain, LibvirtSession, libvirtd_command};
pub use qemu::{BootOptions, DebianBootOptions, QemuGuest};
pub use sshd::SshServer;

use crate::{
    qga::AgentClient,
    transport::{Transport, socket::SocketTransport},
};

/// Why a test-bed component could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The program and its purpose.
        what: String,
        /// Exit status and the end of its output.
        detail: String,
    },
    /// Something did not become ready in time.
    #[error("{what} not ready after {waited:?}: {detail}")]
    NotReady {
        /// The component.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last error seen, and where to look.
        detail: String,
    },
    /// libvirt refused.
    #[error("libvirt: {0}")]
    Libvirt(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let context = context.into();
    move |source| TestbedError::Io { context, source }
}

/// Where built guest images and downloaded packages are kept between runs:
/// `$ATP_CACHE_DIR`, else `$XDG_CACHE_HOME/ocloudview-atp`, else `~/.cache/ocloudview-atp`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ATP_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ocloudview-atp")
}

/// Pings the agent behind `transport` until it answers or `limit` passes; each ping may
/// take 2 s at most.
pub async fn wait_for_agent(
    transport: impl Into<Transport>,
    what: &str,
    limit: Duration,
) -> Result<Duration, TestbedError> {
    let client = AgentClient::new(transport).with_timeout(Duration::from_secs(2));
    let start = Instant::now();
    loop {
        let err = match client.ping().await {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => e,
        };
        if start.elapsed() >= limit {
            return Err(TestbedError::NotReady {
                what: what.into(),
                waited: start.elapsed(),
                detail: err.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the agent on a UNIX socket; see [`wait_for_agent`].
///
/// The connection is closed before returning: the agent serves one client at a time.
pub async fn wait_for_socket_agent(
    socket: &std::path::Path,
    what: &str,
    limit: Duration,
) -> Result<Duration, TestbedError> {
    let transport = SocketTransport::new(socket);
    let res = wait_for_agent(transport.clone(), what, limit).await;
    transport.close().await;
    res
}
