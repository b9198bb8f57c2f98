//! Path work in POSIX guests for the file RPCs: resolving symbolic links (so policies
//! decide on what is really opened), and a private staging directory for uploads (so no
//! file the daemon creates is ever reachable by other guest users before it is final).
//!
//! Every helper is one `guest-exec` of `/bin/sh -c SCRIPT NAME ARGS...`: paths travel as
//! positional parameters, never spliced into the script. The scripts use only what
//! busybox has (`readlink -f`, `stat -c`, `mkdir -m`, `chown`, `chmod`, `ln -T`,
//! `mv -T`, `rm -rf`). Failures come back as [`QgaError::Agent`] with the helper's
//! stderr, whose errno text (`No such file or directory`, `File exists`, ...) says what
//! kind of failure it was.

use std::time::Duration;

use super::{AgentClient, QgaError};

/// Longest a helper may take (slow emulated guests included); past it the request fails.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Prefix of staging directory names (`.atp-` + 32 hex digits).
pub const STAGE_PREFIX: &str = ".atp-";

/// First line: `MODE_HEX UID GID` of the resolved path (`stat -c`, not following a last
/// symbolic link: there is none left after `readlink -f`) or `-` when nothing is there;
/// then the resolved path, byte for byte (a name may end in a newline: the `x` keeps
/// command substitution from eating it).
const RESOLVE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
r=$(readlink -f -- "$1" && echo x) || { echo "cannot resolve $1: No such file or directory (a directory on the path is missing, or symbolic links loop)" >&2; exit 2; }
r=${r%x}; r=${r%?}
if s=$(stat -c '%f %u %g' -- "$r" 2>/dev/null); then echo "$s"; else echo -; fi
printf '%s' "$r""#;

/// `STAGE TARGET MODE OWNER HOW`: enters the staging directory (and checks it is still
/// the agent's own directory, not one swapped in), sets owner then mode on `data` inside
/// it (chown may clear set-id bits, so chmod comes last), puts it in place, and removes
/// the directory whatever happened. HOW: `replace` renames over the target (`mv -f -T`);
/// `exclusive` hard-links (`ln -T` fails if the target exists); `create` hard-links and
/// accepts a target that appeared meanwhile (it is then left as it is).
const FINALIZE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
s=$1 t=$2 m=$3 o=$4 how=$5 rc=0
if cd -P -- "$s" && [ -O . ] && [ -f data ] && [ ! -L data ]; then
  { [ -z "$o" ] || chown -- "$o" data; } && chmod -- "$m" data && case $how in
    replace) mv -f -T -- data "$t" ;;
    exclusive) ln -T -- data "$t" ;;
    *) ln -T -- data "$t" 2>/dev/null || [ -e "$t" ] || [ -L "$t" ] || ln -T -- data "$t" ;;
  esac || rc=$?
else
  echo "staging directory $s: Operation not permitted (it is not the agent's own)" >&2; rc=3
fi
cd / && rm -rf -- "$s"
exit $rc"#;

/// What a path resolves to in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Absolute path with every symbolic link, `.` and `..` resolved.
    pub path: String,
    /// What is there now, if anything.
    pub existing: Option<Existing>,
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

/// A private staging directory (`DIR/.atp-<uuid>`, root-owned 0700) next to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The directory.
    pub dir: String,
}

impl Stage {
    /// The file to write inside it.
    pub fn data(&self) -> String {
        format!("{}/data", self.dir)
    }
}

/// The directory part of an absolute POSIX path (`/` for `/x`).
pub fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((d, _)) => d,
    }
}

fn helper_failed(what: &str, r: &super::ExecResult) -> QgaError {
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
            })
        }
    };
    Some(Resolved {
        path: path.to_owned(),
        existing,
    })
}

impl AgentClient {
    /// Runs one helper program, bounded by [`HELPER_TIMEOUT`]; a non-zero exit is an
    /// error carrying its stderr.
    async fn path_helper(
        &self,
        what: &str,
        program: &str,
        args: &[&str],
    ) -> Result<super::ExecResult, QgaError> {
        let r = tokio::time::timeout(HELPER_TIMEOUT, self.run_small(program, args))
            .await
            .map_err(|_| {
                QgaError::Transport(crate::transport::TransportError::Timeout(HELPER_TIMEOUT))
            })??;
        if r.success() {
            Ok(r)
        } else {
            Err(helper_failed(what, &r))
        }
    }

    /// Resolves `path` in the guest (`readlink -f`: every component but the last must
    /// exist) and reports what is there. One exec.
    pub async fn resolve_path(&self, path: &str) -> Result<Resolved, QgaError> {
        let r = self
            .path_helper(
                "atp-resolve",
                "/bin/sh",
                &["-c", RESOLVE, "atp-resolve", path],
            )
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

    /// Creates a private staging directory in `dir` (`mkdir -m 0700`: the agent's own
    /// and closed to everyone else from its first moment). One exec.
    pub async fn stage_create(&self, dir: &str) -> Result<Stage, QgaError> {
        let stage = Stage {
            dir: format!(
                "{}/{STAGE_PREFIX}{}",
                dir.trim_end_matches('/'),
                uuid::Uuid::new_v4().simple()
            ),
        };
        self.path_helper("mkdir", "/bin/mkdir", &["-m", "0700", "--", &stage.dir])
            .await?;
        Ok(stage)
    }

    /// Sets `owner` (`uid:gid`) and `mode` on the staged file, puts it at `target` as
    /// `how` says, and removes the staging directory (also when a step fails). One exec.
    pub async fn stage_finish(
        &self,
        stage: &Stage,
        target: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
        how: Place,
    ) -> Result<(), QgaError> {
        let mode = format!("{mode:o}");
        let owner = owner.map_or_else(String::new, |(u, g)| format!("{u}:{g}"));
        let how = match how {
            Place::Replace => "replace",
            Place::Exclusive => "exclusive",
            Place::Create => "create",
        };
        self.path_helper(
            "atp-finalize",
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
            ],
        )
        .await
        .map(drop)
    }

    /// Removes a staging directory and what is in it (`rm -rf`, which removes a symbolic
    /// link planted in its place rather than following it). One exec.
    pub async fn stage_remove(&self, stage: &Stage) -> Result<(), QgaError> {
        self.path_helper("rm", "/bin/rm", &["-rf", "--", &stage.dir])
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_output_is_parsed_byte_for_byte() {
        let r = parse_resolve(b"81a0 65534 65534\n/tmp/a b\n").unwrap();
        assert_eq!(r.path, "/tmp/a b\n");
        assert_eq!(
            r.existing,
            Some(Existing {
                mode: 0o640,
                uid: 65534,
                gid: 65534,
                regular: true
            })
        );
        let r = parse_resolve(b"-\n/srv/new").unwrap();
        assert_eq!((r.path.as_str(), r.existing), ("/srv/new", None));
        let dir = parse_resolve(b"41ed 0 0\n/srv").unwrap();
        assert!(!dir.existing.unwrap().regular);
        assert_eq!(parse_resolve(b"garbage"), None);
        assert_eq!(parse_resolve(b"-\nrelative"), None);
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/x"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
    }
}
