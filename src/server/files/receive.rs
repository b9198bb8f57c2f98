//! Receiving an upload: data messages written to an open guest handle in transport-sized
//! chunks, under the policy's byte budget and an idle timeout; returns bytes and SHA-256.

use sha2::{Digest, Sha256};
use tonic::{Status, Streaming};

use super::super::{budget::ByteBudget, metrics, status::ApiError};
use crate::{
    pb,
    qga::{AgentClient, DEFAULT_CHUNK, OpenFile, QgaError},
};

/// An upload that sends nothing for this long is abandoned (its guest handle would
/// otherwise stay open for as long as a stalled client keeps its connection).
const WRITE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) async fn receive(
    client: &AgentClient,
    file: &OpenFile,
    stream: &mut Streaming<pb::WriteFileRequest>,
    shutdown: &tokio_util::sync::CancellationToken,
    mut budget: ByteBudget,
    qga: &(dyn Fn(QgaError) -> Status + Sync),
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
            m = stream.message() => m.map_err(ApiError::ClientStream)?,
            () = shutdown.cancelled() => return Err(ApiError::ShuttingDown.into()),
            () = tokio::time::sleep(WRITE_IDLE_TIMEOUT) => {
                return Err(ApiError::ClientTooSlow {
                    message: format!(
                        "no data for {}s; upload abandoned",
                        WRITE_IDLE_TIMEOUT.as_secs()
                    ),
                    limit: None,
                }
                .into());
            }
        };
        let done = match msg {
            None => true,
            Some(pb::WriteFileRequest {
                msg: Some(pb::write_file_request::Msg::Data(d)),
            }) => {
                if let Err(limit) = budget.take_all(d.len() as u64) {
                    return Err(ApiError::PolicyMaxBytes {
                        what: "upload exceeds",
                        value: limit,
                    }
                    .into());
                }
                hasher.update(&d);
                buf.extend_from_slice(&d);
                false
            }
            Some(_) => {
                return Err(ApiError::InvalidArgument(
                    "only data messages may follow the header".into(),
                )
                .into());
            }
        };
        while buf.len() >= chunk || (done && !buf.is_empty()) {
            let n = buf.len().min(chunk);
            let w = client
                .file_write(file.handle(), &buf[..n])
                .await
                .map_err(qga)?;
            if w.count as usize != n {
                return Err(ApiError::GuestWriteIncomplete {
                    written: w.count,
                    wanted: n,
                }
                .into());
            }
            metrics::bytes("write", n);
            total += n as u64;
            buf.drain(..n);
        }
        if done {
            client.file_flush(file.handle()).await.map_err(qga)?;
            return Ok((total, hasher.finalize().to_vec()));
        }
    }
}
