//! Exec directories made ahead of time, and finished ones removed in batches, so a small
//! command costs the guest one process, not three (setup, program, `rm`). Under TCG each
//! guest process costs tens of milliseconds: Ansible's `mkdir`, `chmod` and `rm` around a
//! module were mostly that. Enabled by [`AgentClient::with_exec_dir_pool`] (the daemon);
//! a library client makes and removes each directory itself.
//!
//! The directories come from one `tar -x` whose archive (on stdin, which no other guest
//! user can see) holds their names: unlike `mkdir`'s arguments, they never appear in a
//! process list, so no guest user can plant anything under a name before it exists or
//! after it goes. A pooled name is handed to the wrapper in its environment (readable by
//! root only) and the wrapper checks the directory is a root-owned directory before it
//! writes there. An entry unused for [`POOL_TTL`] is retired; so is every entry when the
//! connection to the agent fails (the guest may have restarted).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    AgentClient, QgaError,
    commands::GuestExec,
    exec::{DEFAULT_PATH, ExecSession, GuestExecCommand},
    kill::KillOutcome,
    wrapper::new_exec_dir_name,
};
use crate::sync::lock;

/// How long a made directory waits in the pool before it is retired unused: well below
/// the sweep's default idle time (ten minutes), so another client's sweep never finds one.
pub(crate) const POOL_TTL: Duration = Duration::from_secs(60);
/// Directories removed by one `rm`.
const REMOVE_BATCH: usize = 64;
/// A finished directory waits this long for others to join its `rm`: the commands around
/// one Ansible module, or a script's burst of small commands, share one removal instead
/// of each costing the guest's one emulated CPU a process right as the next command
/// starts.
const RETIRE_AFTER: Duration = Duration::from_secs(2);
/// Extracts the pool's archive into `/tmp` (`tar` finds the names on stdin).
/// `-m`: the directories get the guest's time, not the host's (a sweep compares it with
/// the guest's clock).
const MAKE: &str = "umask 077; exec tar -x -m -f - -C /tmp";
/// Refills and removals wait while a bulk transfer runs on the guest (see
/// [`AgentClient::transfer_guard`]): a transfer's rate is the guest's one emulated CPU
/// decoding and writing, and a helper process takes tens of milliseconds of it. They
/// wait no longer than this.
const QUIET_WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a waiting refill or removal looks again.
const QUIET_POLL: Duration = Duration::from_millis(50);
/// After a failed refill (no `tar` in the guest, a full `/tmp`), the next waits this long:
/// commands make their own directories meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// The pool's state; held only for pushes and pops, never across an `.await`.
#[derive(Debug)]
pub(crate) struct DirPool {
    /// How many made directories to keep ready.
    target: usize,
    state: Mutex<PoolState>,
    /// Transfers running on the guest ([`TransferGuard`]s alive).
    transfers: Arc<AtomicUsize>,
}

/// A bulk transfer on a guest, from [`AgentClient::transfer_guard`]; ends when dropped.
#[derive(Debug)]
pub struct TransferGuard(Option<Arc<AtomicUsize>>);

impl Drop for TransferGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct PoolState {
    ready: Vec<(String, Instant)>,
    /// Names a running refill is making (kept from sweeps too).
    making: Vec<String>,
    refilling: bool,
    /// When the last refill failed.
    failed: Option<Instant>,
    retired: Vec<String>,
    removing: bool,
}

impl DirPool {
    pub(crate) fn new(target: usize) -> Self {
        Self {
            target: target.max(1),
            state: Mutex::default(),
            transfers: Arc::default(),
        }
    }

    /// Retires every ready directory (the agent's connection failed).
    pub(crate) fn clear(&self) {
        let mut st = lock(&self.state);
        let old: Vec<String> = st.ready.drain(..).map(|(d, _)| d).collect();
        st.retired.extend(old);
    }

    /// The names a sweep must leave alone: ready and being made.
    pub(crate) fn kept(&self) -> Vec<String> {
        let st = lock(&self.state);
        st.ready
            .iter()
            .map(|(d, _)| d.clone())
            .chain(st.making.iter().cloned())
            .collect()
    }
}

