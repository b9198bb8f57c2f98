//! Streamed stdin for a guest program, with stock qemu-ga (POSIX guests).
//!
//! qemu-ga makes every `guest-file-open`ed descriptor non-blocking and writes through
//! stdio, so writing a large chunk into a pipe with `guest-file-write` loses track of
//! partial writes. Instead the exec's private directory (root's, mode 0700) holds a FIFO
//! `in`, which the wrapper makes the program's stdin, a FIFO `ctl`, and spool files:
//! - a **holder** ([`HOLDER`]), started by `guest-exec` before the program, starts the
//!   **pump** ([`PUMP`]) and watches the session: it ends the pump when the directory is
//!   gone, and hangs the program up when the client's lease goes stale (a daemon killed
//!   mid-session), so nothing outlives its session;
//! - chunks are written with `guest-file-write` into spool files `s.N` (the same calls as
//!   WriteFile, no process per chunk), up to [`SEGMENT_MAX`] each. A closed segment's
//!   number is rung on `ctl`; the pump copies the segments into `in` in that order and
//!   removes each once the program's pipe took it whole. At most [`SPOOL_SEGMENTS`]
//!   closed segments wait in the guest: beyond that the writer waits until the pump took
//!   the oldest (backpressure: a program that does not read holds the stream back);
//! - EOF is `e` rung on `ctl`: the pump ends after the last segment and the program reads
//!   end of file.
//!
//! Small chunks (keystrokes: at most [`FAST_MAX`] bytes) take a faster way once the pump
//! holds the FIFO and when no segment is waiting: `guest-file-write` and `guest-file-flush` on the FIFO opened `r+`
//! (read-write never blocks the agent on open). A pipe write of at most `PIPE_BUF` bytes
//! is atomic, and the chunk fits the agent's stdio buffer, so the flush writes it whole or
//! (pipe full: EAGAIN) not at all; then the handle is closed and the chunk is spooled.

use std::collections::VecDeque;

use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    AgentClient, ExecSession, GuestExecCommand, OpenFile, QgaError, TerminalSize,
    commands::GuestExec, exec::DEFAULT_PATH, kill::KillOutcome,
};

mod guest;
mod spool;

use guest::{HANGUP, HOLDER, LEASE_POLLS, LEASE_RENEW, PUMP};

/// The largest chunk written through the FIFO handle: it fits every libc's stdio buffer
/// (musl's is 1 KiB) and is below `PIPE_BUF`, so the pipe write is atomic.
pub const FAST_MAX: usize = 1024;

/// The largest spool segment. Each costs four agent calls beyond its data (open, close,
/// and the ring's write and flush), small beside 2 MiB even over libvirt.
pub const SEGMENT_MAX: usize = 2 << 20;

/// Closed segments that may wait in the guest for the pump (with the one being written,
/// at most 8 MiB of the guest's /tmp per session).
pub const SPOOL_SEGMENTS: usize = 3;

/// The input side of an interactive exec: [`StdinFeed::write`] chunks in order, then
/// [`StdinFeed::close`] (EOF). Keep it until the session ends (it renews the lease that
/// tells the guest its client is alive), then call [`StdinFeed::abort`], which ends a
/// pump still waiting to deliver. A dropped feed leaves its holder until the exec's
/// directory is removed.
#[derive(Debug)]
pub struct StdinFeed {
    client: AgentClient,
    dir: String,
    /// The holder's pid, until it has been ended (or seen exited).
    holder: Option<i64>,
    /// Stdin has been closed (EOF rung) or aborted.
    closed: bool,
    /// The program runs on a terminal.
    tty: bool,
    /// The FIFO `in`, opened read-write, for small chunks (see the module notes).
    fifo: Option<OpenFile>,
    /// The FIFO `ctl`, opened read-write, where segment numbers are rung.
    ctl: Option<OpenFile>,
    /// The segment being written, if any.
    seg: Option<Segment>,
    /// Closed segments not yet seen taken by the pump, oldest first.
    spooled: VecDeque<u64>,
    /// The next segment's number.
    next: u64,
    /// The pump has the FIFO open (see [`guest::PUMP`]).
    pump_ready: bool,
    /// Stops the lease renewal when the feed is aborted or dropped.
    lease: Option<DropGuard>,
}

