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

    /// Appends one record and returns its seq only once it is durable (written and
    /// fdatasync'ed). With [`OnFailure::Refuse`] a write failure is an `Err`; with
    /// [`OnFailure::Continue`] it is logged and `Ok(seq)` is returned anyway (that record
    /// is missing from the file and its seq is given to the next one).
    /// Dropping the call once the entry is queued does not withdraw it.
    pub async fn record(&self, entry: AuditEntry) -> Result<u64, AuditError> {
        let (ack, reply) = oneshot::channel();
        let sent = self.tx.send(Msg::Entry(Box::new(entry), ack)).await;
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
        let (dirty, path) = (false, path.clone());
        Ok(Self {
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
}
