//! Guest paths as policies see them and as the guest opens them.
//!
//! Both must be the same string, or a rule on `C:\logs\` or `/var/log/` could be walked
//! around with `..`, a doubled separator, or a spelling the guest reads differently. So a
//! file path is normalised lexically once, the policy decides on that, and the guest gets
//! that; spellings that cannot be normalised safely are refused instead.
//!
//! - POSIX form (`/etc/hostname`): `.`, `..` and repeated `/` resolved, never above `/`.
//! - Drive form (`C:\Logs\app.log`, also written `c:/Logs/app.log`): drive letter upper
//!   case, `\` separators, `.` and `..` resolved, never above the drive root. Windows
//!   itself drops trailing dots and spaces, opens `CON` or `NUL` as devices and `a:b` as a
//!   stream of `a`: such paths are refused, as are UNC (`\\server\share`) and device
//!   (`\\?\`, `\\.\`) paths.
//!
//! Guest symlinks cannot be seen from the host and are not resolved.

use crate::qga::commands::OsInfo;

/// Resolves `.`, `..` and repeated separators lexically in a POSIX or drive-form path;
/// keeps a trailing separator. Other strings (relative paths) are returned unchanged and
/// refused later by [`check_guest_path`].
pub fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        return join("/", resolve(path.split('/')), "/", trailing(path, &['/']));
    }
    match drive(path) {
        Some(letter) => {
            let rest = path.get(2..).unwrap_or_default();
            let root = format!("{}:\\", letter.to_ascii_uppercase());
            join(
                &root,
                resolve(rest.split(['\\', '/'])),
                "\\",
                trailing(rest, &['\\', '/']),
            )
        }
        None => path.to_owned(),
    }
}

/// Checks a path [`normalize_path`] produced: absolute, no NUL, and in the form the
/// guest's OS reads the way we do (both forms are accepted while the OS is unknown).
pub fn check_guest_path(path: &str, os: Option<&OsInfo>) -> Result<(), String> {
    if path.is_empty() || path.contains('\0') {
        return Err(format!("invalid guest path {path:?}"));
    }
    let windows = os.map(OsInfo::is_windows);
    if path.starts_with('/') {
        return match windows {
            Some(true) => Err(format!(
                "Windows guest paths start with a drive letter (C:\\...): {path:?}"
            )),
            _ => Ok(()),
        };
    }
    if drive(path).is_none() {
        let what = if path.starts_with("\\\\") || path.starts_with("//") {
            "UNC and device paths are not supported"
        } else {
            "guest path must be absolute"
        };
        return Err(format!("{what}: {path:?}"));
    }
    if windows == Some(false) {
        return Err(format!(
            "drive-letter paths are for Windows guests; this guest's paths start with /: {path:?}"
        ));
    }
    let rest = path.get(3..).unwrap_or_default();
    for part in rest.split('\\').filter(|p| !p.is_empty()) {
        if let Some(why) = bad_windows_name(part) {
            return Err(format!("{why} in {path:?}"));
        }
    }
    Ok(())
}

/// Why Windows would not open `name` as the file it spells, if so.
fn bad_windows_name(name: &str) -> Option<&'static str> {
    if name.chars().any(|c| c < ' ' || "<>:\"|?*".contains(c)) {
        return Some("a name with a reserved character (<>:\"|?* or a control character)");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some("a name ending in a dot or space (Windows drops them)");
    }
    let stem = name.split('.').next().unwrap_or_default().trim_end();
    let upper = stem.to_ascii_uppercase();
    let device = matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((upper.starts_with("COM") || upper.starts_with("LPT"))
        && upper.len() == 4
        && upper.as_bytes()[3].is_ascii_digit());
    device.then_some("a reserved device name")
}

/// The drive letter of `X:\...` or `X:/...`.
fn drive(path: &str) -> Option<char> {
    let mut c = path.chars();
    match (c.next(), c.next(), c.next()) {
        (Some(l), Some(':'), Some('\\' | '/')) if l.is_ascii_alphabetic() => Some(l),
        _ => None,
    }
}

fn resolve<'a>(segments: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut parts = Vec::new();
    for seg in segments {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts
}

fn trailing(path: &str, seps: &[char]) -> bool {
    path.ends_with(seps)
        || seps
            .iter()
            .any(|s| path.ends_with(&format!("{s}.")) || path.ends_with(&format!("{s}..")))
}

fn join(root: &str, parts: Vec<&str>, sep: &str, trailing: bool) -> String {
    let mut out = format!("{root}{}", parts.join(sep));
    if trailing && !parts.is_empty() {
        out.push_str(sep);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_both_forms_lexically() {
        for (i, o) in [
            ("/etc/../etc//hostname", "/etc/hostname"),
            ("/var/log/../../etc/shadow", "/etc/shadow"),
            ("/../../x", "/x"),
            ("/data/./a/.", "/data/a/"),
            ("/", "/"),
            ("//", "/"),
            ("/a/b/..", "/a/"),
            ("relative/../x", "relative/../x"),
            ("C:\\logs\\..\\Windows\\System32", "C:\\Windows\\System32"),
            ("c:/logs//app.log", "C:\\logs\\app.log"),
            ("C:\\..\\..\\x", "C:\\x"),
            ("D:\\data\\.\\", "D:\\data\\"),
            ("C:\\", "C:\\"),
            ("C:/a/b/..", "C:\\a\\"),
            ("C:relative", "C:relative"),
            ("\\\\server\\share\\x", "\\\\server\\share\\x"),
        ] {
            assert_eq!(normalize_path(i), o, "{i}");
        }
    }

    fn os(id: &str) -> OsInfo {
        OsInfo {
            id: Some(id.into()),
            ..Default::default()
        }
    }

    #[test]
    fn checks_the_form_against_the_guest_os() {
        let (linux, windows) = (os("debian"), os("mswindows"));
        for (path, guest, ok) in [
            ("/etc/hostname", Some(&linux), true),
            ("/etc/hostname", None, true),
            ("/Windows/System32", Some(&windows), false),
            ("C:\\Windows\\win.ini", Some(&windows), true),
            ("C:\\Windows\\win.ini", None, true),
            ("C:\\x", Some(&linux), false),
            ("relative", None, false),
            ("", None, false),
            ("/a\0b", None, false),
            ("\\\\server\\share\\x", Some(&windows), false),
            ("\\\\?\\C:\\x", Some(&windows), false),
            ("C:\\logs\\app.log:secret", Some(&windows), false),
            ("C:\\logs\\app.log.", Some(&windows), false),
            ("C:\\logs\\app.log ", Some(&windows), false),
            ("C:\\logs\\nul.txt", Some(&windows), false),
            ("C:\\logs\\COM1", Some(&windows), false),
            ("C:\\logs\\com10.log", Some(&windows), true),
            ("C:\\logs\\con", Some(&windows), false),
            ("C:\\logs\\a*b", Some(&windows), false),
            ("C:\\logs\\console.log", Some(&windows), true),
        ] {
            assert_eq!(
                check_guest_path(path, guest).is_ok(),
                ok,
                "{path:?} on {guest:?}"
            );
        }
    }
}
