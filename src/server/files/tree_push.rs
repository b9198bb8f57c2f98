//! PushTree: a local tree into the guest as one tar archive. The header comes first
//! (within `limits.write_header_timeout`) and the policy decides on the destination and
//! the announced summary; the destination is resolved in the guest (a second decision
//! when links lead elsewhere); every entry is checked ([`TreeCheck`]) and held to the
//! summary; the archive ([`TarOut`]) is written into a private staging directory next to
//! the destination through a handle proven by its nonce; the guest verifies its SHA-256,
//! extracts it there and renames the tree into place ([`AgentClient::tree_extract`]).

use tonic::{Request, Status, Streaming};

use super::{resolve, tree_common::entry_refused};
use crate::{
    pb,
    policy::{
        path::check_guest_path,
        request::{FileInfo, TreeInfo, normalize_path},
    },
    qga::{
        AgentClient, DEFAULT_CHUNK, OpenFile,
        guestpath::{Stage, parent},
        tree::{
            archive::{ArchiveError, Finished, TarOut},
            check::{Kind, TreeCheck},
            guest::TreeRefusal,
        },
    },
    server::{
        action::{Action, Beyond, Rpc},
        gate::{Call, Outcome},
        metrics,
        service::GuestAgentService,
        status::ApiError,
    },
};

