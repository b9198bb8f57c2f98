//! A policy's `max_bytes` on file transfers, through the daemon against a real host agent:
//! a read delivers at most the budget and fails if the file goes on, a read that fits (or
//! asks for less) succeeds, and an upload over the budget is refused with the target
//! untouched.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use ocloudview_atp::{
    pb::{ReadFileRequest, WriteFileHeader, WriteFileRequest, write_file_request::Msg},
    testbed::HostAgent,
};
use tonic::Code;

const BUDGET: usize = 1000;

async fn daemon(agent: &HostAgent) -> (common::Daemon, tempfile::TempDir) {
    let plugins = tempfile::Builder::new()
        .prefix("atp-limits-policy.")
        .tempdir()
        .unwrap();
    std::fs::write(
        plugins.path().join("50-test.rhai"),
        format!("fn authorize(req) {{ allow(\"test\").with(#{{ max_bytes: {BUDGET} }}) }}\n"),
    )
    .unwrap();
    let body = format!(
        "[policy]\ndir = \"{}\"\ndefault = \"deny\"\n",
        plugins.path().display()
    );
    (common::daemon_for(agent, &body).await, plugins)
}

/// Reads `path` (from `length` bytes, 0 = all): the bytes delivered, and how it ended.
async fn read(
    d: &common::Daemon,
    path: &std::path::Path,
    length: u64,
) -> (usize, Result<(), tonic::Status>) {
    let mut c = d.client().await;
    let req = ReadFileRequest {
        domain: "host".into(),
        path: path.display().to_string(),
        length,
        ..Default::default()
    };
    let mut s = match c.read_file(req).await {
        Ok(s) => s.into_inner(),
        Err(st) => return (0, Err(st)),
    };
    let mut got = 0;
    loop {
        match s.message().await {
            Ok(Some(chunk)) => {
                got += chunk.data.len();
                if chunk.eof {
                    return (got, Ok(()));
                }
            }
            Ok(None) => return (got, Err(tonic::Status::unknown("stream ended without eof"))),
            Err(st) => return (got, Err(st)),
        }
    }
}

#[tokio::test]
async fn a_read_delivers_at_most_the_budget() {
    let agent = HostAgent::start().unwrap();
    let (d, _p) = daemon(&agent).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 5 * BUDGET]).unwrap();
    let exact = dir.path().join("exact");
    std::fs::write(&exact, vec![b'y'; BUDGET]).unwrap();

    let (got, end) = read(&d, &big, 0).await;
    let st = end.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("max_bytes"), "{}", st.message());
    assert!(
        got <= BUDGET,
        "delivered {got} bytes past a budget of {BUDGET}"
    );

    let (got, end) = read(&d, &big, 500).await;
    end.unwrap();
    assert_eq!(
        got, 500,
        "a read asking for less than the budget gets it all"
    );

    let (got, end) = read(&d, &exact, 0).await;
    end.unwrap();
    assert_eq!(got, BUDGET, "a file that ends at the budget is read whole");
}

#[tokio::test]
async fn an_upload_over_the_budget_is_refused_and_changes_nothing() {
    let agent = HostAgent::start().unwrap();
    let (d, _p) = daemon(&agent).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"before").unwrap();
    let upload = |n: usize| {
        let header = WriteFileHeader {
            domain: "host".into(),
            path: target.display().to_string(),
            atomic: Some(true),
            ..Default::default()
        };
        let mut msgs = vec![WriteFileRequest {
            msg: Some(Msg::Header(header)),
        }];
        let data = vec![b'z'; n];
        msgs.extend(data.chunks(300).map(|c| WriteFileRequest {
            msg: Some(Msg::Data(c.to_vec())),
        }));
        tokio_stream::iter(msgs)
    };
    let mut c = d.client().await;
    let st = c.write_file(upload(BUDGET + 1)).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("max_bytes"), "{}", st.message());
    assert_eq!(std::fs::read(&target).unwrap(), b"before");

    let r = c.write_file(upload(BUDGET)).await.unwrap().into_inner();
    assert_eq!(r.bytes_written, BUDGET as u64);
    assert_eq!(std::fs::read(&target).unwrap(), vec![b'z'; BUDGET]);
}
