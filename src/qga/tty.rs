//! A terminal for a guest program, with stock qemu-ga (POSIX guests): util-linux
//! `script(1)` allocates the PTY and copies between it and the exec's files.
//!
//! The wrapper (see [`super::wrapper`]) runs `script -q -e -c INNER /dev/null` with the
//! FIFO `in` as its stdin and `out` as its stdout. `INNER`, run by `/bin/sh` on the PTY,
//! records its pid, start time and terminal in the exec's directory, sets the window size,
//! resolves the program in the fixed `PATH`, applies the caller's environment last and
//! `exec`s the program: so the program is the PTY's session leader and its pid is known.
//! Every value in `INNER` is single-quoted here; nothing the caller sends is parsed by a
//! shell. Resizing sets the PTY's size from outside (`stty -F`), which makes the kernel
//! send SIGWINCH to its foreground group; signals go to that group once the recorded pid
//! is verified to be still our program (see [`SIGNAL_VERIFIED`]).

use super::{AgentClient, GuestExecCommand, QgaError, commands::GuestExec, exec::DEFAULT_PATH};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for TerminalSize {
    /// 24×80, the classic terminal.
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// `TERM` for a terminal session whose caller gives none.
pub const DEFAULT_TERM: &str = "TERM=xterm-256color";

/// Signals a session may send: HUP INT QUIT KILL USR1 USR2 TERM CONT STOP TSTP WINCH.
pub const ALLOWED_SIGNALS: [i32; 11] = [1, 2, 3, 9, 10, 12, 15, 18, 19, 20, 28];

/// The prelude run on the PTY before the program (positional `$1`: the exec directory).
const INNER_PRELUDE: &str = r#"w() { o=$IFS; IFS=:; for q in $PATH; do if [ -f "$q/$1" ] && [ -x "$q/$1" ]; then IFS=$o; echo "$q/$1"; return 0; fi; done; IFS=$o; return 1; }
echo $$ >"$d/cpid"
if read -r s </proc/$$/stat; then set -- ${s##*) }; shift 19; echo "$1" >"$d/cstart"; fi
tty >"$d/tty" 2>/dev/null
stty rows "$r" cols "$k" 2>/dev/null
"#;

/// After the program's argv is in `"$@"`: resolve it, then the caller's environment.
const INNER_EXEC: &str = r#"p=$1; shift
case $p in */*) ;; *) n=$p; p=$(w "$n") || { echo "atp-exec: $n: not found" >&2; exit 127; } ;; esac
case $p in -*) p=./$p ;; esac
"#;

/// With a run-as user (after [`super::user::READ`]): the PTY becomes the user's, so
/// programs that open their terminal by name (`/dev/tty`, `tty`) may; `login` without a
/// working directory starts in the user's home (or `/`, with a warning, when it cannot).
const INNER_AS: &str = r#"chown "$U" "$(tty)" 2>/dev/null
if [ "$a" = login ] && [ -z "$wd" ]; then cd -- "$H" 2>/dev/null || { echo "atp-exec: cannot enter $H; starting in /" >&2; cd /; }; fi
"#;

/// Resizes the session's PTY: `$1` dir, `$2` rows, `$3` cols. Exit 3: no terminal yet.
const RESIZE: &str = r#"read -r t 2>/dev/null <"$1/tty" || exit 3
n=${t#/dev/pts/}
case $n in ''|*[!0-9]*) exit 3 ;; esac
[ "$t" = "/dev/pts/$n" ] || exit 3
exec stty -F "$t" rows "$2" cols "$3""#;

/// Sends signal `$2` for the session in `$1`, only while the program is still the one we
/// started (its recorded pid and start time). With a terminal (`$3` = tty: `cpid`, written
/// on the PTY) to the PTY's foreground process group when it belongs to the program's
/// session; without (`pid`, the wrapper's, which `exec`s the program) to the program's
/// process group when it leads one, else to the program. Exit 3: the program is gone,
/// nothing was signalled.
const SIGNAL_VERIFIED: &str = r#"d=$1; g=$2; m=$3
if [ "$m" = tty ]; then pf=cpid; sf=cstart; else pf=pid; sf=start; fi
read -r p 2>/dev/null <"$d/$pf" || exit 3
read -r want 2>/dev/null <"$d/$sf" || exit 3
case $p in ''|*[!0-9]*) exit 3 ;; esac
read -r s 2>/dev/null <"/proc/$p/stat" || exit 3
set -- ${s##*) }
grp=$3; sess=$4; fg=$6
shift 19; [ "$1" = "$want" ] || exit 3
t=$p
[ "$grp" = "$p" ] && t=-$p
if [ "$m" = tty ] && [ "$fg" -gt 0 ] 2>/dev/null && read -r f 2>/dev/null <"/proc/$fg/stat"; then
  set -- ${f##*) }
  [ "$4" = "$sess" ] && t=-$fg
fi
kill -"$g" "$t" 2>/dev/null || exit 4"#;

/// Quotes `s` for `/bin/sh`: one single-quoted word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl GuestExecCommand {
    /// The script `script(1)` runs on the PTY for this command, in `dir`, at `size`.
    pub(crate) fn tty_inner(&self, dir: &str, size: TerminalSize) -> String {
        let mut s = format!(
            "d={}; r={}; k={}\n{INNER_PRELUDE}",
            quote(dir),
            size.rows,
            size.cols
        );
        if let Some(who) = &self.user {
            s.push_str(&format!(
                "a={}; wd={}\n{}{INNER_AS}",
                super::user::mode(Some(who)),
                if self.cwd.is_some() { "1" } else { "" },
                super::user::READ
            ));
        }
        s.push_str("set --");
        for a in std::iter::once(&self.path).chain(&self.args) {
            s.push(' ');
            s.push_str(&quote(a));
        }
        s.push('\n');
        s.push_str(INNER_EXEC);
        s.push_str("set -- \"$p\" \"$@\"\n");
        if self.user.is_some() {
            s.push_str(super::user::DROP_PREPEND);
        }
        let mut env: Vec<&str> = Vec::new();
        if !self.env.iter().any(|e| e.starts_with("TERM=")) {
            env.push(DEFAULT_TERM);
        }
        env.extend(self.env.iter().map(String::as_str));
        s.push_str("export");
        for e in env {
            s.push(' ');
            s.push_str(&quote(e));
        }
        // `"$@"`, not a variable: an entry just exported could have replaced one.
        s.push_str("\nexec \"$@\"");
        s
    }
}

impl AgentClient {
    /// Sets the window size of the terminal session whose directory is `dir`.
    pub(crate) async fn tty_resize(&self, dir: &str, size: TerminalSize) -> Result<(), QgaError> {
        let st = self
            .run_helper(
                RESIZE,
                vec![dir.to_owned(), size.rows.to_string(), size.cols.to_string()],
            )
            .await?;
        match st {
            0 => Ok(()),
            3 => Err(unsupported("the session's terminal is not ready yet")),
            other => Err(helper_failed("resizing the terminal", other)),
        }
    }

    /// Sends `signal` for the session in `dir` (see [`SIGNAL_VERIFIED`]). `Ok(false)`:
    /// the program has ended, nothing was signalled.
    pub(crate) async fn session_signal(
        &self,
        dir: &str,
        signal: i32,
        tty: bool,
    ) -> Result<bool, QgaError> {
        if !ALLOWED_SIGNALS.contains(&signal) {
            return Err(QgaError::InvalidArgument(format!(
                "signal {signal} is not one a session may send (allowed: {ALLOWED_SIGNALS:?})"
            )));
        }
        let mode = if tty { "tty" } else { "" };
        let st = self
            .run_helper(
                SIGNAL_VERIFIED,
                vec![dir.to_owned(), signal.to_string(), mode.to_owned()],
            )
            .await?;
        match st {
            0 => Ok(true),
            3 => Ok(false),
            other => Err(helper_failed("signalling the program", other)),
        }
    }

    /// Runs a `/bin/sh -c` helper with `args` and returns its exit code.
    pub(super) async fn run_helper(
        &self,
        script: &str,
        args: Vec<String>,
    ) -> Result<i32, QgaError> {
        let mut arg = vec!["-c".to_owned(), script.to_owned(), "atp-tty".to_owned()];
        arg.extend(args);
        let helper = GuestExec {
            path: "/bin/sh".into(),
            arg,
            env: vec![DEFAULT_PATH.to_owned()],
            ..GuestExec::default()
        };
        let pid = self.call(&helper).await?.pid;
        let st = self.wait_exit(pid).await?;
        Ok(st.exit_code.unwrap_or(-1))
    }
}

fn unsupported(desc: &str) -> QgaError {
    QgaError::Agent {
        command: "guest-exec".into(),
        class: "Unsupported".into(),
        desc: desc.to_owned(),
    }
}

fn helper_failed(what: &str, code: i32) -> QgaError {
    QgaError::Agent {
        command: "guest-exec".into(),
        class: "HelperFailed".into(),
        desc: format!("{what} failed in the guest (exit {code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_byte_literal() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(x)`y`"), "'$(x)`y`'");
    }

    #[test]
    fn inner_quotes_argv_and_env_and_defaults_term() {
        let cmd = GuestExecCommand::simple("vi", vec!["a'b".into(), "$HOME".into()]).env("X=1 2");
        let s = cmd.tty_inner(
            "/tmp/d",
            TerminalSize {
                rows: 50,
                cols: 132,
            },
        );
        assert!(s.starts_with("d='/tmp/d'; r=50; k=132\n"), "{s}");
        assert!(s.contains(r"set -- 'vi' 'a'\''b' '$HOME'"), "{s}");
        assert!(s.contains("export 'TERM=xterm-256color' 'X=1 2'"), "{s}");
        let with_term = cmd
            .clone()
            .env("TERM=vt100")
            .tty_inner("/d", TerminalSize::default());
        assert!(!with_term.contains(DEFAULT_TERM), "{with_term}");
    }
}
