//! Path work in POSIX guests for the file RPCs: resolving symbolic links (so policies
//! decide on what is really opened), and a private staging directory for uploads (so no
//! file the daemon creates is ever reachable by other guest users before it is final).
//!
//! Every helper is one `guest-exec` of `/bin/sh -c SCRIPT NAME ARGS...`: paths travel as
//! positional parameters, never spliced into the script. The scripts use only what
//! busybox has (`readlink -f`, `stat -c`, `mkdir -m`, `head -c`, `od`,
//! `truncate -s`, `chown`, `chmod`, `ln -T`, `mv -T`, `rm -rf`). Failures come back as
//! [`QgaError::Agent`] with the helper's stderr, whose errno text (`No such file or
//! directory`, `File exists`, ...) says what kind of failure it was.

use std::time::Duration;

use super::{AgentClient, OpenFile, QgaError, commands::Whence};

/// Longest a helper may take (slow emulated guests included); past it the request fails.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Prefix of staging directory names (`.atp-` + 32 hex digits).
pub const STAGE_PREFIX: &str = ".atp-";

/// Exit code of the finalize helper when the staging path holds another directory.
const NOT_OURS: i32 = 3;

/// Length of the staged file's nonce (16 random bytes in hex).
const NONCE_LEN: usize = 32;

/// A trailing `/` of the request is kept (it says "a directory"). First line:
/// `MODE_HEX UID GID INODE` of the resolved path (`stat -c`, not following a last
/// symbolic link: there is none left after `readlink -f`) or `-` when nothing is there;
/// then the resolved path, byte for byte (a name may end in a newline: the `x` keeps
/// command substitution from eating it).
const RESOLVE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
r=$(readlink -f -- "$1" && echo x) || { echo "cannot resolve $1: No such file or directory (a directory on the path is missing, or symbolic links loop)" >&2; exit 2; }
r=${r%x}; r=${r%?}
case $1 in */) [ "$r" = / ] || r=$r/ ;; esac
if s=$(stat -c '%f %u %g %i' -- "$r" 2>/dev/null); then echo "$s"; else echo -; fi
printf '%s' "$r""#;

