//! The guest side of tree transfers and listings (POSIX guests): each is one
//! `guest-exec` of `/bin/sh -c SCRIPT NAME ARGS...`, paths as positional parameters, and
//! only what both busybox and GNU userlands have (`tar -c/-x -f -C -o`, `sha256sum`,
//! `stat -c`, `readlink`, `mv -T`, `rm -rf`).

use std::time::Duration;

use super::super::{AgentClient, ExecResult, QgaError, guestpath::Stage};

/// Longest a tar helper may run (big trees under emulation included).
pub const TAR_TIMEOUT: Duration = Duration::from_secs(600);

/// Exit codes the scripts share.
const NOT_OURS: i32 = 3;
const CHECKSUM: i32 = 4;
const EXISTS: i32 = 6;
const NO_TOOL: i32 = 7;
const CHANGED: i32 = 9;
const UNSAFE: i32 = 10;

/// `SRC DIR`: `tar c` of SRC's contents into DIR/a.tar (DIR: a private directory made by
/// [`AgentClient::make_dir`]); prints its size. (No checksum in the guest: under
/// emulation `sha256sum` of 64 MiB takes seconds; the daemon hashes what it reads, each
/// file's SHA-256 goes to the client, and the size read must be the size made.) SRC is
/// entered first and must still
/// be the resolved path the policy decided on (a directory swapped in meanwhile is
/// refused), then archived as `.`. Symbolic links are archived as links (`tar` without
/// `-h`); the host checks every entry. GNU tar opens each file with `O_NOFOLLOW`, so a
/// file swapped for a link while it is read fails the pull; busybox tar follows it, so
/// with any other tar a tree holding a directory another user can write to (not the
/// agent's, or group/other-writable) is refused before anything is read.
const PACK: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
for t in tar; do command -v $t >/dev/null 2>&1 || { echo "the guest has no $t" >&2; exit 7; }; done
cd -P -- "$2" && [ -O . ] || exit 3
d=$(pwd -P)
cd -P -- "$1" 2>/dev/null || { echo "$1: Not a directory, or No such file or directory" >&2; exit 2; }
[ "$(pwd -P)" = "$1" ] || { echo "$1 was replaced while it was opened" >&2; exit 9; }
if ! tar --version 2>/dev/null | grep -q 'GNU tar'; then
  w=$(find . -type d \( ! -user "$(id -u)" -o -perm -0020 -o -perm -0002 \) -print) || { echo "cannot check who may write to $1's directories" >&2; exit 10; }
  if [ -n "$w" ]; then
    w=$(printf '%s\n' "$w" | head -n 1)
    echo "$1: ${w#./} can be written by other users, and this guest's tar (not GNU tar) follows a link swapped in while it reads; refused" >&2
    exit 10
  fi
fi
tar -c -f "$d/a.tar" . || exit 5
n=$(wc -c <"$d/a.tar") && echo $n"#;

