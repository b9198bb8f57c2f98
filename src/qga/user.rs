//! Running a guest program as another user (POSIX guests).
//!
//! The exec directory stays root-owned (0700) and the wrapper keeps running as root, so
//! it records the pid and start time the verified kill relies on; only the program drops
//! privileges, as the very last `exec`. The exec's setup ([`RESOLVE`], before anything
//! runs) looks the user (and group) up in the guest — `getent` when present, else
//! `/etc/passwd` and `/etc/group` — picks the tool and writes the result to the file `as`
//! in the exec directory; the wrapper reads it back ([`READ`]) and runs the program
//! through the tool, argv kept as positional parameters:
//!
//! - util-linux `setpriv --reuid=U --regid=G --init-groups -- PROG ARGS` (in place);
//! - else util-linux `runuser -p -u NAME [-g GROUP] -- PROG ARGS` (a forking parent
//!   stays; the program is in its process group, so kills still reach it);
//! - else BusyBox `su -p -s /bin/sh -c 'exec "$0" "$@"' -- NAME PROG ARGS` (in place; no
//!   group choice). Any other `su` is not used: it forks into a session of its own.
//!
//! `login` exports `HOME`, `USER`, `LOGNAME` and `SHELL` from the passwd entry and starts
//! the program in `HOME` (unless a working directory is given; `/`, with a warning on
//! stderr, when `HOME` cannot be entered, as `login` does). A terminal's PTY is
//! chowned to the user before the drop, so programs that open their tty by name work.

use super::QgaError;

/// Who a guest program runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAs {
    /// A user name (`[a-z_][a-z0-9_.-]*[$]?`, at most 32) or a numeric uid; it must have a
    /// passwd entry in the guest.
    pub user: String,
    /// A group name or gid for the primary group (else the user's own).
    pub group: Option<String>,
    /// Set `HOME`, `USER`, `LOGNAME`, `SHELL` from the passwd entry and start in `HOME`.
    pub login: bool,
}

impl RunAs {
    /// `user`, with its own primary group and no login environment.
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            ..Self::default()
        }
    }

    /// Refuses names a guest could take as anything but a name.
    pub fn validate(&self) -> Result<(), QgaError> {
        if !valid_account(&self.user) {
            return Err(QgaError::InvalidArgument(format!(
                "exec: user {:?} is neither a user name ([a-z_][a-z0-9_.-]*[$]?, at most 32 \
                 characters) nor a numeric uid",
                clip(&self.user)
            )));
        }
        if let Some(g) = self.group.as_deref().filter(|g| !valid_account(g)) {
            return Err(QgaError::InvalidArgument(format!(
                "exec: group {:?} is neither a group name ([a-z_][a-z0-9_.-]*[$]?, at most 32 \
                 characters) nor a numeric gid",
                clip(g)
            )));
        }
        Ok(())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Whether `s` is a portable account name (`^[a-z_][a-z0-9_.-]*[$]?$`, 1 to 32
/// characters) or a numeric id that fits 32 bits.
pub fn valid_account(s: &str) -> bool {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u32>().is_ok();
    }
    let body = s.strip_suffix('$').unwrap_or(s);
    let mut b = body.bytes();
    s.len() <= 32
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
}

/// Run by the exec's setup with `$4` the user and `$5` the group (may be empty), before
/// the directory `$1` exists: exits [`NO_USER`], [`NO_GROUP`], [`NO_TOOL`] or
/// [`GROUP_NEEDS_TOOL`]; else [`WRITE`] stores what it found once the directory exists.
pub(crate) const RESOLVE: &str = r#"if [ -n "$4" ]; then
w() { o=$IFS; IFS=:; for q in $PATH; do if [ -f "$q/$1" ] && [ -x "$q/$1" ]; then IFS=$o; echo "$q/$1"; return 0; fi; done; IFS=$o; return 1; }
ent() { if x=$(w getent); then "$x" "$1" "$2"; return; fi
  while IFS=: read -r n y i r; do
    if [ "$n" = "$2" ] || [ "$i" = "$2" ]; then printf '%s:%s:%s:%s\n' "$n" "$y" "$i" "$r"; return 0; fi
  done <"/etc/$1"; return 2; }
e=$(ent passwd "$4") && [ -n "$e" ] || exit 43
IFS=: read -r un y ui gi y hm sl <<EOF
$e
EOF
gn=
if [ -n "$5" ]; then
  e=$(ent group "$5") && [ -n "$e" ] || exit 44
  IFS=: read -r gn y gi y <<EOF
$e
EOF
fi
if t=$(w setpriv) && case $("$t" --help 2>&1) in *--reuid*) true ;; *) false ;; esac; then z=setpriv
elif t=$(w runuser); then z=runuser
elif t=$(w su) && case $("$t" --help 2>&1) in *BusyBox*) true ;; *) false ;; esac; then z=su
else exit 45; fi
[ "$z" != su ] || [ -z "$5" ] || exit 46
fi
"#;

