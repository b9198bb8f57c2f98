//! Resolving a path with one `stat` and no shell: `stat` of every directory on the way
//! and of the path itself, in one process (a shell with `readlink` and `stat` costs three
//! in a slow emulated guest). When no symbolic link is on the way the path resolves to
//! itself; otherwise (or when `stat` is missing, or the output is not what it should be)
//! the caller falls back to the shell helper.
//!
//! The same output tells whether the path is *settled*: every directory on the way is
//! root's and writable by nobody else (or sticky, with the next component root's), so
//! no other guest user can rename, replace or plant anything that changes where the path
//! leads. Group and other write bits show an ACL's mask, so an ACL granting a user write
//! access makes a directory unsettled too. Guest root can change anything, but root owns
//! every file anyway: a settled path is one only those who could read or write its file
//! directly can redirect.

use super::{
    AgentClient, QgaError,
    guestpath::{Existing, Resolved},
};

/// The `PATH` of helpers run without a shell (`stat` here, `mv` for a staged file):
/// system directories only root can write.
pub(crate) const HELPER_PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// One line per name, no name printed (a name may hold any byte but `/` and NUL): raw
/// mode in hex, uid, gid, inode.
const FORMAT: &str = "%f %u %g %i";

/// Paths deeper than this go to the shell helper (the probe's arguments grow with the
/// square of the depth and travel in one request).
const MAX_DEPTH: usize = 32;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_ISVTX: u32 = 0o1000;

/// What `stat` said of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    raw: u32,
    uid: u32,
    gid: u32,
    ino: u64,
}

/// `/`, `/a`, `/a/b`: the names to stat for `/a/b`. `None` for a path that is not
/// absolute and normalised (empty, `.` or `..` components, a trailing `/`) or too deep.
fn prefixes(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    let mut names = vec!["/".to_owned()];
    if rest.is_empty() {
        return Some(names);
    }
    let mut at = String::new();
    for part in rest.split('/') {
        if part.is_empty() || part == "." || part == ".." || names.len() > MAX_DEPTH {
            return None;
        }
        at.push('/');
        at.push_str(part);
        names.push(at.clone());
    }
    Some(names)
}

fn parse(out: &[u8]) -> Option<Vec<Entry>> {
    let text = std::str::from_utf8(out).ok()?;
    text.lines()
        .map(|l| {
            let mut f = l.split(' ');
            let e = Entry {
                raw: u32::from_str_radix(f.next()?, 16).ok()?,
                uid: f.next()?.parse().ok()?,
                gid: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
            };
            f.next().is_none().then_some(e)
        })
        .collect()
}

/// Whether only root can change what `dir`'s entry `child` is: `dir` is root's and
/// writable by nobody else, or sticky and `child` is root's (then only root may rename
/// or remove it).
fn holds(dir: &Entry, child: Option<&Entry>) -> bool {
    dir.uid == 0
        && (dir.raw & 0o022 == 0 || (dir.raw & S_ISVTX != 0 && child.is_some_and(|c| c.uid == 0)))
}

/// The resolution of `path` from its entries (one per prefix; the last one missing when
/// the file is not there), or `None` when a link is on the way.
fn judge(path: &str, entries: &[Entry], names: usize) -> Option<Resolved> {
    let (dirs, last) = match entries.len() {
        n if n == names => (&entries[..n - 1], entries.last()),
        n if n + 1 == names => (entries, None),
        _ => return None,
    };
    if dirs.iter().any(|d| d.raw & S_IFMT != S_IFDIR)
        || last.is_some_and(|l| l.raw & S_IFMT == S_IFLNK)
    {
        return None;
    }
    let settled = dirs
        .iter()
        .enumerate()
        .all(|(i, d)| holds(d, dirs.get(i + 1).or(last)));
    // No sticky exception here: in a sticky directory others may create entries.
    let dir_closed = settled && dirs.last().is_some_and(|d| d.raw & 0o022 == 0);
    Some(Resolved {
        path: path.to_owned(),
        existing: last.map(|l| Existing {
            mode: l.raw & 0o7777,
            uid: l.uid,
            gid: l.gid,
            regular: l.raw & S_IFMT == S_IFREG,
            ino: l.ino,
        }),
        settled,
        dir_closed,
    })
}