/// `STAGE TARGET NONCE SHA256 OVERWRITE`: in the staging directory (checked by its `id`
/// like [`Stage`]'s finalize), verifies the archive `data` against SHA256, extracts it
/// into `tree` (0700 until tar sets the root's mode from the archive's `./` entry), and
/// renames `tree` to TARGET. An existing TARGET is refused, or with OVERWRITE = 1 renamed
/// into the staging directory first and removed once the new tree is in place (put back
/// if that rename fails). TARGET is reached as `../NAME` from the staging directory, so
/// the tree lands in the very directory the stage was made in, whatever is swapped on
/// the path meanwhile. Then `MTIME DIR` pairs: directories whose mtimes are set again
/// after tar (busybox tar creates some links last, which moves their directories'
/// mtimes). The staging directory is removed whatever happened.
const EXTRACT: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
s=$1 t=../${2##*/} id=$3 want=$4 ow=$5
run() {
  for x in tar sha256sum; do command -v $x >/dev/null 2>&1 || { echo "the guest has no $x" >&2; return 7; }; done
  cd -P -- "$s" && [ -O . ] && [ "$(cat id 2>/dev/null)" = "$id" ] && [ -f data ] && [ ! -L data ] || return 3
  got=$(sha256sum data) || return 5
  [ "${got%% *}" = "$want" ] || { echo "archive checksum mismatch: the guest read ${got%% *}, the daemon wrote $want" >&2; return 4; }
  mkdir -m 0700 tree && tar -x -o -f data -C tree || return 5
  rm -f data
  while [ $# -ge 2 ]; do touch -c -m -d "@$1" "tree/$2"; shift 2; done
  if [ -e "$t" ] || [ -L "$t" ]; then
    [ "$ow" = 1 ] || { echo "$t: File exists" >&2; return 6; }
    mv -T -- "$t" old || return 5
    if mv -T -- tree "$t"; then return 0; fi
    mv -T -- old "$t"; return 5
  fi
  mv -T -- tree "$t"
}
shift 5
run "$@"; rc=$?
cd / && rm -rf -- "$s"
exit $rc"#;

/// `PATH LIMIT`: NUL-separated records `STAT\0NAME\0TARGET\0`, the path itself first
/// (`stat -c '%f %s %Y %u %g'`, not following a last link), then, for a directory, each
/// entry (at most LIMIT, and about 1 MiB of output); `more\0` when some were left out.
/// Names travel between NULs, so any byte but NUL (newlines included) is safe.
const LIST: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
one() {
  s=$(stat -c '%f %s %Y %u %g' -- "$1" 2>/dev/null) || return 0
  t=
  if [ -L "$1" ]; then t=$(readlink -- "$1" && echo x) || t=x; t=${t%x}; t=${t%?}; fi
  printf '%s\0%s\0%s\0' "$s" "$2" "$t"
  b=$((b + ${#s} + ${#2} + ${#t} + 3))
}
b=0 i=0
[ -e "$1" ] || [ -L "$1" ] || { echo "$1: No such file or directory" >&2; exit 2; }
one "$1" "$1"
[ -d "$1" ] || exit 0
cd -- "$1" || exit 2
for f in * .*; do
  case $f in .|..) continue ;; esac
  [ -e "$f" ] || [ -L "$f" ] || continue
  i=$((i + 1))
  if [ $i -gt "$2" ] || [ $b -gt 1048576 ]; then printf 'more\0'; exit 0; fi
  one "./$f" "$f"
done"#;

/// A guest archive made by [`AgentClient::tree_pack`], in a private directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The private directory (remove it with [`AgentClient::tree_unpack_done`]).
    pub dir: String,
    /// The archive's size.
    pub size: u64,
}

impl Packed {
    /// The archive's path.
    pub fn archive(&self) -> String {
        format!("{}/a.tar", self.dir)
    }
}

/// Why a tree helper refused, where the reason matters to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeRefusal {
    /// The staging directory is not this transfer's (replaced by someone else).
    NotOurs,
    /// The guest computed another SHA-256 of the archive (message from the guest).
    Checksum(String),
    /// The destination exists and `overwrite` was not asked.
    Exists,
    /// The guest lacks a tool (`tar`, `sha256sum`).
    NoTool(String),
    /// The source directory was swapped while it was entered.
    Changed(String),
    /// The guest's tar cannot archive this tree safely (busybox tar follows a link
    /// swapped in while it reads, and other users can write to the tree).
    Unsafe(String),
}

/// One entry of a listing, as `stat` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name (the path itself for the first record).
    pub name: String,
    /// Raw mode (type and permission bits).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Symbolic link target (empty for other kinds).
    pub target: String,
}

/// A listing: the path itself, its entries, and whether some were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The path itself.
    pub stat: Listed,
    /// Its entries (a directory's), in the guest's order.
    pub entries: Vec<Listed>,
    /// More entries exist than were returned.
    pub truncated: bool,
}

fn failed(what: &str, r: &ExecResult) -> QgaError {
    let err = r.decode_stderr().unwrap_or_default();
    QgaError::Agent {
        command: what.to_owned(),
        class: "GenericError".into(),
        desc: match (r.exit_code, err.trim()) {
            (Some(c), "") => format!("exited with code {c}"),
            (None, "") => format!("killed by signal {}", r.signal.unwrap_or(0)),
            (_, e) => e.to_owned(),
        },
    }
}

fn bad_reply(what: &str, detail: String) -> QgaError {
    QgaError::Agent {
        command: what.to_owned(),
        class: "InvalidReply".into(),
        desc: detail,
    }
}

/// Parses the listing helper's output: NUL-separated `STAT\0NAME\0TARGET\0` records,
/// the path itself first, `more\0` when some were left out.
pub fn parse_listing(out: &[u8]) -> Option<Listing> {
    let mut fields = out.split(|b| *b == 0);
    let mut records = Vec::new();
    let mut truncated = false;
    while let Some(stat) = fields.next() {
        if stat.is_empty() {
            break; // after the last NUL
        }
        if stat == b"more" {
            truncated = true;
            break;
        }
        let name = String::from_utf8_lossy(fields.next()?).into_owned();
        let target = String::from_utf8_lossy(fields.next()?).into_owned();
        let text = std::str::from_utf8(stat).ok()?;
        let mut f = text.split(' ');
        records.push(Listed {
            mode: u32::from_str_radix(f.next()?, 16).ok()?,
            size: f.next()?.parse().ok()?,
            mtime: f.next()?.parse().ok()?,
            uid: f.next()?.parse().ok()?,
            gid: f.next()?.parse().ok()?,
            name,
            target,
        });
    }
    let mut records = records.into_iter();
    let stat = records.next()?;
    Some(Listing {
        stat,
        entries: records.collect(),
        truncated,
    })
}

