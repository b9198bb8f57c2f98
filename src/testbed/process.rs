//! A child process that is stopped (TERM, then KILL) and reaped when dropped.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

use super::{TestbedError, io_err};

/// A running child process owned by the test bed.
#[derive(Debug)]
pub(crate) struct Supervised {
    name: String,
    child: Option<Child>,
}

impl Supervised {
    pub(crate) fn spawn(name: &str, cmd: &mut Command) -> Result<Self, TestbedError> {
        let child = cmd.spawn().map_err(io_err(format!("starting {name}")))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it is reaped if it exited).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL; always reaps.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGTERM);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::debug!(name = %self.name, "did not stop on SIGTERM; killing");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGKILL and reaps, for tests that need an agent to vanish abruptly.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}
