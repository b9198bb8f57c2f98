//! `[state]`: where the daemon keeps what must outlive it (the records of running execs,
//! so a restarted daemon adopts them). Without the section nothing is kept.

use std::path::{Path, PathBuf};

use super::{AuditConfig, raw::RawState};

/// A validated `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The directory (created 0700 at startup; its files are 0600).
    pub dir: PathBuf,
}

/// Where state goes without `state.dir`: `state` beside the audit log, else this.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/atp";

/// Validates `[state]`: `dir` relative to the config file, by default beside the audit log.
pub(super) fn state(s: RawState, base: &Path, audit: Option<&AuditConfig>) -> StateConfig {
    let dir = match (&s.dir, audit) {
        (Some(d), _) => base.join(d),
        (None, Some(a)) => a.path.parent().unwrap_or(base).join("state"),
        (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
    };
    StateConfig { dir }
}
