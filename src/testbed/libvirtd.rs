//! An unprivileged *session* libvirtd whose whole state lives in a temp dir, and transient
//! domains running the test guest.
//!
//! As root, the daemon runs as user `nobody` (a root `qemu:///session` would be the system
//! daemon); clients reach it as `qemu+unix:///session?socket=DIR/run/libvirt/libvirt-sock`.
//! Nothing touches the host's libvirt configuration.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::unistd::{Gid, Uid};
use tempfile::TempDir;

use super::{
    BootOptions, DEBIAN_DIRECT_PORT, DebianImage, Flavour, GuestImage, TestbedError, io_err,
    machine::{Machine, domain_xml},
    process::Supervised,
    wait_for_agent,
};
use crate::{libvirt::LibvirtManager, transport::libvirt_agent::LibvirtTransport};

/// The uid/gid the daemon runs as when we are root.
const NOBODY: u32 = 65534;

/// The busybox guest's second agent port (its init runs qemu-ga on every agent port).
const BUSYBOX_DIRECT_PORT: &str = "org.qemu.guest_agent.direct";

/// A running session libvirtd. Dropping it destroys its domains and stops it.
#[derive(Debug)]
pub struct LibvirtSession {
    dir: TempDir,
    uri: String,
    process: Supervised,
    start_time: Duration,
}

/// A transient domain of a [`LibvirtSession`], destroyed on drop.
#[derive(Debug)]
pub struct LibvirtDomain {
    name: String,
    persistent: bool,
    domain: crate::libvirt::Domain,
    direct_socket: PathBuf,
    console: PathBuf,
    boot_time: Duration,
}

