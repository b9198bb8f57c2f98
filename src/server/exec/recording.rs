//! The recording of an interactive session: an asciicast v2 file (playable with
//! `asciinema play`) on the daemon's host, out of the guest's reach, hashed as it is
//! written so the outcome record can carry its SHA-256.
//!
//! One writer task per session owns the file; the runner (output) and the feeder (input,
//! resizes) send it events in time order through a bounded channel, so a slow disk slows
//! the session rather than growing memory. Input is kept only when the policy asked
//! (`record_input`): passwords are typed there. Bytes that are not UTF-8 are replaced
//! (asciicast events are JSON strings); a sequence split across two reads is kept whole.

use std::{
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};
use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, oneshot},
};

use crate::{audit::SessionRecording as Recorded, qga::TerminalSize};

/// Events buffered between the session and the writer.
const QUEUE: usize = 64;
/// The most a recording holds: a session that prints without end (`yes`) must not fill
/// the audit disk. Past it the file ends and the outcome says it is not complete.
const MAX_BYTES: u64 = 256 << 20;

enum Rec {
    Out(Vec<u8>, f64),
    In(Vec<u8>, f64),
    Resize(TerminalSize, f64),
    Finish(oneshot::Sender<Recorded>),
}

/// A session being recorded; cheap to share (`Arc`) between its runner and feeder.
#[derive(Debug)]
pub(crate) struct Recording {
    tx: mpsc::Sender<Rec>,
    started: Instant,
    input: bool,
}

/// Where sessions are recorded (`[audit] recordings`), and whether a session that cannot
/// be recorded is refused (`[audit] on_failure`).
#[derive(Debug, Clone)]
pub(crate) struct Recordings {
    pub(crate) dir: PathBuf,
    pub(crate) refuse: bool,
}

/// The file's first line.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) size: TerminalSize,
    pub(crate) title: String,
    pub(crate) term: Option<String>,
    pub(crate) input: bool,
}

impl Recording {
    /// Creates `<dir>/<id>.cast` (mode 0600, never an existing file) and starts its writer.
    pub(crate) async fn create(dir: &Path, id: &str, h: Header) -> std::io::Result<Self> {
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .await?;
        let path = dir.join(format!("{id}.cast"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = serde_json::json!({
            "version": 2,
            "width": h.size.cols,
            "height": h.size.rows,
            "timestamp": secs,
            "title": h.title,
        });
        if let Some(term) = h.term {
            header["env"] = serde_json::json!({ "TERM": term });
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut w = Writer {
            file: tokio::io::BufWriter::new(file),
            path,
            sha: Sha256::new(),
            bytes: 0,
            ok: true,
            carry_out: Vec::new(),
            carry_in: Vec::new(),
            last: 0.0,
        };
        w.line(header.to_string()).await;
        tokio::spawn(w.run(rx));
        Ok(Self {
            tx,
            started: Instant::now(),
            input: h.input,
        })
    }

    fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The program's output.
    pub(crate) async fn output(&self, data: &[u8]) {
        let _ = self.tx.send(Rec::Out(data.to_vec(), self.at())).await;
    }

    /// The client's input: recorded only when the policy asked for it.
    pub(crate) async fn input(&self, data: &[u8]) {
        if self.input {
            let _ = self.tx.send(Rec::In(data.to_vec(), self.at())).await;
        }
    }

    /// A new window size.
    pub(crate) async fn resize(&self, size: TerminalSize) {
        let _ = self.tx.send(Rec::Resize(size, self.at())).await;
    }

    /// Flushes and closes the file; `None` if it was already finished.
    pub(crate) async fn finish(&self) -> Option<Recorded> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Rec::Finish(reply)).await.ok()?;
        answer.await.ok()
    }
}

struct Writer {
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: PathBuf,
    sha: Sha256,
    bytes: u64,
    ok: bool,
    carry_out: Vec<u8>,
    carry_in: Vec<u8>,
    /// The time of the last event.
    last: f64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Rec>) {
        while let Some(rec) = rx.recv().await {
            match rec {
                Rec::Out(d, t) => {
                    let text = utf8(&mut self.carry_out, &d);
                    self.event(t, "o", &text).await;
                }
                Rec::In(d, t) => {
                    let text = utf8(&mut self.carry_in, &d);
                    self.event(t, "i", &text).await;
                }
                Rec::Resize(s, t) => self.event(t, "r", &format!("{}x{}", s.cols, s.rows)).await,
                Rec::Finish(reply) => {
                    let _ = reply.send(self.close().await);
                    return;
                }
            }
        }
        // Every sender is gone without a finish (the session's tasks ended abnormally).
        let _ = self.close().await;
    }