/// A push that sends nothing for this long is abandoned (its staging directory removed).
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs one PushTree call to its end (spawned by the service, so that a client that goes
/// away still gets its staging directory removed and its outcome recorded).
pub(crate) async fn push(
    svc: GuestAgentService,
    request: Request<Streaming<pb::PushTreeRequest>>,
) -> Result<pb::PushTreeResponse, Status> {
    let crate::server::opening::Opened {
        probe,
        stream,
        permit,
        first,
    } = crate::server::opening::open(&svc, Rpc::PushTree, "PushTree header", request).await?;
    let svc_gate = &svc.shared.gate;
    let Some(pb::PushTreeRequest {
        msg: Some(pb::push_tree_request::Msg::Header(mut header)),
    }) = first
    else {
        let st: Status =
            ApiError::InvalidArgument("the first PushTree message must be the header".into())
                .into();
        svc_gate.refused(Rpc::PushTree, &probe, &st).await;
        return Err(st);
    };
    header.path = normalize_path(&header.path);
    let summary = header.summary.unwrap_or_default();
    let file = FileInfo {
        path: header.path.clone(),
        requested: header.path.clone(),
        op: "push_tree".into(),
        ..Default::default()
    };
    let tree = TreeInfo {
        op: "push".into(),
        entries: i64::try_from(summary.entries).unwrap_or(i64::MAX),
        bytes: i64::try_from(summary.bytes).unwrap_or(i64::MAX),
        largest: i64::try_from(summary.largest).unwrap_or(i64::MAX),
        overwrite: header.overwrite,
        allow_special: header.allow_special,
    };
    let domain = header.domain.clone();
    let mut call = svc
        .admit(Action::PushTree(file.clone(), tree), &probe, &domain)
        .await?;
    let res = run(&svc, &mut call, &header, summary, file, stream).await;
    drop(permit);
    let outcome = Outcome {
        bytes: res.as_ref().ok().map(|r| r.bytes),
        ..Default::default()
    };
    call.end(&res, outcome).await;
    res
}

fn invalid(m: String) -> Status {
    ApiError::InvalidArgument(m).into()
}

async fn run(
    s: &GuestAgentService,
    call: &mut Call,
    header: &pb::PushTreeHeader,
    summary: pb::TreeSummary,
    info: FileInfo,
    mut stream: Streaming<pb::PushTreeRequest>,
) -> Result<pb::PushTreeResponse, Status> {
    check_guest_path(&header.path, None).map_err(invalid)?;
    if !header.path.starts_with('/') || header.path == "/" {
        return Err(invalid(format!(
            "{:?}: the destination must be an absolute POSIX path other than /",
            header.path
        )));
    }
    if let Some(max) = call.limits().max_bytes
        && summary.bytes > max
    {
        return Err(ApiError::PolicyMaxBytes {
            what: "the tree's announced bytes exceed",
            value: max,
        }
        .into());
    }
    let client = s.client(call).await?;
    if client
        .os()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?
        .is_windows()
    {
        return Err(ApiError::GuestUnsupported(
            "PushTree needs a POSIX guest (tar, sha256sum, mv)".into(),
        )
        .into());
    }
    call.beyond(Beyond::TreeHelpers)?;
    let target = resolve::decide_resolved(s, call, &client, info).await?;
    if target.path == "/" || target.path.ends_with('/') {
        return Err(invalid(format!(
            "{:?} cannot be a tree's destination",
            target.path
        )));
    }
    if target.existing.is_some() && !header.overwrite {
        return Err(ApiError::GuestPathExists(format!(
            "{} exists; set overwrite to replace it",
            target.path
        ))
        .into());
    }
    let helper = |e| resolve::helper_status(s, call.domain(), e);
    let stage = client
        .stage_create(parent(&target.path))
        .await
        .map_err(helper)?;
    let sent = async {
        let Some(file) = client
            .stage_open(&stage)
            .await
            .map_err(|e| s.agent_error(call.domain(), e))?
        else {
            return Err(replaced(&stage));
        };
        let mut r = Receiver {
            client: &client,
            file: &file,
            check: TreeCheck::new(header.allow_special),
            tar: TarOut::new(),
            summary,
            got: pb::TreeSummary::default(),
            chunk: client
                .transport()
                .chunk_bounds()
                .max_write
                .min(DEFAULT_CHUNK),
            shutdown: &s.shared.shutdown,
            qga: &|e| s.agent_error(call.domain(), e),
        };
        let res = r.receive(&mut stream).await;
        let closed = file.close().await;
        let done = res?;
        closed.map_err(|e| s.agent_error(call.domain(), e))?;
        Ok(done)
    }
    .await;
    let (got, fin) = match sent {
        Ok(x) => x,
        Err(st) => {
            if let Err(e) = client.stage_remove(&stage).await {
                tracing::warn!(stage = %stage.dir, error = %e, "removing a staging directory failed");
            }
            return Err(st);
        }
    };
    let sha = fin.sha256;
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    match client
        .tree_extract(&stage, &target.path, &hex, header.overwrite, &fin.fixups)
        .await
        .map_err(helper)?
    {
        Ok(()) => Ok(pb::PushTreeResponse {
            entries: got.entries,
            bytes: got.bytes,
            archive_sha256: sha.to_vec(),
            replaced: target.existing.is_some(),
        }),
        Err(TreeRefusal::NotOurs) => Err(replaced(&stage)),
        Err(TreeRefusal::Checksum(m)) => {
            Err(ApiError::TreeChecksum(format!("{m}; {} was not touched", target.path)).into())
        }
        Err(TreeRefusal::Exists) => Err(ApiError::GuestPathExists(format!(
            "{} appeared meanwhile; set overwrite to replace it",
            target.path
        ))
        .into()),
        Err(TreeRefusal::NoTool(m) | TreeRefusal::Unsafe(m)) => {
            Err(ApiError::GuestUnsupported(m).into())
        }
        Err(TreeRefusal::Changed(m)) => Err(ApiError::GuestPathChanged(m).into()),
    }
}

fn replaced(stage: &Stage) -> Status {
    ApiError::GuestPathChanged(format!(
        "the staging directory {} was replaced by someone else; the destination was not touched",
        stage.dir
    ))
    .into()
}

/// The receiving end of one push: entries checked and written to the staged archive.
struct Receiver<'a> {
    client: &'a AgentClient,
    file: &'a OpenFile,
    check: TreeCheck,
    tar: TarOut,
    summary: pb::TreeSummary,
    got: pb::TreeSummary,
    chunk: usize,
    shutdown: &'a tokio_util::sync::CancellationToken,
    qga: &'a (dyn Fn(crate::qga::QgaError) -> Status + Sync),
}

fn archive_status(e: ArchiveError) -> Status {
    match e {
        ArchiveError::StrayData => invalid(e.to_string()),
        ArchiveError::SizeMismatch { ref path, .. } | ArchiveError::Header { ref path, .. } => {
            entry_refused(path, e.to_string(), false)
        }
    }
}

