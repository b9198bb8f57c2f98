//! The tamper-evident audit trail: a hash-chained JSONL file written by one writer, and
//! `atp audit verify`.
//!
//! # Format
//!
//! One JSON object per line, members in this order:
//! `{"seq":N,"time":"2026-11-25T23:59:59.123Z","prev":"<hex>", ...the AuditEntry
//! members..., "hash":"<hex>"}` then `\n`. `seq` starts at 1 and grows by 1; `prev` is the
//! `hash` of the previous record ([`GENESIS`], 64 zeros, for the first); `time` is UTC with
//! milliseconds. Members that are `None` are left out.
//!
//! # Hash rule
//!
//! `hash` is the lowercase hex SHA-256 of the record's line *as written, without its hash*:
//! the line text with the suffix `,"hash":"<hex>"}` replaced by `}` (and no `\n`). The
//! writer serializes the record without `hash`, hashes those exact bytes, then replaces the
//! closing `}` by `,"hash":"<hex>"}`. Verification never re-serializes: it checks that
//! `hash` is the last member and hashes the bytes before it, so any edit of the line —
//! a value, a space, the order of members — breaks the record, and new members written by
//! a later version verify unchanged.
//!
//! # Durability and failure
//!
//! [`AuditLog::record`] returns only once the record is written and `fdatasync`ed; records
//! queued together share one `fdatasync` (group commit). A failed write is rolled back
//! (the file is cut back to its last good record) and, by [`OnFailure`], either refuses the
//! request or is logged and ignored. The file is `flock`ed against a second writer.

pub mod cap;
pub mod head;
mod record;
mod sink;
mod verify;

use std::{path::PathBuf, sync::Arc};

pub use record::{AuditEntry, Caller, EntryKind, GENESIS, SessionRecording};
pub use sink::AuditLog;
pub use verify::{ChainBroken, VerifyError, VerifyReport, verify, verify_against};

/// What [`AuditLog::record`] does when the sink cannot write (`[audit] on_failure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Return an error, so the request is refused (the default).
    #[default]
    Refuse,
    /// Log the failure and carry on: the request runs unaudited.
    Continue,
}

/// The audit log could not be opened or written. Messages include their cause (there is
/// no `source()` chain), so `{:#}` prints it once.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file (or its directory) could not be created, opened, locked or read.
    #[error("cannot open audit log {path}: {error}")]
    Open {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The last record of an existing log is broken, so the chain cannot be continued.
    #[error("cannot continue audit log {path}: record broken at line {line}: {reason}")]
    BrokenTail {
        /// The log file.
        path: PathBuf,
        /// 1-based line number of the last record.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The log no longer holds the record its head file names (records were cut from its
    /// end or the file was replaced while the daemon was stopped).
    #[error("audit log {path} was tampered with: {reason}")]
    Tampered {
        /// The log file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A record could not be made durable (only with [`OnFailure::Refuse`]).
    #[error("cannot write audit log {path}: {error}")]
    Write {
        /// The log file.
        path: PathBuf,
        /// What the OS said; shared by all the records of the failed group commit.
        error: Arc<std::io::Error>,
    },
    /// A record could not be serialized.
    #[error("cannot encode audit record: {0}")]
    Encode(serde_json::Error),
    /// The log was closed.
    #[error("audit log {path} is closed")]
    Closed {
        /// The log file.
        path: PathBuf,
    },
}
