//! ReadFile and WriteFile: chunked streaming with SHA-256, bounded per transport, and
//! every guest handle closed on every path (client cancel included).

use sha2::{Digest, Sha256};
use tonic::{Status, Streaming};

use super::{
    gate::{Call, Outcome},
    metrics,
    service::GuestAgentService,
    status::ApiError,
    streams::{self, BoundedStream, StreamSender},
};
use crate::{
    pb,
    policy::path::check_guest_path,
    qga::{AgentClient, DEFAULT_CHUNK, OpenFile, QgaError, commands::Whence},
};

/// An upload that sends nothing for this long is abandoned (its guest handle would
/// otherwise stay open for as long as a stalled client keeps its connection).
const WRITE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The checks that need no guest: empty, NUL, relative, UNC (see [`check_guest_path`]).
fn check_path(path: &str) -> Result<(), Status> {
    check_guest_path(path, None).map_err(Status::invalid_argument)
}

/// Refuses a path in the other OS's form: the guest would not open what the policy saw.
/// With the OS unknown (`guest-get-osinfo` disabled or failing) both forms pass.
async fn check_path_for(client: &AgentClient, path: &str) -> Result<(), Status> {
    let os = client.os().await.ok();
    check_guest_path(path, os.as_deref()).map_err(Status::invalid_argument)
}

fn data_err(e: base64::DecodeError) -> QgaError {
    QgaError::Agent {
        command: "guest-file-read".into(),
        class: "InvalidReply".into(),
        desc: format!("bad base64 from agent: {e}"),
    }
}

