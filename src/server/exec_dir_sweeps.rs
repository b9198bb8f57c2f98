//! When to sweep which guest: a sweep ([`AgentClient::sweep_exec_dirs`]) removes the exec
//! directories that an earlier daemon (one that crashed or was killed mid-exec) left in a
//! guest. It starts in the background on an Exec to a guest not swept for
//! [`SWEEP_INTERVAL`], so a restarted daemon cleans up where it works, without touching
//! guests nobody uses.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::service::GuestAgentService;
use crate::qga::{AgentClient, QgaError};
use crate::sync::lock;

/// Each guest is swept at most this often.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// When each guest was last swept; starts the sweeps that are due.
#[derive(Debug)]
pub(crate) struct ExecDirSweeps {
    /// A directory is abandoned once its program is gone and its files were idle this
    /// long (`agent.sweep_exec_dirs_after_s`); `None`: never swept.
    min_idle: Option<Duration>,
    last: Mutex<HashMap<String, Instant>>,
}

impl ExecDirSweeps {
    pub(crate) fn new(min_idle: Option<Duration>) -> Self {
        Self {
            min_idle,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a background sweep of `domain` unless one started within [`SWEEP_INTERVAL`].
    pub(crate) fn maybe_sweep(&self, s: &GuestAgentService, domain: &str, client: &AgentClient) {
        let Some(min_idle) = self.min_idle else {
            return;
        };
        {
            let mut last = lock(&self.last);
            if last
                .get(domain)
                .is_some_and(|t| t.elapsed() < SWEEP_INTERVAL)
            {
                return;
            }
            last.insert(domain.to_owned(), Instant::now());
        }
        let (svc, client, domain) = (s.clone(), client.clone(), domain.to_owned());
        tokio::spawn(async move {
            // This daemon's own sessions (on any guest) are never swept, even when their
            // program has ended and the output is still being read.
            let in_use = svc.shared.execs.pids();
            match client.sweep_exec_dirs(min_idle, &in_use).await {
                Ok(dirs) if dirs.is_empty() => {
                    tracing::debug!(domain, "no abandoned exec directories");
                }
                Ok(dirs) => tracing::info!(
                    domain,
                    removed = dirs.len(),
                    ?dirs,
                    "removed exec directories abandoned by an earlier client"
                ),
                Err(e @ QgaError::CommandDisabled { .. }) => {
                    tracing::debug!(domain, error = %e, "exec directories not swept");
                }
                Err(e) => {
                    tracing::warn!(domain, error = %e, "sweeping abandoned exec directories failed");
                }
            }
        });
    }
}