/// Writes the `as` file after [`RESOLVE`], one value a line: tool kind, tool path, uid,
/// gid, name, home, shell, group name (passwd and group fields hold no newline).
pub(crate) const WRITE: &str =
    r#"{ [ -z "$4" ] || printf '%s\n' "$z" "$t" "$ui" "$gi" "$un" "$hm" "$sl" "$gn" >"$1/as"; }"#;

/// [`RESOLVE`]: the user has no passwd entry in the guest.
pub(crate) const NO_USER: i32 = 43;
/// [`RESOLVE`]: the group has no entry in the guest.
pub(crate) const NO_GROUP: i32 = 44;
/// [`RESOLVE`]: no `setpriv` (util-linux), `runuser` or BusyBox `su` in the guest.
pub(crate) const NO_TOOL: i32 = 45;
/// [`RESOLVE`]: a group was asked for and the guest has only BusyBox `su`.
pub(crate) const GROUP_NEEDS_TOOL: i32 = 46;

/// Reads the `as` file of exec directory `$d` when `$a` is set (`as` or `login`), as
/// root, before any caller entry is exported; `login` exports the passwd entry's
/// environment. Leaves the home in `H`.
pub(crate) const READ: &str = r#"if [ -n "$a" ]; then
  { IFS= read -r K; IFS= read -r T; IFS= read -r U; IFS= read -r G; IFS= read -r N; IFS= read -r H; IFS= read -r S; IFS= read -r GN; } <"$d/as" || { echo "atp-exec: cannot read the run-as entry" >&2; exit 125; }
  if [ "$a" = login ]; then [ -n "$S" ] && [ -x "$S" ] || S=/bin/sh; HOME=$H; USER=$N; LOGNAME=$N; SHELL=$S; export HOME USER LOGNAME SHELL; fi
fi
"#;

/// Appends the privilege drop to `"$@"` (the redirecting wrapper builds its exec line
/// by appending), after [`READ`].
pub(crate) const DROP_APPEND: &str = r#"if [ -n "$a" ]; then case $K in
  setpriv) set -- "$@" "$T" "--reuid=$U" "--regid=$G" --init-groups -- ;;
  runuser) if [ -n "$GN" ]; then set -- "$@" "$T" -p -u "$N" -g "$GN" --; else set -- "$@" "$T" -p -u "$N" --; fi ;;
  su) set -- "$@" "$T" -p -s /bin/sh -c 'exec "$0" "$@"' -- "$N" ;;
  *) echo "atp-exec: unknown run-as tool" >&2; exit 125 ;;
esac; fi
"#;