/// `STAGE`: creates the staging directory (`mkdir -m 0700`: the agent's own and closed to
/// everyone else from its first moment), enters it, checks it is the agent's own, and
/// creates `data` and `id` there, both holding the random nonce `ATP_NONCE`, which it
/// prints. The nonce comes from the daemon in the environment (only root can read a
/// process's environment; no process is spent making it) and nobody else can read the
/// files, so it proves that a handle opened later by path is this `data`, and that a
/// directory entered later by path is this one.
const STAGE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
d=$1
umask 077
mkdir -m 0700 -- "$d" || exit 2
if ! cd -P -- "$d" || ! [ -O . ]; then echo "staging directory $d: Operation not permitted (it is not the agent's own)" >&2; exit 3; fi
n=$ATP_NONCE && [ ${#n} = 32 ] && printf %s "$n" >data && printf %s "$n" >id && printf %s "$n" && exit 0
cd / && rm -rf -- "$d"; exit 4"#;

/// `PATH STAGE`: [`RESOLVE`] of PATH, then, when PATH is already resolved (no link, `.` or
/// `..` led elsewhere: the policy's decision on PATH stands) and names a regular file or
/// nothing, [`STAGE`] at STAGE (in PATH's directory). One process less per step than the
/// two helpers apart (no `stat` when nothing is there, no `tr`), and one exec instead of
/// two. The resolution is the shell's own when it can be (`cd -P` to PATH's directory,
/// whose physical path `PWD` then holds, and a last component that is no link: what
/// `readlink -f` would print, without its process). First line: the nonce, or `-` when
/// nothing was staged; then [`RESOLVE`]'s output.
const RESOLVE_STAGE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
p=$1 d=$2 r=
case $p in /*[!/]) b=${p##*/}; case $b in .|..) ;; *) if cd -P -- "${p%/*}/" 2>/dev/null && [ ! -L "$b" ]; then r=${PWD%/}/$b; fi ;; esac ;; esac
if [ -z "$r" ]; then
r=$(readlink -f -- "$p" && echo x) || { echo "cannot resolve $p: No such file or directory (a directory on the path is missing, or symbolic links loop)" >&2; exit 2; }
r=${r%x}; r=${r%?}
fi
case $p in */) [ "$r" = / ] || r=$r/ ;; esac
s=-
if [ -e "$r" ] || [ -L "$r" ]; then s=$(stat -c '%f %u %g %i' -- "$r" 2>/dev/null) || s=-; fi
n=-
case $p in */) ;; *) if [ "$r" = "$p" ] && { [ "$s" = - ] || [ -f "$r" ]; }; then
  umask 077
  mkdir -m 0700 -- "$d" || exit 2
  if ! cd -P -- "$d" || ! [ -O . ]; then echo "staging directory $d: Operation not permitted (it is not the agent's own)" >&2; exit 3; fi
  n=$ATP_NONCE && [ ${#n} = 32 ] && printf %s "$n" >data && printf %s "$n" >id || { cd / && rm -rf -- "$d"; exit 4; }
  cd /
fi ;; esac
printf '%s\n%s\n%s' "$n" "$s" "$r""#;

/// `STAGE TARGET MODE OWNER HOW SIZE NONCE`: enters the staging directory (and checks
/// by its `id` that it is this very directory, not one swapped in: a link to another
/// directory of the agent's, or another upload's), cuts `data` to SIZE when the 32-byte
/// nonce may outlast a short upload, sets owner then mode on it (chown may clear set-id
/// bits, so chmod comes last; skipped for 600, what `data` has from its `umask 077`), puts
/// it in place, and removes the directory whatever happened. Only shell builtins beyond
/// what must change the file system: every process costs in a slow emulated guest.
/// Nothing here acts on a path another user can swap: `data` is reached through the
/// working directory, and rename/link do not follow a link at the target. HOW: `replace`
/// renames over the target (`mv -f -T`); `exclusive` hard-links (`ln -T` fails if the
/// target exists); `create` hard-links and accepts a target that appeared meanwhile.
const FINALIZE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
s=$1 t=$2 m=$3 o=$4 how=$5 n=$6 id=$7 rc=0
if cd -P -- "$s" && [ -O . ] && { read -r got || [ -n "$got" ]; } <id 2>/dev/null && [ "$got" = "$id" ] && [ -f data ] && [ ! -L data ]; then
  { [ "$n" -ge 32 ] || truncate -s "$n" data; } && { [ -z "$o" ] || chown -- "$o" data; } && { [ "$m" = 600 ] || chmod -- "$m" data; } && case $how in
    replace) mv -f -T -- data "$t" ;;
    exclusive) ln -T -- data "$t" ;;
    *) ln -T -- data "$t" 2>/dev/null || [ -e "$t" ] || [ -L "$t" ] || ln -T -- data "$t" ;;
  esac || rc=$?
else
  rc=3
fi
cd / && rm -rf -- "$s"
exit $rc"#;

/// `MARK PATH`, run by the agent (its parent): finds the agent's descriptor positioned at
/// MARK (the handle just opened, moved there by the daemon) and compares where the kernel
/// says it is open (`/proc/PID/fd/N`: the file's own location, whatever links led there)
/// with PATH, and its inode with INODE when given (so a file removed and created again
/// in its place is not taken for it). With EMPTY = 1, the same file is then emptied
/// through that descriptor
/// (`/proc/PID/fd/N` names the open file itself, not a path anyone can swap). Exit 0: the
/// same; 3: another file; 4: no descriptor at MARK.
const SAME_FILE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
for f in /proc/$PPID/fdinfo/*; do
  fd=${f##*/} hit=
  { while read -r k v; do [ "$k" = pos: ] && [ "$v" = "$1" ] && hit=1; done <"$f"; } 2>/dev/null
  [ -n "$hit" ] || continue
  got=$(readlink "/proc/$PPID/fd/$fd" && echo x) || exit 2
  got=${got%x}; got=${got%?}
  [ "$got" = "$2" ] || exit 3
  [ -z "$4" ] || [ "$(stat -L -c %i "/proc/$PPID/fd/$fd")" = "$4" ] || exit 3
  [ "$3" != 1 ] || truncate -s 0 "/proc/$PPID/fd/$fd" || exit 5
  exit 0
