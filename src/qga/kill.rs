//! Killing a guest program without ever hitting a process that merely reuses its pid:
//! `guest-exec-status` first (an exited program is never signalled), then a guest helper
//! that checks the pid is still the agent's child with the recorded start time before it
//! kills the program's process group and its /proc descendants.

use super::{
    AgentClient, QgaError,
    commands::{ExecStatus, GuestExec, GuestExecStatus},
    exec::DEFAULT_PATH,
};
use crate::sync::lock;

/// Kills a program only if `$1` is still the process we started, then its process group
/// and its /proc descendants. `$2`: the file holding its recorded start time (may be empty
/// or not yet written). The target must be a child of the agent (the helper's own parent)
/// and, when recorded, have the same start time; otherwise exit 3 and signal nothing.
/// The group is killed only when the program leads it (it ran under `setsid`).
const KILL_VERIFIED: &str = r#"p=$1; f=$2
case $p in ''|*[!0-9]*) exit 3 ;; esac
read -r s 2>/dev/null <"/proc/$p/stat" || exit 3
s=${s##*) }
set -- $s
[ "$2" = "$PPID" ] || exit 3
g=$3
if [ -n "$f" ] && [ -s "$f" ]; then
  read -r want <"$f"; shift 19; [ "$1" = "$want" ] || exit 3
fi
all=$p; todo=$p
while [ -n "$todo" ]; do
  next=
  for st in /proc/[0-9]*/stat; do
    read -r l 2>/dev/null <"$st" || continue
    l=${l##*) }; set -- $l
    for q in $todo; do
      if [ "$2" = "$q" ]; then x=${st#/proc/}; next="$next ${x%/stat}"; fi
    done
  done
  all="$all$next"; todo=$next
done
if [ "$g" = "$p" ]; then kill -9 -"$p" 2>/dev/null; fi
kill -9 $all 2>/dev/null
exit 0"#;

/// Exit code of [`KILL_VERIFIED`] when the pid is no longer the program we started.
const NOT_OURS: i32 = 3;

/// What [`AgentClient::kill`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillOutcome {
    /// The program was running and has been sent SIGKILL (with its group and tree).
    Killed,
    /// The agent reported the program already exited: nothing was signalled. The status
    /// is returned because the agent forgets a pid once it reported its exit.
    Exited(ExecStatus),
    /// The pid no longer names the program we started (it exited between the status
    /// check and the kill): nothing was signalled.
    Gone,
}

impl AgentClient {
    /// Kills guest program `pid` (started by this client), its process group and its
    /// descendants with SIGKILL (`taskkill /F /T` on Windows) — but only while it runs:
    /// first `guest-exec-status` (an exited program is never signalled, whatever holds its
    /// pid now), then a helper that signals only if `pid` is still a child of the agent
    /// with the start time the wrapper recorded. On Windows there is no such check: the
    /// window between the status reply and `taskkill` remains.
    pub async fn kill(&self, pid: i64) -> Result<KillOutcome, QgaError> {
        let dir = lock(&self.state().redirected).get(&pid).cloned();
        let st = self.call(&GuestExecStatus { pid }).await?;
        if st.exited {
            return Ok(KillOutcome::Exited(self.complete_status(pid, st).await?));
        }
        self.kill_running(pid, dir.as_deref()).await
    }

    /// [`AgentClient::kill`] for a process whose recorded start time is in `start_file`
    /// (a helper process of this crate, such as a stdin holder).
    pub(crate) async fn kill_with_start(
        &self,
        pid: i64,
        start_file: &str,
    ) -> Result<KillOutcome, QgaError> {
        let st = self.call(&GuestExecStatus { pid }).await?;
        if st.exited {
            return Ok(KillOutcome::Exited(st));
        }
        self.kill_verified(pid, Some(start_file.to_owned())).await
    }

    /// The kill itself, once `guest-exec-status` said `pid` runs; `dir` is its exec
    /// directory (holding the recorded start time), if it has one.
    pub(crate) async fn kill_running(
        &self,
        pid: i64,
        dir: Option<&str>,
    ) -> Result<KillOutcome, QgaError> {
        self.kill_verified(pid, dir.map(|d| format!("{d}/start")))
            .await
    }

    async fn kill_verified(
        &self,
        pid: i64,
        start_file: Option<String>,
    ) -> Result<KillOutcome, QgaError> {
        let os = self.os().await?;
        let cmd = if os.is_windows() {
            GuestExec {
                path: "taskkill.exe".into(),
                arg: vec!["/F".into(), "/T".into(), "/PID".into(), pid.to_string()],
                ..GuestExec::default()
            }
        } else {
            GuestExec {
                path: "/bin/sh".into(),
                arg: vec![
                    "-c".into(),
                    KILL_VERIFIED.into(),
                    "atp-kill".into(),
                    pid.to_string(),
                    start_file.unwrap_or_default(),
                ],
                env: vec![DEFAULT_PATH.to_owned()],
                ..GuestExec::default()
            }
        };
        let helper = self.call(&cmd).await?.pid;
        let st = self.wait_exit(helper).await?;
        if !os.is_windows() && st.exit_code == Some(NOT_OURS) {
            tracing::info!(
                pid,
                "not killed: the pid no longer names the program we started"
            );
            return Ok(KillOutcome::Gone);
        }
        Ok(KillOutcome::Killed)
    }
}
