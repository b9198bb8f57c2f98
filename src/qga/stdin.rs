//! Streamed stdin for a guest program, with stock qemu-ga (POSIX guests).
//!
//! qemu-ga makes every `guest-file-open`ed descriptor non-blocking and writes through
//! stdio, so writing into a pipe with `guest-file-write` loses track of partial writes.
//! Instead the exec's private directory holds a FIFO `in`, which the wrapper makes the
//! program's stdin, and:
//! - a **holder**, started by `guest-exec` before the program (so it is the agent's child,
//!   with its start time recorded in `hstart`), keeps a write end open, so the program does
//!   not see EOF between chunks. It exits by itself once the directory is gone, so a daemon
//!   that dies mid-session leaves no holder behind for long;
//! - each chunk is one short `guest-exec` of `cat >in` with the chunk as `input-data`:
//!   qemu-ga feeds it asynchronously, so a writer blocked on a full pipe never blocks the
//!   agent. The next chunk waits until the previous writer exited (order, and
//!   backpressure: a program that does not read holds the stream back);
//! - EOF is the holder killed (verified, like every kill): the program reads what is left,
//!   then end of file.
//!
//! Small chunks (keystrokes: at most [`FAST_MAX`] bytes) take a faster way, two agent
//! calls and no process: `guest-file-write` and `guest-file-flush` on the FIFO opened
//! `r+` (read-write never blocks the agent on open). A pipe write of at most `PIPE_BUF`
//! bytes is atomic, and the chunk fits the agent's stdio buffer, so the flush writes it
//! whole or (pipe full: EAGAIN) not at all; then the handle is closed and the chunk goes
//! the slow way, which waits for room.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    AgentClient, ExecSession, GuestExecCommand, OpenFile, QgaError, TerminalSize,
    commands::GuestExec, exec::DEFAULT_PATH, kill::KillOutcome,
};

/// The largest chunk written through the FIFO handle: it fits every libc's stdio buffer
/// (musl's is 1 KiB) and is below `PIPE_BUF`, so the pipe write is atomic.
pub const FAST_MAX: usize = 1024;

