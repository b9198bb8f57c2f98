//! The append-only sink: one writer thread owns the file, fed by a bounded queue, and
//! acknowledges each record only once it is written and `fdatasync`ed (group commit).

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{mpsc, oneshot};

use super::{
    AuditError, OnFailure,
    head::{self, Anchor, HeadFile},
    record::{self, AuditEntry},
    verify::{self, VerifyError},
};

/// Queue length between the callers and the writer; a full queue makes `record()` wait.
const QUEUE: usize = 1024;
/// Most records committed by one `fdatasync`.
const MAX_BATCH: usize = 1024;

type Ack = oneshot::Sender<Result<u64, AuditError>>;
/// An entry waiting for the writer, with where to send its seq.
type Queued = (Box<AuditEntry>, Ack);

#[derive(Debug)]
enum Msg {
    Entry(Box<AuditEntry>, Ack),
    Close(oneshot::Sender<()>),
}

/// A hash-chained JSONL audit log; cheap to clone, all clones feed one writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: Arc<Path>,
    tx: mpsc::Sender<Msg>,
}

impl AuditLog {
    /// Opens (creating with mode 0600, parent dirs too) or continues an existing chain
    /// (reads the last record's seq and hash; a broken tail is an error naming the line).
    /// The file is locked (`flock`) against a second writer.
    pub async fn open(path: &Path, on_failure: OnFailure) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ready_tx, ready) = oneshot::channel();
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("atp-audit".into())
            .spawn(move || match Writer::open(owned, on_failure) {
                Ok(writer) => {
                    let _ = ready_tx.send(Ok(()));
                    if let Some(done) = writer.run(rx) {
                        let _ = done.send(()); // the file is closed and unlocked
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|error| AuditError::Open {
                path: path.to_owned(),
                error,
            })?;
        ready.await.map_err(|_| closed(path))??;
        let path = path.into();
        Ok(Self { path, tx })
    }

    /// Appends one record (bounded first: see [`super::cap`]) and returns its seq only once it is durable (written and
    /// fdatasync'ed). With [`OnFailure::Refuse`] a write failure is an `Err`; with
    /// [`OnFailure::Continue`] it is logged and `Ok(seq)` is returned anyway (that record
    /// is missing from the file and its seq is given to the next one).
    /// Dropping the call once the entry is queued does not withdraw it.
    pub async fn record(&self, entry: AuditEntry) -> Result<u64, AuditError> {
        let (ack, reply) = oneshot::channel();
        let sent = self
            .tx
            .send(Msg::Entry(Box::new(entry.bounded()), ack))
            .await;
        sent.map_err(|_| closed(&self.path))?;
        reply.await.map_err(|_| closed(&self.path))?
    }

    /// Flushes what is queued and stops the writer (shutdown); later `record()` calls fail.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn closed(path: &Path) -> AuditError {
    AuditError::Closed {
        path: path.to_owned(),
    }
}

/// Owns the file and the head of the chain.
struct Writer {
    path: PathBuf,
    file: File,
    /// An exclusive `flock` on the file (regular files only), held while the writer runs.
    _lock: Option<Flock<File>>,
    /// A regular file (not e.g. a character device): positioned writes, truncation.
    regular: bool,
    /// Length of the file up to its last durable record.
    good_len: u64,
    /// A failed write left bytes past `good_len` that could not be cut off yet.
    dirty: bool,
    seq: u64,
    hash: String,
    on_failure: OnFailure,
    /// `<log>.head`, rewritten after every commit (regular files only).
    head: Option<HeadFile>,
}

impl Writer {
    fn open(path: PathBuf, on_failure: OnFailure) -> Result<Self, AuditError> {
        let err = |error| AuditError::Open {
            path: path.clone(),
            error,
        };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut options = OpenOptions::new();
        let file = options.read(true).write(true).create(true).mode(0o600);
        let file = file.open(&path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        let regular = meta.is_file();
        let lock = match regular {
            true => Some(file.try_clone().map_err(err)?),
            false => None, // e.g. /dev/full: not ours to lock
        };
        let locked = lock.map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock));
        let _lock = locked
            .transpose()
            .map_err(|(_, e)| err(io::Error::other(format!("locked by another writer? {e}"))))?;
        let good_len = if regular { meta.len() } else { 0 };
        if regular && let Some(dir) = dir {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?; // a new file's name
        }
        let (seq, hash) = verify::chain_head(&file, good_len, &path).map_err(|e| match e {
            VerifyError::Broken { line, reason, .. } => AuditError::BrokenTail {
                path: path.clone(),
                line,
                reason,
            },
            VerifyError::Io { error, .. } => err(error),
        })?;
        let head = if regular {
            check_head(&file, good_len, (seq, &hash), &path)?;
            let h = HeadFile::open(&path).map_err(err)?;
            h.set(&Anchor {
                seq,
                hash: hash.clone(),
                len: Some(good_len),
            })
            .map_err(err)?;
            Some(h)
        } else {
            None
        };
        let (dirty, path) = (false, path.clone());
        Ok(Self {
            head,
            path,
            file,
            _lock,
            regular,
            good_len,
            dirty,
            seq,
            hash,
            on_failure,
        })
    }

    /// Commits records until closed (returns the closer) or every sender is gone.
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Option<oneshot::Sender<()>> {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            let mut close = None;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Entry(entry, ack) => batch.push((entry, ack)),
                    Msg::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut batch);
            if close.is_some() {
                if let Some(h) = &self.head
                    && let Err(e) = h.sync()
                {
                    tracing::error!(error = %e, "cannot sync the audit head file");
                }
                return close;
            }
        }
        None
    }

    /// Seals and writes every queued entry, then one `fdatasync`, then acknowledges all.
    fn commit(&mut self, batch: &mut Vec<Queued>) {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let head = (self.seq, self.hash.clone());
        let (mut buf, mut acks) = (Vec::new(), Vec::with_capacity(batch.len()));
        for (entry, ack) in batch.drain(..) {
            match record::seal(self.seq + 1, &time, &self.hash, &entry) {
                Ok((line, hash)) => {
                    (self.seq, self.hash) = (self.seq + 1, hash);
                    buf.extend_from_slice(&line);
                    acks.push((self.seq, ack));
                }
                Err(e) => drop(ack.send(Err(AuditError::Encode(e)))),
            }
        }
        if acks.is_empty() {
            return;
        }
        let Err(e) = self.write(&buf) else {
            if let Some(h) = &self.head {
                let anchor = Anchor {
                    seq: self.seq,
                    hash: self.hash.clone(),
                    len: Some(self.good_len),
                };
                if let Err(e) = h.set(&anchor) {
                    tracing::error!(error = %e, "cannot update the audit head file");
                }
            }
            acks.into_iter()
                .for_each(|(seq, ack)| drop(ack.send(Ok(seq))));
            return;
        };
        (self.seq, self.hash) = head;
        self.dirty = self.regular && self.file.set_len(self.good_len).is_err();
        tracing::error!(path = %self.path.display(), error = %e, records = acks.len(),
            on_failure = ?self.on_failure, "cannot write audit records");
        let error = Arc::new(e);
        for (seq, ack) in acks {
            drop(ack.send(match self.on_failure {
                OnFailure::Continue => Ok(seq),
                OnFailure::Refuse => Err(AuditError::Write {
                    path: self.path.clone(),
                    error: error.clone(),
                }),
            }));
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.dirty {
            self.file.set_len(self.good_len)?;
            self.dirty = false;
        }
        if self.regular {
            self.file.write_all_at(buf, self.good_len)?;
        } else {
            self.file.write_all(buf)?;
        }
        self.file.sync_data()?;
        self.good_len += buf.len() as u64;
        Ok(())
    }
}