done
echo "the agent's handle was not found in /proc/$PPID/fdinfo" >&2
exit 4"#;

/// What a path resolves to in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Absolute path with every symbolic link, `.` and `..` resolved.
    pub path: String,
    /// What is there now, if anything.
    pub existing: Option<Existing>,
    /// Only root can change what the path leads to: every directory on the way is
    /// root's and closed to others' writes (see [`AgentClient::probe_path`]); false when
    /// not known.
    pub settled: bool,
    /// Settled, and the path's directory is closed to others' writes without exception
    /// (not even sticky): nobody but root can create, rename or remove anything in it.
    pub dir_closed: bool,
}

/// Mode and owner of an existing file (from `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Whether it is a regular file.
    pub regular: bool,
    /// Inode number (to tell the same file from one put in its place).
    pub ino: u64,
}

/// How [`AgentClient::stage_finish`] puts the staged file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Rename over the target (atomic replace).
    Replace,
    /// Hard-link; fails with `File exists` if the target exists.
    Exclusive,
    /// Hard-link unless the target appeared meanwhile (then leave it alone).
    Create,
}

impl Place {
    /// The finalize helpers' `MODE OWNER HOW` arguments: octal mode, `uid:gid` or empty,
    /// and this place's name.
    pub(crate) fn finalize_args(
        self,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> (String, String, &'static str) {
        let how = match self {
            Place::Replace => "replace",
            Place::Exclusive => "exclusive",
            Place::Create => "create",
        };
        let owner = owner.map_or_else(String::new, |(u, g)| format!("{u}:{g}"));
        (format!("{mode:o}"), owner, how)
    }
}

/// A private staging directory (`DIR/.atp-<uuid>`, the agent's own, 0700) next to a
/// target, holding `data` (0600) with a nonce only the daemon knows; or, in a closed
/// directory, a 0600 staged file `DIR/.atp-<uuid>` itself (see `stage_file.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The directory (the staged file itself for a file stage).
    pub dir: String,
    nonce: Vec<u8>,
    file: bool,
}

impl Stage {
    /// A staged file in a closed directory: no directory, no nonce.
    pub(crate) fn file(path: String) -> Self {
        Self {
            dir: path,
            nonce: Vec::new(),
            file: true,
        }
    }

    /// The file to write: `data` inside the directory, or the staged file.
    pub fn data(&self) -> String {
        if self.file {
            self.dir.clone()
        } else {
            format!("{}/data", self.dir)
        }
    }

    pub(crate) fn nonce_text(&self) -> String {
        String::from_utf8_lossy(&self.nonce).into_owned()
    }
}

/// The directory part of an absolute POSIX path (`/` for `/x`).
pub fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((d, _)) => d,
    }
}