impl AgentClient {
    /// Resolves `path` (absolute, normalised) with one `stat` when no symbolic link is
    /// on the way; `Ok(None)` when it cannot tell (a link, a missing directory, no
    /// `stat` in the guest): resolve with the shell helper then. Transport failures are
    /// errors.
    pub async fn probe_path(&self, path: &str) -> Result<Option<Resolved>, QgaError> {
        let Some(names) = prefixes(path) else {
            return Ok(None);
        };
        let mut args = vec!["-c", FORMAT, "--"];
        args.extend(names.iter().map(String::as_str));
        // Bounded like every helper: a hung mount on the way stalls stat, not the request.
        let r = match self
            .run_bounded_env("stat", &args, &[HELPER_PATH.to_owned()])
            .await
        {
            Ok(r) => r,
            Err(e @ QgaError::Transport(_)) => return Err(e),
            // No stat (the agent could not start it): the helper decides.
            Err(_) => return Ok(None),
        };
        Ok(conclude(path, &names, &r.stdout, &r))
    }

    /// [`Self::probe_path`] for an upload: in the same guest process tree, when the
    /// path's directory is root's and closed to others' writes and the path is absent
    /// or a regular file, also creates `stage` there (a new name in that directory),
    /// empty and 0600, as `stage_file_create` would: one exec per upload fewer. Returns
    /// the resolution and whether `stage` was made; the caller removes a stage it made
    /// where the whole resolution does not allow one (a link or an open directory on the
    /// way).
    pub(crate) async fn probe_and_stage(
        &self,
        path: &str,
        stage: &str,
    ) -> Result<(Option<Resolved>, bool), QgaError> {
        self.probe_with(path, stage, "").await
    }

    /// [`Self::probe_path`] for an in-place upload of a new file: in the same guest
    /// process tree, when `path` is absent and every directory on the way is root's and
    /// *holds* (see [`holds`]; the last one closed to others' writes), also creates
    /// `path` itself, empty, with mode `0666 & !umask` (`set -C`: not over a name that
    /// appeared meanwhile). Only root can then reach, swap or remove it, so the upload
    /// writes it in place with no staging and no final `mv`: one guest process fewer
    /// than an atomic upload, four fewer than an in-place one made otherwise. Returns the
    /// resolution and whether `path` was created.
    pub(crate) async fn probe_and_create(
        &self,
        path: &str,
        umask: u32,
    ) -> Result<(Option<Resolved>, bool), QgaError> {
        self.probe_with(path, path, &format!("{:03o}", umask & 0o777))
            .await
    }

    /// Runs [`PROBE_STAGE`] for `path` with `STAGE` `stage` and `UMASK` `umask`.
    async fn probe_with(
        &self,
        path: &str,
        stage: &str,
        umask: &str,
    ) -> Result<(Option<Resolved>, bool), QgaError> {
        let Some(names) = prefixes(path).filter(|n| n.len() >= 2) else {
            return Ok((None, false));
        };
        let mut args = vec!["-c", PROBE_STAGE, "atp-probe", stage, umask];
        args.extend(names.iter().map(String::as_str));
        let r = match self
            .run_bounded_env("/bin/sh", &args, &[HELPER_PATH.to_owned()])
            .await
        {
            Ok(r) => r,
            Err(e @ QgaError::Transport(_)) => return Err(e),
            Err(_) => return Ok((None, false)),
        };
        let (out, made) = match r.stdout.strip_suffix(STAGED) {
            Some(out) => (out, true),
            None => (&r.stdout[..], false),
        };
        Ok((conclude(path, &names, out, &r), made))
    }
}

