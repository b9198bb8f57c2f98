//! A host qemu-ga started again on the socket of one that was killed.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use ocloudview_atp::testbed::{HOST_BLOCKED_COMMANDS, listening};

/// A qemu-ga started by this file on an existing socket path (the test bed's `HostAgent`
/// cannot be restarted), with the test bed's block list; its state lives in a temp dir of
/// its own. Killed on drop.
pub struct Respawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Respawned {
    pub async fn start(socket: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("atp-fault-qga.")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let log = std::fs::File::create(dir.path().join("qga.log")).unwrap();
        let log2 = log.try_clone().unwrap();
        let child = Command::new("qemu-ga")
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(socket)
            .arg("-t")
            .arg(&state)
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .arg("-b")
            .arg(HOST_BLOCKED_COMMANDS.join(","))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap();
        let agent = Self { child, _dir: dir };
        // The killed agent's socket file is still there: wait until the new one listens.
        // Not by connecting: qemu-ga serves one client at a time, and the daemon may
        // reconnect first (it removes finished exec directories in the background), so a
        // probe's connection would queue behind it.
        let t0 = std::time::Instant::now();
        while !listening(socket) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the respawned qemu-ga does not listen on {} after 10 s",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Respawned {
    fn drop(&mut self) {
        self.kill();
    }
}
