//! The tar stream the daemon writes for a push: entries as they arrive, file data as it
//! arrives, directories last (deepest first, the root `.` at the very end) so that the
//! guest's `tar x` sets their modes and mtimes after their contents exist, and the
//! archive's SHA-256 for the guest to verify. GNU format (long names as `L`/`K` entries),
//! owner 0:0 (extracted with `-o`: the agent's user owns what it writes).

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// The end of an archive (see [`TarOut::finish`]).
#[derive(Debug)]
pub struct Finished {
    /// The last bytes to send.
    pub last: Vec<u8>,
    /// The archive's size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Directories holding links, with their mtimes, to set again after extraction.
    pub fixups: Vec<(u64, String)>,
}

/// Why the archive cannot take what it was given.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file's data is longer or shorter than its entry said.
    #[error("entry {path:?} announced {want} bytes, {got}")]
    SizeMismatch {
        /// The file.
        path: String,
        /// Its announced size.
        want: u64,
        /// What arrived instead, in words.
        got: String,
    },
    /// Data without a file entry to belong to.
    #[error("data outside a file entry")]
    StrayData,
    /// The tar writer refused a header (a path it cannot store).
    #[error("entry {path:?}: {err}")]
    Header {
        /// The entry.
        path: String,
        /// tar's reason.
        err: std::io::Error,
    },
}

/// A tar stream being written; bytes ready to send come out of [`TarOut::take`].
pub struct TarOut {
    b: tar::Builder<Vec<u8>>,
    hasher: Sha256,
    total: u64,
    /// The open file entry: path, announced size, bytes still to come.
    file: Option<(String, u64, u64)>,
    /// Directory entries held back: path ("." for the root), mode, mtime.
    dirs: Vec<(String, u32, u64)>,
    root_seen: bool,
    /// Directories holding a symbolic link ("." for the root): busybox tar creates some
    /// links after everything else, which moves these directories' mtimes.
    link_dirs: std::collections::BTreeSet<String>,
}

/// Most directories whose mtimes [`TarOut::finish`] lists for setting again.
pub const MAX_FIXUPS: usize = 256;

