//! An OpenSSH server on 127.0.0.1 with throwaway keys, so a libvirtd of the test bed can be
//! reached through libvirt's real remote transport, `qemu+ssh://`.
//!
//! Everything lives in a temp dir: the host key, a client key authorised for the current
//! user (root in CI), a `known_hosts` holding only the host key, and a small `ssh` wrapper
//! that verifies against that file. The `qemu+ssh` transport runs the OpenSSH client, which
//! ignores libvirt's `known_hosts=` parameter (only `qemu+libssh`/`libssh2` read it), so
//! the URI names the wrapper with `command=` instead of turning verification off. The
//! user's own `~/.ssh` is never read or written (`-F none`, explicit files).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::unistd::{Uid, User};
use tempfile::TempDir;

use super::{TestbedError, io_err, process::Supervised};

/// A running `sshd -D` on a loopback port. Stopped (with its sessions) on drop.
#[derive(Debug)]
pub struct SshServer {
    dir: TempDir,
    port: u16,
    user: String,
    process: Supervised,
}

impl SshServer {
    /// Generates the keys, starts sshd on a free loopback port and waits until it accepts.
    pub async fn start() -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("atp-sshd.")
            .tempdir()
            .map_err(io_err("creating sshd directory"))?;
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "atp-testbed", "-f"])
                .arg(d.join(key)))?;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(io_err("finding a free port"))?
            .port();
        let user = User::from_uid(Uid::current())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_owned(), |u| u.name);
        let host_pub = read(&d.join("host_key.pub"))?;
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        write(
            &d.join("known_hosts"),
            &format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
        )?;
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .map_err(io_err("writing authorized_keys"))?;
        write(
            &d.join("sshd_config"),
            &format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowUsers {user}\nLogLevel ERROR\n",
                dir = d.display()
            ),
        )?;
        write(
            &d.join("ssh"),
            &format!(
                "#!/bin/sh\n# OpenSSH for libvirt's qemu+ssh transport, checking this test \
                 bed's host key only.\nexec ssh -F none -o UserKnownHostsFile={dir}/known_hosts \
                 -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \"$@\"\n",
                dir = d.display()
            ),
        )?;
        set_mode(&d.join("ssh"), 0o755)?;
        set_mode(&d.join("client_key"), 0o600)?;
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(io_err("creating /run/sshd"))?;
        let log = std::fs::File::create(d.join("sshd.log")).map_err(io_err("creating sshd log"))?;
        let process = Supervised::spawn(
            "sshd",
            Command::new(sshd_binary())
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        let mut server = Self {
            dir,
            port,
            user,
            process,
        };
        let started = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if !server.process.is_running() || started.elapsed() > Duration::from_secs(10) {
                return Err(TestbedError::NotReady {
                    what: "sshd".into(),
                    waited: started.elapsed(),
                    detail: read(&server.dir.path().join("sshd.log")).unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// The `qemu+ssh://` URI reaching, through this server, the libvirtd that `local_uri`
    /// (`qemu+unix:///session?socket=PATH`, a [`super::LibvirtSession`]'s) reaches: same
    /// driver, path and socket, with the client key, no tty, and the verifying wrapper.
    pub fn libvirt_uri(&self, local_uri: &str) -> String {
        let rest = local_uri
            .split_once(":///")
            .map_or(local_uri, |(_, rest)| rest);
        let driver = local_uri.split_once([':', '+']).map_or("qemu", |(d, _)| d);
        let sep = if rest.contains('?') { '&' } else { '?' };
        let d = self.dir.path();
        format!(
            "{driver}+ssh://{user}@127.0.0.1:{port}/{rest}{sep}keyfile={key}&no_tty=1&command={ssh}",
            user = self.user,
            port = self.port,
            key = d.join("client_key").display(),
            ssh = d.join("ssh").display(),
        )
    }

    /// The listening sshd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Every process serving a client session (the listener's descendants: the per-session
    /// sshd processes and the command they run: with `socket=` in the URI, libvirt 9.0
    /// runs `sh -c 'nc -U SOCKET'`, so `nc` (netcat-openbsd) must be installed).
    pub fn session_pids(&self) -> Vec<u32> {
        let Some(root) = self.pid() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut frontier = vec![root];
        while let Some(p) = frontier.pop() {
            let kids = children(p);
            frontier.extend(&kids);
            out.extend(kids);
        }
        out
    }

    /// The server's log (errors only).
    pub fn log(&self) -> String {
        read(&self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        for pid in self.session_pids() {
            if let Ok(pid) = i32::try_from(pid) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            }
        }
        self.process.stop(Duration::from_secs(3));
    }
}

/// `sshd` must be started by absolute path (it re-executes itself per connection).
fn sshd_binary() -> PathBuf {
    ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/sshd"))
}

/// Direct children of `pid`, from `/proc/PID/task/*/children`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn run(cmd: &mut Command) -> Result<(), TestbedError> {
    let out = cmd
        .output()
        .map_err(io_err("running ssh-keygen (package openssh-client)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            what: format!("{cmd:?}"),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn read(path: &Path) -> Result<String, TestbedError> {
    std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<(), TestbedError> {
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}
