//! The entry rules of a tree transfer, applied to every entry in both directions (a
//! client is not trusted, and neither is a guest): a relative path of plain components,
//! each path once, no entry below a non-directory, only files, directories, symbolic
//! links (and FIFOs when allowed), and no symbolic link that can lead out of the tree.
//!
//! The link rule holds whatever order entries arrive in: a target is followed
//! component by component from the link's directory; a `..` may only leave a directory
//! already known to be a real directory of the tree (an explicit directory entry, or
//! the parent of an entry seen), and known directories can never become anything else.
//! So every `..` pops a real directory, and a link can never climb above the root.

use std::collections::HashMap;

/// The longest entry path or link target accepted (bytes).
pub const MAX_PATH: usize = 4096;

/// What an entry is, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (its target is checked).
    Symlink,
    /// A named pipe (only with `allow_special`).
    Fifo,
    /// A hard link to an earlier file entry of the same tree.
    Hardlink,
}

/// Why an entry is refused; `Display` names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {path:?} refused: {why}")]
pub struct Refused {
    /// The entry as it arrived.
    pub path: String,
    /// The rule it breaks.
    pub why: String,
}

/// The rules' memory of one tree.
#[derive(Debug, Default)]
pub struct TreeCheck {
    allow_special: bool,
    /// Every path seen, and what it is.
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A directory only implied by an entry below it (so far).
    Implied,
    /// A directory entry.
    Dir,
    Other(Kind),
}

impl Seen {
    fn is_dir(self) -> bool {
        matches!(self, Seen::Implied | Seen::Dir)
    }
}

