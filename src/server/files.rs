//! ReadFile and WriteFile: chunked streaming with SHA-256, bounded per transport, and
//! every guest handle closed on every path (client cancel included). On POSIX guests the
//! path is resolved in the guest first and the policy decides on what is really opened
//! ([`resolve`]); uploads go through a private staging directory ([`write`]).

mod receive;
mod resolve;
mod upload;
mod write;
// Directory trees (issue 15).
mod tree_common;
mod tree_list;
mod tree_parse;
mod tree_pull;
mod tree_push;

pub(crate) use upload::upload;
pub(crate) use write::write;
// Directory trees (issue 15).
pub(crate) use tree_list::list as list_dir;
pub(crate) use tree_pull::pull as pull_tree;
pub(crate) use tree_push::push as push_tree;

use sha2::{Digest, Sha256};
use tonic::Status;

use super::{
    budget::ByteBudget,
    gate::{Call, Outcome},
    metrics,
    service::GuestAgentService,
    status::{self, ApiError},
    streams::{self, BoundedStream, StreamSender},
};
use crate::{
    pb,
    policy::{path::check_guest_path, request::FileInfo},
    qga::{AgentClient, OpenFile, QgaError, commands::Whence},
};

/// The checks that need no guest: empty, NUL, relative, UNC (see [`check_guest_path`]).
fn check_path(path: &str) -> Result<(), Status> {
    check_guest_path(path, None).map_err(invalid)
}

fn invalid(message: String) -> Status {
    ApiError::InvalidArgument(message).into()
}

/// Refuses a path in the other OS's form: the guest would not open what the policy saw.
/// With the OS unknown (`guest-get-osinfo` disabled or failing) both forms pass.
async fn check_path_for(client: &AgentClient, path: &str) -> Result<(), Status> {
    let os = client.os().await.ok();
    check_guest_path(path, os.as_deref()).map_err(invalid)
}

fn data_err(e: base64::DecodeError) -> QgaError {
    QgaError::Agent {
        command: "guest-file-read".into(),
        class: "InvalidReply".into(),
        desc: format!("bad base64 from agent: {e}"),
    }
}

/// ReadFile after the gate: `info` is what the first decision was made on.
pub(crate) async fn read(
    s: &GuestAgentService,
    call: Call,
    r: pb::ReadFileRequest,
    info: FileInfo,
) -> Result<BoundedStream<pb::FileChunk>, Status> {
    let (mut call, permit) = s.stream_permit(call).await?;
    let setup = async {
        check_path(&r.path)?;
        let offset = i64::try_from(r.offset)
            .map_err(|_| invalid(format!("offset {} is out of range", r.offset)))?;
        let client = s.client(&call).await?;
        let transfer = client.transfer_guard();
        check_path_for(&client, &r.path).await?;
        // Decide on what is really opened, open that, and refuse if it changed meanwhile.
        let posix = resolve::resolves(&client, &r.path).await;
        let (path, regular, settled) = if posix {
            let t = resolve::decide_resolved(s, &mut call, &client, info).await?;
            // Nothing there at resolution (or swapped meanwhile): prove the handle. A
            // regular file on a settled path needs no proof: no one but root can swap
            // anything on the way between resolution and open.
            let settled = t.settled && t.existing.is_some_and(|e| e.regular);
            (t.path, t.existing.is_none_or(|e| e.regular), settled)
        } else {
            (r.path.clone(), false, false)
        };
        let file = client
            .open(&path, "r")
            .await
            .map_err(|e| s.agent_error(call.domain(), e))?;
        if posix
            && !settled
            && let Err(st) = resolve::verify_open(
                s,
                call.domain(),
                &client,
                (&file, &path),
                regular,
                (None, false),
            )
            .await
        {
            let _ = file.close().await;
            return Err(st);
        }
        // The size, for the client's progress display; then back to where the read starts.
        let size = client
            .file_seek(file.handle(), 0, Whence::End)
            .await
            .map_err(|e| s.agent_error(call.domain(), e))?
            .position;
        client
            .file_seek(file.handle(), offset, Whence::Set)
            .await
            .map_err(|e| s.agent_error(call.domain(), e))?;
        Ok::<_, Status>((client, file, u64::try_from(size).unwrap_or(0), transfer))
    }
    .await;
    let (client, file, size, transfer) = match setup {
        Ok(x) => x,
        Err(e) => return Err(call.fail(e).await),
    };
    let limits = &s.shared.limits;
    let bounds = client.transport().chunk_bounds();
    let budget = ByteBudget::new(call.limits().max_bytes);
    // Every read in flight reserves its chunk from the stream's byte budget, so a chunk
    // is at most a share of it: no message can exceed the budget.
    let chunk = match r.chunk_size {
        0 => bounds.read_chunk,
        n => n as usize,
    }
    .min(bounds.max_read)
    .min(limits.stream_buffer_bytes / READ_AHEAD)
    .max(1);
    let (tx, rx) = streams::channel(
        limits.stream_buffer_bytes,
        limits.stream_idle_timeout,
        Some(permit),
    );
    let token = s.shared.shutdown.clone();
    let (guests, domain) = (s.shared.guests.clone(), call.domain().to_owned());
    tokio::spawn(async move {
        // Mid-transfer agent errors go through the one mapping (it resets the guest cache).
        let qga = |e| status::agent_status(&guests, &domain, e);
        let res = tokio::select! {
            res = stream_file((&client, &file), (r.offset, size), r.length, chunk, budget, &tx, &qga) => res,
            () = token.cancelled() => Err(ApiError::ShuttingDown.into()),
        };
        // Close before reporting, so a client that sees the end sees no open handle.
        if let Err(e) = file.close().await {
            tracing::warn!(error = %e, "closing a read handle failed");
        }
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
        drop(transfer);
    });
    Ok(rx)
}

