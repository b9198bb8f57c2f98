//! Running programs in the guest: the seed API's `exec` / `exec_status` /
//! `exec_and_wait` / `exec_shell`, and live streaming exec for the daemon.
//!
//! qemu-ga returns output only at exit. For live output, and whenever captured output
//! would otherwise travel in one `guest-exec-status` reply over libvirt (a reply over
//! 10 MiB disables libvirt's agent for the domain), the command runs under a small
//! `/bin/sh` wrapper that redirects stdout/stderr to files in a private guest directory:
//!
//! see [`super::wrapper`]. It runs with a clean environment, applies the caller's
//! environment to the program alone, records the program's pid and start time, and
//! `exec`s it through `setsid`, so the pid the agent reports is the program's own (its
//! exit code or signal come exactly from `guest-exec-status`) and it leads its own
//! process group. The files are read in bounded chunks at saved offsets and the
//! directory is removed at the end (or, if the client dies first, by a later client's
//! [`AgentClient::sweep_exec_dirs`]). Kills never hit an exited program: see
//! [`AgentClient::kill`].

use std::time::{Duration, Instant};

pub use super::stream::ExecSession;

use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::{
    AgentClient, QgaError,
    commands::{ExecStatus, GuestExec, GuestExecStatus, OsInfo},
    kill::KillOutcome,
};
use crate::sync::lock;

/// Captured output kept per stream by collecting helpers, like qemu-ga's own cap.
pub const MAX_CAPTURE: usize = 16 << 20;

/// The fixed `PATH` every helper and wrapper runs with (qemu-ga replaces the whole
/// environment with the one given), and the default of a program given no `PATH`.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program to run in the guest: argv, environment, stdin and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestExecCommand {
    /// Program (looked up in the guest's `PATH` when not absolute).
    pub path: String,
    /// Arguments, passed as argv.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Bytes for the program's stdin.
    pub input_data: Option<Vec<u8>>,
    /// Whether stdout/stderr are captured and returned at exit.
    pub capture_output: bool,
    /// Kill the program when it runs longer than this (`exec_and_wait`, streaming).
    pub timeout: Option<Duration>,
    /// Working directory (needs the guest's `/bin/sh`; not supported on Windows guests).
    pub cwd: Option<String>,
    /// Run the program on a terminal of this size (POSIX guests with util-linux
    /// `script`; streamed sessions only): stdout and stderr arrive merged, as stdout.
    pub tty: Option<super::TerminalSize>,
    /// Run the program as this user (POSIX guests, under the wrapper, dropping
    /// privileges as its last step). Windows guests answer `Unsupported`.
    pub user: Option<super::RunAs>,
}

impl GuestExecCommand {
    /// `path` with `args`, output captured — the seed guide's constructor.
    pub fn simple(path: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            path: path.into(),
            args,
            capture_output: true,
            ..Self::default()
        }
    }

    /// The command line `cmdline` run by the guest's shell: `cmd.exe /c` on Windows
    /// (after `chcp 65001`, so that its output is UTF-8), `/bin/sh -c` elsewhere.
    pub fn shell(os: &OsInfo, cmdline: &str) -> Self {
        if os.is_windows() {
            let line = format!("{}{cmdline}", super::codepage::UTF8_PREFIX);
            Self::simple("cmd.exe", vec!["/c".into(), line])
        } else {
            Self::simple("/bin/sh", vec!["-c".into(), cmdline.into()])
        }
    }

    /// Adds a `KEY=value` environment entry.
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        self.env.push(entry.into());
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.input_data = Some(data.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the run-time limit.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Runs the program as `who` instead of the agent's user (root).
    pub fn run_as(mut self, who: super::RunAs) -> Self {
        self.user = Some(who);
        self
    }

    /// `Unsupported` for a run-as user on a Windows guest (the agent runs as SYSTEM and
    /// there is no wrapper to drop privileges with).
    pub(crate) fn check_user_os(&self, os: &OsInfo) -> Result<(), QgaError> {
        if self.user.is_some() && os.is_windows() {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "Unsupported".into(),
                desc: "running as a user needs a POSIX guest; Windows guests run programs \
                       as the agent's account"
                    .into(),
            });
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), QgaError> {
        let bad = |what: &str| Err(QgaError::InvalidArgument(what.to_owned()));
        if self.path.is_empty() {
            return bad("exec: empty program path");
        }
        if self.path.contains('\0') || self.args.iter().any(|a| a.contains('\0')) {
            return bad("exec: NUL byte in program or argument");
        }
        if let Some(u) = &self.user {
            u.validate()?;
        }
        if let Some(bad_entry) = self.env.iter().find(|e| !valid_env_entry(e)) {
            let name = bad_entry.split('=').next().unwrap_or_default();
            return Err(QgaError::InvalidArgument(format!(
                "exec: environment entries must be NAME=value with NAME an identifier \
                 ([A-Za-z_][A-Za-z0-9_]*) and no NUL; {name:?} is not"
            )));
        }
        Ok(())
    }

    /// The caller's entries plus the fixed `PATH` when they give none (direct path).
    fn env_with_path(&self) -> Vec<String> {
        let mut env = self.env.clone();
        if !env.is_empty() && !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_owned());
        }
        env
    }

    /// The plain `guest-exec` request.
    fn direct(&self) -> GuestExec {
        GuestExec {
            path: self.path.clone(),
            arg: self.args.clone(),
            env: self.env_with_path(),
            input_data: self.input_data.as_ref().map(|d| STANDARD.encode(d)),
            capture_output: self.capture_output,
        }
    }
}