/// The holder: records its start time, keeps `in` open read-write on fd 3 (never blocks,
/// holds a write end), and polls for its directory (the sleeps do not inherit fd 3). It
/// also watches the lease the client renews (see [`LEASE_RENEW`]): unchanged for
/// [`LEASE_POLLS`] polls, the client is gone (a daemon killed mid-session) and nobody can
/// feed or follow the session again, so the holder hangs it up (verified like
/// [`HANGUP`]: SIGTERM to script with a terminal, `$2` = tty; else SIGHUP to the
/// program's group) and exits.
const HOLDER: &str = r#"d=$1; m=$2; k=$3
t() { shift 19; echo "$1"; }
if read -r s </proc/$$/stat; then t ${s##*) } >"$d/hstart"; fi
exec 3<>"$d/in" || exit 1
last=; n=0
while [ -p "$d/in" ]; do
  sleep 2 3<&-
  c=; read -r c 2>/dev/null <"$d/lease"
  if [ "$c" = "$last" ]; then n=$((n + 1)); else n=0; last=$c; fi
  if [ "$n" -ge "$k" ]; then
    p=; read -r p 2>/dev/null <"$d/pid"; w=; read -r w 2>/dev/null <"$d/start"
    case $p in ''|*[!0-9]*) exit 0 ;; esac
    read -r s 2>/dev/null <"/proc/$p/stat" || exit 0
    set -- ${s##*) }; q=$2; g=$3; shift 19
    [ "$q" = "$PPID" ] && [ "$1" = "$w" ] || exit 0
    if [ "$m" = tty ]; then kill -TERM "$p"
    elif [ "$g" = "$p" ]; then kill -HUP -"$p"
    else kill -HUP "$p"; fi
    exit 0
  fi
done"#;

/// Hangs a terminal session up: SIGTERM to `script` (the wrapper's pid, `$1`'s `pid`;
/// script blocks SIGHUP, and on SIGTERM ends its program and itself), only while it is
/// still the agent's child with its recorded start time. Exit 3: it has ended, nothing
/// was signalled.
const HANGUP: &str = r#"d=$1
p=; read -r p 2>/dev/null <"$d/pid"; w=; read -r w 2>/dev/null <"$d/start"
case $p in ''|*[!0-9]*) exit 3 ;; esac
read -r s 2>/dev/null <"/proc/$p/stat" || exit 3
set -- ${s##*) }; q=$2; shift 19
[ "$q" = "$PPID" ] && [ "$1" = "$w" ] || exit 3
kill -TERM "$p""#;

/// How often the client renews its lease in the exec directory while stdin is open.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Holder polls (2 s each) without a renewed lease before it lets go: 30 s.
const LEASE_POLLS: u32 = 15;

/// One chunk: stdin (the chunk, from qemu-ga) into the FIFO.
const WRITER: &str = r#"exec cat >"$1/in""#;

/// The input side of an interactive exec: [`StdinFeed::write`] chunks in order, then
/// [`StdinFeed::close`] (EOF). Call [`StdinFeed::abort`] when the session ends otherwise:
/// a dropped feed leaves its holder until the exec's directory is removed.
#[derive(Debug)]
pub struct StdinFeed {
    client: AgentClient,
    dir: String,
    holder: Option<i64>,
    writer: Option<i64>,
    /// Bytes per writer: the transport's write bound.
    chunk: usize,
    /// The program runs on a terminal.
    tty: bool,
    /// The FIFO, opened read-write, for small chunks (see the module notes).
    fifo: Option<OpenFile>,
    /// Stops the lease renewal when stdin closes or the feed is dropped.
    lease: Option<DropGuard>,
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
            writer: None,
            chunk: self.transport().chunk_bounds().max_write,
            tty: cmd.tty.is_some(),
            fifo: None,
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
    /// Writes `data` to the program's stdin, in order. Returns once the guest took it
    /// (the program may not have read it yet): a program that does not read holds it back.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), QgaError> {
        if self.holder.is_none() {
            return Err(QgaError::InvalidArgument("stdin is already closed".into()));
        }
        if data.len() <= FAST_MAX && self.write_fast(data).await {
            return Ok(());
        }
        for chunk in data.chunks(self.chunk.max(1)) {
            let writer = GuestExec {
                path: "/bin/sh".into(),
                arg: vec![
                    "-c".into(),
                    WRITER.into(),
                    "atp-stdin".into(),
                    self.dir.clone(),
                ],
                env: vec![DEFAULT_PATH.to_owned()],
                input_data: Some(STANDARD.encode(chunk)),
                capture_output: false,
            };
            let pid = self.client.call(&writer).await?.pid;
            self.writer = Some(pid);
            let st = self.client.wait_exit(pid).await?;
            self.writer = None;
            if st.exit_code != Some(0) {
                return Err(QgaError::Agent {
                    command: "guest-exec".into(),
                    class: "StdinFailed".into(),
                    desc: format!(
                        "writing the program's stdin failed (exit {:?}, signal {:?})",
                        st.exit_code, st.signal
                    ),
                });
            }
        }
        Ok(())
    }

    /// Closes the program's stdin (EOF once it has read what was written).
    pub async fn close(&mut self) -> Result<(), QgaError> {
        self.lease.take();
        self.close_fifo().await;
        let Some(holder) = self.holder.take() else {
            return Ok(());
        };
        let start = format!("{}/hstart", self.dir);
        match self.client.kill_with_start(holder, &start).await? {
            KillOutcome::Exited(_) => Ok(()),
            KillOutcome::Killed | KillOutcome::Gone => {
                self.client.wait_exit(holder).await.map(drop)
            }
        }
    }

    /// Ends the feed whatever its state: a writer still running is killed, then the holder.
    /// Best effort (the session is ending); failures are logged.
    pub async fn abort(&mut self) {
        if let Some(w) = self.writer.take() {
            match self.client.kill(w).await {
                Ok(KillOutcome::Killed | KillOutcome::Gone) => {
                    let _ = self.client.wait_exit(w).await;
                }
                Ok(KillOutcome::Exited(_)) => {}
                Err(e) => tracing::debug!(error = %e, "stdin writer not killed"),
            }
        }
        if let Err(e) = self.close().await {
            tracing::debug!(error = %e, "stdin holder not killed");
        }
    }

    /// Whether stdin is still open.
    pub fn is_open(&self) -> bool {
        self.holder.is_some()
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

    /// One small chunk through the FIFO handle; false when it must go the slow way
    /// (nothing of it was written: see the module notes).
    async fn write_fast(&mut self, data: &[u8]) -> bool {
        if self.fifo.is_none() {
            match self.client.open(&format!("{}/in", self.dir), "r+").await {
                Ok(f) => self.fifo = Some(f),
                Err(e) => {
                    tracing::debug!(error = %e, "stdin FIFO not opened; writing through cat");
                    return false;
                }
            }
        }
        let Some(f) = &self.fifo else {
            return false;
        };
        let h = f.handle();
        let wrote = match self.client.file_write(h, data).await {
            Ok(w) if usize::try_from(w.count).ok() == Some(data.len()) => {
                self.client.file_flush(h).await
            }
            Ok(w) => Err(QgaError::Agent {
                command: "guest-file-write".into(),
                class: "ShortWrite".into(),
                desc: format!("{} of {} bytes buffered", w.count, data.len()),
            }),
            Err(e) => Err(e),
        };
        match wrote {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "stdin chunk not taken by the FIFO (full?); writing through cat");
                self.close_fifo().await;
                false
            }
        }
    }

    /// Closes the FIFO handle (before EOF: it holds a write end too).
    async fn close_fifo(&mut self) {
        if let Some(f) = self.fifo.take()
            && let Err(e) = f.close().await
        {
            tracing::debug!(error = %e, "closing the stdin FIFO handle failed");
        }
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
