//! Helpers shared by the fault tests: bounded waits, request builders, stream readers and
//! a daemon in front of a libvirt guest.

use std::{future::Future, time::Duration};

use crate::common::{self, Daemon};
use ocloudview_atp::{
    pb::{
        Argv, ExecRequest, FileChunk, ReadFileRequest, exec_request,
        guest_agent_client::GuestAgentClient,
    },
    testbed::{Flavour, LibvirtDomain, LibvirtSession},
};
use tonic::{Status, transport::Channel};

pub type Client = GuestAgentClient<Channel>;

/// Runs `f`, failing the test if it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// xorshift64: enough randomness for deadlines, no new dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

pub fn read_req(domain: &str, path: &str, chunk_size: u32) -> ReadFileRequest {
    ReadFileRequest {
        domain: domain.into(),
        path: path.into(),
        chunk_size,
        ..Default::default()
    }
}

pub fn argv(domain: &str, path: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        domain: domain.into(),
        command: Some(exec_request::Command::Argv(Argv {
            path: path.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        })),
        ..Default::default()
    }
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Reads a whole ReadFile stream: the data and the final (`eof`) chunk.
pub async fn read_to_end(
    c: &mut Client,
    r: ReadFileRequest,
) -> Result<(Vec<u8>, FileChunk), Status> {
    let mut s = c.read_file(r).await?.into_inner();
    let mut data = Vec::new();
    loop {
        let Some(chunk) = s.message().await? else {
            return Err(Status::internal("stream ended without an eof chunk"));
        };
        data.extend_from_slice(&chunk.data);
        if chunk.eof {
            if s.message().await?.is_some() {
                return Err(Status::internal("a message after the eof chunk"));
            }
            return Ok((data, chunk));
        }
    }
}

/// Reads a server stream until it fails, returning the status and the number of messages
/// that came first. Panics if the stream ends cleanly or `limit` passes.
pub async fn stream_error<T>(
    s: &mut tonic::Streaming<T>,
    limit: Duration,
    what: &str,
) -> (Status, usize) {
    bounded(limit, what, async {
        let mut n = 0;
        loop {
            match s.message().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("{what}: the stream ended cleanly after {n} more messages"),
                Err(st) => return (st, n),
            }
        }
    })
    .await
}

/// A session libvirtd, a domain booted in it and a daemon serving it as `lab/NAME`.
pub async fn libvirt_guest(name: &str) -> (LibvirtSession, LibvirtDomain, Daemon) {
    let image = common::image().await;
    let session = LibvirtSession::start().await.unwrap();
    let dom = session
        .create_domain(name, &image, Flavour::Debian)
        .await
        .unwrap();
    eprintln!("{name}: agent up {:?} after create", dom.boot_time());
    let d = Daemon::start(
        &[],
        &format!(
            "[[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n",
            session.uri()
        ),
    )
    .await;
    (session, dom, d)
}