/// Refuses to continue a log that no longer holds the record its head file names:
/// records were cut from its end (or it was replaced) while the daemon was stopped.
fn check_head(
    file: &File,
    len: u64,
    (seq, hash): (u64, &str),
    path: &Path,
) -> Result<(), AuditError> {
    let tampered = |reason: String| AuditError::Tampered {
        path: path.to_owned(),
        reason,
    };
    let saved = head::read(&head::head_path(path)).map_err(|error| AuditError::Open {
        path: head::head_path(path),
        error,
    })?;
    let Some(saved) = saved else {
        if seq > 0 {
            tracing::warn!(path = %path.display(), "the audit log has no head file (written by an older version, or removed): \
                records cut from its end before now cannot be detected; one is kept from now on");
        }
        return Ok(());
    };
    let found = match saved.len {
        _ if seq < saved.seq => None,
        _ if seq == saved.seq => Some((seq, hash.to_owned())),
        Some(l) if l <= len => verify::chain_head(file, l, path).ok(),
        _ => None,
    };
    if found.as_ref() == Some(&(saved.seq, saved.hash.clone())) {
        return Ok(());
    }
    Err(tampered(format!(
        "the log ends at seq {seq}, but its head file records seq {} with hash {}: records were \
         removed or replaced while the daemon was stopped. Keep both files as evidence and move \
         them aside to start a new log",
        saved.seq, saved.hash
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{record::tests::entry, verify};

    fn batch(n: usize) -> (Vec<Queued>, Vec<oneshot::Receiver<Acked>>) {
        (0..n)
            .map(|_| {
                let (ack, reply) = oneshot::channel();
                ((Box::new(entry()), ack), reply)
            })
            .unzip()
    }

    type Acked = Result<u64, AuditError>;

    fn acks(replies: Vec<oneshot::Receiver<Acked>>) -> Vec<Acked> {
        replies
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect()
    }

    #[test]
    fn a_failed_commit_is_cut_off_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut writer = Writer::open(path.clone(), OnFailure::Refuse).unwrap();
        let (mut entries, replies) = batch(2);
        writer.commit(&mut entries);
        let seqs: Vec<u64> = acks(replies).into_iter().map(Result::unwrap).collect();
        assert_eq!(seqs, [1, 2], "one group commit");
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let real = std::mem::replace(&mut writer.file, full);
        let (mut entries, replies) = batch(3);
        writer.commit(&mut entries);
        let failed = acks(replies);
        assert!(
            failed
                .iter()
                .all(|r| matches!(r, Err(AuditError::Write { .. })))
        );
        assert!(writer.dirty, "/dev/full cannot be cut");
        writer.file = real;
        let garbage = [b'x'; 4096]; // longer than the next record
        writer.file.write_all_at(&garbage, writer.good_len).unwrap();
        let (mut entries, replies) = batch(1);
        writer.commit(&mut entries);
        assert_eq!(acks(replies)[0].as_ref().unwrap(), &3);
        assert_eq!(verify(&path).unwrap().records, 3);
    }

    #[test]
    fn a_log_cut_while_stopped_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut writer = Writer::open(path.clone(), OnFailure::Refuse).unwrap();
        let (mut entries, replies) = batch(3);
        writer.commit(&mut entries);
        assert!(acks(replies).iter().all(Result::is_ok));
        drop(writer);
        // Intact: continues.
        drop(Writer::open(path.clone(), OnFailure::Refuse).unwrap());
        // Cut the last record, as an intruder would after stopping the daemon.
        let text = std::fs::read(&path).unwrap();
        let cut = text[..text.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        std::fs::write(&path, &text[..cut]).unwrap();
        assert_eq!(
            verify(&path).unwrap().records,
            2,
            "the chain alone still verifies"
        );
        match Writer::open(path.clone(), OnFailure::Refuse) {
            Err(AuditError::Tampered { reason, .. }) => {
                assert!(
                    reason.contains("seq 2") && reason.contains("seq 3"),
                    "{reason}"
                );
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        // The head lagging behind the log (a crash between commit and head update) is fine.
        std::fs::write(&path, &text).unwrap();
        let head = crate::audit::head::head_path(&path);
        let anchor = crate::audit::head::read(&head).unwrap().unwrap();
        let earlier = crate::audit::head::Anchor {
            seq: 2,
            hash: record::unseal(text.split(|&b| b == b'\n').nth(1).unwrap())
                .unwrap()
                .hash,
            len: Some(cut as u64),
        };
        assert_eq!(anchor.seq, 3);
        std::fs::write(&head, serde_json::to_vec(&earlier).unwrap()).unwrap();
        drop(Writer::open(path, OnFailure::Refuse).unwrap());
    }
}
