//! `guest-file-*`: handle-based file access in the guest.
//!
//! Handles are integers that survive reconnects (qemu-ga keeps them in its state dir) but
//! not an agent restart; each open handle costs the agent a file descriptor until closed.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use super::Empty;
use crate::qga::Command;

/// `guest-file-open`: returns a handle.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestFileOpen {
    /// Guest path.
    pub path: String,
    /// fopen(3) mode (`r`, `w`, `a`, `r+`...); the agent's default is `r`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Command for GuestFileOpen {
    const NAME: &'static str = "guest-file-open";
    type Reply = i64;
}

/// `guest-file-read`: up to `count` bytes from the handle's position.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GuestFileRead {
    /// The handle.
    pub handle: i64,
    /// Bytes wanted; the agent's default is 4096 and its maximum 48 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// What `guest-file-read` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct FileRead {
    /// Bytes read.
    pub count: u64,
    /// The data, base64-encoded.
    pub buf_b64: String,
    /// End of file reached (may come with the last data, or alone with none).
    pub eof: bool,
}

impl FileRead {
    /// The decoded data.
    pub fn data(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(&self.buf_b64)
    }
}

impl Command for GuestFileRead {
    const NAME: &'static str = "guest-file-read";
    type Reply = FileRead;
}

/// `guest-file-write`: writes base64 data at the handle's position.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct GuestFileWrite {
    /// The handle.
    pub handle: i64,
    /// The data, base64-encoded.
    pub buf_b64: String,
    /// Bytes of the decoded data to write (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl GuestFileWrite {
    /// Encodes `data` for writing to `handle`.
    pub fn new(handle: i64, data: &[u8]) -> Self {
        Self {
            handle,
            buf_b64: STANDARD.encode(data),
            count: None,
        }
    }
}

/// What `guest-file-write` returns.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct FileWrite {
    /// Bytes written.
    pub count: u64,
    /// Whether EOF was reached (meaningless for most writes).
    #[serde(default)]
    pub eof: bool,
}

impl Command for GuestFileWrite {
    const NAME: &'static str = "guest-file-write";
    type Reply = FileWrite;
}

/// Where a seek offset counts from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Whence {
    /// From the start of the file.
    Set,
    /// From the current position.
    Cur,
    /// From the end of the file.
    End,
}

/// `guest-file-seek`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GuestFileSeek {
    /// The handle.
    pub handle: i64,
    /// Offset relative to `whence`.
    pub offset: i64,
    /// Reference point.
    pub whence: Whence,
}

/// What `guest-file-seek` returns.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct FileSeek {
    /// New position.
    pub position: i64,
    /// Whether the position is at end of file.
    #[serde(default)]
    pub eof: bool,
}

impl Command for GuestFileSeek {
    const NAME: &'static str = "guest-file-seek";
    type Reply = FileSeek;
}

/// `guest-file-flush`: flush the handle's buffers (write errors such as ENOSPC show here).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GuestFileFlush {
    /// The handle.
    pub handle: i64,
}

impl Command for GuestFileFlush {
    const NAME: &'static str = "guest-file-flush";
    type Reply = Empty;
}

/// `guest-file-close`: releases the handle.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GuestFileClose {
    /// The handle.
    pub handle: i64,
}

impl Command for GuestFileClose {
    const NAME: &'static str = "guest-file-close";
    type Reply = Empty;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        let w = GuestFileWrite::new(1000, b"hi");
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"handle":1000,"buf-b64":"aGk="}"#
        );
        let s = GuestFileSeek {
            handle: 1,
            offset: -2,
            whence: Whence::End,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"handle":1,"offset":-2,"whence":"end"}"#
        );
        let r: FileRead =
            serde_json::from_str(r#"{"count":2,"buf-b64":"aGk=","eof":true}"#).unwrap();
        assert_eq!(r.data().unwrap(), b"hi");
        assert!(r.eof);
    }
}