impl AgentClient {
    /// Takes a made exec directory from the pool (if it has one that is fresh enough)
    /// and starts a refill when it runs low. `None`: no pool, or it is empty.
    pub(crate) fn take_exec_dir(&self) -> Option<String> {
        let pool = self.state().pool.get()?;
        let (dir, refill, retire) = {
            let mut st = lock(&pool.state);
            let now = Instant::now();
            let stale: Vec<String> = st
                .ready
                .iter()
                .filter(|(_, at)| now.duration_since(*at) >= POOL_TTL)
                .map(|(d, _)| d.clone())
                .collect();
            st.ready
                .retain(|(_, at)| now.duration_since(*at) < POOL_TTL);
            st.retired.extend(stale);
            let dir = st.ready.pop().map(|(d, _)| d);
            let refill = !st.refilling
                && st.ready.len() * 2 < pool.target
                && st
                    .failed
                    .is_none_or(|t| now.duration_since(t) >= RETRY_AFTER);
            if refill {
                st.refilling = true;
            }
            let retire = !st.removing && !st.retired.is_empty();
            if retire {
                st.removing = true;
            }
            (dir, refill, retire)
        };
        if refill {
            let client = self.clone();
            tokio::spawn(async move {
                client.quiet().await;
                client.refill_pool().await;
            });
        }
        if retire {
            self.remove_retired_later();
        }
        dir
    }

    /// Starts `cmd` in the pooled directory `dir` , whose output
    /// files exist already, so they are opened at once. `None` when `dir` is gone (the
    /// guest restarted, say): the wrapper ran nothing, and the caller makes a directory
    /// as usual. Stdin beyond one request goes into the file `in` first, as there.
    pub(crate) async fn start_pooled(
        &self,
        cmd: &GuestExecCommand,
        dir: String,
        started: Instant,
        max_input: usize,
    ) -> Result<Option<ExecSession>, QgaError> {
        let mut cmd = std::borrow::Cow::Borrowed(cmd);
        if let Some(data) = cmd.input_data.as_ref().filter(|d| d.len() > max_input) {
            match self.write_file(&format!("{dir}/in"), data).await {
                Ok(()) => cmd.to_mut().input_data = None,
                Err(e) => {
                    self.retire_exec_dir(&dir);
                    return if is_missing(&e) { Ok(None) } else { Err(e) };
                }
            }
        }
        let pid = match self.call(&cmd.redirected_pooled(&dir)).await {
            Ok(p) => p.pid,
            Err(e) => {
                self.retire_exec_dir(&dir);
                return Err(e);
            }
        };
        let mut session =
            ExecSession::new(self.clone(), pid, Some(dir.clone()), started, cmd.timeout);
        let out = self.open(&format!("{dir}/out"), "r").await;
        let err = match &out {
            Ok(_) => self.open(&format!("{dir}/err"), "r").await,
            Err(_) => Err(QgaError::InvalidArgument(String::new())),
        };
        match (out, err) {
            (Ok(o), Ok(e)) => {
                session.out.file = Some(o);
                session.err.file = Some(e);
                Ok(Some(session))
            }
            (Err(e), _) if is_missing(&e) => {
                // The wrapper finds no directory either and exits 125 before running
                // anything; reaped here so the agent forgets it.
                // The others most likely went the same way (a restarted guest).
                tracing::info!(dir, "a pooled exec directory is gone; making one");
                session.finished = true;
                let _ = self.wait_exit(pid).await;
                self.retire_exec_dir(&dir);
                if let Some(pool) = self.state().pool.get() {
                    pool.clear();
                }
                Ok(None)
            }
            (Err(e), _) | (_, Err(e)) => {
                if let Ok(KillOutcome::Killed | KillOutcome::Gone) = session.kill(false).await {
                    let _ = self.wait_exit(pid).await;
                }
                session.finished = true;
                self.retire_exec_dir(&dir);
                Err(e)
            }
        }
    }

    /// Hands a finished exec directory over for removal in the background. False when
    /// this client has no pool (the caller removes it itself).
    pub(crate) fn retire_exec_dir(&self, dir: &str) -> bool {
        let Some(pool) = self.state().pool.get() else {
            return false;
        };
        let start = {
            let mut st = lock(&pool.state);
            st.retired.push(dir.to_owned());
            !std::mem::replace(&mut st.removing, true)
        };
        if start {
            self.remove_retired_later();
        }
        true
    }

