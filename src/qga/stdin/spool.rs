//! The spool of streamed stdin (see [`super`]): segments written with `guest-file-write`,
//! rung on `ctl` for the pump, bounded in number; and the fast way for keystrokes.

use std::time::Duration;

use super::{QgaError, SPOOL_SEGMENTS, Segment, StdinFeed};
use crate::qga::commands::GuestExecStatus;

/// First and longest pause while waiting for the pump to take a segment.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(64);
/// Every this many waiting polls, check the holder still runs (its pump ended otherwise).
const POLLS_PER_CHECK: u32 = 16;

impl StdinFeed {
    /// Whether no closed segment waits for the pump any more (then a small chunk may go
    /// straight into the FIFO without overtaking spooled data).
    pub(super) async fn spool_drained(&mut self) -> Result<bool, QgaError> {
        let Some(&newest) = self.spooled.back() else {
            return Ok(true);
        };
        if self.segment_exists(newest).await? {
            return Ok(false);
        }
        // The pump takes segments in order: all older ones are gone too.
        self.spooled.clear();
        Ok(true)
    }

    /// Opens the next segment, once fewer than [`SPOOL_SEGMENTS`] closed ones wait.
    pub(super) async fn open_segment(&mut self) -> Result<(), QgaError> {
        let mut pause = POLL_FIRST;
        let mut polls = 0u32;
        while let Some(&oldest) = self.spooled.front() {
            if self.spooled.len() < SPOOL_SEGMENTS {
                break;
            }
            if !self.segment_exists(oldest).await? {
                self.spooled.pop_front();
                continue;
            }
            polls += 1;
            if polls.is_multiple_of(POLLS_PER_CHECK) {
                self.check_pump().await?;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
        let n = self.next;
        let file = self.client.open(&self.segment_path(n), "w").await?;
        self.next += 1;
        self.seg = Some(Segment { file, n, bytes: 0 });
        Ok(())
    }

    /// Closes the segment being written and rings its number for the pump.
    pub(super) async fn seal(&mut self) -> Result<(), QgaError> {
        let Some(seg) = self.seg.take() else {
            return Ok(());
        };
        seg.file.close().await?;
        self.ring(&seg.n.to_string()).await?;
        self.spooled.push_back(seg.n);
        Ok(())
    }

    /// Writes one line to `ctl` (a few bytes: one atomic pipe write, see the module
    /// notes; the pump reads it at once unless busy, and at most a few lines wait).
    pub(super) async fn ring(&mut self, line: &str) -> Result<(), QgaError> {
        // What is written into a FIFO nobody else has open is lost when the agent's
        // handle closes: ring only once the pump holds `ctl`.
        self.wait_pump().await?;
        if self.ctl.is_none() {
            self.ctl = Some(self.client.open(&format!("{}/ctl", self.dir), "r+").await?);
        }
        let Some(ctl) = &self.ctl else {
            return Ok(());
        };
        let res = self
            .write_whole(ctl.handle(), format!("{line}\n").as_bytes())
            .await;
        if res.is_err()
            && let Some(ctl) = self.ctl.take()
        {
            let _ = ctl.close().await;
        }
        res
    }

    fn segment_path(&self, n: u64) -> String {
        format!("{}/s.{n}", self.dir)
    }

    /// Whether the pump holds the FIFO open (it made `pready`): before that, a chunk
    /// written into the FIFO could be lost if no one else had it open when the agent's
    /// handle closes, so small chunks are spooled too.
    pub(super) async fn pump_ready(&mut self) -> Result<bool, QgaError> {
        if !self.pump_ready {
            self.pump_ready = self.exists(&format!("{}/pready", self.dir)).await?;
        }
        Ok(self.pump_ready)
    }

    /// Waits until the pump holds its FIFOs ([`StdinFeed::pump_ready`]), checking now and
    /// then that it has not ended instead.
    async fn wait_pump(&mut self) -> Result<(), QgaError> {
        let mut pause = POLL_FIRST;
        let mut polls = 0u32;
        while !self.pump_ready().await? {
            if !self.exists(&format!("{}/out", self.dir)).await? {
                return Err(super::stdin_failed("the session is over".into()));
            }
            polls += 1;
            if polls.is_multiple_of(POLLS_PER_CHECK) {
                self.check_pump().await?;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
        Ok(())
    }

    /// Whether segment `n` is still in the guest (the pump removes it once taken whole).
    async fn segment_exists(&self, n: u64) -> Result<bool, QgaError> {
        self.exists(&self.segment_path(n)).await
    }

    async fn exists(&self, path: &str) -> Result<bool, QgaError> {
        match self.client.open(path, "r").await {
            Ok(f) => {
                f.close().await?;
                Ok(true)
            }
            Err(QgaError::Agent { desc, .. }) if desc.contains("No such file") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Fails when the holder has ended: its pump is gone (the program closed its stdin or
    /// the session is over), so spooled segments would wait forever.
    async fn check_pump(&mut self) -> Result<(), QgaError> {
        let Some(holder) = self.holder else {
            return Err(super::stdin_failed("the stdin pump has ended".into()));
        };
        let st = self.client.call(&GuestExecStatus { pid: holder }).await?;
        if st.exited {
            // The agent forgets an exited pid once reported: nothing left to kill.
            self.holder = None;
            return Err(super::stdin_failed(
                "the stdin pump has ended (has the program closed its stdin?)".into(),
            ));
        }
        Ok(())
    }

    /// One small chunk through the FIFO handle; false when it must go the slow way
    /// (nothing of it was written: see the module notes).
    pub(super) async fn write_fast(&mut self, data: &[u8]) -> bool {
        if self.fifo.is_none() {
            match self.client.open(&format!("{}/in", self.dir), "r+").await {
                Ok(f) => self.fifo = Some(f),
                Err(e) => {
                    tracing::debug!(error = %e, "stdin FIFO not opened; spooling it");
                    return false;
                }
            }
        }
        let Some(f) = &self.fifo else {
            return false;
        };
        match self.write_whole(f.handle(), data).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "stdin chunk not taken by the FIFO (full?); spooling it");
                self.close_fifo().await;
                false
            }
        }
    }

    /// Writes a small chunk (at most `PIPE_BUF`) into a FIFO handle and flushes it: the
    /// pipe takes it whole or, when full, not at all (see the module notes).
    async fn write_whole(&self, handle: i64, data: &[u8]) -> Result<(), QgaError> {
        let w = self.client.file_write(handle, data).await?;
        if usize::try_from(w.count).ok() != Some(data.len()) {
            return Err(QgaError::Agent {
                command: "guest-file-write".into(),
                class: "ShortWrite".into(),
                desc: format!("{} of {} bytes buffered", w.count, data.len()),
            });
        }
        self.client.file_flush(handle).await
    }

    /// Closes the FIFO handle (before EOF: it holds a write end too).
    pub(super) async fn close_fifo(&mut self) {
        if let Some(f) = self.fifo.take()
            && let Err(e) = f.close().await
        {
            tracing::debug!(error = %e, "closing the stdin FIFO handle failed");
        }
    }
}