pub(crate) async fn read(
    s: &GuestAgentService,
    call: Call,
    r: pb::ReadFileRequest,
) -> Result<BoundedStream<pb::FileChunk>, Status> {
    let (call, permit) = s.stream_permit(call).await?;
    let setup = async {
        check_path(&r.path)?;
        let offset = i64::try_from(r.offset).map_err(|_| {
            Status::invalid_argument(format!("offset {} is out of range", r.offset))
        })?;
        let client = s.client(&r.domain).await?;
        check_path_for(&client, &r.path).await?;
        let file = client
            .open(&r.path, "r")
            .await
            .map_err(|e| s.agent_error(&r.domain, e))?;
        // The size, for the client's progress display; then back to where the read starts.
        let size = client
            .file_seek(file.handle(), 0, Whence::End)
            .await
            .map_err(|e| s.agent_error(&r.domain, e))?
            .position;
        client
            .file_seek(file.handle(), offset, Whence::Set)
            .await
            .map_err(|e| s.agent_error(&r.domain, e))?;
        Ok::<_, Status>((client, file, u64::try_from(size).unwrap_or(0)))
    }
    .await;
    let (client, file, size) = match setup {
        Ok(x) => x,
        Err(e) => {
            call.finish::<()>(&Err(e.clone())).await;
            return Err(e);
        }
    };
    let limits = &s.shared.limits;
    let max = client.transport().chunk_bounds().max_read;
    let limit = call.limits.max_bytes;
    // Every read in flight reserves its chunk from the stream's byte budget, so a chunk
    // is at most a share of it: no message can exceed the budget.
    let chunk = match r.chunk_size {
        0 => DEFAULT_CHUNK,
        n => n as usize,
    }
    .min(max)
    .min(limits.stream_buffer_bytes / READ_AHEAD)
    .max(1);
    let (tx, rx) = streams::channel(
        limits.stream_buffer_bytes,
        limits.stream_idle_timeout,
        Some(permit),
    );
    let token = s.shared.shutdown.clone();
    tokio::spawn(async move {
        let res = tokio::select! {
            res = stream_file(&client, &file, (r.offset, size), r.length, chunk, limit, &tx) => res,
            () = token.cancelled() => Err(Status::unavailable("the daemon is shutting down")),
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
        match &res {
            Ok(_) => call.finish_with(tonic::Code::Ok, "", outcome).await,
            Err(st) => call.finish_with(st.code(), st.message(), outcome).await,
        }
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
    client: &AgentClient,
    file: &OpenFile,
    (start, file_size): (u64, u64),
    length: u64,
    chunk: usize,
    limit: Option<u64>,
    tx: &StreamSender<pb::FileChunk>,
) -> Result<u64, Status> {
    let qga = |e| Status::from(ApiError::Qga(e));
    // Bytes this read may deliver: the requested length and the policy's budget.
    let wanted = match (length, limit) {
        (0, None) => u64::MAX,
        (0, Some(l)) => l,
        (n, None) => n,
        (n, Some(l)) => n.min(l),
    };
    let mut hasher = Sha256::new();
    let mut offset = start;
    let mut total = 0u64;
    let mut requested = 0u64;
    let mut ended = false;
    let mut inflight = std::collections::VecDeque::new();
    loop {
        while !ended && inflight.len() < READ_AHEAD && requested < wanted {
            let want = usize::try_from(wanted - requested)
                .unwrap_or(usize::MAX)
                .min(chunk);
            // Room for the chunk first (protobuf framing adds a few bytes; the budget is
            // a bound on data, not an exact byte count).
            let room = tx.reserve(want).await?;
            requested += want as u64;
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
    if let Some(l) = limit
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
            return Err(Status::resource_exhausted(format!(
                "read stopped at the policy's max_bytes ({l})"
            )));
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

pub(crate) async fn write(
    s: &GuestAgentService,
    call: &Call,
    header: pb::WriteFileHeader,
    mut stream: Streaming<pb::WriteFileRequest>,
) -> Result<pb::WriteFileResponse, Status> {
    check_path(&header.path)?;
    if !header.expected_sha256.is_empty() && header.expected_sha256.len() != 32 {
        return Err(Status::invalid_argument("expected_sha256 must be 32 bytes"));
    }
    if let Some(p) = header.permissions
        && p > 0o7777
    {
        return Err(Status::invalid_argument(format!(
            "permissions {p:o} are not mode bits"
        )));
    }
    let mode = pb::WriteMode::try_from(header.mode)
        .map_err(|_| Status::invalid_argument(format!("unknown write mode {}", header.mode)))?;
    let client = s.client(&header.domain).await?;
    let os = client
        .os()
        .await
        .map_err(|e| s.agent_error(&header.domain, e))?;
    check_guest_path(&header.path, Some(&os)).map_err(Status::invalid_argument)?;
    let append = mode == pb::WriteMode::Append;
    // Atomic replace needs the guest's mv/ln; on Windows guests writes go straight in.
    let atomic = header.atomic.unwrap_or(true) && !append && !os.is_windows();
    let exists = || async {
        match client.open(&header.path, "r").await {
            Ok(f) => f.close().await.map(|()| true),
            Err(e) if e.to_string().contains("No such file") => Ok(false),
            Err(e) => Err(e),
        }
    };
    let map = |e| s.agent_error(&header.domain, e);
    match mode {
        pb::WriteMode::Truncate if !exists().await.map_err(map)? => {
            return Err(Status::not_found(format!(
                "{} does not exist (mode TRUNCATE)",
                header.path
            )));
        }
        pb::WriteMode::Exclusive if exists().await.map_err(map)? => {
            return Err(Status::already_exists(format!(
                "{} exists (mode EXCLUSIVE)",
                header.path
            )));
        }
        _ => {}
    }
    let target = header.path.clone();
    let dest = if atomic {
        temp_name(&target)
    } else {
        target.clone()
    };
    let file = client
        .open(&dest, if append { "a" } else { "w" })
        .await
        .map_err(map)?;
    let written = receive(
        &client,
        &file,
        &mut stream,
        &s.shared.shutdown,
        call.limits.max_bytes,
    )
    .await;
    let closed = file.close().await;
    let fail = |st: Status| async {
        if atomic {
            let _ = client.run_small("/bin/rm", &["-f", "--", &dest]).await;
        }
        Err(st)
    };
    let (bytes_written, sha256) = match (written, closed) {
        (Ok(w), Ok(())) => w,
        (Err(st), _) => return fail(st).await,
        (_, Err(e)) => return fail(map(e)).await,
    };
    if !header.expected_sha256.is_empty() && header.expected_sha256 != sha256 {
        return fail(Status::invalid_argument(format!(
            "checksum mismatch: data has sha256 {}, header expected {}{}",
            hex(&sha256),
            hex(&header.expected_sha256),
            if atomic {
                "; the target was not touched"
            } else {
                ""
            }
        )))
        .await;
    }
    let finish = async {
        if let Some(p) = header.permissions {
            helper(&client, "/bin/chmod", &[&format!("{p:o}"), "--", &dest]).await?;
        }
        if atomic {
            if mode == pb::WriteMode::Exclusive {
                // A hard link fails if the target appeared meanwhile: exclusive and atomic.
                // -T: a directory at the target is an error, not a place to put the file.
                helper(&client, "/bin/ln", &["-T", "--", &dest, &target]).await?;
                helper(&client, "/bin/rm", &["-f", "--", &dest]).await?;
            } else {
                helper(&client, "/bin/mv", &["-f", "-T", "--", &dest, &target]).await?;
            }
        }
        Ok::<_, Status>(())
    };
    if let Err(st) = finish.await {
        return fail(st).await;
    }
    Ok(pb::WriteFileResponse {
        bytes_written,
        sha256,
    })
}

/// Receives data messages and writes them in chunks; returns bytes and SHA-256.
async fn receive(
    client: &AgentClient,
    file: &OpenFile,
    stream: &mut Streaming<pb::WriteFileRequest>,
    shutdown: &tokio_util::sync::CancellationToken,
    max_bytes: Option<u64>,
) -> Result<(u64, Vec<u8>), Status> {
    let chunk = client
        .transport()
        .chunk_bounds()
        .max_write
        .min(DEFAULT_CHUNK);
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(chunk);
    let mut total = 0u64;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m?,
            () = shutdown.cancelled() => return Err(Status::unavailable("the daemon is shutting down")),
            () = tokio::time::sleep(WRITE_IDLE_TIMEOUT) => {
                return Err(Status::deadline_exceeded(format!(
                    "no data for {}s; upload abandoned",
                    WRITE_IDLE_TIMEOUT.as_secs()
                )));
            }
        };
        let done = match msg {
            None => true,
            Some(pb::WriteFileRequest {
                msg: Some(pb::write_file_request::Msg::Data(d)),
            }) => {
                if let Some(limit) = max_bytes
                    && total + (buf.len() + d.len()) as u64 > limit
                {
                    return Err(Status::resource_exhausted(format!(
                        "upload exceeds the policy's max_bytes ({limit})"
                    )));
                }
                hasher.update(&d);
                buf.extend_from_slice(&d);
                false
            }
            Some(_) => {
                return Err(Status::invalid_argument(
                    "only data messages may follow the header",
                ));
            }
        };
        while buf.len() >= chunk || (done && !buf.is_empty()) {
            let n = buf.len().min(chunk);
            let w = client
                .file_write(file.handle(), &buf[..n])
                .await
                .map_err(|e| Status::from(ApiError::Qga(e)))?;
            if w.count as usize != n {
                return Err(Status::data_loss(format!(
                    "guest wrote {} of {n} bytes",
                    w.count
                )));
            }
            metrics::bytes("write", n);
            total += n as u64;
            buf.drain(..n);
        }
        if done {
            client
                .file_flush(file.handle())
                .await
                .map_err(|e| Status::from(ApiError::Qga(e)))?;
            return Ok((total, hasher.finalize().to_vec()));
        }
    }
}

async fn helper(client: &AgentClient, path: &str, args: &[&str]) -> Result<(), Status> {
    let r = client
        .run_small(path, args)
        .await
        .map_err(|e| Status::from(ApiError::Qga(e)))?;
    if r.success() {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "{path} {} failed in the guest: {}",
            args.join(" "),
            r.decode_stderr().unwrap_or_default().trim()
        )))
    }
}

/// A hidden temporary name next to `target`, of fixed length (so any legal target name
/// still gives a legal temporary name).
fn temp_name(target: &str) -> String {
    let (dir, _) = target.rsplit_once('/').unwrap_or(("", target));
    format!("{dir}/.atp-{}.tmp", uuid::Uuid::new_v4().simple())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