impl Receiver<'_> {
    /// Reads the client's messages to the end; returns what arrived, the archive's size
    /// and SHA-256 (everything written and flushed).
    async fn receive(
        &mut self,
        stream: &mut Streaming<pb::PushTreeRequest>,
    ) -> Result<(pb::TreeSummary, Finished), Status> {
        loop {
            let msg = tokio::select! {
                m = stream.message() => m.map_err(ApiError::ClientStream)?,
                () = self.shutdown.cancelled() => return Err(ApiError::ShuttingDown.into()),
                () = tokio::time::sleep(IDLE) => {
                    return Err(ApiError::ClientTooSlow {
                        message: format!("no PushTree message for {}s; push abandoned", IDLE.as_secs()),
                        limit: None,
                    }
                    .into());
                }
            };
            match msg.and_then(|m| m.msg) {
                None => break,
                Some(pb::push_tree_request::Msg::Entry(e)) => self.entry(e)?,
                Some(pb::push_tree_request::Msg::Data(d)) => {
                    self.tar.data(&d).map_err(archive_status)?;
                }
                Some(pb::push_tree_request::Msg::Header(_)) => {
                    return Err(invalid("only one PushTree header".into()));
                }
            }
            while let Some(buf) = self.tar.take(self.chunk) {
                self.write(&buf).await?;
            }
        }
        let tar = std::mem::take(&mut self.tar);
        let mut fin = tar.finish(now()).map_err(archive_status)?;
        self.write(&std::mem::take(&mut fin.last)).await?;
        self.client
            .file_flush(self.file.handle())
            .await
            .map_err(self.qga)?;
        Ok((self.got, fin))
    }

    fn entry(&mut self, e: pb::TreeEntry) -> Result<(), Status> {
        let kind = match pb::EntryKind::try_from(e.kind) {
            Ok(pb::EntryKind::File) => Kind::File,
            Ok(pb::EntryKind::Dir) => Kind::Dir,
            Ok(pb::EntryKind::Symlink) => Kind::Symlink,
            Ok(pb::EntryKind::Fifo) => Kind::Fifo,
            _ => {
                return Err(entry_refused(
                    &e.path,
                    format!("entry {:?} refused: kind {} is not pushed", e.path, e.kind),
                    false,
                ));
            }
        };
        let path = self
            .check
            .entry(&e.path, kind, &e.target)
            .map_err(|r| entry_refused(&r.path, r.to_string(), false))?;
        let size = if kind == Kind::File { e.size } else { 0 };
        self.got.entries += 1;
        self.got.bytes += size;
        self.got.largest = self.got.largest.max(size);
        if self.got.entries > self.summary.entries || self.got.bytes > self.summary.bytes {
            return Err(entry_refused(
                &e.path,
                format!(
                    "entry {:?} goes beyond the announced summary ({} entries, {} bytes)",
                    e.path, self.summary.entries, self.summary.bytes
                ),
                false,
            ));
        }
        let res = match kind {
            Kind::File => self.tar.file(&path, e.mode, e.mtime, size),
            Kind::Dir => self.tar.dir(&path, e.mode, e.mtime),
            Kind::Symlink => self.tar.symlink(&path, &e.target, e.mtime),
            Kind::Fifo => self.tar.fifo(&path, e.mode, e.mtime),
            Kind::Hardlink => unreachable!("not accepted above"),
        };
        res.map_err(archive_status)
    }

    /// Writes `buf` to the staged archive in transport-sized pieces.
    async fn write(&self, buf: &[u8]) -> Result<(), Status> {
        for piece in buf.chunks(self.chunk.max(1)) {
            let w = self
                .client
                .file_write(self.file.handle(), piece)
                .await
                .map_err(self.qga)?;
            if w.count as usize != piece.len() {
                return Err(ApiError::GuestWriteIncomplete {
                    written: w.count,
                    wanted: piece.len(),
                }
                .into());
            }
            metrics::bytes("write", piece.len());
        }
        Ok(())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