/// Two reads in flight: the agent reads and encodes the next chunk while this one is
/// decoded and sent (the transport pipelines them on a direct socket).
const READ_AHEAD: usize = 2;

/// Sends the file from `start` in `chunk`-sized messages. Each read is submitted only
/// once its bytes are reserved in the stream's budget, so a client that stops reading
/// stops the reads; if it takes nothing for the idle timeout this fails
/// DEADLINE_EXCEEDED and the caller closes the handle.
async fn stream_file(
    (client, file): (&AgentClient, &OpenFile),
    (start, file_size): (u64, u64),
    length: u64,
    chunk: usize,
    budget: ByteBudget,
    tx: &StreamSender<pb::FileChunk>,
    qga: &(dyn Fn(QgaError) -> Status + Sync),
) -> Result<u64, Status> {
    // Bytes this read may ask for: the requested length (0: to the end) under the
    // policy's budget.
    let asked = (length > 0).then_some(length);
    let mut quota = ByteBudget::new(match (asked, budget.limit()) {
        (Some(n), Some(l)) => Some(n.min(l)),
        (n, l) => n.or(l),
    });
    let mut hasher = Sha256::new();
    let mut offset = start;
    let mut total = 0u64;
    let mut ended = false;
    let mut inflight = std::collections::VecDeque::new();
    loop {
        while !ended && inflight.len() < READ_AHEAD && !quota.is_spent() {
            let want = quota.take_up_to(chunk);
            // Room for the chunk first (protobuf framing adds a few bytes; the budget is
            // a bound on data, not an exact byte count).
            let room = tx.reserve(want).await?;
            // Queued in order by this task, so the agent reads the chunks in order.
            let ticket = client
                .submit_file_read(file.handle(), want)
                .await
                .map_err(qga)?;
            inflight.push_back((want, ticket, room));
        }
        let Some((want, next, room)) = inflight.pop_front() else {
            break;
        };
        let r = next.reply().await.map_err(qga)?;
        let data = r.data().map_err(|e| qga(data_err(e)))?;
        let n = data.len() as u64;
        if ended {
            // Read-ahead past the end: normally empty; the file grew if not, ignore it.
            continue;
        }
        if n > 0 {
            hasher.update(&data);
            metrics::bytes("read", data.len());
            let msg = pb::FileChunk {
                offset,
                data,
                file_size: if total == 0 { file_size } else { 0 },
                ..Default::default()
            };
            room.send(Ok(msg));
            offset += n;
            total += n;
        }
        if r.eof || (n as usize) < want {
            ended = true;
        }
    }
    if let Some(l) = budget.limit()
        && !ended
        && total >= l
        && (length == 0 || length > l)
    {
        // The policy's budget is spent: fine if the file ends here, refused if not.
        let more = client
            .file_read(file.handle(), Some(1))
            .await
            .map_err(qga)?;
        if more.count > 0 {
            return Err(ApiError::PolicyMaxBytes {
                what: "read stopped at",
                value: l,
            }
            .into());
        }
    }
    let last = pb::FileChunk {
        offset,
        data: Vec::new(),
        eof: true,
        total_bytes: total,
        sha256: hasher.finalize().to_vec(),
        file_size: if total == 0 { file_size } else { 0 },
    };
    tx.send(Ok(last)).await?;
    Ok(total)
}
