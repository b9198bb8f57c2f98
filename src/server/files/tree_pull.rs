//! PullTree: one `tar c` in the guest into a private directory
//! ([`AgentClient::tree_pack`]), read back with guest-file-read and parsed on the host
//! with the `tar` crate on a blocking thread. Every entry is checked ([`TreeCheck`]:
//! relative, no `..`, nothing below a non-directory, no link leading out, no device,
//! FIFOs only with `allow_special`) before the client sees it; the first refused entry
//! ends the stream with GUEST_TREE_REFUSED naming it. `done` comes last, once the whole
//! archive was read (its size is the size the guest made): a client keeps nothing
//! without it.

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use super::{
    resolve,
    tree_parse::{Feed, Parsed, parse},
};
use crate::{
    pb,
    policy::{path::check_guest_path, request::FileInfo},
    qga::{
        AgentClient, OpenFile, QgaError,
        tree::guest::{Packed, TreeRefusal},
    },
    server::{
        action::Beyond,
        budget::ByteBudget,
        gate::{Call, Outcome},
        metrics,
        service::GuestAgentService,
        status::{self, ApiError},
        streams::{self, BoundedStream, StreamSender},
    },
};

/// PullTree after the gate: `info` is what the first decision was made on.
pub(crate) async fn pull(
    s: &GuestAgentService,
    call: Call,
    r: pb::PullTreeRequest,
    info: FileInfo,
) -> Result<BoundedStream<pb::PullTreeResponse>, Status> {
    let (mut call, permit) = s.stream_permit(call).await?;
    let setup = setup(s, &mut call, &r, info).await;
    let (client, packed, file, path) = match setup {
        Ok(x) => x,
        Err(e) => return Err(call.fail(e).await),
    };
    let limits = &s.shared.limits;
    let (tx, rx) = streams::channel(
        limits.stream_buffer_bytes,
        limits.stream_idle_timeout,
        Some(permit),
    );
    let token = s.shared.shutdown.clone();
    let (guests, domain) = (s.shared.guests.clone(), call.domain().to_owned());
    let budget = ByteBudget::new(call.limits().max_bytes);
    let allow_special = r.allow_special;
    tokio::spawn(async move {
        let qga = |e| status::agent_status(&guests, &domain, e);
        let res = tokio::select! {
            res = stream_tree(&client, (&file, &packed), path, allow_special, budget, &tx, &qga) => res,
            () = token.cancelled() => Err(ApiError::ShuttingDown.into()),
        };
        if let Err(e) = file.close().await {
            tracing::warn!(error = %e, "closing a tree archive handle failed");
        }
        client.tree_unpack_done(&packed).await;
        if let Err(st) = &res
            && st.code() != tonic::Code::Cancelled
        {
            tx.fail(st.clone());
        }
        let outcome = Outcome {
            bytes: res.as_ref().ok().copied(),
            ..Outcome::default()
        };
        call.end(&res, outcome).await;
    });
    Ok(rx)
}

/// Resolves and decides on the source, packs it, opens the archive.
async fn setup(
    s: &GuestAgentService,
    call: &mut Call,
    r: &pb::PullTreeRequest,
    info: FileInfo,
) -> Result<(AgentClient, Packed, OpenFile, String), Status> {
    check_guest_path(&r.path, None).map_err(|m| Status::from(ApiError::InvalidArgument(m)))?;
    let client = s.client(call).await?;
    if !resolve::resolves(&client, &r.path).await {
        return Err(ApiError::GuestUnsupported(
            "PullTree needs a POSIX guest and an absolute path".into(),
        )
        .into());
    }
    call.beyond(Beyond::TreeHelpers)?;
    let src = resolve::decide_resolved(s, call, &client, info).await?;
    if src.existing.is_none() {
        return Err(ApiError::GuestPathNotFound(format!("{} does not exist", src.path)).into());
    }
    let helper = |e| resolve::helper_status(s, call.domain(), e);
    let packed = match client.tree_pack(&src.path).await.map_err(helper)? {
        Ok(p) => p,
        Err(TreeRefusal::NoTool(m) | TreeRefusal::Unsafe(m)) => {
            return Err(ApiError::GuestUnsupported(m).into());
        }
        Err(TreeRefusal::Changed(m)) => return Err(ApiError::GuestPathChanged(m).into()),
        Err(other) => {
            return Err(ApiError::Internal(format!("unexpected pack refusal {other:?}")).into());
        }
    };
    match client.open(&packed.archive(), "r").await {
        Ok(f) => Ok((client, packed, f, src.path)),
        Err(e) => {
            client.tree_unpack_done(&packed).await;
            Err(s.agent_error(call.domain(), e))
        }
    }
}