impl AgentClient {
    async fn run_tree(&self, args: &[&str]) -> Result<ExecResult, QgaError> {
        tokio::time::timeout(TAR_TIMEOUT, self.run_small("/bin/sh", args))
            .await
            .map_err(|_| {
                QgaError::Transport(crate::transport::TransportError::Timeout(TAR_TIMEOUT))
            })?
    }

    /// Archives the directory `src` (`tar c`, links kept as links) into a new private
    /// directory; two execs. `Err(refusal)` inside `Ok` when the guest lacks a tool, the
    /// source was swapped, or its tar cannot archive the tree safely.
    pub async fn tree_pack(&self, src: &str) -> Result<Result<Packed, TreeRefusal>, QgaError> {
        let dir = self.make_dir(false, false, None).await?;
        let r = match self.run_tree(&["-c", PACK, "atp-pack", src, &dir]).await {
            Ok(r) => r,
            Err(e) => {
                self.remove_dir(&dir).await;
                return Err(e);
            }
        };
        let msg = || r.decode_stderr().unwrap_or_default().trim().to_owned();
        let out = String::from_utf8_lossy(&r.stdout).trim().to_owned();
        let res = match (r.exit_code, out.parse::<u64>().ok()) {
            (Some(0), Some(size)) => {
                return Ok(Ok(Packed { dir, size }));
            }
            (Some(NO_TOOL), _) => Ok(Err(TreeRefusal::NoTool(msg()))),
            (Some(CHANGED), _) => Ok(Err(TreeRefusal::Changed(msg()))),
            (Some(UNSAFE), _) => Ok(Err(TreeRefusal::Unsafe(msg()))),
            (Some(0), None) => Err(bad_reply("atp-pack", format!("unexpected output {out:?}"))),
            _ => Err(failed("atp-pack", &r)),
        };
        self.remove_dir(&dir).await;
        res
    }

    /// Removes a [`Packed`] archive's directory (best effort, logged).
    pub async fn tree_unpack_done(&self, packed: &Packed) {
        self.remove_dir(&packed.dir).await;
    }

    /// Verifies the archive staged as `stage`'s `data` against `sha256` (hex), extracts
    /// it, sets `fixups`' directory mtimes again, and renames the tree to `target` (an
    /// existing one only with `overwrite`). The staging directory is gone afterwards,
    /// whatever the outcome. One exec.
    pub async fn tree_extract(
        &self,
        stage: &Stage,
        target: &str,
        sha256: &str,
        overwrite: bool,
        fixups: &[(u64, String)],
    ) -> Result<Result<(), TreeRefusal>, QgaError> {
        let nonce = stage.nonce_text();
        let ow = if overwrite { "1" } else { "0" };
        let mut args: Vec<String> = [
            "-c",
            EXTRACT,
            "atp-extract",
            &stage.dir,
            target,
            &nonce,
            sha256,
            ow,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        for (mtime, dir) in fixups {
            args.push(mtime.to_string());
            args.push(dir.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = self.run_tree(&args).await?;
        let msg = || r.decode_stderr().unwrap_or_default().trim().to_owned();
        match r.exit_code {
            Some(0) => Ok(Ok(())),
            Some(NOT_OURS) => Ok(Err(TreeRefusal::NotOurs)),
            Some(CHECKSUM) => Ok(Err(TreeRefusal::Checksum(msg()))),
            Some(EXISTS) => Ok(Err(TreeRefusal::Exists)),
            Some(NO_TOOL) => Ok(Err(TreeRefusal::NoTool(msg()))),
            _ => Err(failed("atp-extract", &r)),
        }
    }

    /// Lists `path` (a directory's entries, at most `limit`) or stats it; one exec.
    pub async fn list_dir(&self, path: &str, limit: u32) -> Result<Listing, QgaError> {
        let limit = limit.to_string();
        let r = self
            .run_tree(&["-c", LIST, "atp-list", path, &limit])
            .await?;
        if !r.success() {
            return Err(failed("atp-list", &r));
        }
        parse_listing(&r.stdout).ok_or_else(|| {
            bad_reply(
                "atp-list",
                format!("unexpected listing of {} bytes", r.stdout.len()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_keep_any_name_byte_for_byte() {
        let out = b"41ed 4096 1700000000 0 0\0/etc\0\0\
81a4 12 1700000001 0 0\0a\nb\0\0\
a1ff 3 1700000002 1000 1000\0l\0../x\ny\0more\0";
        let l = parse_listing(out).unwrap();
        assert_eq!(l.stat.name, "/etc");
        assert_eq!(l.stat.mode & 0o170_000, 0o040_000);
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[0].name, "a\nb");
        assert_eq!(l.entries[0].size, 12);
        assert_eq!(l.entries[1].target, "../x\ny");
        assert_eq!(l.entries[1].uid, 1000);
        assert!(l.truncated);
        assert!(parse_listing(b"").is_none());
        assert!(parse_listing(b"zz\0a\0\0").is_none());
    }
}
