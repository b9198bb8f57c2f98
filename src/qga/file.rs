//! File helpers over `guest-file-*`: chunked whole-file read/write within each transport's
//! per-call bounds, and handles that are closed on every path.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::{
    AgentClient, QgaError,
    commands::{
        FileRead, FileSeek, FileWrite, GuestFileClose, GuestFileFlush, GuestFileOpen,
        GuestFileRead, GuestFileSeek, GuestFileWrite, Whence,
    },
};

/// Chunk used by whole-file helpers: 1 MiB was measured fastest on both transports.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// A guest file handle that is closed when dropped, even if the owning future is
/// cancelled (the close is then queued behind whatever is in flight). It holds one of its
/// client's handle permits ([`AgentClient::with_handle_limit`]) until the agent has
/// answered the close.
#[derive(Debug)]
pub struct OpenFile {
    client: AgentClient,
    handle: i64,
    open: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl OpenFile {
    /// The agent's handle number.
    pub fn handle(&self) -> i64 {
        self.handle
    }

    /// Closes the handle now and reports the agent's answer.
    ///
    /// Cancel-safe: the close runs in its own task, so a caller that gives up while it
    /// is queued (the transport skips queued requests whose caller left) does not leave
    /// the handle open.
    pub async fn close(mut self) -> Result<(), QgaError> {
        self.open = false;
        let (client, handle, permit) = (self.client.clone(), self.handle, self.permit.take());
        tokio::spawn(async move {
            let res = client.file_close(handle).await;
            drop(permit);
            res
        })
        .await
        .map_err(|_| QgaError::Transport(crate::transport::TransportError::Stopped))?
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let client = self.client.clone();
        let handle = self.handle;
        let permit = self.permit.take();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = client.file_close(handle).await {
                        tracing::warn!(handle, error = %e, "closing an abandoned guest file handle failed");
                    }
                    drop(permit);
                });
            }
            Err(_) => tracing::warn!(
                handle,
                "guest file handle dropped outside a runtime; left open"
            ),
        }
    }
}

impl AgentClient {
    /// `guest-file-open`; `mode` defaults to `r`.
    pub async fn file_open(&self, path: &str, mode: Option<&str>) -> Result<i64, QgaError> {
        if path.is_empty() || path.contains('\0') {
            return Err(QgaError::InvalidArgument(format!(
                "invalid guest path {path:?}"
            )));
        }
        self.call(&GuestFileOpen {
            path: path.to_owned(),
            mode: mode.map(str::to_owned),
        })
        .await
    }

    /// Opens `path` and returns a handle that closes itself when dropped.
    ///
    /// Bounded: the client (with its clones) holds at most its handle limit
    /// ([`AgentClient::with_handle_limit`]) open at once; beyond it this fails at once with
    /// [`QgaError::LimitExceeded`] and sends nothing, so one user cannot use up the
    /// agent's fds for the others.
    ///
    /// Cancel-safe: if the caller gives up while the open is in flight, the handle the
    /// agent returns afterwards is closed instead of leaked.
    pub async fn open(&self, path: &str, mode: &str) -> Result<OpenFile, QgaError> {
        let state = self.state();
        let permit = Arc::clone(&state.handles)
            .try_acquire_owned()
            .map_err(|_| QgaError::LimitExceeded {
                what: "too many open guest file handles on this guest",
                limit: "limits.open_handles_per_guest",
                value: state.handle_limit,
            })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let client = self.clone();
        let (path, mode) = (path.to_owned(), mode.to_owned());
        tokio::spawn(async move {
            let res = client.file_open(&path, Some(&mode)).await;
            // The permit travels with the result; a cancelled open's orphan keeps it
            // until the agent has closed the handle.
            if let Err((Ok(orphan), permit)) = tx.send((res, permit)) {
                if let Err(e) = client.file_close(orphan).await {
                    tracing::warn!(handle = orphan, error = %e, "closing an orphaned guest file handle failed");
                }
                drop(permit);
            }
        });
        let (res, permit) = rx
            .await
            .map_err(|_| QgaError::Transport(crate::transport::TransportError::Stopped))?;
        Ok(OpenFile {
            client: self.clone(),
            handle: res?,
            open: true,
            permit: Some(permit),
        })
    }

