//! `atp cp -r LOCAL DOM:/path` (PushTree): the tree is walked first (links not
//! followed) for the summary the daemon decides on, then sent entry by entry; a file that
//! changed size since the walk aborts the push and the guest keeps nothing.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use ocloudview_atp::pb::{self, push_tree_request::Msg};

use super::{
    super::{
        client::{ClientError, Connection, exit, explain},
        cp::{CpOpts, bar},
    },
    local_err,
};

/// Bytes per data message.
const CHUNK: usize = 1 << 20;

/// One local entry found by the walk.
struct Local {
    abs: PathBuf,
    entry: pb::TreeEntry,
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
