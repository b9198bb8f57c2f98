//! The measured loops, raw agent client and daemon side by side, and the data they move.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use ocloudview_atp::{
    pb::{
        PingRequest, ReadFileRequest, WriteFileHeader, WriteFileRequest, write_file_request::Msg,
    },
    qga::AgentClient,
};

use crate::{Grpc, REPEAT};

pub(crate) fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i + seed).wrapping_mul(2654435761) >> 11) as u8)
        .collect()
}

/// Both ping loops run in a spawned task, as an async client would: a call from the
/// `block_on` thread pays two extra cross-thread wake-ups per round trip, on either side.
pub(crate) async fn raw_pings(c: &AgentClient, n: usize) -> Result<Vec<Duration>> {
    let c = c.clone();
    tokio::spawn(async move {
        c.ping().await?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            c.ping().await?;
            v.push(t.elapsed());
        }
        Ok(v)
    })
    .await?
}

/// The naive chunked loop: open, read `chunk` until eof, close. Returns bytes and time.
async fn raw_read(c: &AgentClient, path: &str, chunk: usize) -> Result<(usize, Duration)> {
    let t = Instant::now();
    let h = c.file_open(path, Some("r")).await?;
    let mut n = 0;
    loop {
        let r = c.file_read(h, Some(chunk)).await?;
        let len = r.data()?.len();
        n += len;
        if r.eof || len == 0 {
            break;
        }
    }
    c.file_close(h).await?;
    Ok((n, t.elapsed()))
}

async fn raw_write(c: &AgentClient, path: &str, data: &[u8], chunk: usize) -> Result<Duration> {
    let t = Instant::now();
    let h = c.file_open(path, Some("w")).await?;
    for ch in data.chunks(chunk) {
        let w = c.file_write(h, ch).await?;
        ensure!(w.count as usize == ch.len(), "short write");
    }
    c.file_flush(h).await?;
    c.file_close(h).await?;
    Ok(t.elapsed())
}

pub(crate) async fn d_pings(c: &mut Grpc, domain: &str, n: usize) -> Result<Vec<Duration>> {
    let mut c = c.clone();
    let domain = domain.to_owned();
    tokio::spawn(async move {
        let req = || PingRequest {
            domain: domain.clone(),
        };
        c.ping(req()).await?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            c.ping(req()).await?;
            v.push(t.elapsed());
        }
        Ok(v)
    })
    .await?
}

pub(crate) async fn d_read(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    chunk: usize,
) -> Result<(usize, Duration)> {
    let t = Instant::now();
    let mut s = c
        .read_file(ReadFileRequest {
            domain: domain.into(),
            path: path.into(),
            chunk_size: chunk as u32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(ch) = s.message().await? {
        n += ch.data.len();
        if ch.eof {
            break;
        }
    }
    Ok((n, t.elapsed()))
}

async fn d_write(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    data: Arc<Vec<u8>>,
    chunk: usize,
) -> Result<Duration> {
    let header = WriteFileRequest {
        msg: Some(Msg::Header(WriteFileHeader {
            domain: domain.into(),
            path: path.into(),
            atomic: Some(false),
            ..Default::default()
        })),
    };
    let len = data.len();
    let msgs =
        std::iter::once(header).chain((0..len.div_ceil(chunk)).map(move |i| WriteFileRequest {
            msg: Some(Msg::Data(
                data[i * chunk..((i + 1) * chunk).min(len)].to_vec(),
            )),
        }));
    let t = Instant::now();
    let r = c.write_file(tokio_stream::iter(msgs)).await?.into_inner();
    ensure!(
        r.bytes_written as usize == len,
        "daemon wrote {}",
        r.bytes_written
    );
    Ok(t.elapsed())
}

/// Transfers are repeated [`REPEAT`] times and the best time kept: the machine is shared.
pub(crate) async fn raw_read_best(
    c: &AgentClient,
    path: &str,
    chunk: usize,
    len: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        let (n, d) = raw_read(c, path, chunk).await?;
        ensure!(n == len, "raw read {n} of {len} bytes");
        best = best.min(d);
    }
    Ok(best)
}

pub(crate) async fn raw_write_best(
    c: &AgentClient,
    path: &str,
    data: &[u8],
    chunk: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        best = best.min(raw_write(c, path, data, chunk).await?);
    }
    Ok(best)
}

pub(crate) async fn d_read_best(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    chunk: usize,
    len: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        let (n, d) = d_read(c, domain, path, chunk).await?;
        ensure!(n == len, "daemon read {n} of {len} bytes");
        best = best.min(d);
    }
    Ok(best)
}

pub(crate) async fn d_write_best(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    data: &Arc<Vec<u8>>,
    chunk: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        best = best.min(d_write(c, domain, path, Arc::clone(data), chunk).await?);
    }
    Ok(best)
}