/// A spool segment being written.
#[derive(Debug)]
struct Segment {
    file: OpenFile,
    n: u64,
    bytes: usize,
}

impl AgentClient {
    /// Starts `cmd` (POSIX guests) with its stdin fed through the returned [`StdinFeed`];
    /// `cmd.input_data` must be empty. Windows guests answer `Unsupported`.
    pub async fn exec_interactive(
        &self,
        cmd: &GuestExecCommand,
    ) -> Result<(ExecSession, StdinFeed), QgaError> {
        cmd.validate()?;
        if cmd.input_data.is_some() {
            return Err(QgaError::InvalidArgument(
                "an interactive exec takes its stdin from the feed, not from input_data".into(),
            ));
        }
        let os = self.os().await?;
        cmd.check_user_os(&os)?;
        if os.is_windows() {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "Unsupported".into(),
                desc: "streamed stdin needs a POSIX guest (mkfifo, cat, sleep)".into(),
            });
        }
        let started = std::time::Instant::now();
        let dir = self
            .make_dir(true, cmd.tty.is_some(), cmd.user.as_ref())
            .await?;
        let holder = GuestExec {
            path: "/bin/sh".into(),
            arg: vec![
                "-c".into(),
                HOLDER.into(),
                "atp-stdin".into(),
                dir.clone(),
                if cmd.tty.is_some() { "tty" } else { "" }.into(),
                LEASE_POLLS.to_string(),
                PUMP.into(),
            ],
            env: vec![DEFAULT_PATH.to_owned()],
            ..GuestExec::default()
        };
        let holder = match self.call(&holder).await {
            Ok(p) => p.pid,
            Err(e) => {
                self.remove_dir(&dir).await;
                return Err(e);
            }
        };
        let mut feed = StdinFeed {
            client: self.clone(),
            dir: dir.clone(),
            holder: Some(holder),
            closed: false,
            tty: cmd.tty.is_some(),
            fifo: None,
            ctl: None,
            seg: None,
            spooled: VecDeque::new(),
            next: 0,
            pump_ready: false,
            lease: Some(renew_lease(self.clone(), dir.clone())),
        };
        match self.start_in(cmd, dir, started).await {
            Ok(session) => Ok((session, feed)),
            Err(e) => {
                // The directory is gone; the holder sees that within its poll.
                feed.abort().await;
                Err(e)
            }
        }
    }
}

