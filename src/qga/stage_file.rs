//! Staging an upload in a *closed* directory (see [`Resolved::dir_closed`]): one 0600
//! file `.atp-<uuid>` next to the target instead of a private directory holding `data`.
//! Where nobody but root can create, rename or remove an entry, the staged file cannot be
//! swapped and no one else can open it (0600 from its creation), so the private
//! directory, its nonce and its removal add nothing. That saves three guest processes
//! per upload (`mkdir`, and finalize's shell and `rm`): the common finish is one `mv`.

use super::{
    AgentClient, QgaError,
    guestpath::{Place, Resolved, STAGE_PREFIX, Stage, parent},
    probe::HELPER_PATH,
};

/// `FILE`: creates the staged file, empty and 0600 (`umask 077`); `set -C` makes the
/// shell refuse a name that exists. Only builtins: one process.
const CREATE: &str = r#"umask 077; set -C; : >"$1""#;

/// `FILE TARGET MODE OWNER HOW`: sets owner then mode on the staged file (chown may clear
/// set-id bits), puts it in place as [`Place`] says (`replace`: rename over the target;
/// `exclusive`: hard link, failing if the target exists; `create`: hard link unless the
/// target appeared meanwhile), and removes what is left of it. Exit 3: the staged file is
/// not there as a plain file.
const FINALIZE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin
s=$1 t=$2 m=$3 o=$4 how=$5 rc=0
[ -f "$s" ] && [ ! -L "$s" ] || exit 3
{ [ -z "$o" ] || chown -- "$o" "$s"; } && { [ "$m" = 600 ] || chmod -- "$m" "$s"; } && case $how in
  replace) mv -f -T -- "$s" "$t" ;;
  exclusive) ln -T -- "$s" "$t" ;;
  *) ln -T -- "$s" "$t" 2>/dev/null || [ -e "$t" ] || [ -L "$t" ] || ln -T -- "$s" "$t" ;;
esac || rc=$?
[ ! -e "$s" ] || rm -f -- "$s"
exit $rc"#;

/// Exit code of [`FINALIZE`] when the staged file is not there.
const NOT_THERE: i32 = 3;

impl AgentClient {
    /// Creates the staged file for an upload to `target` (resolved, in a closed
    /// directory). One exec.
    pub(crate) async fn stage_file_create(&self, target: &Resolved) -> Result<Stage, QgaError> {
        debug_assert!(
            target.dir_closed,
            "a staged file outside a closed directory"
        );
        let path = format!(
            "{}/{STAGE_PREFIX}{}",
            parent(&target.path).trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        );
        let r = self
            .run_bounded_env("/bin/sh", &["-c", CREATE, "atp-stage", &path], &[])
            .await?;
        if !r.success() {
            return Err(super::guestpath::helper_failed("atp-stage", &r));
        }
        Ok(Stage::file(path))
    }

    /// [`Self::stage_finish`] for a staged file: one `mv` for the common upload (mode
    /// 600, no owner to set, replacing), else one shell.
    pub(crate) async fn stage_file_finish(
        &self,
        stage: &Stage,
        target: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
        how: Place,
    ) -> Result<bool, QgaError> {
        let r = if mode == 0o600 && owner.is_none() && how == Place::Replace {
            self.run_bounded_env(
                "mv",
                &["-f", "-T", "--", &stage.dir, target],
                &[HELPER_PATH.to_owned()],
            )
            .await?
        } else {
            let (mode, owner, how) = how.finalize_args(mode, owner);
            self.run_bounded_env(
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
                &[],
            )
            .await?
        };
        match r.exit_code {
            Some(0) => Ok(true),
            Some(NOT_THERE) => Ok(false),
            _ => Err(super::guestpath::helper_failed("atp-finalize", &r)),
        }
    }
}
