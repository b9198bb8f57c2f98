//! `atp cp -r DOM:/path LOCAL` (PullTree): entries are written into a private staging
//! directory next to the destination, each file checked against its SHA-256, modes and
//! mtimes set last (deepest first), and the directory renamed into place only once the
//! daemon's `done` arrived; on any failure it is removed.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ocloudview_atp::{
    pb::{self, pull_tree_response::Msg as PullMsg},
    qga::tree::check::components,
};
use sha2::{Digest, Sha256};

use super::{
    super::{
        client::{ClientError, Connection, exit, explain},
        cp::{CpOpts, bar},
    },
    local_err,
};

/// `atp cp -r DOM:/path LOCAL`.
pub async fn pull(
    conn: &Connection,
    dom: &str,
    path: &str,
    local: &Path,
    o: &CpOpts,
) -> Result<(), ClientError> {
    let target: PathBuf = if local.is_dir() {
        let name = Path::new(path.trim_end_matches('/'))
            .file_name()
            .ok_or_else(|| ClientError::new(exit::OTHER, format!("{path}: no name to copy to")))?;
        local.join(name)
    } else {
        local.to_owned()
    };
    if fs::symlink_metadata(&target).is_ok() && !o.overwrite {
        return Err(ClientError::new(
            exit::OTHER,
            format!("{} exists; --overwrite replaces it", target.display()),
        ));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stage = parent.join(format!(".atp-pull-{}", uuid::Uuid::new_v4().simple()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&stage)
        .map_err(|e| local_err(&stage, &e))?;
    let server = conn.server();
    let res = async {
        let mut c = conn.connect().await?;
        let stream = c
            .pull_tree(pb::PullTreeRequest {
                domain: dom.to_owned(),
                path: path.to_owned(),
                allow_special: o.allow_special,
            })
            .await
            .map_err(|s| explain(&server, &s))?
            .into_inner();
        receive(stream, &stage, &server, o.quiet).await
    }
    .await;
    let placed = res.and_then(|()| place(&stage, &target, o.overwrite));
    if placed.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    placed
}

/// Renames the finished staging directory to `target` (an existing one aside first).
fn place(stage: &Path, target: &Path, overwrite: bool) -> Result<(), ClientError> {
    let old = stage.with_extension("old");
    let existed = overwrite && fs::symlink_metadata(target).is_ok();
    if existed {
        fs::rename(target, &old).map_err(|e| local_err(target, &e))?;
    }
    if let Err(e) = fs::rename(stage, target) {
        if existed {
            let _ = fs::rename(&old, target);
        }
        return Err(local_err(target, &e));
    }
    if existed {
        let _ = fs::remove_dir_all(&old).or_else(|_| fs::remove_file(&old));
    }
    Ok(())
}

/// Writes the streamed entries under `stage`; directory modes and all mtimes are set
/// once everything is written (deepest first), so a read-only directory still fills.
async fn receive(
    mut stream: tonic::Streaming<pb::PullTreeResponse>,
    stage: &Path,
    server: &str,
    quiet: bool,
) -> Result<(), ClientError> {
    let mut progress = None;
    let mut file: Option<(fs::File, PathBuf, Sha256)> = None;
    let mut later: Vec<(PathBuf, pb::TreeEntry)> = Vec::new();
    let bad = |m: String| ClientError::new(exit::OTHER, m);
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m.msg,
            Ok(None) => {
                return Err(ClientError::new(
                    exit::TEMPFAIL,
                    "the pull ended without its `done`; nothing was kept",
                ));
            }
            Err(s) => return Err(explain(server, &s)),
        };
        match msg {
            Some(PullMsg::Summary(s)) => {
                progress = Some(bar(s.archive_bytes, quiet));
            }
            Some(PullMsg::Entry(e)) => {
                let parts =
                    components(&e.path).map_err(|w| bad(format!("entry {:?}: {w}", e.path)))?;
                let at = parts.iter().fold(stage.to_owned(), |p, c| p.join(c));
                if let Some(p) = at.parent() {
                    fs::create_dir_all(p).map_err(|er| local_err(p, &er))?;
                }
                match pb::EntryKind::try_from(e.kind) {
                    Ok(pb::EntryKind::Dir) => {
                        if !parts.is_empty() && fs::symlink_metadata(&at).is_err() {
                            fs::DirBuilder::new()
                                .mode(0o700)
                                .create(&at)
                                .map_err(|er| local_err(&at, &er))?;
                        }
                    }
                    Ok(pb::EntryKind::File) => {
                        let f = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&at)
                            .map_err(|er| local_err(&at, &er))?;
                        file = Some((f, at.clone(), Sha256::new()));
                    }
                    Ok(pb::EntryKind::Symlink) => {
                        std::os::unix::fs::symlink(&e.target, &at)
                            .map_err(|er| local_err(&at, &er))?;
                    }
                    Ok(pb::EntryKind::Hardlink) => {
                        let t = components(&e.target)
                            .map_err(|w| bad(format!("entry {:?}: {w}", e.path)))?;
                        let from = t.iter().fold(stage.to_owned(), |p, c| p.join(c));
                        fs::hard_link(&from, &at).map_err(|er| local_err(&at, &er))?;
                    }
                    Ok(pb::EntryKind::Fifo) => {
                        nix::unistd::mkfifo(&at, nix::sys::stat::Mode::from_bits_truncate(0o600))
                            .map_err(|er| local_err(&at, &std::io::Error::from(er)))?;
                    }
                    _ => {
                        return Err(bad(format!(
                            "entry {:?}: unexpected kind {}",
                            e.path, e.kind
                        )));
                    }
                }
                later.push((at, e));
            }
            Some(PullMsg::Data(d)) => {
                let Some((f, at, h)) = &mut file else {
                    return Err(bad("data outside a file entry".into()));
                };
                std::io::Write::write_all(f, &d).map_err(|er| local_err(at, &er))?;
                h.update(&d);
                if let Some(p) = &progress {
                    p.inc(d.len() as u64);
                }
            }
            Some(PullMsg::FileSha256(want)) => {
                let Some((f, at, h)) = file.take() else {
                    return Err(bad("a checksum outside a file entry".into()));
                };
                f.sync_all().map_err(|er| local_err(&at, &er))?;
                if h.finalize().to_vec() != want {
                    return Err(bad(format!("{}: checksum mismatch", at.display())));
                }
            }
            Some(PullMsg::Done(_)) => break,
            None => return Err(bad("an empty message".into())),
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    // Modes and times last, deepest first (a directory's own times after its contents).
    later.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (at, e) in later {
        let kind = pb::EntryKind::try_from(e.kind);
        if !matches!(kind, Ok(pb::EntryKind::Symlink | pb::EntryKind::Hardlink)) {
            fs::set_permissions(&at, fs::Permissions::from_mode(e.mode & 0o7777))
                .map_err(|er| local_err(&at, &er))?;
        }
        if kind != Ok(pb::EntryKind::Hardlink) {
            let t = nix::sys::time::TimeSpec::new(e.mtime, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &at,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|er| local_err(&at, &std::io::Error::from(er)))?;
        }
    }
    Ok(())
}