pub(crate) fn helper_failed(what: &str, r: &super::ExecResult) -> QgaError {
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

fn parse_resolve(out: &[u8]) -> Option<Resolved> {
    let text = String::from_utf8(out.to_vec()).ok()?;
    let (head, path) = text.split_once('\n')?;
    if !path.starts_with('/') {
        return None;
    }
    let existing = match head {
        "-" => None,
        h => {
            let mut f = h.split(' ');
            let raw = u32::from_str_radix(f.next()?, 16).ok()?;
            Some(Existing {
                mode: raw & 0o7777,
                uid: f.next()?.parse().ok()?,
                gid: f.next()?.parse().ok()?,
                regular: raw & 0o170_000 == 0o100_000,
                ino: f.next()?.parse().ok()?,
            })
        }
    };
    Some(Resolved {
        path: path.to_owned(),
        existing,
        settled: false,
        dir_closed: false,
    })
}

/// [`RESOLVE_STAGE`]'s output: the nonce when it staged, and the resolution.
fn parse_resolve_stage(out: &[u8]) -> Option<(Option<Vec<u8>>, Resolved)> {
    let at = out.iter().position(|&b| b == b'\n')?;
    let resolved = parse_resolve(&out[at + 1..])?;
    match &out[..at] {
        b"-" => Some((None, resolved)),
        n if n.len() == NONCE_LEN && n.iter().all(u8::is_ascii_hexdigit) => {
            Some((Some(n.to_vec()), resolved))
        }
        _ => None,
    }
}

/// `ATP_NONCE=` and a fresh nonce of [`NONCE_LEN`] hex digits for a staging helper.
fn nonce_entry() -> String {
    format!("ATP_NONCE={}", uuid::Uuid::new_v4().simple())
}

impl AgentClient {
    /// Runs one helper program, bounded by [`HELPER_TIMEOUT`].
    async fn run_bounded(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<super::ExecResult, QgaError> {
        self.run_bounded_env(program, args, &[]).await
    }

    /// [`Self::run_bounded`] with `env` as the helper's whole environment (none: the
    /// agent's).
    pub(crate) async fn run_bounded_env(
        &self,
        program: &str,
        args: &[&str],
        env: &[String],
    ) -> Result<super::ExecResult, QgaError> {
        tokio::time::timeout(HELPER_TIMEOUT, self.run_small_env(program, args, env))
            .await
            .map_err(|_| {
                QgaError::Transport(crate::transport::TransportError::Timeout(HELPER_TIMEOUT))
            })?
    }

    /// `/bin/sh` with `args` and `env`, bounded like [`Self::run_bounded`], with a non-zero
    /// exit as an error carrying its stderr.
    async fn path_helper(
        &self,
        what: &str,
        args: &[&str],
        env: &[String],
    ) -> Result<super::ExecResult, QgaError> {
        let r = self.run_bounded_env("/bin/sh", args, env).await?;
        if r.success() {
            Ok(r)
        } else {
            Err(helper_failed(what, &r))
        }
    }

    /// Resolves `path` in the guest (`readlink -f`: every component but the last must
    /// exist) and reports what is there. One exec, `stat` alone, when no link is on the
    /// way ([`Self::probe_path`]); else a shell with `readlink` and `stat` as well.
    pub async fn resolve_path(&self, path: &str) -> Result<Resolved, QgaError> {
        if let Some(r) = self.probe_path(path).await? {
            return Ok(r);
        }
        let r = self
            .path_helper("atp-resolve", &["-c", RESOLVE, "atp-resolve", path], &[])
            .await?;
        parse_resolve(&r.stdout).ok_or_else(|| QgaError::Agent {
            command: "atp-resolve".into(),
            class: "InvalidReply".into(),
            desc: format!(
                "unexpected output from readlink/stat: {:?}",
                String::from_utf8_lossy(&r.stdout)
            ),
        })
    }

    /// Whether `file` (a handle on a regular file) is open on the file at `path` (a
    /// resolved path), as the kernel reports the descriptor's location: proves that what
    /// was opened is what the policy approved, whatever was swapped in and out of the
    /// path meanwhile; with `ino`, also that it is that inode. With `empty`, the file is
    /// then truncated to 0 through the descriptor. Moves the handle's position (callers
    /// seek after). One exec.
    pub async fn handle_is(
        &self,
        file: &OpenFile,
        path: &str,
        ino: Option<u64>,
        empty: bool,
    ) -> Result<bool, QgaError> {
        let ino = ino.map(|i| i.to_string()).unwrap_or_default();
        // A position no reader would be at: 2^32 and up, random below 2^40.
        let mark = (1_i64 << 32) | (uuid::Uuid::new_v4().as_u128() as i64 & ((1 << 40) - 1));
        let at = self.file_seek(file.handle(), mark, Whence::Set).await?;
        if at.position != mark {
            return Err(QgaError::Agent {
                command: "guest-file-seek".into(),
                class: "GenericError".into(),
                desc: format!(
                    "the handle cannot be positioned (it stayed at {})",
                    at.position
                ),
            });
        }
        let r = self
            .run_bounded(
                "/bin/sh",
                &[
                    "-c",
                    SAME_FILE,
                    "atp-same-file",
                    &mark.to_string(),
                    path,
                    if empty { "1" } else { "0" },
                    &ino,
                ],
            )
            .await?;
        match r.exit_code {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(helper_failed("atp-same-file", &r)),
        }
    }

    /// Creates a private staging directory in `dir` with `data` in it (see [`Stage`]).
    /// One exec.
    pub async fn stage_create(&self, dir: &str) -> Result<Stage, QgaError> {
        let path = format!(
            "{}/{STAGE_PREFIX}{}",
            dir.trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        );
        let r = self
            .path_helper(
                "atp-stage",
                &["-c", STAGE, "atp-stage", &path],
                &[nonce_entry()],
            )
            .await?;
        if r.stdout.len() != NONCE_LEN || !r.stdout.iter().all(u8::is_ascii_hexdigit) {
            return Err(QgaError::Agent {
                command: "atp-stage".into(),
                class: "InvalidReply".into(),
                desc: format!("unexpected nonce of {} bytes", r.stdout.len()),
            });
        }
        Ok(Stage {
            dir: path,
            nonce: r.stdout,
            file: false,
        })
    }

    /// [`Self::resolve_path`] and, when `path` is already resolved and names a regular
    /// file or nothing, a stage in its directory: the probe's `stat` then a staged file
    /// (`stage_file_create`, closed directories) or [`Self::stage_create`]; when
    /// the probe cannot tell, one helper that resolves and stages at once. `None` for the
    /// stage otherwise (the caller decides on the resolved path first and stages then).
    pub async fn resolve_and_stage(
        &self,
        path: &str,
    ) -> Result<(Resolved, Option<Stage>), QgaError> {
        // Resolved by the probe (no link on the way): in a closed directory a staged file
        // will do (one shell, no mkdir, and a finish without shell or rm), elsewhere a
        // staging directory; nothing is staged over what is not a regular file. Otherwise
        // the helper resolves and stages at once.
        let file = format!(
            "{}/{STAGE_PREFIX}{}",
            parent(path).trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        );
        let (probed, staged) = self.probe_and_stage(path, &file).await?;
        let file = Stage::file(file);
        let closed = probed
            .as_ref()
            .is_some_and(|r| r.dir_closed && r.existing.is_none_or(|e| e.regular));
        if staged
            && !closed
            && let Err(e) = self.stage_remove(&file).await
        {
            // Made where the whole path does not allow it; empty, 0600, root's: left
            // behind only when the guest cannot remove it either.
            tracing::warn!(stage = %file.dir, error = %e, "removing an unused staged file failed");
        }
        if let Some(r) = probed {
            let stage = match r.existing {
                Some(e) if !e.regular => None,
                _ if closed && staged => Some(file),
                _ if r.dir_closed => Some(self.stage_file_create(&r).await?),
                _ => Some(self.stage_create(parent(&r.path)).await?),
            };
            return Ok((r, stage));
        }
        let dir = format!(
            "{}/{STAGE_PREFIX}{}",
            parent(path).trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        );
        let r = self
            .path_helper(
                "atp-resolve",
                &["-c", RESOLVE_STAGE, "atp-resolve", path, &dir],
                &[nonce_entry()],
            )
            .await?;
        let bad = || QgaError::Agent {
            command: "atp-resolve".into(),
            class: "InvalidReply".into(),
            desc: format!(
                "unexpected output from readlink/stat/mkdir: {:?}",
                String::from_utf8_lossy(&r.stdout)
            ),
        };
        let (nonce, resolved) = parse_resolve_stage(&r.stdout).ok_or_else(bad)?;
        Ok((
            resolved,
            nonce.map(|nonce| Stage {
                dir,
                nonce,
                file: false,
            }),
        ))
    }

    /// Opens the staged `data` for writing (`r+`: never created, never truncated by the
    /// open) and proves it is the staged file by reading the nonce back; positioned at
    /// the start. `None` when the file opened is another one (the staging directory was
    /// swapped by someone able to write to its parent): the handle is closed and nothing
    /// was written.
    pub async fn stage_open(&self, stage: &Stage) -> Result<Option<OpenFile>, QgaError> {
        let file = self.open(&stage.data(), "r+").await?;
        if stage.file {
            // Nobody but root can reach or swap it: no nonce to check.
            return Ok(Some(file));
        }
        let check = async {
            let got = self.file_read(file.handle(), Some(NONCE_LEN)).await?;
            let ok = got.data().is_ok_and(|d| d == stage.nonce);
            if ok {
                self.file_seek(file.handle(), 0, Whence::Set).await?;
            }
            Ok::<_, QgaError>(ok)
        }
        .await;
        match check {
            Ok(true) => Ok(Some(file)),
            Ok(false) => {
                file.close().await?;
                Ok(None)
            }
            Err(e) => {
                let _ = file.close().await;
                Err(e)
            }
        }
    }

    /// Cuts the staged file to `size`, sets `owner` (`uid:gid`) and `mode` on it, puts it
    /// at `target` as `how` says, and removes the staging directory (also when a step
    /// fails). One exec. `Ok(false)`: the directory found at the staging path is not this
    /// stage (someone able to write to its parent replaced it); nothing was done.
    pub async fn stage_finish(
        &self,
        stage: &Stage,
        target: &str,
        size: u64,
        mode: u32,
        owner: Option<(u32, u32)>,
        how: Place,
    ) -> Result<bool, QgaError> {
        if stage.file {
            return self
                .stage_file_finish(stage, target, mode, owner, how)
                .await;
        }
        let size = size.to_string();
        let (mode, owner, how) = how.finalize_args(mode, owner);
        let r = self
            .run_bounded(
                "/bin/sh",
                &[
                    "-c",
                    FINALIZE,
                    "atp-finalize",
                    &stage.dir,
                    target,
                    &mode,
                    &owner,
                    how,
                    &size,
                    &stage.nonce_text(),
                ],
            )
            .await?;
        match r.exit_code {
            Some(0) => Ok(true),
            Some(NOT_OURS) => Ok(false),
            _ => Err(helper_failed("atp-finalize", &r)),
        }
    }

    /// Removes a staging directory and what is in it, or a staged file (`rm -rf`, which
    /// removes a symbolic link planted in its place rather than following it). One exec.
    pub async fn stage_remove(&self, stage: &Stage) -> Result<(), QgaError> {
        let r = self
            .run_bounded("/bin/rm", &["-rf", "--", &stage.dir])
            .await?;
        if r.success() {
            Ok(())
        } else {
            Err(helper_failed("rm", &r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_output_is_parsed_byte_for_byte() {
        let r = parse_resolve(b"81a0 65534 65534 77\n/tmp/a b\n").unwrap();
        assert_eq!(r.path, "/tmp/a b\n");
        assert_eq!(
            r.existing,
            Some(Existing {
                mode: 0o640,
                uid: 65534,
                gid: 65534,
                regular: true,
                ino: 77
            })
        );
        let r = parse_resolve(b"-\n/srv/new").unwrap();
        assert_eq!((r.path.as_str(), r.existing), ("/srv/new", None));
        let dir = parse_resolve(b"41ed 0 0 2\n/srv").unwrap();
        assert!(!dir.existing.unwrap().regular);
        assert_eq!(parse_resolve(b"garbage"), None);
        assert_eq!(parse_resolve(b"-\nrelative"), None);
    }

    #[test]
    fn resolve_stage_output_is_parsed() {
        let nonce = b"0123456789abcdef0123456789abcdef";
        let out = [&nonce[..], b"\n-\n/srv/new file"].concat();
        let (n, r) = parse_resolve_stage(&out).unwrap();
        assert_eq!(n.as_deref(), Some(&nonce[..]));
        assert_eq!((r.path.as_str(), r.existing), ("/srv/new file", None));
        let (n, r) = parse_resolve_stage(b"-\n81a0 0 0 9\n/srv/x").unwrap();
        assert_eq!((n, r.existing.map(|e| e.ino)), (None, Some(9)));
        assert_eq!(parse_resolve_stage(b"short\n-\n/srv/x"), None);
        assert_eq!(parse_resolve_stage(b"-\n/srv/x"), None);
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/x"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
    }
}