/// Prepends the privilege drop to `"$@"` (PROG ARGS; the terminal's inner script), after
/// [`READ`].
pub(crate) const DROP_PREPEND: &str = r#"if [ -n "$a" ]; then case $K in
  setpriv) set -- "$T" "--reuid=$U" "--regid=$G" --init-groups -- "$@" ;;
  runuser) if [ -n "$GN" ]; then set -- "$T" -p -u "$N" -g "$GN" -- "$@"; else set -- "$T" -p -u "$N" -- "$@"; fi ;;
  su) set -- "$T" -p -s /bin/sh -c 'exec "$0" "$@"' -- "$N" "$@" ;;
  *) echo "atp-exec: unknown run-as tool" >&2; exit 125 ;;
esac; fi
"#;

/// The wrapper's `$a`: empty (no drop), `as`, or `login`.
pub(crate) fn mode(r: Option<&RunAs>) -> &'static str {
    match r {
        None => "",
        Some(r) if r.login => "login",
        Some(_) => "as",
    }
}

/// The error for a [`RESOLVE`] exit code, if it is one of its own.
pub(crate) fn resolve_error(code: Option<i32>, r: &RunAs) -> Option<QgaError> {
    let desc = match code? {
        NO_USER => format!("no such user in the guest: {:?}", r.user),
        NO_GROUP => format!(
            "no such group in the guest: {:?}",
            r.group.as_deref().unwrap_or_default()
        ),
        NO_TOOL => "running as a user needs setpriv or runuser (util-linux) or BusyBox su \
                    in the guest, which has none"
            .to_owned(),
        GROUP_NEEDS_TOOL => "choosing a group needs setpriv or runuser (util-linux) in the \
                             guest, which has only BusyBox su"
            .to_owned(),
        _ => return None,
    };
    Some(QgaError::Agent {
        command: "guest-exec".into(),
        class: "Unsupported".into(),
        desc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in [
            "alice",
            "_x",
            "a.b-c_1",
            "machine$",
            "0",
            "65534",
            "4294967295",
        ] {
            assert!(valid_account(ok), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "Alice",
            "1abc",
            "-x",
            "a b",
            "a:b",
            "a/b",
            "$",
            "a$b",
            "4294967296",
            &long,
            "é",
            "a\nb",
        ] {
            assert!(!valid_account(bad), "{bad:?}");
        }
        assert!(valid_account(&"a".repeat(32)));
    }

    #[test]
    fn validate_names_both() {
        assert!(RunAs::user("alice").validate().is_ok());
        let bad_group = RunAs {
            group: Some("x;y".into()),
            ..RunAs::user("alice")
        };
        assert!(matches!(
            bad_group.validate(),
            Err(QgaError::InvalidArgument(_))
        ));
        assert!(RunAs::user("root;id").validate().is_err());
    }

    #[test]
    fn windows_guests_refuse_a_user() {
        let os = crate::qga::commands::OsInfo {
            id: Some("mswindows".into()),
            ..Default::default()
        };
        let cmd = crate::qga::GuestExecCommand::simple("cmd.exe", vec![]);
        assert!(cmd.check_user_os(&os).is_ok());
        let err = cmd.run_as(RunAs::user("alice")).check_user_os(&os);
        assert!(
            matches!(&err, Err(QgaError::Agent { class, .. }) if class == "Unsupported"),
            "{err:?}"
        );
    }

    #[test]
    fn a_terminal_drops_privileges_last_and_execs_positional_parameters() {
        let cmd = crate::qga::GuestExecCommand::simple("vi", vec![])
            .env("p=/bin/evil")
            .run_as(RunAs {
                login: true,
                ..RunAs::user("alice")
            });
        let s = cmd.tty_inner("/d", crate::qga::TerminalSize::default());
        let drop_at = s.find(DROP_PREPEND).unwrap();
        let export_at = s.find("export 'TERM=").unwrap();
        assert!(s.contains("a=login; wd=\n"), "{s}");
        assert!(
            s.find(READ).unwrap() < drop_at && drop_at < export_at,
            "{s}"
        );
        assert!(s.ends_with("\nexec \"$@\""), "{s}");
    }
}
