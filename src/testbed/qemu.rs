//! The test guest booted by plain QEMU, its agent channel bound to a host socket.
//!
//! KVM is used only when asked for (`ATP_ACCEL=kvm`): on nested hosts `/dev/kvm` may open
//! yet run a guest hundreds of times slower than TCG.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use super::{
    DebianImage, Flavour, GuestImage, TestbedError, io_err, machine::Machine, process::Supervised,
    wait_for_socket_agent,
};

/// How to boot a [`QemuGuest`].
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Which initramfs.
    pub flavour: Flavour,
    /// Extra qemu-ga arguments inside the guest, e.g. `["-b", "guest-exec"]`.
    pub qga_args: Vec<String>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// How long to wait for the agent's first answer.
    pub ready_timeout: Duration,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self {
            flavour: Flavour::Debian,
            qga_args: Vec::new(),
            memory_mib: 512,
            ready_timeout: Duration::from_secs(180),
        }
    }
}

/// A running QEMU guest. Dropping it quits QEMU (QMP `quit`, then a kill).
#[derive(Debug)]
pub struct QemuGuest {
    dir: TempDir,
    process: Supervised,
    boot_time: Duration,
}

/// How to boot a [`QemuGuest`] from a [`DebianImage`]: the proven fast setup by default
/// (2 vCPUs, 1 GiB; 2 vCPUs are the biggest lever under TCG).
#[derive(Debug, Clone)]
pub struct DebianBootOptions {
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Hard limit for the agent's first answer (about 10 s idle, 20 s on a busy host).
    pub ready_timeout: Duration,
}

impl Default for DebianBootOptions {
    fn default() -> Self {
        Self {
            memory_mib: 1024,
            vcpus: 2,
            ready_timeout: Duration::from_secs(300),
        }
    }
}

impl QemuGuest {
    /// Boots the busybox `image` with `opts` and waits until the agent answers a ping.
    pub async fn boot(image: &GuestImage, opts: BootOptions) -> Result<Self, TestbedError> {
        Self::start(Machine::busybox(image, &opts), opts.ready_timeout).await
    }

    /// Boots the Debian `image` (TCG, `-snapshot`: every boot starts clean) and waits until
    /// Debian's own agent, started by udev, answers a ping on [`QemuGuest::agent_socket`].
    pub async fn boot_debian(
        image: &DebianImage,
        opts: DebianBootOptions,
    ) -> Result<Self, TestbedError> {
        Self::start(
            Machine::debian(image, opts.memory_mib, opts.vcpus),
            opts.ready_timeout,
        )
        .await
    }

    async fn start(m: Machine, ready_timeout: Duration) -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("atp-qemu.")
            .tempdir()
            .map_err(io_err("creating guest directory"))?;
        let accel = std::env::var("ATP_ACCEL").unwrap_or_else(|_| "tcg".into());
        let cpu = if accel == "kvm" {
            "host,-arch-capabilities"
        } else {
            m.cpu
        };
        let p = |name: &str| dir.path().join(name);
        let log = std::fs::File::create(p("qemu.log")).map_err(io_err("creating qemu log"))?;
        let log2 = log.try_clone().map_err(io_err("creating qemu log"))?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", &accel, "-cpu", cpu, "-machine", "pc"])
            .args(["-m", &m.memory_mib.to_string()])
            .args(["-smp", &m.vcpus.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&m.kernel)
            .arg("-initrd")
            .arg(&m.initrd)
            .args(["-append", &m.cmdline]);
        if let Some(disk) = &m.disk {
            // -snapshot keeps the writes in an unlinked temp file: under TMPDIR, the guest dir.
            cmd.arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=virtio,cache=unsafe",
                    disk.display()
                ))
                .arg("-snapshot")
                .env("TMPDIR", dir.path());
        }
        cmd.arg("-serial")
            .arg(format!("file:{}", p("console.log").display()))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                p("qmp.sock").display()
            ))
            .args(["-device", "virtio-serial-pci,id=vser0"])
            .arg("-chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qga0",
                p("qga.sock").display()
            ))
            .args([
                "-device",
                "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let process = Supervised::spawn("qemu-system-x86_64", &mut cmd)?;
        let mut guest = Self {
            dir,
            process,
            boot_time: Duration::ZERO,
        };
        match wait_for_socket_agent(&guest.agent_socket(), "guest agent", ready_timeout).await {
            Ok(t) => guest.boot_time = t,
            Err(e) => {
                let detail = format!(
                    "{e}; qemu running: {}; qemu log: {}; console: {}",
                    guest.process.is_running(),
                    guest.qemu_log(),
                    guest.console()
                );
                return Err(TestbedError::NotReady {
                    what: "QEMU guest".into(),
                    waited: ready_timeout,
                    detail,
                });
            }
        }
        Ok(guest)
    }

    /// Host end of the guest's `org.qemu.guest_agent.0` channel.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.path().join("qga.sock")
    }

    /// QEMU's QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// The guest's directory on the host.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Time from QEMU start to the agent's first answer.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// What the guest printed on its serial console.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    fn qemu_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.log")).unwrap_or_default()
    }

    /// Asks QEMU to quit over QMP, then makes sure it is gone.
    pub fn shutdown(&mut self) {
        if let Err(e) = qmp_quit(&self.qmp_socket()) {
            tracing::debug!(error = %e, "QMP quit failed; killing QEMU");
        }
        self.process.stop(Duration::from_secs(5));
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// QMP: read the greeting, negotiate capabilities, `quit`.
fn qmp_quit(socket: &Path) -> std::io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    r.read_line(&mut line)?;
    s.write_all(b"{\"execute\":\"quit\"}\n")?;
    line.clear();
    let _ = r.read_line(&mut line);
    Ok(())
}