impl StdinFeed {
    /// Writes `data` to the program's stdin, in order. Returns once the guest holds it
    /// (the program may not have read it yet; at most the spool's bound waits there).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), QgaError> {
        self.write_more(data, false).await
    }

    /// [`StdinFeed::write`] for a caller with more input at hand (`more`): the segment
    /// being written may stay open for it, so many small chunks cost few agent calls. The
    /// last write of a burst must say `more = false`, or the program does not see it.
    pub async fn write_more(&mut self, data: &[u8], more: bool) -> Result<(), QgaError> {
        if self.closed {
            return Err(QgaError::InvalidArgument("stdin is already closed".into()));
        }
        if !data.is_empty()
            && data.len() <= FAST_MAX
            && self.seg.is_none()
            && self.pump_ready().await?
            && self.spool_drained().await?
            && self.write_fast(data).await
        {
            return Ok(());
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.seg.is_none() {
                self.open_segment().await?;
            }
            let Some(seg) = self.seg.as_mut() else {
                break;
            };
            let (now, later) = rest.split_at((SEGMENT_MAX - seg.bytes).min(rest.len()));
            let w = self.client.file_write(seg.file.handle(), now).await?;
            if usize::try_from(w.count).ok() != Some(now.len()) {
                return Err(stdin_failed(format!(
                    "the spool took {} of {} bytes",
                    w.count,
                    now.len()
                )));
            }
            seg.bytes += now.len();
            rest = later;
            if seg.bytes >= SEGMENT_MAX {
                self.seal().await?;
            }
        }
        if !more && self.seg.is_some() {
            self.seal().await?;
        }
        Ok(())
    }

    /// Closes the program's stdin: it reads what was written, then end of file. The pump
    /// delivers in the background; keep the feed until the session ends.
    pub async fn close(&mut self) -> Result<(), QgaError> {
        if self.closed {
            return Ok(());
        }
        if self.seg.is_some() {
            self.seal().await?;
        }
        self.closed = true;
        // The FIFO handle holds a write end too: EOF needs it closed.
        self.close_fifo().await;
        match self.ring("e").await {
            Ok(()) => {}
            // The session is over (its directory gone) or its pump has ended: nothing
            // left to close.
            Err(QgaError::Agent { class, desc, .. })
                if desc.contains("No such file") || class == "StdinFailed" =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if let Some(ctl) = self.ctl.take() {
            ctl.close().await?;
        }
        Ok(())
    }

    /// Ends the feed whatever its state (the session is ending): the holder is killed,
    /// verified, with its pump and the pump's `cat`. Best effort; failures are logged.
    pub async fn abort(&mut self) {
        self.closed = true;
        self.lease.take();
        if let Some(seg) = self.seg.take() {
            let _ = seg.file.close().await;
        }
        self.close_fifo().await;
        if let Some(ctl) = self.ctl.take() {
            let _ = ctl.close().await;
        }
        let Some(holder) = self.holder.take() else {
            return;
        };
        let start = format!("{}/hstart", self.dir);
        match self.client.kill_with_start(holder, &start).await {
            Ok(KillOutcome::Exited(_)) => {}
            Ok(KillOutcome::Killed | KillOutcome::Gone) => {
                if let Err(e) = self.client.wait_exit(holder).await {
                    tracing::debug!(error = %e, "stdin holder not reaped");
                }
            }
            Err(e) => tracing::debug!(error = %e, "stdin holder not killed"),
        }
    }

    /// Whether stdin is still open.
    pub fn is_open(&self) -> bool {
        !self.closed
    }

    /// Whether the program runs on a terminal.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Hangs a terminal session up, as closing a terminal would (the client went away):
    /// script ends its program and itself. `Ok(false)`:
    /// the program has ended. Sessions without a terminal answer `Unsupported`.
    pub async fn hangup(&self) -> Result<bool, QgaError> {
        if !self.tty {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "Unsupported".into(),
                desc: "hangup needs a terminal, which this session does not have".into(),
            });
        }
        let code = self
            .client
            .run_helper(HANGUP, vec![self.dir.clone()])
            .await?;
        Ok(code == 0)
    }

    /// Sets the terminal's size; the program's foreground group gets SIGWINCH. Sessions
    /// without a terminal answer `Unsupported`.
    pub async fn resize(&self, size: TerminalSize) -> Result<(), QgaError> {
        if !self.tty {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "Unsupported".into(),
                desc: "resize needs a terminal, which this session does not have".into(),
            });
        }
        self.client.tty_resize(&self.dir, size).await
    }

    /// Sends `signal` (one of [`super::ALLOWED_SIGNALS`]) to the program: with a terminal,
    /// to its foreground process group (what Ctrl-C would reach); without, to the
    /// program's process group. `Ok(false)`: it has ended, nothing was signalled.
    pub async fn signal(&self, signal: i32) -> Result<bool, QgaError> {
        self.client
            .session_signal(&self.dir, signal, self.tty)
            .await
    }
}

/// Renews the lease in `dir` every [`LEASE_RENEW`] (a counter the holder watches) until
/// the returned guard is dropped. Failures are logged: the holder's patience covers a few.
fn renew_lease(client: AgentClient, dir: String) -> DropGuard {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        let path = format!("{dir}/lease");
        for n in 1u64.. {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LEASE_RENEW) => {}
            }
            if let Err(e) = client.write_file(&path, n.to_string().as_bytes()).await {
                tracing::debug!(dir, error = %e, "stdin lease not renewed");
            }
        }
    });
    guard
}

/// The error of a feed whose guest side failed.
fn stdin_failed(desc: String) -> QgaError {
    QgaError::Agent {
        command: "guest-exec".into(),
        class: "StdinFailed".into(),
        desc,
    }
}
