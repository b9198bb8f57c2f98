//! Live output of a guest program: [`ExecSession`] tails the files the redirecting
//! wrapper writes (see [`super::exec`]), at saved offsets, with an adaptive poll, reaps
//! the process and removes its directory at the end.

use std::time::{Duration, Instant};

use super::{
    AgentClient, QgaError,
    commands::{ExecStatus, GuestExecStatus},
    exec::{ExecEvent, ExecExit},
    file::DEFAULT_CHUNK,
};

/// One output file being tailed.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub(crate) file: Option<super::OpenFile>,
    offset: u64,
}

/// A running streamed exec. Dropping it closes its file handles (the process keeps
/// running); read it to the end to have the guest directory removed.
#[derive(Debug)]
pub struct ExecSession {
    client: AgentClient,
    pid: i64,
    dir: Option<String>,
    pub(crate) out: Tail,
    pub(crate) err: Tail,
    started: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
    exited: Option<ExecStatus>,
    poll: Duration,
    pub(crate) finished: bool,
    /// Windows fallback: captured output not yet emitted.
    pending: Vec<ExecEvent>,
}

const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);

impl ExecSession {
    pub(crate) fn new(
        client: AgentClient,
        pid: i64,
        dir: Option<String>,
        started: Instant,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            client,
            pid,
            dir,
            out: Tail::default(),
            err: Tail::default(),
            started,
            deadline: timeout.map(|t| started + t),
            timed_out: false,
            exited: None,
            poll: POLL_MIN,
            finished: false,
            pending: Vec::new(),
        }
    }

    /// The guest pid.
    pub fn pid(&self) -> i64 {
        self.pid
    }

    /// Bytes of stdout and stderr delivered so far.
    pub fn offsets(&self) -> (u64, u64) {
        (self.out.offset, self.err.offset)
    }

    /// Whether the `Exited` event has been returned.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Closes the session's guest file handles now, leaving the process running (used
    /// when a daemon shuts down or gives up on a parked session).
    pub async fn close_handles(&mut self) {
        for tail in [&mut self.out, &mut self.err] {
            if let Some(f) = tail.file.take()
                && let Err(e) = f.close().await
            {
                tracing::warn!(error = %e, "closing exec output handle failed");
            }
        }
    }

    /// Kills the process now; its `Exited` event will follow.
    pub async fn kill(&mut self) -> Result<(), QgaError> {
        if self.exited.is_none() && !self.finished {
            self.client.kill(self.pid).await?;
        }
        Ok(())
    }

    /// The next event, or `None` after `Exited` was returned.
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, QgaError> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        if self.finished {
            return Ok(None);
        }
        if self.dir.is_none() {
            return self.next_captured().await;
        }
        // Checked on every call, so a program that never stops printing still times out.
        self.check_deadline().await?;
        loop {
            if let Some(ev) = self.read_tail(true).await? {
                return Ok(Some(ev));
            }
            if let Some(ev) = self.read_tail(false).await? {
                return Ok(Some(ev));
            }
            if let Some(st) = &self.exited {
                // Both files drained after exit: done.
                let exit = self.exit_of(st);
                self.cleanup().await;
                return Ok(Some(ExecEvent::Exited(exit)));
            }
            self.check_deadline().await?;
            let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
            if st.exited {
                self.exited = Some(st);
                continue;
            }
            tokio::time::sleep(self.poll).await;
            self.poll = (self.poll * 2).min(POLL_MAX);
        }
    }

    async fn read_tail(&mut self, stdout: bool) -> Result<Option<ExecEvent>, QgaError> {
        let tail = if stdout { &mut self.out } else { &mut self.err };
        let Some(file) = &tail.file else {
            return Ok(None);
        };
        let r = self
            .client
            .file_read(file.handle(), Some(DEFAULT_CHUNK))
            .await?;
        let data = r.data().map_err(|e| QgaError::Agent {
            command: "guest-file-read".into(),
            class: "InvalidReply".into(),
            desc: format!("bad base64 from agent: {e}"),
        })?;
        if data.is_empty() {
            return Ok(None);
        }
        tail.offset += data.len() as u64;
        self.poll = POLL_MIN;
        Ok(Some(if stdout {
            ExecEvent::Stdout(data)
        } else {
            ExecEvent::Stderr(data)
        }))
    }

    async fn check_deadline(&mut self) -> Result<(), QgaError> {
        if let Some(d) = self.deadline
            && !self.timed_out
            && Instant::now() >= d
        {
            self.client.kill(self.pid).await?;
            self.timed_out = true;
        }
        Ok(())
    }

    fn exit_of(&self, st: &ExecStatus) -> ExecExit {
        ExecExit {
            exit_code: st.exit_code,
            signal: st.signal,
            duration: self.started.elapsed(),
            timed_out: self.timed_out,
        }
    }

    /// Windows fallback: wait for exit, then emit the captured output.
    async fn next_captured(&mut self) -> Result<Option<ExecEvent>, QgaError> {
        loop {
            self.check_deadline().await?;
            let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
            if st.exited {
                self.finished = true;
                let exit = self.exit_of(&st);
                let (out, err) = (st.stdout(), st.stderr());
                if !out.is_empty() {
                    self.pending.push(ExecEvent::Stdout(out));
                }
                if !err.is_empty() {
                    self.pending.push(ExecEvent::Stderr(err));
                }
                self.pending.push(ExecEvent::Exited(exit));
                return Ok(Some(self.pending.remove(0)));
            }
            tokio::time::sleep(self.poll).await;
            self.poll = (self.poll * 2).min(POLL_MAX);
        }
    }

    async fn cleanup(&mut self) {
        self.finished = true;
        self.close_handles().await;
        if let Some(dir) = self.dir.take() {
            self.client.remove_dir(&dir).await;
        }
    }
}