impl std::fmt::Debug for TarOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarOut")
            .field("total", &self.total)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Default for TarOut {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: EntryType, mode: u32, mtime: i64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_mtime(u64::try_from(mtime).unwrap_or(0));
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl TarOut {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
            hasher: Sha256::new(),
            total: 0,
            file: None,
            dirs: Vec::new(),
            root_seen: false,
            link_dirs: std::collections::BTreeSet::new(),
        }
    }

    fn close_file(&mut self) -> Result<(), ArchiveError> {
        if let Some((path, want, left)) = self.file.take() {
            if left > 0 {
                return Err(ArchiveError::SizeMismatch {
                    path,
                    want,
                    got: format!("got {}", want - left),
                });
            }
            let pad = (512 - (want % 512) as usize) % 512;
            self.b.get_mut().extend(std::iter::repeat_n(0u8, pad));
        }
        Ok(())
    }

    fn put(&mut self, mut h: Header, path: &str, target: Option<&str>) -> Result<(), ArchiveError> {
        self.close_file()?;
        let res = match target {
            Some(t) => self.b.append_link(&mut h, path, t),
            None => self.b.append_data(&mut h, path, std::io::empty()),
        };
        res.map_err(|err| ArchiveError::Header {
            path: path.to_owned(),
            err,
        })
    }

    /// A regular file of `size` bytes; its data follows through [`TarOut::data`].
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: i64,
        size: u64,
    ) -> Result<(), ArchiveError> {
        self.put(header(EntryType::Regular, mode, mtime, size), path, None)?;
        self.file = Some((path.to_owned(), size, size));
        Ok(())
    }

    /// Data of the open file entry.
    pub fn data(&mut self, d: &[u8]) -> Result<(), ArchiveError> {
        let Some((path, want, left)) = &mut self.file else {
            return Err(ArchiveError::StrayData);
        };
        if d.len() as u64 > *left {
            return Err(ArchiveError::SizeMismatch {
                path: path.clone(),
                want: *want,
                got: "got more".into(),
            });
        }
        *left -= d.len() as u64;
        self.b.get_mut().extend_from_slice(d);
        Ok(())
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str, mtime: i64) -> Result<(), ArchiveError> {
        let dir = path.rsplit_once('/').map_or(".", |(d, _)| d);
        self.link_dirs.insert(dir.to_owned());
        self.put(
            header(EntryType::Symlink, 0o777, mtime, 0),
            path,
            Some(target),
        )
    }

    /// A FIFO.
    pub fn fifo(&mut self, path: &str, mode: u32, mtime: i64) -> Result<(), ArchiveError> {
        self.put(header(EntryType::Fifo, mode, mtime, 0), path, None)
    }

    /// A directory ("" is the root); written at [`TarOut::finish`].
    pub fn dir(&mut self, path: &str, mode: u32, mtime: i64) -> Result<(), ArchiveError> {
        self.close_file()?;
        let path = if path.is_empty() {
            self.root_seen = true;
            ".".to_owned()
        } else {
            path.to_owned()
        };
        self.dirs
            .push((path, mode & 0o7777, u64::try_from(mtime).unwrap_or(0)));
        Ok(())
    }

    /// Bytes ready to send, once at least `min` are buffered.
    pub fn take(&mut self, min: usize) -> Option<Vec<u8>> {
        let buf = self.b.get_mut();
        if buf.len() < min.max(1) {
            return None;
        }
        let out = std::mem::take(buf);
        self.hasher.update(&out);
        self.total += out.len() as u64;
        Some(out)
    }

    /// Ends the archive: the held-back directories (deepest first; a root the client did
    /// not describe gets 0755 and `now`), then tar's end blocks. Returns the last bytes,
    /// the archive's size, its SHA-256, and the directories holding links with their
    /// mtimes (path, "." for the root; at most [`MAX_FIXUPS`], none beyond), deepest first.
    pub fn finish(mut self, now: i64) -> Result<Finished, ArchiveError> {
        self.close_file()?;
        if !self.root_seen {
            self.dirs
                .push((".".into(), 0o755, u64::try_from(now).unwrap_or(0)));
        }
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest first; the root (".", depth 0) last.
        dirs.sort_by_key(|(p, _, _)| {
            std::cmp::Reverse(if p == "." {
                0
            } else {
                p.matches('/').count() + 1
            })
        });
        let mut fixups: Vec<(u64, String)> = dirs
            .iter()
            .filter(|(p, _, _)| self.link_dirs.contains(p))
            .map(|(p, _, m)| (*m, p.clone()))
            .collect();
        if fixups.len() > MAX_FIXUPS {
            fixups.clear();
        }
        for (path, mode, mtime) in dirs {
            let mut h = header(EntryType::Directory, mode, 0, 0);
            h.set_mtime(mtime);
            self.b
                .append_data(&mut h, &path, std::io::empty())
                .map_err(|err| ArchiveError::Header { path, err })?;
        }
        let mut last = self.b.into_inner().map_err(|err| ArchiveError::Header {
            path: ".".into(),
            err,
        })?;
        // into_inner wrote the end blocks after what was still buffered.
        self.hasher.update(&last);
        let total = self.total + last.len() as u64;
        let sha: [u8; 32] = self.hasher.finalize().into();
        last.shrink_to_fit();
        Ok(Finished {
            last,
            size: total,
            sha256: sha,
            fixups,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_written_archive_reads_back_with_dirs_last() {
        let mut t = TarOut::new();
        t.dir("", 0o750, 1_700_000_000).unwrap();
        t.dir("sub", 0o700, 1_600_000_000).unwrap();
        t.file("sub/a", 0o640, 1_500_000_000, 3).unwrap();
        t.data(b"ab").unwrap();
        t.data(b"c").unwrap();
        let long = format!("sub/{}", "n".repeat(150));
        t.symlink(&long, "a", 0).unwrap();
        let mut bytes = t.take(1).unwrap();
        let f = t.finish(0).unwrap();
        let (total, sha) = (f.size, f.sha256);
        assert_eq!(f.fixups, [(1_600_000_000, "sub".to_owned())]);
        bytes.extend(f.last);
        assert_eq!(total, bytes.len() as u64);
        assert_eq!(sha.to_vec(), Sha256::digest(&bytes).to_vec());
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            seen.push((p, e.header().mode().unwrap(), d));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["sub/a", long.as_str(), "sub", "."]);
        assert_eq!(seen[0].2, b"abc");
        assert_eq!(seen[3].1, 0o750);
    }

    #[test]
    fn sizes_are_held_to_the_entry() {
        let mut t = TarOut::new();
        t.file("a", 0o644, 0, 2).unwrap();
        assert!(t.data(b"abc").is_err());
        t.data(b"a").unwrap();
        assert!(matches!(
            t.symlink("b", "a", 0),
            Err(ArchiveError::SizeMismatch { .. })
        ));
        assert!(matches!(
            TarOut::new().data(b"x"),
            Err(ArchiveError::StrayData)
        ));
    }
}
