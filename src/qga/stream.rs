//! Live output of a guest program: [`ExecSession`] tails the files the redirecting
//! wrapper writes (see [`super::exec`]), at saved offsets, reaps the process and removes
//! its directory at the end.
//!
//! A session can let go of its guest file handles ([`ExecSession::release_handles`]) and
//! reopen them at the saved offsets on the next read, so a program nobody is reading holds
//! no handle in the agent. [`ExecSession::step`] does one bounded round of agent calls and
//! never sleeps, so an owner can interleave it with its own timers;
//! [`ExecSession::next_event`] is the simple loop over it for library users.

use std::time::{Duration, Instant};

use super::{
    AgentClient, QgaError,
    commands::{ExecStatus, GuestExecStatus, Whence},
    exec::{ExecEvent, ExecExit},
    file::DEFAULT_CHUNK,
    kill::KillOutcome,
};

/// One output file being tailed.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub(crate) file: Option<super::OpenFile>,
    offset: u64,
    /// Read to its end after the program's exit was seen: nothing more to read.
    drained: bool,
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
    /// Our kill (for the time limit) hit the running program.
    timed_out: bool,
    exited: Option<ExecStatus>,
    /// When the exit was first seen (the exit's duration).
    ended: Option<Duration>,
    poll: Duration,
    pub(crate) finished: bool,
    /// Windows fallback: captured output not yet emitted.
    pending: Vec<ExecEvent>,
    /// Windows: a `cmd.exe` command whose console output is made UTF-8 (`codepage`).
    pub(crate) console_text: bool,
}

