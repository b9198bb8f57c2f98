//! What the host must keep for an exec to outlive the daemon (`[state] dir`): one small
//! JSON record per running exec, written atomically (temp file, fsync, rename; 0600 in a
//! 0700 directory) when the program starts and removed once its outcome is recorded. The
//! program's own state (output files, pid, start time) is in the guest's exec directory.
//!
//! A record is trusted input at startup, so it is checked before a daemon acts on it
//! ([`ExecRecord::check`]); one that fails is renamed `*.refused` and never used.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::registry::Owner;
use crate::{caller::Caller, qga::ExecSession, server::action::Rpc};

/// Version of the record format.
pub(super) const RECORD_VERSION: u32 = 1;
/// Longest record file read (a record is a few hundred bytes).
const MAX_RECORD: u64 = 64 << 10;

/// A state directory problem.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    /// The file system refused.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A record is not one this daemon may act on.
    #[error("exec record {path} refused: {reason}")]
    Refused {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a later daemon needs to adopt one running exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecRecord {
    pub(crate) v: u32,
    pub(crate) exec_id: String,
    pub(crate) domain: String,
    pub(crate) pid: i64,
    /// The guest exec directory (`/tmp/.atp-exec-<32 hex>`).
    pub(crate) dir: String,
    pub(crate) owner_auth: String,
    pub(crate) owner_id: String,
    /// The Exec (or RunTask) call whose outcome is still to be recorded.
    pub(crate) request_id: String,
    pub(crate) caller: Caller,
    pub(crate) rpc: String,
    /// Wall clock, milliseconds since the epoch.
    pub(crate) started_ms: u64,
    pub(crate) deadline_ms: u64,
    pub(crate) timeout_ms: u64,
    /// The policy's `max_bytes` on the output.
    pub(crate) max_bytes: Option<u64>,
    /// `stream` or `collect`.
    pub(crate) mode: String,
}

/// Milliseconds since the epoch of an instant (past or future) of this process.
pub(crate) fn wall_ms(at: Instant) -> u64 {
    let now = SystemTime::now();
    let wall = match at.checked_duration_since(Instant::now()) {
        Some(ahead) => now.checked_add(ahead),
        None => now.checked_sub(Instant::now().saturating_duration_since(at)),
    };
    wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant of this process at wall-clock milliseconds `ms` (the past is clamped to
/// the earliest instant the clock can express; far futures to a century).
pub(crate) fn instant_of(ms: u64) -> Instant {
    let now_ms = wall_ms(Instant::now());
    let now = Instant::now();
    if ms >= now_ms {
        let ahead = Duration::from_millis(ms - now_ms).min(Duration::from_secs(100 * 365 * 86400));
        now.checked_add(ahead).unwrap_or(now)
    } else {
        let behind = Duration::from_millis(now_ms - ms);
        now.checked_sub(behind).unwrap_or(now)
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

impl ExecRecord {
    /// Who owns the exec (ExecAttach and ExecCancel are decided on it).
    pub(crate) fn owner(&self) -> Owner {
        Owner {
            auth: self.owner_auth.clone(),
            id: self.owner_id.clone(),
        }
    }

    /// The RPC whose outcome the record carries: Exec or RunTask only.
    pub(crate) fn rpc(&self) -> Option<Rpc> {
        match self.rpc.as_str() {
            "Exec" => Some(Rpc::Exec),
            "RunTask" => Some(Rpc::RunTask),
            _ => None,
        }
    }

    /// Refuses a record a daemon must not act on: ids that are not UUIDs, a guest
    /// directory not of the `/tmp/.atp-exec-<32 hex>` form (it is read and removed), a
    /// pid that is not positive, an empty domain, an unknown RPC or owner kind.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.v != RECORD_VERSION {
            return Err(format!("version {} (expected {RECORD_VERSION})", self.v));
        }
        if !is_uuid(&self.exec_id) || !is_uuid(&self.request_id) {
            return Err("exec_id and request_id must be UUIDs".into());
        }
        if !ExecSession::is_exec_dir(&self.dir) {
            return Err(format!(
                "guest directory {:?} is not an exec directory",
                self.dir
            ));
        }
        if self.pid <= 0 {
            return Err(format!("pid {} is not positive", self.pid));
        }
        if self.domain.is_empty() || self.domain.len() > 512 {
            return Err("domain is empty or too long".into());
        }
        if self.rpc().is_none() {
            return Err(format!("rpc {:?} is not Exec or RunTask", self.rpc));
        }
        if !["unix", "token", "mtls", "none"].contains(&self.owner_auth.as_str()) {
            return Err(format!("owner_auth {:?} is unknown", self.owner_auth));
        }
        Ok(())
    }
}

/// The state directory's exec records.
#[derive(Debug)]
pub(crate) struct ExecStore {
    dir: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + use<> {
    let path = path.to_owned();
    move |source| PersistError::Io { what, path, source }
}

impl ExecStore {
    /// Opens (creating, mode 0700) the `execs` directory under `state_dir`; an existing
    /// one is made 0700 too.
    pub(crate) fn open(state_dir: &Path) -> Result<Self, PersistError> {
        let dir = state_dir.join("execs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(io("restricting", &dir))?;
        Ok(Self { dir })
    }

    fn path(&self, exec_id: &str) -> PathBuf {
        self.dir.join(format!("{exec_id}.json"))
    }

    /// Writes `rec` atomically: a 0600 temp file, fsynced, renamed over the record.
    pub(crate) fn save(&self, rec: &ExecRecord) -> Result<(), PersistError> {
        let path = self.path(&rec.exec_id);
        let tmp = self.dir.join(format!(".{}.tmp", rec.exec_id));
        let body = serde_json::to_vec(rec).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("writing", &path)(e)
        })
    }

    /// Removes the record of `exec_id` (its outcome is recorded).
    pub(crate) fn remove(&self, exec_id: &str) {
        let path = self.path(exec_id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %path.display(), error = %e, "exec record not removed; a restarted daemon would record the exec's outcome again");
        }
    }

    /// Every record in the directory; each one that cannot be read or fails
    /// [`ExecRecord::check`] is reported and renamed `*.refused`.
    pub(crate) fn load(&self) -> Result<Vec<ExecRecord>, PersistError> {
        let mut records = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io("reading", &self.dir))? {
            let e = e.map_err(io("reading", &self.dir))?;
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read_record(&path) {
                Ok(rec) => records.push(rec),
                Err(reason) => {
                    let err = PersistError::Refused {
                        path: path.clone(),
                        reason,
                    };
                    tracing::error!(error = %err, "exec record refused; renamed *.refused");
                    let _ = std::fs::rename(&path, path.with_extension("refused"));
                }
            }
        }
        Ok(records)
    }
}

/// Reads and checks one record file: a regular file (not a symlink), small, named after
/// its exec id.
fn read_record(path: &Path) -> Result<ExecRecord, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() || meta.len() > MAX_RECORD {
        return Err("not a regular file of at most 64 KiB".into());
    }
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let rec: ExecRecord = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    rec.check()?;
    if path.file_stem().and_then(|s| s.to_str()) != Some(rec.exec_id.as_str()) {
        return Err("file name does not match its exec_id".into());
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> ExecRecord {
        ExecRecord {
            v: RECORD_VERSION,
            exec_id: uuid::Uuid::new_v4().to_string(),
            domain: "host".into(),
            pid: 42,
            dir: format!("/tmp/.atp-exec-{}", uuid::Uuid::new_v4().simple()),
            owner_auth: "unix".into(),
            owner_id: "uid:1000".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            caller: Caller::default(),
            rpc: "Exec".into(),
            started_ms: 1,
            deadline_ms: 2,
            timeout_ms: 1,
            max_bytes: None,
            mode: "stream".into(),
        }
    }

    #[test]
    fn saves_loads_and_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ExecStore::open(tmp.path()).unwrap();
        let good = rec();
        store.save(&good).unwrap();
        let mode = std::fs::metadata(store.path(&good.exec_id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut bad = rec();
        bad.dir = "/etc".into();
        store.save(&bad).unwrap();
        let mut pid0 = rec();
        pid0.pid = 0;
        store.save(&pid0).unwrap();
        assert_eq!(store.load().unwrap(), vec![good.clone()]);
        assert!(store.path(&bad.exec_id).with_extension("refused").exists());
        store.remove(&good.exec_id);
        assert!(store.load().unwrap().is_empty());
    }

    #[test]
    fn wall_clock_round_trip() {
        let at = Instant::now() + Duration::from_secs(5);
        let back = instant_of(wall_ms(at));
        let diff = back.max(at) - back.min(at);
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }
}