/// Reads the archive, parses it on a blocking thread, forwards checked entries to the
/// client, then `done`; returns the bytes of file data sent.
async fn stream_tree(
    client: &AgentClient,
    (file, packed): (&OpenFile, &Packed),
    path: String,
    allow_special: bool,
    budget: ByteBudget,
    tx: &StreamSender<pb::PullTreeResponse>,
    qga: &(dyn Fn(QgaError) -> Status + Sync),
) -> Result<u64, Status> {
    use pb::pull_tree_response::Msg;
    let summary = pb::PullTreeSummary {
        archive_bytes: packed.size,
        path,
    };
    tx.send(Ok(pb::PullTreeResponse {
        msg: Some(Msg::Summary(summary)),
    }))
    .await?;
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(4);
    let (out_tx, mut out_rx) = mpsc::channel::<Parsed>(16);
    let parser = tokio::task::spawn_blocking(move || {
        parse(
            Feed {
                rx: in_rx,
                buf: Vec::new(),
                at: 0,
            },
            allow_special,
            budget,
            &out_tx,
        )
    });
    let chunk = client.transport().chunk_bounds().max_read.min(1 << 20);
    let feed = async {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        // Bytes read after the parser stopped taking them: the end blocks' padding when it
        // finished, or the rest of an archive it refused (read no further than this).
        let mut after = 0usize;
        // Two reads in flight (like ReadFile): the agent reads the next chunk while this
        // one is decoded and parsed. The size is known, so no read asks past it.
        let mut inflight = std::collections::VecDeque::new();
        let mut asked = 0u64;
        loop {
            while inflight.len() < 2 && asked < packed.size && after == 0 {
                let want = chunk.min(usize::try_from(packed.size - asked).unwrap_or(chunk));
                let ticket = client
                    .submit_file_read(file.handle(), want)
                    .await
                    .map_err(qga)?;
                inflight.push_back(ticket);
                asked += want as u64;
            }
            let Some(next) = inflight.pop_front() else {
                break;
            };
            let r = next.reply().await.map_err(qga)?;
            let data = r.data().map_err(|e| {
                qga(QgaError::Agent {
                    command: "guest-file-read".into(),
                    class: "InvalidReply".into(),
                    desc: format!("bad base64 from agent: {e}"),
                })
            })?;
            hasher.update(&data);
            total += data.len() as u64;
            metrics::bytes("read", data.len());
            let end = data.is_empty();
            // A parser that stopped (end blocks, or a refusal) takes no more.
            if after > 0 || (!data.is_empty() && in_tx.send(data).await.is_err()) {
                after += chunk;
            }
            if end || after > 1 << 20 {
                break;
            }
        }
        drop(in_tx);
        let sha: [u8; 32] = hasher.finalize().into();
        Ok::<_, Status>((total, sha))
    };
    let forward = async {
        let mut done = None;
        let mut bytes = 0u64;
        while let Some(p) = out_rx.recv().await {
            let msg = match p {
                Parsed::Entry(e) => Msg::Entry(e),
                Parsed::Data(d) => {
                    bytes += d.len() as u64;
                    Msg::Data(d)
                }
                Parsed::FileEnd(h) => Msg::FileSha256(h),
                Parsed::Done(s) => {
                    done = Some(s);
                    continue;
                }
            };
            tx.send(Ok(pb::PullTreeResponse { msg: Some(msg) })).await?;
        }
        Ok::<_, Status>((done, bytes))
    };
    let (fed, forwarded) = tokio::join!(feed, forward);
    // The parser's refusal first: it is why the stream stopped.
    let parsed = parser
        .await
        .map_err(|e| Status::from(ApiError::Internal(format!("tree parser failed: {e}"))))?;
    parsed?;
    let (total, sha) = fed?;
    let (done, bytes) = forwarded?;
    if total != packed.size {
        return Err(ApiError::TreeChecksum(format!(
            "the archive read ({total} bytes) is not what the guest made ({} bytes)",
            packed.size
        ))
        .into());
    }
    let Some(summary) = done else {
        return Err(ApiError::Internal("the tree parser ended without a summary".into()).into());
    };
    tx.send(Ok(pb::PullTreeResponse {
        msg: Some(Msg::Done(pb::PullTreeDone {
            summary: Some(summary),
            archive_sha256: sha.to_vec(),
        })),
    }))
    .await?;
    Ok(bytes)
}
