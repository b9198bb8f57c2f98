//! `[audit]`: the log file and what happens when it cannot be written.

use std::path::{Path, PathBuf};

use super::{ConfigError, invalid, raw::RawAudit};

/// A validated `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// Refuse requests (true) or carry on (false) when the log cannot be written.
    pub refuse_on_failure: bool,
    /// Anonymous denials recorded one by one per minute; the rest are counted.
    pub anonymous_denials_per_minute: u32,
    /// Where interactive sessions are recorded (asciicast v2, one file per session).
    pub recordings: PathBuf,
}

/// Default for `audit.anonymous_denials_per_minute`.
pub const DEFAULT_ANONYMOUS_DENIALS_PER_MINUTE: u32 = 60;

/// Validates `[audit]`: `on_failure` is "refuse" (default) or "continue".
pub(super) fn audit(a: RawAudit, base: &Path) -> Result<AuditConfig, ConfigError> {
    let refuse_on_failure = match a.on_failure.as_deref() {
        None | Some("refuse") => true,
        Some("continue") => false,
        Some(other) => {
            return Err(invalid(
                "audit.on_failure",
                other,
                "expected \"refuse\" or \"continue\"",
            ));
        }
    };
    let path = base.join(&a.path);
    let recordings = match &a.recordings {
        Some(dir) => base.join(dir),
        None => path.parent().unwrap_or(base).join("sessions"),
    };
    Ok(AuditConfig {
        path,
        recordings,
        refuse_on_failure,
        anonymous_denials_per_minute: a
            .anonymous_denials_per_minute
            .unwrap_or(DEFAULT_ANONYMOUS_DENIALS_PER_MINUTE),
    })
}
