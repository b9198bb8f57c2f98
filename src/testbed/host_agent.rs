//! qemu-ga run on the host as a stand-in guest, in `unix-listen` mode.
//!
//! It acts on the host, so every command that could change the host beyond its own temp
//! directory's files is blocked with `-b`: shutdown, suspend, fsfreeze, fstrim, set-time,
//! set-user-password, set-vcpus, set-memory-blocks and SSH key edits.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use super::{TestbedError, io_err, process::Supervised};

/// Commands always blocked on a host agent.
pub const HOST_BLOCKED_COMMANDS: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-set-time",
    "guest-set-user-password",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-ssh-get-authorized-keys",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
];

/// A qemu-ga process on the host, listening on a socket in its own temp directory.
/// Stopped and cleaned up on drop.
#[derive(Debug)]
pub struct HostAgent {
    dir: TempDir,
    socket: PathBuf,
    process: Supervised,
}

impl HostAgent {
    /// Starts an agent with the standard block list.
    pub fn start() -> Result<Self, TestbedError> {
        Self::start_blocking(&[])
    }

    /// Starts an agent that additionally blocks `extra` commands (e.g. `guest-exec`).
    pub fn start_blocking(extra: &[&str]) -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("atp-host-qga.")
            .tempdir()
            .map_err(io_err("creating host agent directory"))?;
        let socket = dir.path().join("qga.sock");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).map_err(io_err("creating agent state dir"))?;
        let blocked: Vec<&str> = HOST_BLOCKED_COMMANDS.iter().chain(extra).copied().collect();
        let log = std::fs::File::create(dir.path().join("qga.log"))
            .map_err(io_err("creating agent log"))?;
        let log2 = log.try_clone().map_err(io_err("creating agent log"))?;
        let process = Supervised::spawn(
            "qemu-ga",
            Command::new("qemu-ga")
                .arg("-m")
                .arg("unix-listen")
                .arg("-p")
                .arg(&socket)
                .arg("-t")
                .arg(&state)
                .arg("-f")
                .arg(dir.path().join("qga.pid"))
                .arg("-b")
                .arg(blocked.join(","))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2),
        )?;
        let mut agent = Self {
            dir,
            socket,
            process,
        };
        agent.wait_for_socket()?;
        Ok(agent)
    }

    fn wait_for_socket(&mut self) -> Result<(), TestbedError> {
        let start = Instant::now();
        let limit = Duration::from_secs(10);
        // The socket file appears at bind(), before listen(): a connect in between is
        // refused, so wait until the kernel lists it as listening.
        while !listening(&self.socket) {
            if !self.process.is_running() || start.elapsed() > limit {
                return Err(TestbedError::NotReady {
                    what: "host qemu-ga".into(),
                    waited: start.elapsed(),
                    detail: format!("log: {}", self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's own directory (a safe place for file tests).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qga.log")).unwrap_or_default()
    }

    /// Kills the agent abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Number of files the agent process has open (for handle-leak checks).
    pub fn open_files(&self) -> Option<usize> {
        let pid = self.pid()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(Iterator::count)
    }
}

/// Whether a UNIX socket bound at `path` is listening (`/proc/net/unix` flags
/// `__SO_ACCEPTCON`), without connecting to it (qemu-ga serves one client at a time: a
/// readiness probe that connects competes with a daemon that reconnects first).
pub fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8 && f[3] == "00010000" && f[7] == want
    })
}