    /// Removes the retired directories after [`RETIRE_AFTER`], with those retired
    /// meanwhile (the caller set `removing`).
    fn remove_retired_later(&self) {
        let client = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_AFTER).await;
            client.quiet().await;
            client.remove_retired().await;
        });
    }

    /// Waits until no transfer runs on this guest, at most [`QUIET_WAIT_MAX`].
    async fn quiet(&self) {
        let Some(pool) = self.state().pool.get() else {
            return;
        };
        let deadline = Instant::now() + QUIET_WAIT_MAX;
        while pool.transfers.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(QUIET_POLL).await;
        }
    }

    /// Marks a bulk transfer (WriteFile, ReadFile) on this guest while the guard lives:
    /// the pool's refills and removals wait for it (at most 30 s).
    pub fn transfer_guard(&self) -> TransferGuard {
        let count = self.state().pool.get().map(|p| Arc::clone(&p.transfers));
        if let Some(c) = &count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        TransferGuard(count)
    }

    /// Makes directories until the pool holds its target.
    async fn refill_pool(&self) {
        let Some(pool) = self.state().pool.get() else {
            return;
        };
        let names: Vec<String> = {
            let mut st = lock(&pool.state);
            let n = pool.target.saturating_sub(st.ready.len());
            let names: Vec<String> = (0..n).map(|_| new_exec_dir_name()).collect();
            st.making = names.clone();
            names
        };
        let made = self.make_dirs(&names).await;
        let mut st = lock(&pool.state);
        st.making.clear();
        st.refilling = false;
        match made {
            Ok(()) => {
                let now = Instant::now();
                st.failed = None;
                st.ready.extend(names.into_iter().map(|d| (d, now)));
            }
            Err(e) => {
                st.failed = Some(Instant::now());
                tracing::warn!(error = %e, retry_after = ?RETRY_AFTER, "making exec directories ahead failed");
                // Whatever part of the archive was extracted goes.
                st.retired.extend(names);
            }
        }
    }

    /// One `tar -x` making `names` (each with empty `out` and `err`), mode 0700.
    async fn make_dirs(&self, names: &[String]) -> Result<(), QgaError> {
        let archive = pool_archive(names).map_err(|e| QgaError::Agent {
            command: "guest-exec".into(),
            class: "ExecSetupFailed".into(),
            desc: format!("building the exec directories' archive: {e}"),
        })?;
        let make = GuestExec {
            path: "/bin/sh".into(),
            arg: vec!["-c".into(), MAKE.into()],
            env: vec![DEFAULT_PATH.to_owned()],
            input_data: Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &archive,
            )),
            capture_output: true,
        };
        let pid = self.call(&make).await?.pid;
        let st = self.wait_exit(pid).await?;
        if st.exit_code != Some(0) {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "ExecSetupFailed".into(),
                desc: format!(
                    "making exec directories ahead: tar exit {:?}, signal {:?}: {}",
                    st.exit_code,
                    st.signal,
                    String::from_utf8_lossy(&st.stderr()).trim()
                ),
            });
        }
        Ok(())
    }

    /// Removes retired directories, a batch per `rm`, until none is left.
    async fn remove_retired(&self) {
        let Some(pool) = self.state().pool.get() else {
            return;
        };
        loop {
            let batch: Vec<String> = {
                let mut st = lock(&pool.state);
                if st.retired.is_empty() {
                    st.removing = false;
                    return;
                }
                let n = st.retired.len().min(REMOVE_BATCH);
                st.retired.drain(..n).collect()
            };
            self.remove_dirs(&batch).await;
        }
    }
}

/// Whether the agent's open failed because the file (or its directory) does not exist.
fn is_missing(e: &QgaError) -> bool {
    matches!(e, QgaError::Agent { desc, .. } if desc.contains("No such file"))
}

/// A tar archive of `names` (absolute `/tmp/...` paths), each a 0700 directory holding
/// empty 0600 files `err` and `out`, with paths relative to `/tmp`.
fn pool_archive(names: &[String]) -> std::io::Result<Vec<u8>> {
    // Now, not 0: a sweep leaves a directory alone while its files are recent.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut b = tar::Builder::new(Vec::new());
    let mut empty = |kind, mode, path: String| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(now);
        b.append_data(&mut h, path, std::io::empty())
    };
    for name in names {
        let rel = name.strip_prefix("/tmp/").unwrap_or(name);
        empty(tar::EntryType::Directory, 0o700, format!("{rel}/"))?;
        for file in ["err", "out"] {
            empty(tar::EntryType::Regular, 0o600, format!("{rel}/{file}"))?;
        }
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_private_directories_with_empty_outputs() {
        let names = [new_exec_dir_name(), new_exec_dir_name()];
        let data = pool_archive(&names).unwrap();
        let mut a = tar::Archive::new(data.as_slice());
        let got: Vec<(String, u32, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), 6);
        for (i, n) in names.iter().enumerate() {
            let rel = n.strip_prefix("/tmp/").unwrap();
            assert!(rel.starts_with(".atp-exec-") && !rel.contains('/'));
            assert_eq!(got[i * 3], (format!("{rel}/"), 0o700, 0));
            assert_eq!(got[i * 3 + 1], (format!("{rel}/err"), 0o600, 0));
            assert_eq!(got[i * 3 + 2], (format!("{rel}/out"), 0o600, 0));
        }
    }
}