    /// `guest-file-read` of up to `count` bytes (4096 when `None`). The count is clamped
    /// to what this transport can carry in one reply, so a huge count cannot overflow
    /// libvirt's reply limits.
    pub async fn file_read(&self, handle: i64, count: Option<usize>) -> Result<FileRead, QgaError> {
        let max = self.transport().chunk_bounds().max_read;
        let count = count.map(|c| c.min(max) as u64);
        self.call(&GuestFileRead { handle, count }).await
    }

    /// Queues a `guest-file-read` (count clamped like [`AgentClient::file_read`]) and
    /// returns once queued; reads submitted in turn run in order on the handle.
    pub async fn submit_file_read(
        &self,
        handle: i64,
        count: usize,
    ) -> Result<super::Submitted<GuestFileRead>, QgaError> {
        let max = self.transport().chunk_bounds().max_read;
        self.submit(&GuestFileRead {
            handle,
            count: Some(count.min(max) as u64),
        })
        .await
    }

    /// `guest-file-write` of `data`, split into calls the transport can carry.
    /// Returns the total bytes written.
    pub async fn file_write(&self, handle: i64, data: &[u8]) -> Result<FileWrite, QgaError> {
        let max = self
            .transport()
            .chunk_bounds()
            .max_write
            .min(DEFAULT_CHUNK * 2);
        let mut total = FileWrite::default();
        for chunk in data.chunks(max.max(1)) {
            let w = self.call(&GuestFileWrite::new(handle, chunk)).await?;
            total.count += w.count;
            total.eof = w.eof;
            if (w.count as usize) < chunk.len() {
                break;
            }
        }
        Ok(total)
    }

    /// `guest-file-seek`.
    pub async fn file_seek(
        &self,
        handle: i64,
        offset: i64,
        whence: Whence,
    ) -> Result<FileSeek, QgaError> {
        self.call(&GuestFileSeek {
            handle,
            offset,
            whence,
        })
        .await
    }

    /// `guest-file-flush` (write errors such as a full disk surface here).
    pub async fn file_flush(&self, handle: i64) -> Result<(), QgaError> {
        self.call(&GuestFileFlush { handle }).await.map(drop)
    }

    /// `guest-file-close`. Never retried: a second close could hit a reused handle.
    pub async fn file_close(&self, handle: i64) -> Result<(), QgaError> {
        self.call(&GuestFileClose { handle }).await.map(drop)
    }

    /// Reads a whole file in [`DEFAULT_CHUNK`] chunks (bounded per transport).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, QgaError> {
        self.read_file_capped(path, usize::MAX)
            .await
            .map(|(d, _)| d)
    }

    /// Reads at most `cap` bytes of a file; the flag says whether more was left.
    pub async fn read_file_capped(
        &self,
        path: &str,
        cap: usize,
    ) -> Result<(Vec<u8>, bool), QgaError> {
        let file = self.open(path, "r").await?;
        let res = self.read_open(file.handle(), cap).await;
        let closed = file.close().await;
        let out = res?;
        closed?;
        Ok(out)
    }

    async fn read_open(&self, handle: i64, cap: usize) -> Result<(Vec<u8>, bool), QgaError> {
        let mut data = Vec::new();
        loop {
            let want = DEFAULT_CHUNK.min(cap - data.len()).max(1);
            let r = self.file_read(handle, Some(want)).await?;
            let chunk = r.data().map_err(|e| QgaError::Agent {
                command: "guest-file-read".into(),
                class: "InvalidReply".into(),
                desc: format!("bad base64 from agent: {e}"),
            })?;
            let room = cap - data.len();
            let truncated = chunk.len() > room;
            data.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if truncated {
                return Ok((data, true));
            }
            if r.eof || chunk.is_empty() {
                return Ok((data, false));
            }
            if data.len() == cap {
                // Full: is there more?
                let more = self.file_read(handle, Some(1)).await?;
                return Ok((data, more.count > 0));
            }
        }
    }

    /// Creates or truncates `path` and writes `data` in chunks, then flushes and closes.
    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), QgaError> {
        let file = self.open(path, "w").await?;
        let res = async {
            let w = self.file_write(file.handle(), data).await?;
            if w.count as usize != data.len() {
                return Err(QgaError::Agent {
                    command: "guest-file-write".into(),
                    class: "ShortWrite".into(),
                    desc: format!("wrote {} of {} bytes to {path}", w.count, data.len()),
                });
            }
            self.file_flush(file.handle()).await
        }
        .await;
        let closed = file.close().await;
        res?;
        closed
    }
}