/// Whether `e` is `NAME=value` with an identifier name and no NUL. Anything else
/// (`BASH_FUNC_x%%`, `A-B`, `=x`) could be taken by a guest shell as code or be
/// ambiguous, and is refused before it reaches the guest.
pub fn valid_env_entry(e: &str) -> bool {
    let Some((name, _)) = e.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    !e.contains('\0')
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The outcome of a finished command, with its collected output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed it, if any (then `exit_code` is `None`).
    pub signal: Option<i32>,
    /// Collected stdout (at most 16 MiB).
    pub stdout: Vec<u8>,
    /// Collected stderr (at most 16 MiB).
    pub stderr: Vec<u8>,
    /// stdout was longer than what was kept.
    pub stdout_truncated: bool,
    /// stderr was longer than what was kept.
    pub stderr_truncated: bool,
    /// It was killed for exceeding its time limit.
    pub timed_out: bool,
    /// Wall time from start to exit as seen by the host.
    pub duration: Duration,
}

impl ExecResult {
    /// stdout as text (invalid UTF-8 replaced; bytes stay in `stdout`); `None` when empty.
    pub fn decode_stdout(&self) -> Option<String> {
        super::commands::lossy_text(&self.stdout)
    }

    /// stderr as text (invalid UTF-8 replaced; bytes stay in `stderr`); `None` when empty.
    pub fn decode_stderr(&self) -> Option<String> {
        super::commands::lossy_text(&self.stderr)
    }

    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    pub(crate) fn from_status(st: &ExecStatus, timed_out: bool, duration: Duration) -> Self {
        Self {
            exit_code: st.exit_code,
            signal: st.signal,
            stdout: st.stdout(),
            stderr: st.stderr(),
            stdout_truncated: st.out_truncated,
            stderr_truncated: st.err_truncated,
            timed_out,
            duration,
        }
    }
}

/// One step of a streaming exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes the program wrote to stdout.
    Stdout(Vec<u8>),
    /// Bytes the program wrote to stderr.
    Stderr(Vec<u8>),
    /// The program finished; no more events follow.
    Exited(ExecExit),
}

/// How a streamed program ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecExit {
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed it.
    pub signal: Option<i32>,
    /// Wall time from start to exit.
    pub duration: Duration,
    /// Killed for exceeding its time limit.
    pub timed_out: bool,
}

impl AgentClient {
    /// Starts `cmd` and returns its guest pid. Over libvirt, captured output is redirected
    /// to guest files and read back in bounded chunks by [`AgentClient::exec_status`].
    pub async fn exec(&self, cmd: &GuestExecCommand) -> Result<i64, QgaError> {
        cmd.validate()?;
        let os = self.os().await?;
        cmd.check_user_os(&os)?;
        if cmd.cwd.is_some() && os.is_windows() {
            return Err(QgaError::InvalidArgument(
                "exec: a working directory is not supported on Windows guests".into(),
            ));
        }
        let redirect = cmd.cwd.is_some()
            || cmd.user.is_some()
            || (cmd.capture_output && self.transport().kind() == "libvirt");
        if redirect && !os.is_windows() {
            let dir = self.make_exec_dir(cmd).await?;
            let pid = match self.call(&cmd.redirected(&dir)).await {
                Ok(p) => p.pid,
                Err(e) => {
                    self.remove_dir(&dir).await;
                    return Err(e);
                }
            };
            lock(&self.state().redirected).insert(pid, dir);
            return Ok(pid);
        }
        Ok(self.call(&cmd.direct()).await?.pid)
    }