/// `path` split into components, or why it is not a plain relative path. "." and ""
/// are the root (no components).
pub fn components(path: &str) -> Result<Vec<&str>, String> {
    if path.len() > MAX_PATH {
        return Err(format!("longer than {MAX_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\0') {
        return Err("NUL in the path".into());
    }
    let trimmed = path.strip_prefix("./").unwrap_or(path);
    if trimmed.is_empty() || trimmed == "." {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in trimmed.trim_end_matches('/').split('/') {
        match c {
            "" => return Err("empty path component".into()),
            "." => return Err("`.` path component".into()),
            ".." => return Err("`..` path component".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl TreeCheck {
    /// A checker; FIFOs pass only with `allow_special`.
    pub fn new(allow_special: bool) -> Self {
        Self {
            allow_special,
            seen: HashMap::from([(String::new(), Seen::Implied)]),
        }
    }

    /// Checks one entry and remembers it; returns its normalised path ("" for the root).
    pub fn entry(&mut self, path: &str, kind: Kind, target: &str) -> Result<String, Refused> {
        let refuse = |why: String| Refused {
            path: path.to_owned(),
            why,
        };
        let parts = components(path).map_err(refuse)?;
        let norm = parts.join("/");
        if parts.is_empty() && kind != Kind::Dir {
            return Err(refuse("the root of the tree must be a directory".into()));
        }
        if kind == Kind::Fifo && !self.allow_special {
            return Err(refuse("a FIFO (special files need allow_special)".into()));
        }
        // Every ancestor is (and stays) a directory.
        for i in 1..parts.len() {
            let up = parts[..i].join("/");
            match self.seen.get(&up) {
                None => {
                    self.seen.insert(up, Seen::Implied);
                }
                Some(Seen::Implied | Seen::Dir) => {}
                Some(Seen::Other(k)) => {
                    return Err(refuse(format!(
                        "below {up:?}, which is a {k:?}, not a directory"
                    )));
                }
            }
        }
        match (self.seen.get(&norm), kind) {
            (None, _) => {}
            // A directory implied by a child, now described itself (and the root).
            (Some(Seen::Implied), Kind::Dir) => {}
            _ => return Err(refuse("the path appears twice in the tree".into())),
        }
        match kind {
            Kind::Symlink => self.link_stays_inside(&parts, target).map_err(refuse)?,
            Kind::Hardlink => {
                let t = components(target).map_err(|w| refuse(format!("hard link target: {w}")))?;
                if self.seen.get(&t.join("/")) != Some(&Seen::Other(Kind::File)) {
                    return Err(refuse(format!(
                        "hard link to {target:?}, which is not an earlier file of the tree"
                    )));
                }
            }
            _ => {}
        }
        let seen = if kind == Kind::Dir {
            Seen::Dir
        } else {
            Seen::Other(kind)
        };
        self.seen.insert(norm.clone(), seen);
        Ok(norm)
    }

    /// The link at `at` (components) pointing to `target` cannot lead out of the tree.
    fn link_stays_inside(&self, at: &[&str], target: &str) -> Result<(), String> {
        if target.is_empty() {
            return Err("a symbolic link with an empty target".into());
        }
        if target.starts_with('/') {
            return Err(format!("a symbolic link to the absolute path {target:?}"));
        }
        if target.len() > MAX_PATH || target.contains('\0') {
            return Err("a symbolic link target too long or with NUL".into());
        }
        // Where the walk is, as components from the root; `real` while every component
        // so far is a directory known to the tree.
        let mut here: Vec<&str> = at[..at.len() - 1].to_vec();
        let mut real = true;
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if !real {
                        return Err(format!(
                            "a symbolic link to {target:?}: `..` after a component not known to be a directory of the tree"
                        ));
                    }
                    if here.pop().is_none() {
                        return Err(format!("a symbolic link to {target:?}, out of the tree"));
                    }
                }
                c => {
                    here.push(c);
                    real = real && self.seen.get(&here.join("/")).is_some_and(|s| s.is_dir());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(c: &mut TreeCheck, p: &str, k: Kind, t: &str) {
        c.entry(p, k, t).unwrap_or_else(|e| panic!("{e}"));
    }

    fn no(c: &mut TreeCheck, p: &str, k: Kind, t: &str) -> String {
        c.entry(p, k, t).expect_err(p).to_string()
    }

    #[test]
    fn paths_are_plain_and_relative() {
        let mut c = TreeCheck::new(false);
        ok(&mut c, "./a/b", Kind::File, "");
        ok(&mut c, "a", Kind::Dir, "");
        ok(&mut c, ".", Kind::Dir, "");
        assert!(no(&mut c, "/etc/passwd", Kind::File, "").contains("absolute"));
        assert!(no(&mut c, "a/../../x", Kind::File, "").contains("`..`"));
        assert!(no(&mut c, "a//x", Kind::File, "").contains("empty"));
        assert!(no(&mut c, "a/b", Kind::File, "").contains("twice"));
        assert!(no(&mut c, "a/b/c", Kind::File, "").contains("not a directory"));
        assert!(no(&mut c, "p", Kind::Fifo, "").contains("allow_special"));
        let mut s = TreeCheck::new(true);
        ok(&mut s, "p", Kind::Fifo, "");
    }

    #[test]
    fn links_stay_inside_whatever_the_order() {
        let mut c = TreeCheck::new(false);
        ok(&mut c, "s/a", Kind::Symlink, "../t/x");
        ok(&mut c, "s/b", Kind::Symlink, "b2");
        ok(&mut c, "top", Kind::Symlink, "s/a");
        assert!(no(&mut c, "up", Kind::Symlink, "..").contains("out of the tree"));
        assert!(no(&mut c, "s/up", Kind::Symlink, "../..").contains("out of the tree"));
        assert!(no(&mut c, "abs", Kind::Symlink, "/etc").contains("absolute"));
        // `c` may later turn out to be a link to "." (or anything): no `..` after it.
        assert!(no(&mut c, "esc", Kind::Symlink, "c/..").contains("not known"));
        // Below a link: refused.
        assert!(no(&mut c, "s/b/x", Kind::File, "").contains("not a directory"));
        // A directory implied by a child cannot become a link.
        assert!(no(&mut c, "s", Kind::Symlink, ".").contains("twice"));
        ok(&mut c, "s", Kind::Dir, "");
        ok(&mut c, "f", Kind::File, "");
        ok(&mut c, "h", Kind::Hardlink, "f");
        assert!(no(&mut c, "h2", Kind::Hardlink, "s").contains("hard link"));
    }
}
