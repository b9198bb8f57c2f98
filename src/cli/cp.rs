//! `atp cp SRC DST`: copy a file into or out of a guest; one side is `DOM:/path`.
//! Both directions check SHA-256 end to end; a progress bar (bytes, rate, ETA) shows
//! on a terminal and never when stderr is piped.

use std::{
    io::{IsTerminal as _, Read as _, Write as _},
    path::{Path, PathBuf},
};

use indicatif::{ProgressBar, ProgressStyle};
use ocloudview_atp::pb::{self, write_file_request::Msg};
use sha2::{Digest, Sha256};

use super::client::{ClientError, Connection, exit, explain};

/// Options of `atp cp`.
#[derive(Debug, Clone, clap::Args)]
pub struct CpOpts {
    /// Permission bits for an uploaded file, octal (e.g. 0644); default: the local file's
    /// (like scp).
    #[arg(long)]
    pub chmod: Option<String>,
    /// Fail if the guest file exists (upload).
    #[arg(long)]
    pub exclusive: bool,
    /// Write in place instead of temp file + rename (upload).
    #[arg(long)]
    pub no_atomic: bool,
    /// No progress bar even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
    /// Copy a directory tree (PushTree/PullTree): `atp cp -r ./site DOM:/srv/site` (the
    /// destination is the new tree), `atp cp -r DOM:/etc/nginx .` (into ./nginx).
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// With -r: replace an existing destination tree.
    #[arg(long, requires = "recursive")]
    pub overwrite: bool,
    /// With -r: copy FIFOs too.
    #[arg(long, requires = "recursive")]
    pub allow_special: bool,
}

const CHUNK: usize = 1 << 20;

/// A `DOM:/path` argument, split; `None` for a local path.
pub(super) fn guest_side(arg: &str) -> Option<(&str, &str)> {
    let i = arg.find(":/")?;
    let (dom, path) = (&arg[..i], &arg[i + 1..]);
    (!dom.is_empty() && !dom.starts_with('.') && !dom.starts_with('/')).then_some((dom, path))
}

/// A byte progress bar on a terminal, hidden otherwise.
pub(super) fn bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{bytes:>10}/{total_bytes:<10} [{bar:30}] {binary_bytes_per_sec:>12}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

/// Runs `atp cp`.
pub async fn cp(conn: &Connection, src: &str, dst: &str, o: &CpOpts) -> Result<(), ClientError> {
    match (guest_side(src), guest_side(dst)) {
        // Directory trees (issue 15).
        (None, Some((dom, path))) if o.recursive => {
            super::cp_tree::push(conn, Path::new(src), dom, path, o).await
        }
        (Some((dom, path)), None) if o.recursive => {
            super::cp_tree::pull(conn, dom, path, Path::new(dst), o).await
        }
        (None, Some((dom, path))) => upload(conn, Path::new(src), dom, path, o).await,
        (Some((dom, path)), None) => download(conn, dom, path, Path::new(dst), o).await,
        _ => Err(ClientError::new(
            exit::OTHER,
            "one side of `atp cp` must be DOM:/path and the other a local path",
        )),
    }
}