    /// `guest-exec-status`. Once it reports `exited`, the agent forgets the pid.
    pub async fn exec_status(&self, pid: i64) -> Result<ExecStatus, QgaError> {
        let st = self.call(&GuestExecStatus { pid }).await?;
        self.complete_status(pid, st).await
    }

    /// Fills an exited redirected exec's status with the output from its directory and
    /// removes the directory.
    pub(crate) async fn complete_status(
        &self,
        pid: i64,
        mut st: ExecStatus,
    ) -> Result<ExecStatus, QgaError> {
        if st.exited {
            let dir = lock(&self.state().redirected).remove(&pid);
            if let Some(dir) = dir {
                let out = self
                    .read_file_capped(&format!("{dir}/out"), MAX_CAPTURE)
                    .await;
                let err = self
                    .read_file_capped(&format!("{dir}/err"), MAX_CAPTURE)
                    .await;
                self.remove_dir(&dir).await;
                let (out, out_trunc) = out?;
                let (err, err_trunc) = err?;
                st.out_data = (!out.is_empty()).then(|| STANDARD.encode(&out));
                st.err_data = (!err.is_empty()).then(|| STANDARD.encode(&err));
                st.out_truncated = out_trunc;
                st.err_truncated = err_trunc;
            }
        }
        Ok(st)
    }

    /// Runs `cmd`, polling every `poll` until it exits; kills it past `cmd.timeout`.
    pub async fn exec_and_wait(
        &self,
        cmd: &GuestExecCommand,
        poll: Duration,
    ) -> Result<ExecResult, QgaError> {
        let started = Instant::now();
        let pid = self.exec(cmd).await?;
        self.wait_for(pid, started, cmd.timeout, poll).await
    }