    async fn event(&mut self, t: f64, kind: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        self.last = t;
        let line = serde_json::json!([(t * 1e6).round() / 1e6, kind, text]).to_string();
        self.line(line).await;
    }

    async fn line(&mut self, mut line: String) {
        if !self.ok {
            return;
        }
        line.push('\n');
        if self.bytes + line.len() as u64 > MAX_BYTES {
            tracing::warn!(path = %self.path.display(), limit = MAX_BYTES, "session recording reached its size limit; the recording ends here");
            self.ok = false;
            return;
        }
        match self.file.write_all(line.as_bytes()).await {
            Ok(()) => {
                self.sha.update(line.as_bytes());
                self.bytes += line.len() as u64;
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "session recording write failed; the recording ends here");
                self.ok = false;
            }
        }
    }

    async fn close(&mut self) -> Recorded {
        let carry = std::mem::take(&mut self.carry_out);
        if !carry.is_empty() {
            let text = String::from_utf8_lossy(&carry).into_owned();
            self.event(self.last, "o", &text).await;
        }
        if let Err(e) = self.file.flush().await {
            tracing::error!(path = %self.path.display(), error = %e, "session recording flush failed");
            self.ok = false;
        }
        if let Err(e) = self.file.get_ref().sync_all().await {
            tracing::warn!(path = %self.path.display(), error = %e, "session recording not synced");
        }
        Recorded {
            path: self.path.clone(),
            sha256: format!("{:x}", self.sha.clone().finalize()),
            bytes: self.bytes,
            complete: self.ok,
        }
    }
}

/// Decodes `carry` + `data` as UTF-8, replacing invalid bytes; an incomplete sequence at
/// the end stays in `carry` for the next chunk.
fn utf8(carry: &mut Vec<u8>, data: &[u8]) -> String {
    carry.extend_from_slice(data);
    let keep = incomplete_tail(carry);
    let rest = carry.split_off(carry.len() - keep);
    let text = String::from_utf8_lossy(carry).into_owned();
    *carry = rest;
    text
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not yet complete.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte: look further back
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_sequences_are_kept_whole() {
        let mut carry = Vec::new();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(utf8(&mut carry, &[b'a', euro[0]]), "a");
        assert_eq!(utf8(&mut carry, &euro[1..2]), "");
        assert_eq!(utf8(&mut carry, &[euro[2], b'b']), "€b");
        assert!(carry.is_empty());
        assert_eq!(utf8(&mut carry, &[0xff, b'c']), "\u{fffd}c");
    }

    #[tokio::test]
    async fn writes_asciicast_v2_and_hashes_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = Header {
            size: TerminalSize {
                rows: 30,
                cols: 100,
            },
            title: "t".into(),
            term: Some("xterm".into()),
            input: false,
        };
        let r = Recording::create(dir.path(), "abc", h).await.unwrap();
        r.output(b"hello\r\n").await;
        r.input(b"secret").await;
        r.resize(TerminalSize {
            rows: 40,
            cols: 120,
        })
        .await;
        let done = r.finish().await.unwrap();
        assert!(r.finish().await.is_none(), "finished once");
        let text = std::fs::read_to_string(&done.path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(
            (lines[0]["width"].clone(), lines[0]["height"].clone()),
            (100.into(), 30.into())
        );
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello\r\n");
        assert_eq!(lines[2][1], "r");
        assert_eq!(lines[2][2], "120x40");
        assert!(
            !text.contains("secret"),
            "input is not recorded unless asked"
        );
        assert_eq!(
            done.sha256,
            format!("{:x}", Sha256::digest(text.as_bytes()))
        );
        assert_eq!(done.bytes, text.len() as u64);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&done.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
