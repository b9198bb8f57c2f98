//! The guest side of streamed stdin ([`super::stdin`]): the holder, the pump it starts,
//! and the terminal hang-up. All are `/bin/sh` scripts (dash and busybox ash) that take
//! their values as positional parameters, never spliced into the text.

use std::time::Duration;

/// The holder, started by `guest-exec` before the program (so it is the agent's child,
/// with its start time recorded in `hstart`). Positional parameters: `DIR MODE POLLS PUMP`.
///
/// It starts [`PUMP`] (`$4`) as its own child, under `setsid` when the guest has one, so
/// the pump and its `cat` form a process group the holder can end. Then it watches, every
/// 2 s: the directory (gone: the session ended), the pump (gone: stdin was closed and
/// delivered) and the lease the client renews (see [`LEASE_RENEW`]). The lease unchanged
/// for `POLLS` polls means the client is gone (a daemon killed mid-session) and nobody can
/// feed or follow the session again: the holder hangs the program up (verified like
/// [`HANGUP`]: SIGTERM to script with a terminal, `MODE` = `tty`; else SIGHUP to the
/// program's group). Whenever it leaves, it first ends the pump's group, checked to be
/// still its own child (`z`), so no pump outlives its session.
pub(super) const HOLDER: &str = r#"d=$1; m=$2; k=$3; P=$4
t() { shift 19; echo "$1"; }
if read -r s </proc/$$/stat; then t ${s##*) } >"$d/hstart"; fi
if y=$(command -v setsid); then "$y" /bin/sh -c "$P" atp-pump "$d" </dev/null >/dev/null 2>&1 &
else /bin/sh -c "$P" atp-pump "$d" </dev/null >/dev/null 2>&1 & fi
pp=$!
a() { read -r s 2>/dev/null <"/proc/$pp/stat" || return 1; set -- ${s##*) }; [ "$2" = "$$" ] && [ "$1" != Z ]; }
z() {
  read -r s 2>/dev/null <"/proc/$pp/stat" || return 0
  set -- ${s##*) }; [ "$2" = "$$" ] || return 0
  if [ "$3" = "$pp" ]; then kill -KILL -"$pp" 2>/dev/null; fi
  kill -KILL "$pp" 2>/dev/null; return 0
}
last=; n=0
while [ -p "$d/in" ] && a; do
  sleep 2
  c=; read -r c 2>/dev/null <"$d/lease"
  if [ "$c" = "$last" ]; then n=$((n + 1)); else n=0; last=$c; fi
  if [ "$n" -ge "$k" ]; then
    z
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
done
z"#;

/// The pump: the only process that holds the FIFO `in` open for writing (so the program
/// sees EOF exactly when the pump ends). It opens `in` read-write (never blocks), then
/// creates `pready`: from then on the pipe cannot lose what the agent's handle writes
/// into it, whoever else has it open. It reads segment numbers from the FIFO `ctl` (held
/// open read-write: a read there waits, never ends), copies spool file `s.N` into `in` and
/// removes it, in the order rung; `e` ends it (EOF). `cat` blocks while the pipe is full,
/// which is the backpressure the client sees through the spool's bound. Holding a read
/// end too, it never sees EPIPE: the holder or the daemon ends it with the session.
pub(super) const PUMP: &str = r#"d=$1
exec 4<>"$d/ctl" 5<>"$d/in" || exit 1
: >"$d/pready"
while read -r n <&4; do
  case $n in e) exit 0 ;; ''|*[!0-9]*) exit 1 ;; esac
  cat -- "$d/s.$n" >&5 || exit 1
  rm -f -- "$d/s.$n"
done"#;

/// Hangs a terminal session up: SIGTERM to `script` (the wrapper's pid, `$1`'s `pid`;
/// script blocks SIGHUP, and on SIGTERM ends its program and itself), only while it is
/// still the agent's child with its recorded start time. Exit 3: it has ended, nothing
/// was signalled.
pub(super) const HANGUP: &str = r#"d=$1
p=; read -r p 2>/dev/null <"$d/pid"; w=; read -r w 2>/dev/null <"$d/start"
case $p in ''|*[!0-9]*) exit 3 ;; esac
read -r s 2>/dev/null <"/proc/$p/stat" || exit 3
set -- ${s##*) }; q=$2; shift 19
[ "$q" = "$PPID" ] && [ "$1" = "$w" ] || exit 3
kill -TERM "$p""#;

/// How often the client renews its lease in the exec directory while the feed lives.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Holder polls (2 s each) without a renewed lease before it lets go: 30 s.
pub(super) const LEASE_POLLS: u32 = 15;