    /// Polls `pid` (started by [`AgentClient::exec`] at `started`) every `poll` until it
    /// exits, killing it once `limit` has passed. `timed_out` is reported only when our
    /// kill hit the running program and it then died by a signal.
    pub async fn wait_for(
        &self,
        pid: i64,
        started: Instant,
        limit: Option<Duration>,
        poll: Duration,
    ) -> Result<ExecResult, QgaError> {
        let mut killed = false;
        loop {
            let st = self.exec_status(pid).await?;
            if st.exited {
                let timed_out = killed && st.signal.is_some();
                return Ok(ExecResult::from_status(&st, timed_out, started.elapsed()));
            }
            if let Some(limit) = limit
                && !killed
                && started.elapsed() >= limit
            {
                match self.kill(pid).await? {
                    KillOutcome::Killed => killed = true,
                    KillOutcome::Exited(st) => {
                        return Ok(ExecResult::from_status(&st, false, started.elapsed()));
                    }
                    KillOutcome::Gone => {}
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Polls `guest-exec-status` with a short backoff until `pid` exits; used for the
    /// helper processes (mkdir, kill, rm) that finish in milliseconds.
    pub(crate) async fn wait_exit(&self, pid: i64) -> Result<ExecStatus, QgaError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let st = self.call(&GuestExecStatus { pid }).await?;
            if st.exited {
                return Ok(st);
            }
            tokio::time::sleep(pause).await;
            // A helper takes 0.1-0.3 s in a TCG guest: look every 20 ms for its first
            // second (a late look costs more than the call), then back off.
            let cap = if started.elapsed() < Duration::from_secs(1) {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(100)
            };
            pause = (pause * 2).min(cap);
        }
    }

    /// Runs a small helper program (chmod, mv, rm...) with captured output and waits for
    /// it; its output must be small (it travels in one reply).
    pub async fn run_small(&self, path: &str, args: &[&str]) -> Result<ExecResult, QgaError> {
        self.run_small_env(path, args, &[]).await
    }

    /// [`Self::run_small`] with `env` as the helper's whole environment (empty: the
    /// agent's own). A value passed this way is readable by the agent's user only, not
    /// by every guest user as arguments are.
    pub(crate) async fn run_small_env(
        &self,
        path: &str,
        args: &[&str],
        env: &[String],
    ) -> Result<ExecResult, QgaError> {
        let started = Instant::now();
        let cmd = GuestExec {
            path: path.to_owned(),
            arg: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env.to_vec(),
            capture_output: true,
            ..GuestExec::default()
        };
        let pid = self.call(&cmd).await?.pid;
        let st = self.wait_exit(pid).await?;
        Ok(ExecResult::from_status(&st, false, started.elapsed()))
    }

    /// Runs `cmdline` through the guest's shell (`/bin/sh -c`, or `cmd.exe /c` on
    /// Windows) and waits for it.
    pub async fn exec_shell(&self, cmdline: &str) -> Result<ExecResult, QgaError> {
        let os = self.os().await?;
        let mut r = self
            .exec_and_wait(
                &GuestExecCommand::shell(&os, cmdline),
                Duration::from_millis(50),
            )
            .await?;
        if os.is_windows() {
            r.stdout = self.windows_text(std::mem::take(&mut r.stdout)).await;
            r.stderr = self.windows_text(std::mem::take(&mut r.stderr)).await;
        }
        Ok(r)
    }

    /// Starts `cmd` for live output; read events with [`ExecSession::next_event`].
    /// On Windows guests output arrives at exit (captured by the agent).
    pub async fn exec_stream(&self, cmd: &GuestExecCommand) -> Result<ExecSession, QgaError> {
        cmd.validate()?;
        if cmd.tty.is_some() {
            return Err(QgaError::InvalidArgument(
                "a terminal session takes its input as it comes: use exec_interactive".into(),
            ));
        }
        let os = self.os().await?;
        cmd.check_user_os(&os)?;
        let started = Instant::now();
        if os.is_windows() {
            let mut direct = cmd.direct();
            direct.capture_output = true;
            let pid = self.call(&direct).await?.pid;
            let mut session = ExecSession::new(self.clone(), pid, None, started, cmd.timeout);
            session.console_text = super::codepage::is_cmd(&cmd.path);
            return Ok(session);
        }
        let max = self.transport().chunk_bounds().max_write;
        if cmd.user.is_none()
            && let Some(dir) = self.take_exec_dir()
            && let Some(session) = self.start_pooled(cmd, dir, started, max).await?
        {
            return Ok(session);
        }
        let dir = self.make_exec_dir(cmd).await?;
        match &cmd.input_data {
            // More than one agent request carries as `input-data`: the wrapper reads it
            // from a regular file `in` in the private directory instead (written with
            // `guest-file-write`: no writer process, any size).
            Some(data) if data.len() > max => {
                if let Err(e) = self.write_file(&format!("{dir}/in"), data).await {
                    self.remove_dir(&dir).await;
                    return Err(e);
                }
                let mut cmd = cmd.clone();
                cmd.input_data = None;
                self.start_in(&cmd, dir, started).await
            }
            _ => self.start_in(cmd, dir, started).await,
        }
    }

    /// Starts `cmd` under the wrapper in `dir` (made by [`AgentClient::make_dir`]) and
    /// opens its output files; on failure nothing is left running and `dir` is removed.
    pub(crate) async fn start_in(
        &self,
        cmd: &GuestExecCommand,
        dir: String,
        started: Instant,
    ) -> Result<ExecSession, QgaError> {
        let pid = match self.call(&cmd.redirected(&dir)).await {
            Ok(p) => p.pid,
            Err(e) => {
                self.remove_dir(&dir).await;
                return Err(e);
            }
        };
        let mut session =
            ExecSession::new(self.clone(), pid, Some(dir.clone()), started, cmd.timeout);
        match (
            self.open(&format!("{dir}/out"), "r").await,
            self.open(&format!("{dir}/err"), "r").await,
        ) {
            (Ok(o), Ok(e)) => {
                session.out.file = Some(o);
                session.err.file = Some(e);
                Ok(session)
            }
            (Err(e), _) | (_, Err(e)) => {
                if let Ok(KillOutcome::Killed | KillOutcome::Gone) = session.kill(false).await {
                    let _ = self.wait_exit(pid).await;
                }
                session.finished = true;
                self.remove_dir(&dir).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_must_be_identifiers() {
        for ok in [
            "A=1",
            "_x=",
            "PATH=/bin:/usr/bin",
            "a1_B2=x=y",
            "K=() { :; }",
        ] {
            assert!(valid_env_entry(ok), "{ok:?}");
        }
        for bad in [
            "BASH_FUNC_echo%%=() { id; }",
            "BASH_FUNC_x()=1",
            "A-B=1",
            "1A=1",
            "=x",
            "NOEQUALS",
            "A=x\0y",
            "Ä=1",
            " A=1",
        ] {
            assert!(!valid_env_entry(bad), "{bad:?}");
        }
        let cmd = GuestExecCommand::simple("true", vec![]).env("BASH_FUNC_x%%=() { id; }");
        assert!(matches!(cmd.validate(), Err(QgaError::InvalidArgument(_))));
    }
}