/// Marks the end of [`PROBE_STAGE`]'s output when it created the staged file.
const STAGED: &[u8] = b"staged\n";

/// `STAGE UMASK NAME...` (the prefixes of a path, see [`prefixes`]; two at least): prints
/// what `stat` prints for the names ([`FORMAT`]) and exits with its status; before
/// that, with an empty `UMASK`, when the next-to-last name is a directory of root's
/// without group or other write bits and the last is absent or a regular file, creates
/// `STAGE` empty and 0600 (`set -C`: not over a name that exists) and prints `staged`.
/// With a `UMASK` (`STAGE` is then the last name), only when the last name is absent and
/// every other is a directory of root's that holds (no group or other write bits, or
/// sticky with the next name root's; the last without write bits), creates `STAGE` with
/// that umask and prints `staged`. Only `stat` runs besides the shell; its output is
/// numbers, four per name.
const PROBE_STAGE: &str = r#"s=$1; u=$2; shift 2; n=$#
o=$(stat -c '%f %u %g %i' -- "$@"); r=$?
[ -z "$o" ] || printf '%s\n' "$o"
set -f; set -- $o
[ $# -eq $((4 * n)) ] || [ $# -eq $((4 * n - 4)) ] || exit $r
if [ -n "$u" ]; then
  [ $# -eq $((4 * n - 4)) ] || exit $r
  while [ $# -gt 0 ]; do
    case "$1" in *[!0-9a-f]*) exit $r ;; esac
    [ "$2" = 0 ] && [ $((0x$1 & 0xf000)) -eq $((0x4000)) ] || exit $r
    if [ $((0x$1 & 0x12)) -ne 0 ]; then
      [ $# -gt 4 ] && [ $((0x$1 & 0x200)) -ne 0 ] && [ "$6" = 0 ] || exit $r
    fi
    shift 4
  done
  umask "$u"; set -C
  : >"$s" 2>/dev/null && echo staged
  exit $r
fi
shift $((4 * n - 8))
case "$1$5" in *[!0-9a-f]*) exit $r ;; esac
[ "$2" = 0 ] && [ $((0x$1 & 0xf012)) -eq $((0x4000)) ] || exit $r
[ -z "$5" ] || [ $((0x$5 & 0xf000)) -eq $((0x8000)) ] || exit $r
umask 077; set -C
: >"$s" 2>/dev/null && echo staged
exit $r"#;

/// The resolution `stat`'s output `out` (of helper run `r`) gives for `path` and its
/// prefixes `names`; `None` when it cannot tell.
fn conclude(path: &str, names: &[String], out: &[u8], r: &super::ExecResult) -> Option<Resolved> {
    let entries = parse(out)?;
    // Nothing at the path itself is the one failure taken: every directory was there.
    let missing_last = entries.len() + 1 == names.len()
        && String::from_utf8_lossy(&r.stderr).contains("No such file or directory");
    if !(r.success() && entries.len() == names.len() || missing_last) {
        return None;
    }
    judge(path, &entries, names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(raw: u32, uid: u32) -> Entry {
        Entry {
            raw,
            uid,
            gid: 0,
            ino: 7,
        }
    }

    #[test]
    fn prefixes_of_normalised_paths_only() {
        assert_eq!(prefixes("/").unwrap(), ["/"]);
        assert_eq!(prefixes("/a/b c").unwrap(), ["/", "/a", "/a/b c"]);
        for bad in ["", "a/b", "/a/", "/a//b", "/a/./b", "/a/../b"] {
            assert_eq!(prefixes(bad), None, "{bad}");
        }
        let deep = "/d".repeat(MAX_DEPTH + 1);
        assert_eq!(prefixes(&deep), None);
        assert!(prefixes(&"/d".repeat(MAX_DEPTH)).is_some());
    }

    #[test]
    fn output_is_parsed_line_by_line() {
        let out = b"41ed 0 0 2\n81a4 1000 100 12345\n";
        assert_eq!(
            parse(out).unwrap(),
            [
                Entry {
                    raw: 0o40755,
                    uid: 0,
                    gid: 0,
                    ino: 2
                },
                Entry {
                    raw: 0o100644,
                    uid: 1000,
                    gid: 100,
                    ino: 12345
                }
            ]
        );
        assert_eq!(parse(b"41ed 0 0\n"), None);
        assert_eq!(parse(b"41ed 0 0 2 9\n"), None);
        assert_eq!(parse(b"zz 0 0 2\n"), None);
    }

    #[test]
    fn settled_only_when_no_one_but_root_can_change_the_way() {
        let root_dir = e(0o40755, 0);
        let file = e(0o100600, 0);
        let r = judge("/a/f", &[root_dir, root_dir, file], 3).unwrap();
        assert!(r.settled);
        assert_eq!(r.path, "/a/f");
        let x = r.existing.unwrap();
        assert!(x.regular);
        assert_eq!((x.mode, x.uid, x.ino), (0o600, 0, 7));
        // A user's directory, a group-writable one (or an ACL's mask), on the way.
        assert!(
            !judge("/a/f", &[root_dir, e(0o40755, 1000), file], 3)
                .unwrap()
                .settled
        );
        assert!(
            !judge("/a/f", &[root_dir, e(0o40775, 0), file], 3)
                .unwrap()
                .settled
        );
        // Sticky /tmp: settled when the next component is root's, not when a user's.
        let tmp = e(0o41777, 0);
        assert!(judge("/tmp/f", &[root_dir, tmp, file], 3).unwrap().settled);
        assert!(
            !judge("/tmp/f", &[root_dir, tmp, e(0o100600, 1000)], 3)
                .unwrap()
                .settled
        );
        // Nothing there yet: in a sticky directory anyone may create it.
        let none = judge("/tmp/f", &[root_dir, tmp], 3).unwrap();
        assert!(none.existing.is_none() && !none.settled);
        assert!(judge("/a/f", &[root_dir, root_dir], 3).unwrap().settled);
        // Closed: settled, and nobody else may even create an entry in the directory.
        assert!(
            judge("/a/f", &[root_dir, root_dir, file], 3)
                .unwrap()
                .dir_closed
        );
        assert!(judge("/a/f", &[root_dir, root_dir], 3).unwrap().dir_closed);
        assert!(
            !judge("/tmp/f", &[root_dir, tmp, file], 3)
                .unwrap()
                .dir_closed
        );
        let open = e(0o40757, 0);
        assert!(
            !judge("/o/f", &[root_dir, open, file], 3)
                .unwrap()
                .dir_closed
        );
        let users = e(0o40700, 1000);
        assert!(
            !judge("/u/f", &[root_dir, users, file], 3)
                .unwrap()
                .dir_closed
        );
    }

    /// Runs [`PROBE_STAGE`] here, with this host's `sh` and `stat`, for `rel` under `root`.
    fn probe_stage_here(root: &std::path::Path, rel: &str) -> (String, bool) {
        let path = root.join(rel).to_str().unwrap().to_owned();
        let stage = format!("{}/.atp-test", parent_of(&path));
        let names = prefixes(&path).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", PROBE_STAGE, "atp-probe", &stage, ""])
            .args(&names)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let made = std::path::Path::new(&stage).exists();
        if made {
            let meta = std::fs::metadata(&stage).unwrap();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
                0o600
            );
            std::fs::remove_file(&stage).unwrap();
        }
        assert_eq!(stdout.ends_with("staged\n"), made, "{rel}: {stdout}");
        (stdout, made)
    }

    fn parent_of(path: &str) -> &str {
        &path[..path.rfind('/').unwrap()]
    }

    #[test]
    fn the_probe_stages_in_a_closed_directory_only() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        for (dir, mode) in [("closed", 0o700), ("open", 0o777), ("groupw", 0o770)] {
            std::fs::create_dir(root.join(dir)).unwrap();
            std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        std::fs::write(root.join("closed/file"), b"x").unwrap();
        std::fs::create_dir(root.join("closed/dir")).unwrap();
        // Root's closed directories only: run as another user, nothing is staged.
        let root_user = std::fs::metadata(&root)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap()
            == 0;
        for (rel, stages) in [
            ("closed/new", root_user),
            ("closed/file", root_user),
            ("closed/dir", false),
            ("open/new", false),
            ("groupw/new", false),
            ("missing/new", false),
        ] {
            let (out, made) = probe_stage_here(&root, rel);
            assert_eq!(made, stages, "{rel}: {out}");
            // What it prints before the mark is stat's output, one line per name there.
            let lines = out.strip_suffix("staged\n").unwrap_or(&out);
            let there = !rel.ends_with("/new");
            let names = prefixes(root.join(rel).to_str().unwrap()).unwrap().len();
            let want = if rel == "missing/new" {
                names - 2
            } else {
                names - usize::from(!there)
            };
            assert_eq!(parse(lines.as_bytes()).unwrap().len(), want, "{rel}: {out}");
        }
    }

    /// Runs [`PROBE_STAGE`] in its create mode here for `rel` under `root`, umask 027:
    /// whether it created the path, and the path's mode when it did.
    fn probe_create_here(root: &std::path::Path, rel: &str) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(rel).to_str().unwrap().to_owned();
        let names = prefixes(&path).unwrap();
        let existed = std::path::Path::new(&path).exists();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", PROBE_STAGE, "atp-probe", &path, "027"])
            .args(&names)
            .output()
            .unwrap();
        let said = String::from_utf8(out.stdout).unwrap().ends_with("staged\n");
        let made = !existed && std::path::Path::new(&path).exists();
        assert_eq!(said, made, "{rel}");
        made.then(|| {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            std::fs::remove_file(&path).unwrap();
            mode
        })
    }

    #[test]
    fn the_probe_creates_the_path_only_where_every_directory_holds() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        // Created only by root: root's directories are what hold.
        let root_user = std::fs::metadata(&root)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap()
            == 0;
        // The temp dir's own ancestors (/, /tmp) must hold for anything to be created.
        let set = |rel: &str, mode| {
            std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
                .unwrap();
        };
        for dir in [
            "a",
            "a/closed",
            "open",
            "open/closed",
            "sticky",
            "sticky/closed",
        ] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        set("a", 0o755);
        set("a/closed", 0o700);
        set("open", 0o777);
        set("open/closed", 0o700);
        set("sticky", 0o1777);
        set("sticky/closed", 0o700);
        std::fs::write(root.join("a/closed/there"), b"x").unwrap();
        symlink(root.join("a"), root.join("link")).unwrap();
        let want = root_user.then_some(0o640);
        assert_eq!(probe_create_here(&root, "a/closed/new"), want);
        // A root directory in a sticky one holds (only root may rename it).
        assert_eq!(probe_create_here(&root, "sticky/closed/new"), want);
        // Not over what exists; not in an open or sticky directory; not under a
        // directory others may write to; not through a link.
        for rel in [
            "a/closed/there",
            "a/new",
            "sticky/new",
            "open/new",
            "open/closed/new",
            "link/closed/new",
        ] {
            let here = matches!(rel, "a/new") && root_user;
            assert_eq!(probe_create_here(&root, rel).is_some(), here, "{rel}");
        }
    }

    #[test]
    fn a_link_or_a_file_on_the_way_is_left_to_the_helper() {
        let root_dir = e(0o40755, 0);
        assert_eq!(
            judge("/a/f", &[root_dir, e(0o120777, 0), e(0o100644, 0)], 3),
            None
        );
        assert_eq!(
            judge("/a/f", &[root_dir, root_dir, e(0o120777, 0)], 3),
            None
        );
        assert_eq!(judge("/a/f", &[root_dir, e(0o100644, 0)], 3), None);
        assert_eq!(judge("/a/f", &[root_dir], 3), None);
    }
}
