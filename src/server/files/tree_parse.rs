//! PullTree's parser: the guest's archive, fed in chunks by the async side, parsed with
//! the `tar` crate on a blocking thread; each entry checked ([`TreeCheck`]) and sent on,
//! with its data and SHA-256, before the next is read.

use std::io::Read;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use super::tree_common::entry_refused;
use crate::{
    pb,
    qga::tree::check::{Kind, TreeCheck, components},
    server::{budget::ByteBudget, status::ApiError},
};

/// Data message size (and the parser's read size).
pub(super) const PIECE: usize = 256 << 10;

/// What the parser thread hands to the stream.
pub(super) enum Parsed {
    Entry(pb::TreeEntry),
    Data(Vec<u8>),
    FileEnd(Vec<u8>),
    Done(pb::TreeSummary),
}

/// A `Read` over the chunks the async side feeds (end of input when the sender is gone).
pub(super) struct Feed {
    pub(super) rx: mpsc::Receiver<Vec<u8>>,
    pub(super) buf: Vec<u8>,
    pub(super) at: usize,
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn refused(entry: &str, message: String) -> Status {
    entry_refused(entry, message, true)
}

/// The parser: checks each entry, sends it and its data. Runs on a blocking thread; a
/// stream that went away (send fails) ends it quietly.
pub(super) fn parse(
    input: Feed,
    allow_special: bool,
    mut budget: ByteBudget,
    out: &mpsc::Sender<Parsed>,
) -> Result<(), Status> {
    let bad = |e: std::io::Error| -> Status {
        ApiError::GuestUnsupported(format!("the guest's archive cannot be read: {e}")).into()
    };
    let mut ar = tar::Archive::new(input);
    let mut check = TreeCheck::new(allow_special);
    let mut sum = pb::TreeSummary::default();
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Ok(path) = String::from_utf8(e.path_bytes().into_owned()) else {
            return Err(refused(
                &raw,
                format!("entry {raw:?} refused: its name is not UTF-8"),
            ));
        };
        // The guest archived `.`: entries are "./NAME" (and "./" the root).
        let path = match path.strip_prefix("./") {
            Some(p) => p.to_owned(),
            None => path,
        };
        let h = e.header();
        use tar::EntryType as T;
        let kind = match h.entry_type() {
            T::Regular | T::Continuous => Kind::File,
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Link => Kind::Hardlink,
            T::Fifo => Kind::Fifo,
            T::Char | T::Block => {
                return Err(refused(&path, format!("entry {path:?} refused: a device")));
            }
            other => {
                return Err(refused(
                    &path,
                    format!("entry {path:?} refused: tar entry type {other:?}"),
                ));
            }
        };
        let target = match e.link_name_bytes() {
            Some(t) => match String::from_utf8(t.into_owned()) {
                Ok(t) => t,
                Err(_) => {
                    return Err(refused(
                        &path,
                        format!("entry {path:?} refused: its link target is not UTF-8"),
                    ));
                }
            },
            None => String::new(),
        };
        let norm = check
            .entry(&path, kind, &target)
            .map_err(|r| refused(&r.path, r.to_string()))?;
        let target = if kind == Kind::Hardlink {
            components(&target).map(|c| c.join("/")).unwrap_or_default()
        } else {
            target
        };
        let size = if kind == Kind::File { e.size() } else { 0 };
        sum.entries += 1;
        sum.bytes += size;
        sum.largest = sum.largest.max(size);
        if let Err(limit) = budget.take_all(size) {
            return Err(ApiError::PolicyMaxBytes {
                what: "the tree's file data exceeds",
                value: limit,
            }
            .into());
        }
        let h = e.header();
        let entry = pb::TreeEntry {
            path: if norm.is_empty() { ".".into() } else { norm },
            kind: match kind {
                Kind::File => pb::EntryKind::File,
                Kind::Dir => pb::EntryKind::Dir,
                Kind::Symlink => pb::EntryKind::Symlink,
                Kind::Fifo => pb::EntryKind::Fifo,
                Kind::Hardlink => pb::EntryKind::Hardlink,
            } as i32,
            mode: h.mode().unwrap_or(0) & 0o7777,
            mtime: h
                .mtime()
                .ok()
                .and_then(|m| i64::try_from(m).ok())
                .unwrap_or(0),
            size,
            target,
            uid: h
                .uid()
                .ok()
                .and_then(|u| u32::try_from(u).ok())
                .unwrap_or(0),
            gid: h
                .gid()
                .ok()
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or(0),
        };
        if out.blocking_send(Parsed::Entry(entry)).is_err() {
            return Ok(());
        }
        if kind == Kind::File {
            let mut hasher = Sha256::new();
            loop {
                let mut buf = vec![0u8; PIECE];
                let n = e.read(&mut buf).map_err(bad)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                hasher.update(&buf);
                if out.blocking_send(Parsed::Data(buf)).is_err() {
                    return Ok(());
                }
            }
            if out
                .blocking_send(Parsed::FileEnd(hasher.finalize().to_vec()))
                .is_err()
            {
                return Ok(());
            }
        }
    }
    let _ = out.blocking_send(Parsed::Done(sum));
    Ok(())
}
