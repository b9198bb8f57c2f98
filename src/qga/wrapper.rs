//! The guest side of a redirected exec: the private directory it writes into and the
//! `/bin/sh` wrapper that starts the program there, in its own session, with a clean
//! environment of its own and the caller's entries applied to the program alone.

use std::sync::LazyLock;

use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::{
    AgentClient, QgaError, RunAs,
    commands::GuestExec,
    exec::{DEFAULT_PATH, GuestExecCommand},
    user,
};

/// The redirecting wrapper. Positional parameters: `DIR CWD M K A ARGV(M) ENV(K)`; an
/// empty `DIR` means the directory made ahead named by `ATP_EXEC_DIR` in the environment
/// (see [`GuestExecCommand::redirected_pooled`]), which the wrapper checks and unsets.
///
/// It runs with a clean environment (only [`DEFAULT_PATH`]), records its pid and start
/// time (field 22 of `/proc/$$/stat`) in `DIR`, resolves the program in the fixed `PATH`
/// (so a caller's `PATH` cannot swap it), and exports the caller's entries as its very
/// last step, so nothing the caller sends is interpreted by this shell: one `export` of
/// all of them, written as `"${1}" "${2}" ...` (references, never values) and followed
/// only by `shift` and `exec`, so no wrapper variable is assigned after an entry of the
/// same name (an entry `c=x` or `e=y` used to be overwritten by the loop's counter).
/// `setsid` (no fork: qemu-ga's child is not a group leader) gives the program its own
/// session and process group, keeping the pid; without a `setsid` the program runs in
/// the agent's group and only its process tree is killed. When `DIR` holds a FIFO `in`
/// (streamed stdin, see [`super::stdin`]) or a file `in` (stdin too large for one
/// request's `input-data`), it is the program's stdin. `A` (`as` or
/// `login`): the program runs as the user of `DIR/as` (see [`super::user`]), the drop
/// being the last step before it; the wrapper itself stays root.
static WRAPPER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{WRAPPER_HEAD}{}{WRAPPER_MID}{}{WRAPPER_TAIL}",
        user::READ,
        user::DROP_APPEND
    )
});
const WRAPPER_HEAD: &str = r#"w() { o=$IFS; IFS=:; for q in $PATH; do if [ -f "$q/$1" ] && [ -x "$q/$1" ]; then IFS=$o; r=$q/$1; return 0; fi; done; IFS=$o; return 1; }
t() { shift 19; echo "$1"; }
d=$1; c=$2; m=$3; k=$4; a=$5; shift 5
if [ -z "$d" ]; then d=$ATP_EXEC_DIR; unset ATP_EXEC_DIR; [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] || { echo "atp-exec: the exec directory is gone" >&2; exit 125; }; fi
echo $$ >"$d/pid"
if read -r s </proc/$$/stat; then t ${s##*) } >"$d/start"; fi
if [ -p "$d/in" ] || [ -f "$d/in" ]; then exec <"$d/in"; fi
exec 2>"$d/err" >"$d/out"
"#;
const WRAPPER_MID: &str = r#"if [ "$a" = login ] && [ -z "$c" ]; then cd -- "$H" 2>/dev/null || { echo "atp-exec: cannot enter $H; starting in /" >&2; cd /; }; fi
if [ -n "$c" ]; then cd -- "$c" || exit 126; fi
p=$1; shift
case $p in */*) ;; *) n=$p; w "$n" || { echo "atp-exec: $n: not found" >&2; exit 127; }; p=$r ;; esac
case $p in -*) p=./$p ;; esac
if w setsid; then set -- "$@" "$r"; fi
"#;
const WRAPPER_TAIL: &str = r#"set -- "$@" "$p"
i=1; while [ "$i" -lt "$m" ]; do set -- "$@" "$1"; shift; i=$((i + 1)); done
x=; i=1; while [ "$i" -le "$k" ]; do x="$x \"\${$i}\""; i=$((i + 1)); done
eval "${x:+export$x;} shift $k"; exec "$@""#;
/// The wrapper of a terminal session. Positional parameters: `DIR CWD INNER`. It records
/// its pid and start time like [`WRAPPER`], takes the FIFO as stdin, and runs util-linux
/// `script` (found in the fixed `PATH`), which runs `INNER` (see [`super::tty`]) with
/// `/bin/sh` on a new PTY in a session of its own and copies the PTY's output to `out`.
/// `-e`: script exits with the program's status. `setsid` (no fork, as in [`WRAPPER`])
/// keeps script out of the agent's process group: on SIGTERM script signals its group.
const TTY_WRAPPER: &str = r#"w() { o=$IFS; IFS=:; for q in $PATH; do if [ -f "$q/$1" ] && [ -x "$q/$1" ]; then IFS=$o; r=$q/$1; return 0; fi; done; IFS=$o; return 1; }
t() { shift 19; echo "$1"; }
d=$1; c=$2; i=$3
echo $$ >"$d/pid"
if read -r s </proc/$$/stat; then t ${s##*) } >"$d/start"; fi
if [ -p "$d/in" ]; then exec <"$d/in"; fi
exec >"$d/out" 2>"$d/err"
if [ -n "$c" ]; then cd -- "$c" || exit 126; fi
w script || { echo "atp-exec: a terminal needs script(1) from util-linux in the guest" >&2; exit 127; }
x=$r; SHELL=/bin/sh; export SHELL
if w setsid; then exec "$r" "$x" -q -e -c "$i" /dev/null; fi
exec "$x" -q -e -c "$i" /dev/null"#;
/// Makes the exec directory (`$1`); `$2` non-empty: with the FIFOs `in` and `ctl`; `$3` non-empty:
/// exit [`NO_SCRIPT`] first when the guest has no `script` for a terminal; `$4`
/// non-empty: the program runs as that user (`$5`: group), looked up first (see
/// [`user::RESOLVE`]) and recorded in `as`.
static SETUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{SETUP_CHECK}{}{SETUP_MAKE} && {}",
        user::RESOLVE,
        user::WRITE
    )
});
const SETUP_CHECK: &str = r#"umask 077
if [ -n "$3" ] && ! command -v script >/dev/null 2>&1; then exit 42; fi
"#;
const SETUP_MAKE: &str =
    r#"mkdir -- "$1" && : >"$1/out" && : >"$1/err" && { [ -z "$2" ] || mkfifo "$1/in" "$1/ctl"; }"#;
/// [`SETUP`]'s exit code when a terminal was asked for and the guest has no `script`.
const NO_SCRIPT: i32 = 42;

impl GuestExecCommand {
    /// The same command under the redirecting wrapper, writing into `dir`. The wrapper's
    /// own environment is only the fixed `PATH`; the caller's entries travel as arguments
    /// and are applied to the program alone.
    pub(crate) fn redirected(&self, dir: &str) -> GuestExec {
        if let Some(size) = self.tty {
            return GuestExec {
                path: "/bin/sh".into(),
                arg: vec![
                    "-c".to_owned(),
                    TTY_WRAPPER.to_owned(),
                    "atp-exec".to_owned(),
                    dir.to_owned(),
                    self.cwd.clone().unwrap_or_default(),
                    self.tty_inner(dir, size),
                ],
                env: vec![DEFAULT_PATH.to_owned()],
                input_data: None,
                capture_output: false,
            };
        }
        let mut arg = vec![
            "-c".to_owned(),
            WRAPPER.clone(),
            "atp-exec".to_owned(),
            dir.to_owned(),
            self.cwd.clone().unwrap_or_default(),
            (self.args.len() + 1).to_string(),
            self.env.len().to_string(),
            user::mode(self.user.as_ref()).to_owned(),
            self.path.clone(),
        ];
        arg.extend(self.args.iter().cloned());
        arg.extend(self.env.iter().cloned());
        GuestExec {
            path: "/bin/sh".into(),
            arg,
            env: vec![DEFAULT_PATH.to_owned()],
            input_data: self.input_data.as_ref().map(|d| STANDARD.encode(d)),
            capture_output: false,
        }
    }

    /// [`GuestExecCommand::redirected`] in a directory made ahead (see [`super::dirpool`]):
    /// the name travels in the wrapper's environment, which only root can read, so it
    /// stays out of every process list; the wrapper checks it is still a directory
    /// of the agent's user (exit 125 otherwise, before it writes anything). Not for terminals.
    pub(crate) fn redirected_pooled(&self, dir: &str) -> GuestExec {
        debug_assert!(self.tty.is_none());
        let mut exec = self.redirected(dir);
        exec.arg[3] = String::new();
        exec.env.push(format!("{POOL_DIR_VAR}={dir}"));
        exec
    }
}

/// A new exec directory's path: [`super::sweep::EXEC_DIR_PREFIX`] and 128 random bits,
/// which no guest user can guess.
pub(crate) fn new_exec_dir_name() -> String {
    format!(
        "{}{}",
        super::sweep::EXEC_DIR_PREFIX,
        uuid::Uuid::new_v4().simple()
    )
}

/// The environment entry naming a pooled exec directory (unset before the program runs).
const POOL_DIR_VAR: &str = "ATP_EXEC_DIR";

impl AgentClient {
    /// Creates a private per-exec directory in the guest's /tmp for `cmd` (with its
    /// run-as entry when it names a user).
    pub(crate) async fn make_exec_dir(&self, cmd: &GuestExecCommand) -> Result<String, QgaError> {
        self.make_dir(false, false, cmd.user.as_ref()).await
    }

    /// [`AgentClient::make_exec_dir`], with the FIFOs `in` and `ctl` for streamed stdin when `fifo`;
    /// `tty`: fails with `Unsupported` first when the guest has no `script(1)`; `user`:
    /// fails with `Unsupported` first when the guest has no such user or no tool to
    /// become it (see [`super::user`]).
    pub(crate) async fn make_dir(
        &self,
        fifo: bool,
        tty: bool,
        user: Option<&RunAs>,
    ) -> Result<String, QgaError> {
        let dir = new_exec_dir_name();
        let setup = GuestExec {
            path: "/bin/sh".into(),
            arg: vec![
                "-c".into(),
                SETUP.clone(),
                "atp-setup".into(),
                dir.clone(),
                if fifo { "fifo" } else { "" }.into(),
                if tty { "tty" } else { "" }.into(),
                user.map(|u| u.user.clone()).unwrap_or_default(),
                user.and_then(|u| u.group.clone()).unwrap_or_default(),
            ],
            env: vec![DEFAULT_PATH.to_owned()],
            ..GuestExec::default()
        };
        let pid = self.call(&setup).await?.pid;
        let st = self.wait_exit(pid).await?;
        if st.exit_code == Some(NO_SCRIPT) {
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "Unsupported".into(),
                desc: "a terminal needs script(1) from util-linux in the guest, which has none"
                    .into(),
            });
        }
        if let Some(e) = user.and_then(|u| user::resolve_error(st.exit_code, u)) {
            return Err(e);
        }
        if st.exit_code != Some(0) {
            self.remove_dir(&dir).await;
            return Err(QgaError::Agent {
                command: "guest-exec".into(),
                class: "ExecSetupFailed".into(),
                desc: format!(
                    "cannot create {dir} in the guest (exit {:?}, signal {:?})",
                    st.exit_code, st.signal
                ),
            });
        }
        Ok(dir)
    }

    /// Removes an exec directory; failures are logged, not returned (cleanup path).
    pub(crate) async fn remove_dir(&self, dir: &str) {
        self.remove_dirs(&[dir.to_owned()]).await;
    }

    /// Removes exec directories with one `rm -rf`; failures are logged, not returned
    /// (a sweep finds what is left: no program, idle).
    pub(crate) async fn remove_dirs(&self, dirs: &[String]) {
        let mut arg = vec!["-rf".to_owned(), "--".to_owned()];
        arg.extend(dirs.iter().cloned());
        let rm = GuestExec {
            path: "/bin/rm".into(),
            arg,
            ..GuestExec::default()
        };
        let res = match self.call(&rm).await {
            Ok(p) => self.wait_exit(p.pid).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::warn!(?dirs, error = %e, "could not remove guest exec directories");
        }
    }
}