async fn upload(
    conn: &Connection,
    local: &Path,
    dom: &str,
    path: &str,
    o: &CpOpts,
) -> Result<(), ClientError> {
    let permissions = o
        .chmod
        .as_deref()
        .map(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8))
        .transpose()
        .map_err(|_| ClientError::new(exit::OTHER, "--chmod takes octal mode bits, e.g. 0644"))?;
    // Like scp: the guest file gets the local file's permission bits unless --chmod says
    // otherwise (set-id and sticky bits are not carried over).
    let permissions = match permissions {
        Some(p) => p,
        None => local_mode(local)?,
    };
    // First pass: the checksum goes in the header, so the daemon can refuse a bad copy.
    let (size, digest) = {
        let mut f = std::fs::File::open(local).map_err(|e| ClientError::local(local, &e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0; CHUNK];
        let mut n = 0u64;
        loop {
            let k = f
                .read(&mut buf)
                .map_err(|e| ClientError::local(local, &e))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        (n, h.finalize().to_vec())
    };
    let server = conn.server();
    let mut c = conn.connect().await?;
    let header = pb::WriteFileHeader {
        domain: dom.to_owned(),
        path: path.to_owned(),
        mode: if o.exclusive {
            pb::WriteMode::Exclusive
        } else {
            pb::WriteMode::Create
        } as i32,
        permissions: Some(permissions),
        atomic: Some(!o.no_atomic),
        expected_sha256: digest.clone(),
    };
    let pb_ = bar(size, o.quiet);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader_bar = pb_.clone();
    let local_owned = local.to_owned();
    let feeder = tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
        let _ = tx.blocking_send(pb::WriteFileRequest {
            msg: Some(Msg::Header(header)),
        });
        let mut f =
            std::fs::File::open(&local_owned).map_err(|e| ClientError::local(&local_owned, &e))?;
        let mut buf = vec![0; CHUNK];
        loop {
            let k = f
                .read(&mut buf)
                .map_err(|e| ClientError::local(&local_owned, &e))?;
            if k == 0 {
                return Ok(());
            }
            reader_bar.inc(k as u64);
            if tx
                .blocking_send(pb::WriteFileRequest {
                    msg: Some(Msg::Data(buf[..k].to_vec())),
                })
                .is_err()
            {
                return Ok(()); // the call ended early; its status says why
            }
        }
    });
    let res = c
        .write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    feeder
        .await
        .map_err(|e| ClientError::new(exit::OTHER, e.to_string()))??;
    let r = res.map_err(|s| explain(&server, &s))?.into_inner();
    pb_.finish_and_clear();
    if r.sha256 != digest || r.bytes_written != size {
        return Err(ClientError::new(
            exit::OTHER,
            "the guest reports a different size or checksum",
        ));
    }
    Ok(())
}

/// The local file's permission bits (`mode & 0o777`).
fn local_mode(local: &Path) -> Result<u32, ClientError> {
    use std::os::unix::fs::PermissionsExt as _;
    let m = std::fs::metadata(local).map_err(|e| ClientError::local(local, &e))?;
    Ok(m.permissions().mode() & 0o777)
}

async fn download(
    conn: &Connection,
    dom: &str,
    path: &str,
    local: &Path,
    o: &CpOpts,
) -> Result<(), ClientError> {
    let target: PathBuf = if local.is_dir() {
        local.join(Path::new(path).file_name().unwrap_or_default())
    } else {
        local.to_owned()
    };
    let server = conn.server();
    let mut c = conn.connect().await?;
    let mut stream = c
        .read_file(pb::ReadFileRequest {
            domain: dom.to_owned(),
            path: path.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let partial = target.with_extension("atp-partial");
    let mut f = std::fs::File::create(&partial).map_err(|e| ClientError::local(&partial, &e))?;
    let mut h = Sha256::new();
    let mut bar_ = None;
    let result = loop {
        let chunk = match stream.message().await {
            Ok(Some(c)) => c,
            Ok(None) => {
                break Err(ClientError::new(
                    exit::TEMPFAIL,
                    "the transfer ended without its final chunk",
                ));
            }
            Err(s) => break Err(explain(&server, &s)),
        };
        let b = bar_.get_or_insert_with(|| bar(chunk.file_size, o.quiet));
        if !chunk.data.is_empty() {
            h.update(&chunk.data);
            if let Err(e) = f.write_all(&chunk.data) {
                break Err(ClientError::local(&partial, &e));
            }
            b.inc(chunk.data.len() as u64);
        }
        if chunk.eof {
            break if h.clone().finalize().to_vec() == chunk.sha256 {
                Ok(())
            } else {
                Err(ClientError::new(
                    exit::OTHER,
                    "checksum mismatch: the received data differs from the guest's",
                ))
            };
        }
    };
    if let Some(b) = bar_ {
        b.finish_and_clear();
    }
    match result {
        Ok(()) => {
            f.sync_all().map_err(|e| ClientError::local(&partial, &e))?;
            std::fs::rename(&partial, &target).map_err(|e| ClientError::local(&target, &e))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::guest_side;

    #[test]
    fn guest_paths() {
        assert_eq!(guest_side("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(guest_side("lab/web-01:/x"), Some(("lab/web-01", "/x")));
        assert_eq!(guest_side("/tmp/a:/b"), None);
        assert_eq!(guest_side("./a:/b"), None);
        assert_eq!(guest_side("local.txt"), None);
    }
}