/// The session libvirtd on the state under `root`, as the test bed runs it: as `nobody`
/// when we are root, its HOME and XDG directories under `root`, no stdin or stdout (the
/// caller picks stderr). Also for tests that restart it on the same state.
pub fn libvirtd_command(root: &Path) -> Command {
    let mut cmd = if Uid::effective().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "libvirtd",
        ]);
        c
    } else {
        Command::new("libvirtd")
    };
    cmd.env("HOME", root)
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env_remove("LIBVIRT_DEFAULT_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

impl LibvirtSession {
    /// Starts the daemon and waits until it accepts connections.
    pub async fn start() -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("atp-libvirt.")
            .tempdir()
            .map_err(io_err("creating libvirt directory"))?;
        let root = dir.path();
        for sub in ["run", "config/libvirt", "cache", "vm", "images"] {
            std::fs::create_dir_all(root.join(sub)).map_err(io_err("creating libvirt dirs"))?;
        }
        // QEMU's stdio goes to files, so no virtlogd is needed.
        std::fs::write(
            root.join("config/libvirt/qemu.conf"),
            "stdio_handler = \"file\"\n",
        )
        .map_err(io_err("writing qemu.conf"))?;
        let as_root = Uid::effective().is_root();
        if as_root {
            chown_tree(root)?;
        }
        let mut cmd = libvirtd_command(root);
        cmd.stderr(
            std::fs::File::create(root.join("libvirtd.stderr"))
                .map_err(io_err("creating libvirtd log"))?,
        );
        let started = Instant::now();
        let process = Supervised::spawn("libvirtd", &mut cmd)?;
        let socket = root.join("run/libvirt/libvirt-sock");
        let uri = format!("qemu+unix:///session?socket={}", socket.display());
        let mut session = Self {
            dir,
            uri,
            process,
            start_time: Duration::ZERO,
        };
        let limit = Duration::from_secs(90);
        loop {
            let uri = session.uri.clone();
            let res = tokio::task::spawn_blocking(move || {
                LibvirtManager::connect_uri(&uri).map(|m| m.list_domains().map(drop))
            })
            .await;
            match res {
                Ok(Ok(Ok(()))) => break,
                other => {
                    if !session.process.is_running() || started.elapsed() > limit {
                        return Err(TestbedError::NotReady {
                            what: "session libvirtd".into(),
                            waited: started.elapsed(),
                            detail: format!("{other:?}; stderr: {}", session.stderr()),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        session.start_time = started.elapsed();
        Ok(session)
    }

    /// The URI that reaches this daemon.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Time from start to the first successful connection.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    /// A new connection to the daemon.
    pub fn manager(&self) -> Result<LibvirtManager, TestbedError> {
        LibvirtManager::connect_uri(&self.uri).map_err(|e| TestbedError::Libvirt(e.to_string()))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("libvirtd.stderr")).unwrap_or_default()
    }

    /// Starts a transient domain booting the test guest, with agent channels
    /// `org.qemu.guest_agent.0` (libvirt's) and `org.qemu.guest_agent.direct` (bound to a
    /// host socket), and waits until the agent answers through libvirt.
    pub async fn create_domain(
        &self,
        name: &str,
        image: &GuestImage,
        flavour: Flavour,
    ) -> Result<LibvirtDomain, TestbedError> {
        self.start_domain(name, image, flavour, false).await
    }

    /// Like [`LibvirtSession::create_domain`], but the domain is defined (persistent), so
    /// after [`LibvirtDomain::destroy`] it stays known to libvirt, shut off. It is
    /// undefined on drop.
    pub async fn define_domain(
        &self,
        name: &str,
        image: &GuestImage,
        flavour: Flavour,
    ) -> Result<LibvirtDomain, TestbedError> {
        self.start_domain(name, image, flavour, true).await
    }

    /// Starts a transient domain booting the Debian `image` (2 vCPUs, 1 GiB, on a qcow2
    /// overlay of the image's disk, deleted with the session) with agent channels
    /// `org.qemu.guest_agent.0` (libvirt's, served by Debian's agent) and
    /// [`DEBIAN_DIRECT_PORT`] (the image's second agent, bound to a host socket), and waits
    /// until the agent answers through libvirt.
    pub async fn create_debian_domain(
        &self,
        name: &str,
        image: &DebianImage,
    ) -> Result<LibvirtDomain, TestbedError> {
        let root = self.dir.path();
        let images = root.join("images");
        // The daemon runs as nobody and cannot reach the root-owned cache: it gets its own
        // readable copies (the disk hard-linked when possible: it is only ever read).
        let kernel = images.join("debian-vmlinuz");
        let initrd = images.join("debian-initrd.img");
        let base = images.join("debian-rootfs.img");
        for (from, to) in [(image.kernel(), &kernel), (image.initrd(), &initrd)] {
            if !to.exists() {
                std::fs::copy(&from, to).map_err(io_err(format!("copying {}", from.display())))?;
            }
        }
        if !base.exists() && std::fs::hard_link(image.rootfs(), &base).is_err() {
            copy_sparse(&image.rootfs(), &base)?;
        }
        let overlay = root.join(format!("vm/{name}.qcow2"));
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&overlay)
            .output()
            .map_err(io_err("running qemu-img (package qemu-utils)"))?;
        if !out.status.success() {
            return Err(TestbedError::Command {
                what: "qemu-img create (overlay)".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        if Uid::effective().is_root() {
            chown_tree(&overlay)?;
        }
        let mut m = Machine::debian(image, 1024, 2);
        m.kernel = kernel;
        m.initrd = initrd;
        m.disk = Some(overlay);
        self.start_machine(name, &m, DEBIAN_DIRECT_PORT, false)
            .await
    }

    async fn start_domain(
        &self,
        name: &str,
        image: &GuestImage,
        flavour: Flavour,
        persistent: bool,
    ) -> Result<LibvirtDomain, TestbedError> {
        let root = self.dir.path();
        // The daemon runs as nobody: it gets its own readable copy of the image.
        let kernel = root.join("images/vmlinuz");
        let initrd = root.join(format!("images/initrd-{}.img", flavour.as_str()));
        for (from, to) in [(image.kernel(), &kernel), (image.initrd(flavour), &initrd)] {
            if !to.exists() {
                std::fs::copy(&from, to).map_err(io_err(format!("copying {}", from.display())))?;
            }
        }
        let opts = BootOptions {
            flavour,
            memory_mib: 512,
            ..BootOptions::default()
        };
        let mut m = Machine::busybox(image, &opts);
        m.kernel = kernel;
        m.initrd = initrd;
        self.start_machine(name, &m, BUSYBOX_DIRECT_PORT, persistent)
            .await
    }

    async fn start_machine(
        &self,
        name: &str,
        m: &Machine,
        direct_port: &str,
        persistent: bool,
    ) -> Result<LibvirtDomain, TestbedError> {
        let root = self.dir.path();
        let direct_socket = root.join(format!("vm/{name}-direct.sock"));
        let console = root.join(format!("vm/{name}-console.log"));
        let xml = domain_xml(name, m, direct_port, &direct_socket, &console);
        let mgr = self.manager()?;
        let started = Instant::now();
        let domain = tokio::task::spawn_blocking(move || {
            if persistent {
                let d = mgr.connection().define_domain_xml(&xml)?;
                d.create().map(|()| d)
            } else {
                mgr.connection().create_domain_xml(&xml, 0)
            }
        })
        .await
        .map_err(|e| TestbedError::Libvirt(e.to_string()))?
        .map_err(|e| TestbedError::Libvirt(format!("creating domain {name}: {}", e.message())))?;
        let mut dom = LibvirtDomain {
            name: name.to_owned(),
            persistent,
            domain,
            direct_socket,
            console,
            boot_time: Duration::ZERO,
        };
        let transport = LibvirtTransport::new(dom.domain.clone(), name);
        match wait_for_agent(transport, "libvirt guest agent", Duration::from_secs(300)).await {
            Ok(_) => dom.boot_time = started.elapsed(),
            Err(e) => {
                return Err(TestbedError::NotReady {
                    what: format!("domain {name}"),
                    waited: started.elapsed(),
                    detail: format!("{e}; console: {}", dom.console()),
                });
            }
        }
        Ok(dom)
    }
}

impl Drop for LibvirtSession {
    fn drop(&mut self) {
        if let Ok(mgr) = self.manager()
            && let Ok(domains) = mgr.connection().list_all_domains(0)
        {
            for d in domains {
                let _ = d.destroy();
                let _ = d.undefine();
            }
        }
        self.process.stop(Duration::from_secs(5));
    }
}

impl LibvirtDomain {
    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The libvirt handle.
    pub fn domain(&self) -> &crate::libvirt::Domain {
        &self.domain
    }

    /// Host socket of the guest's second agent (port `org.qemu.guest_agent.direct` in the
    /// busybox guest, [`DEBIAN_DIRECT_PORT`] in the Debian one).
    pub fn direct_socket(&self) -> &Path {
        &self.direct_socket
    }

    /// Time from `create` to the agent's first answer through libvirt.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The guest's serial console output.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Destroys the domain now (also done on drop).
    pub fn destroy(&self) {
        let _ = self.domain.destroy();
    }
}

impl Drop for LibvirtDomain {
    fn drop(&mut self) {
        self.destroy();
        if self.persistent {
            let _ = self.domain.undefine();
        }
    }
}

/// Copies a sparse file without filling its holes (the 2 GiB disk holds ~0.5 GiB).
fn copy_sparse(from: &Path, to: &Path) -> Result<(), TestbedError> {
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .output()
        .map_err(io_err("running cp"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            what: format!("cp {} {}", from.display(), to.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn chown_tree(path: &Path) -> Result<(), TestbedError> {
    nix::unistd::chown(
        path,
        Some(Uid::from_raw(NOBODY)),
        Some(Gid::from_raw(NOBODY)),
    )
    .map_err(|e| TestbedError::Io {
        context: format!("chown {}", path.display()),
        source: e.into(),
    })?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_err("listing libvirt dir"))? {
            let entry = entry.map_err(io_err("listing libvirt dir"))?;
            chown_tree(&entry.path())?;
        }
    }
    Ok(())
}
