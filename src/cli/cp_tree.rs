//! `atp cp -r`: a directory tree into a guest (PushTree) or out of one (PullTree).
//! Push: DST is the new tree's root (refused if it exists, unless `--overwrite`); the
//! tree is walked first (links not followed) for the summary the daemon decides on, then
//! sent entry by entry; a file that changed size since the walk aborts the push and the
//! guest keeps nothing. Pull: into DST, or DST/NAME when DST is a directory; entries are
//! written into a private staging directory next to it, checked against their SHA-256,
//! and renamed into place only once the daemon's `done` arrived.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::{
        DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _,
        PermissionsExt as _,
    },
    path::{Path, PathBuf},
};

use ocloudview_atp::{
    pb::{self, pull_tree_response::Msg as PullMsg, push_tree_request::Msg},
    qga::tree::check::components,
};
use sha2::{Digest, Sha256};

use super::{
    client::{ClientError, Connection, exit, explain},
    cp::{CpOpts, bar},
};

/// Bytes per data message.
const CHUNK: usize = 1 << 20;

/// One local entry found by the walk.
struct Local {
    abs: PathBuf,
    entry: pb::TreeEntry,
}

fn local_err(p: &Path, e: &std::io::Error) -> ClientError {
    ClientError::local(p, e)
}

/// Walks `root` (not following links), root first, directories before their contents.
fn walk(root: &Path) -> Result<Vec<Local>, ClientError> {
    let mut out = Vec::new();
    let mut todo = vec![(root.to_owned(), String::new())];
    while let Some((abs, rel)) = todo.pop() {
        let m = fs::symlink_metadata(&abs).map_err(|e| local_err(&abs, &e))?;
        let ft = m.file_type();
        let (kind, size, target) = if ft.is_dir() {
            (pb::EntryKind::Dir, 0, String::new())
        } else if ft.is_file() {
            (pb::EntryKind::File, m.len(), String::new())
        } else if ft.is_symlink() {
            let t = fs::read_link(&abs).map_err(|e| local_err(&abs, &e))?;
            let t = t.to_str().ok_or_else(|| {
                ClientError::new(
                    exit::OTHER,
                    format!("{}: link target is not UTF-8", abs.display()),
                )
            })?;
            (pb::EntryKind::Symlink, 0, t.to_owned())
        } else if ft.is_fifo() {
            (pb::EntryKind::Fifo, 0, String::new())
        } else {
            return Err(ClientError::new(
                exit::OTHER,
                format!("{}: devices and sockets are not copied", abs.display()),
            ));
        };
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&abs)
                .map_err(|e| local_err(&abs, &e))?
                .map(|d| d.map(|d| d.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| local_err(&abs, &e))?;
            names.sort();
            for n in names.into_iter().rev() {
                let name = n.to_str().ok_or_else(|| {
                    ClientError::new(
                        exit::OTHER,
                        format!("{}: a name is not UTF-8", abs.display()),
                    )
                })?;
                let child = if rel.is_empty() {
                    name.to_owned()
                } else {
                    format!("{rel}/{name}")
                };
                todo.push((abs.join(&n), child));
            }
        }
        out.push(Local {
            entry: pb::TreeEntry {
                path: if rel.is_empty() {
                    ".".into()
                } else {
                    rel.clone()
                },
                kind: kind as i32,
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
                size,
                target,
                ..Default::default()
            },
            abs,
        });
    }
    Ok(out)
}

/// `atp cp -r LOCAL DOM:/path`.
pub async fn push(
    conn: &Connection,
    local: &Path,
    dom: &str,
    path: &str,
    o: &CpOpts,
) -> Result<(), ClientError> {
    if !fs::symlink_metadata(local)
        .map_err(|e| local_err(local, &e))?
        .is_dir()
    {
        return Err(ClientError::new(
            exit::OTHER,
            format!(
                "{}: not a directory (cp -r copies a directory)",
                local.display()
            ),
        ));
    }
    let entries = walk(local)?;
    let mut summary = pb::TreeSummary::default();
    for l in &entries {
        summary.entries += 1;
        summary.bytes += l.entry.size;
        summary.largest = summary.largest.max(l.entry.size);
    }
    let header = pb::PushTreeHeader {
        domain: dom.to_owned(),
        path: path.to_owned(),
        summary: Some(summary),
        overwrite: o.overwrite,
        allow_special: o.allow_special,
    };
    let server = conn.server();
    let mut c = conn.connect().await?;
    let progress = bar(summary.bytes, o.quiet);
    let feeder_bar = progress.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let feeder = tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
        let send = |m: Msg| {
            tx.blocking_send(pb::PushTreeRequest { msg: Some(m) })
                .is_ok()
        };
        if !send(Msg::Header(header)) {
            return Ok(());
        }
        for l in entries {
            let is_file = l.entry.kind == pb::EntryKind::File as i32;
            let size = l.entry.size;
            if !is_file {
                if !send(Msg::Entry(l.entry)) {
                    return Ok(());
                }
                continue;
            }
            // Opened without following a link, and still the size the walk saw.
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&l.abs)
                .map_err(|e| local_err(&l.abs, &e))?;
            let now = f.metadata().map_err(|e| local_err(&l.abs, &e))?.len();
            if now != size {
                return Err(changed(&l.abs));
            }
            if !send(Msg::Entry(l.entry)) {
                return Ok(());
            }
            let mut left = size;
            let mut buf = vec![0; CHUNK];
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                let k = f
                    .read(&mut buf[..want])
                    .map_err(|e| local_err(&l.abs, &e))?;
                if k == 0 {
                    return Err(changed(&l.abs));
                }
                left -= k as u64;
                feeder_bar.inc(k as u64);
                if !send(Msg::Data(buf[..k].to_vec())) {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    let res = c
        .push_tree(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let fed = feeder
        .await
        .map_err(|e| ClientError::new(exit::OTHER, e.to_string()))?;
    progress.finish_and_clear();
    // A local failure ended the stream early: it is the cause, whatever the daemon said.
    fed?;
    let r = res.map_err(|s| explain(&server, &s))?.into_inner();
    if !o.quiet {
        eprintln!(
            "{} entries, {} bytes{}",
            r.entries,
            r.bytes,
            if r.replaced {
                " (replaced the existing tree)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn changed(p: &Path) -> ClientError {
    ClientError::new(
        exit::TEMPFAIL,
        format!(
            "{}: changed during the copy; nothing was kept in the guest",
            p.display()
        ),
    )
}

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
