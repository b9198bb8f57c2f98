//! The chain head kept beside the log (`<log>.head`), so that records cut from the end
//! of a stopped log are noticed: the writer rewrites it after every commit with the last
//! record's `seq`, `hash` and the log's length; at start the log must still contain that
//! record, else the daemon refuses to continue the log. `atp audit head` prints the same
//! anchor for keeping elsewhere, and `atp audit verify --head SEQ:HASH` checks a log
//! against such an exported anchor (the head file itself is on the same disk as the log,
//! so it only protects against cutting the log alone).

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// A record a log must still contain: its `seq` and `hash`, and (in head files) the log's
/// length once it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The record's seq.
    pub seq: u64,
    /// The record's hash.
    pub hash: String,
    /// Length of the log up to and including that record (head files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

impl Anchor {
    /// Parses `SEQ:HASH` as `atp audit head` prints it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (seq, hash) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not SEQ:HASH"))?;
        let seq = seq.parse().map_err(|_| format!("{seq:?} is not a seq"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not a SHA-256 in hex"));
        }
        Ok(Self {
            seq,
            hash: hash.to_ascii_lowercase(),
            len: None,
        })
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// The head file of `log`.
pub fn head_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

/// Reads a head file; `None` when it does not exist or is empty.
pub fn read(path: &Path) -> io::Result<Option<Anchor>> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(None),
        Ok(t) => serde_json::from_str(t.trim()).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The writer's handle on the head file.
#[derive(Debug)]
pub(super) struct HeadFile {
    file: File,
}

impl HeadFile {
    /// Opens (creating, mode 0600) the head file of `log`.
    pub(super) fn open(log: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(head_path(log))?;
        Ok(Self { file })
    }

    /// Records the chain's new head. Not synced: after a crash the head may lag the log,
    /// which start-up accepts; it never runs ahead of durable records.
    pub(super) fn set(&self, anchor: &Anchor) -> io::Result<()> {
        let mut line = serde_json::to_vec(anchor).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all_at(&line, 0)?;
        self.file.set_len(line.len() as u64)
    }

    /// Makes the head durable (shutdown).
    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