const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);
/// Until this age a round asks for the program's exit alone, not for its output: most
/// commands end within it, and each read is an agent call (two requests over libvirt)
/// that takes the guest's CPU from the program. Output written meanwhile comes with the
/// first round after it.
const FIRST_READ: Duration = Duration::from_millis(150);

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
            ended: None,
            poll: POLL_MIN,
            finished: false,
            pending: Vec::new(),
            console_text: false,
        }
    }

    /// A session for a program another client (an earlier daemon instance) started under
    /// the redirecting wrapper in `dir`: pid `pid`, started at `started`. The output is
    /// read again from the start of the files (offsets 0); the agent must still know the
    /// pid (it keeps an unreaped program's status across client reconnects).
    /// Fails with `InvalidArgument` when `dir` is not an exec directory
    /// ([`ExecSession::is_exec_dir`]): the session reads it and removes it at the end.
    pub fn adopt(
        client: AgentClient,
        pid: i64,
        dir: String,
        started: Instant,
    ) -> Result<Self, QgaError> {
        if !Self::is_exec_dir(&dir) {
            return Err(QgaError::InvalidArgument(format!(
                "{dir:?} is not an exec directory"
            )));
        }
        Ok(Self::new(client, pid, Some(dir), started, None))
    }

    /// Whether `dir` has the form of the directories exec sessions make:
    /// `/tmp/.atp-exec-` and 32 hex digits.
    pub fn is_exec_dir(dir: &str) -> bool {
        dir.strip_prefix(super::sweep::EXEC_DIR_PREFIX)
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// The guest directory the wrapper writes the output to (`None`: Windows, captured).
    pub fn dir(&self) -> Option<&str> {
        self.dir.as_deref()
    }

    /// The guest pid.
    pub fn pid(&self) -> i64 {
        self.pid
    }

    /// When the program was started (as seen by the host).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Bytes of stdout and stderr read so far.
    pub fn offsets(&self) -> (u64, u64) {
        (self.out.offset, self.err.offset)
    }

    /// Whether the `Exited` event has been returned.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the agent has reported the program's exit (its output may still be unread).
    pub fn has_exited(&self) -> bool {
        self.exited.is_some() || self.finished
    }

    /// How the program ended, once the agent reported it (its output may still be unread).
    pub fn exit(&self) -> Option<ExecExit> {
        self.exited.as_ref().map(|st| self.exit_of(st))
    }

    /// Guest file handles the session holds now (0, 1 or 2).
    pub fn open_handles(&self) -> usize {
        usize::from(self.out.file.is_some()) + usize::from(self.err.file.is_some())
    }

    /// Closes the session's guest file handles now, leaving the process running. The
    /// offsets are kept: the next read reopens the files there.
    pub async fn release_handles(&mut self) {
        for tail in [&mut self.out, &mut self.err] {
            if let Some(f) = tail.file.take()
                && let Err(e) = f.close().await
            {
                tracing::warn!(error = %e, "closing exec output handle failed");
            }
        }
    }

    /// Same as [`ExecSession::release_handles`] (the name the daemon's shutdown uses).
    pub async fn close_handles(&mut self) {
        self.release_handles().await;
    }

    /// Kills the program if it still runs (see [`AgentClient::kill`]); `for_timeout`
    /// marks the exit as timed out when the kill hit it. Never signals an exited program:
    /// when the agent reports the exit here, it is kept and returned by the next read.
    pub async fn kill(&mut self, for_timeout: bool) -> Result<KillOutcome, QgaError> {
        if self.has_exited() {
            return Ok(KillOutcome::Gone);
        }
        let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
        if st.exited {
            self.set_exited(st.clone());
            return Ok(KillOutcome::Exited(st));
        }
        let res = self
            .client
            .kill_running(self.pid, self.dir.as_deref())
            .await?;
        if res == KillOutcome::Killed && for_timeout {
            self.timed_out = true;
        }
        Ok(res)
    }

    /// Asks the agent whether the program has exited (no output is read). True once it has.
    pub async fn poll_exit(&mut self) -> Result<bool, QgaError> {
        if self.has_exited() {
            return Ok(true);
        }
        let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
        if st.exited {
            self.set_exited(st);
        }
        Ok(self.exited.is_some())
    }

    /// Bytes the program has written to stdout and stderr so far, read from the sizes of
    /// its output files (each opened, sought to its end and closed again). Windows: 0.
    pub async fn output_size(&self) -> Result<u64, QgaError> {
        let Some(dir) = &self.dir else {
            return Ok(0);
        };
        let mut total = 0u64;
        for name in ["out", "err"] {
            let f = self.client.open(&format!("{dir}/{name}"), "r").await?;
            let pos = self.client.file_seek(f.handle(), 0, Whence::End).await;
            f.close().await?;
            total += u64::try_from(pos?.position).unwrap_or(0);
        }
        Ok(total)
    }

    /// The next event, or `None` after `Exited` was returned. Kills the program past the
    /// session's time limit.
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, QgaError> {
        loop {
            if self.finished && self.pending.is_empty() {
                return Ok(None);
            }
            // Checked on every call, so a program that never stops printing still times out.
            if let Some(d) = self.deadline
                && !self.timed_out
                && !self.has_exited()
                && Instant::now() >= d
            {
                self.kill(true).await?;
                // Stop checking even if the kill found it gone.
                self.deadline = None;
            }
            if let Some(ev) = self.step().await? {
                return Ok(Some(ev));
            }
            tokio::time::sleep(self.poll).await;
            self.poll = (self.poll * 2).min(POLL_MAX);
        }
    }

    /// One round without sleeping: the next chunk of stdout or stderr, else the exit
    /// once both files are drained after it, else `None` (running, nothing new).
    pub async fn step(&mut self) -> Result<Option<ExecEvent>, QgaError> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        if self.finished {
            return Ok(None);
        }
        if self.dir.is_none() {
            return self.step_captured().await;
        }
        if self.exited.is_none() && self.started.elapsed() < FIRST_READ {
            let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
            if !st.exited {
                return Ok(None);
            }
            self.set_exited(st);
        }
        for _ in 0..2 {
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
            let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
            if !st.exited {
                return Ok(None);
            }
            // Exited: read what it wrote last, then report the exit.
            self.set_exited(st);
        }
        Ok(None)
    }

    async fn read_tail(&mut self, stdout: bool) -> Result<Option<ExecEvent>, QgaError> {
        let (tail, name) = if stdout {
            (&mut self.out, "out")
        } else {
            (&mut self.err, "err")
        };
        if tail.drained {
            return Ok(None);
        }
        if tail.file.is_none() {
            let Some(dir) = &self.dir else {
                return Ok(None);
            };
            let f = self.client.open(&format!("{dir}/{name}"), "r").await?;
            if tail.offset > 0 {
                let at = i64::try_from(tail.offset).unwrap_or(i64::MAX);
                self.client.file_seek(f.handle(), at, Whence::Set).await?;
            }
            tail.file = Some(f);
        }
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
        // At the end after the exit: the program writes no more (what its orphans may
        // still write is not waited for, as before).
        if self.exited.is_some() && (r.eof || data.is_empty()) {
            tail.drained = true;
        }
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

    pub(crate) fn set_exited(&mut self, st: ExecStatus) {
        self.ended.get_or_insert_with(|| self.started.elapsed());
        self.exited = Some(st);
    }

    fn exit_of(&self, st: &ExecStatus) -> ExecExit {
        ExecExit {
            exit_code: st.exit_code,
            signal: st.signal,
            duration: self.ended.unwrap_or_else(|| self.started.elapsed()),
            // Only when our kill hit it and it died by a signal: a program that exited
            // on its own (code 0 included) did not time out.
            timed_out: self.timed_out && st.signal.is_some(),
        }
    }

    /// Windows fallback: once the program exited, emit the captured output and the exit.
    async fn step_captured(&mut self) -> Result<Option<ExecEvent>, QgaError> {
        let st = match self.exited.take() {
            Some(st) => st,
            None => {
                let st = self.client.call(&GuestExecStatus { pid: self.pid }).await?;
                if !st.exited {
                    return Ok(None);
                }
                st
            }
        };
        self.finished = true;
        let exit = self.exit_of(&st);
        let (mut out, mut err) = (st.stdout(), st.stderr());
        self.out.offset = out.len() as u64;
        self.err.offset = err.len() as u64;
        if self.console_text {
            out = self.client.windows_text(out).await;
            err = self.client.windows_text(err).await;
        }
        if !out.is_empty() {
            self.pending.push(ExecEvent::Stdout(out));
        }
        if !err.is_empty() {
            self.pending.push(ExecEvent::Stderr(err));
        }
        self.pending.push(ExecEvent::Exited(exit));
        Ok(Some(self.pending.remove(0)))
    }

    /// Marks the session finished and removes its guest directory without reading the
    /// rest of its output (a daemon giving up on an exited exec nobody collected).
    pub async fn discard(&mut self) {
        self.cleanup().await;
    }

    async fn cleanup(&mut self) {
        self.finished = true;
        self.release_handles().await;
        if let Some(dir) = self.dir.take()
            && !self.client.retire_exec_dir(&dir)
        {
            self.client.remove_dir(&dir).await;
        }
    }
}
