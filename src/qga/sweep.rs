//! Sweeping a guest: one pass that removes the exec directories a dead client left
//! behind. (When the daemon sweeps which guest is `server::exec_dir_sweeps`.)
//!
//! Streaming exec keeps a program's output in a private guest directory
//! (`/tmp/.atp-exec-<id>`, see [`super::exec`]) that the client removes when the program
//! ends. A client that dies mid-exec (a crashed or killed daemon) leaves it, with output
//! of any size. The wrapper records the program's pid in `pid`, so a later client can tell
//! which directories are abandoned: their program is gone and nothing has touched their
//! files for a while.

use std::time::Duration;

use super::{AgentClient, QgaError, exec::DEFAULT_PATH};

/// Prefix of every exec directory (kept in step with `make_exec_dir`).
pub(crate) const EXEC_DIR_PREFIX: &str = "/tmp/.atp-exec-";

/// `$1`: minimum idle seconds; `$2...`: pids still in use by the caller; `ATP_KEEP`: the
/// caller's pooled directories (in the environment: their names stay secret). Prints each
/// directory it removed. Skips symlinks, directories not the agent's user's (another user
/// may name one `.atp-exec-*` and put a FIFO in it as `pid`, whose open would block the
/// sweep), directories whose recorded program still runs or is listed, and directories
/// whose newest mtime (itself, `out`, `err`) is too recent.
/// One `stat` per directory looked at, the rest builtins: a guest may hold hundreds of
/// directories other daemons left, and each process costs tens of milliseconds under
/// emulation.
const SWEEP_SCRIPT: &str = r#"a=$1; shift; now=$(date +%s) || exit 1
for d in /tmp/.atp-exec-*; do
  [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] || continue
  case " $ATP_KEEP " in *" $d "*) continue ;; esac
  p=; read -r p 2>/dev/null <"$d/pid"; case $p in ''|*[!0-9]*) p= ;; esac
  if [ -n "$p" ]; then
    [ -d "/proc/$p" ] && continue
    for k in "$@"; do [ "$k" = "$p" ] && continue 2; done
  fi
  t=; for m in $(stat -c %Y -- "$d" "$d/out" "$d/err" 2>/dev/null); do [ -n "$t" ] && [ "$t" -ge "$m" ] || t=$m; done
  [ -n "$t" ] && [ $((now - t)) -ge "$a" ] || continue
  rm -rf -- "$d" && echo "$d"
done"#;

impl AgentClient {
    /// Removes the exec directories whose program is gone and whose files have not
    /// changed for `min_idle`, except those of `in_use` pids (the caller's own sessions,
    /// still being read). Returns the directories removed. Windows guests have none.
    pub async fn sweep_exec_dirs(
        &self,
        min_idle: Duration,
        in_use: &[i64],
    ) -> Result<Vec<String>, QgaError> {
        if self.os().await?.is_windows() {
            return Ok(Vec::new());
        }
        let idle = min_idle.as_secs().to_string();
        let pids: Vec<String> = in_use.iter().map(i64::to_string).collect();
        let mut args = vec!["-c", SWEEP_SCRIPT, "atp-sweep", idle.as_str()];
        args.extend(pids.iter().map(String::as_str));
        let keep = self
            .state()
            .pool
            .get()
            .map(|p| p.kept().join(" "))
            .unwrap_or_default();
        let env = [DEFAULT_PATH.to_owned(), format!("ATP_KEEP={keep}")];
        let r = self.run_small_env("/bin/sh", &args, &env).await?;
        if r.exit_code != Some(0) {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "SweepFailed".into(),
                desc: format!(
                    "removing abandoned exec directories failed (exit {:?}, signal {:?}): {}",
                    r.exit_code,
                    r.signal,
                    String::from_utf8_lossy(&r.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&r.stdout)
            .lines()
            .filter(|l| l.starts_with(EXEC_DIR_PREFIX))
            .map(str::to_owned)
            .collect())
    }
}
