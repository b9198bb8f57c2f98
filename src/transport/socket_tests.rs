//! The worker's wire discipline against a scripted peer on a UNIX socket (pure logic:
//! which bytes go out when). Everything about the real agent is in `tests/host_agent.rs`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

use super::SocketTransport;
use crate::transport::{AgentReply, AgentRequest, Ticket, TransportError, framing::SENTINEL};

const WAIT: Duration = Duration::from_secs(5);

fn ping() -> AgentRequest {
    AgentRequest {
        execute: "guest-ping".into(),
        arguments: None,
        expects_reply: true,
    }
}

/// A listening socket in a fresh directory (kept alive by the returned guard).
fn bind() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    (dir, path, listener)
}

/// Writes the reply line `{"return": RET, "id": ID}`.
async fn answer(s: &mut UnixStream, ret: &str, id: &Value) {
    let line = format!("{{\"return\": {ret}, \"id\": {id}}}\n");
    s.write_all(line.as_bytes()).await.unwrap();
}

/// The ticket's reply, within [`WAIT`].
async fn reply(t: Ticket) -> Result<AgentReply, TransportError> {
    tokio::time::timeout(WAIT, t.wait()).await.unwrap()
}

/// Reads the next complete JSON object the client sent (skipping the resync byte).
async fn next_request(s: &mut UnixStream, buf: &mut Vec<u8>) -> Value {
    loop {
        while buf.first() == Some(&SENTINEL) {
            buf.remove(0);
        }
        let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
        if let Some(Ok(v)) = it.next() {
            let used = it.byte_offset();
            buf.drain(..used);
            return v;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("the client sent nothing more")
            .unwrap();
        assert!(n > 0, "the client closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Answers the client's resync, then returns the connection.
async fn synced_peer(listener: &UnixListener, buf: &mut Vec<u8>) -> UnixStream {
    let (mut s, _) = listener.accept().await.unwrap();
    let sync = next_request(&mut s, buf).await;
    assert_eq!(sync["execute"], "guest-sync-delimited");
    let id = sync["arguments"]["id"].as_u64().unwrap();
    let mut reply = vec![SENTINEL];
    reply.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
    s.write_all(&reply).await.unwrap();
    s
}

#[tokio::test]
async fn next_request_goes_out_while_a_reply_is_still_arriving() {
    let (_dir, path, listener) = bind();
    let peer = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut s = synced_peer(&listener, &mut buf).await;
        let a = next_request(&mut s, &mut buf).await;
        // Half of A's reply, then nothing more until B has arrived.
        s.write_all(b"{\"return\": {}, ").await.unwrap();
        let b = next_request(&mut s, &mut buf).await;
        s.write_all(format!("\"id\": {}}}\n", a["id"]).as_bytes())
            .await
            .unwrap();
        answer(&mut s, r#"{"b": 1}"#, &b["id"]).await;
        (a["execute"].clone(), b["execute"].clone())
    });
    let t = SocketTransport::new(&path);
    let first = t.submit(ping(), WAIT).await.unwrap();
    // B is queued only once A's reply has started to arrive: a batch-at-a-time worker
    // would sit reading A, never send B, and the peer would wait forever.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = t.submit(ping(), WAIT).await.unwrap();
    assert_eq!(
        reply(first).await.unwrap(),
        AgentReply::Return(b"{}".to_vec())
    );
    assert_eq!(
        reply(second).await.unwrap(),
        AgentReply::Return(br#"{"b": 1}"#.to_vec())
    );
    let (ea, eb) = peer.await.unwrap();
    assert_eq!(
        (ea.as_str(), eb.as_str()),
        (Some("guest-ping"), Some("guest-ping"))
    );
}

#[tokio::test]
async fn a_reply_with_a_foreign_id_fails_the_window_and_resyncs() {
    let (_dir, path, listener) = bind();
    let peer = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut s = synced_peer(&listener, &mut buf).await;
        let _a = next_request(&mut s, &mut buf).await;
        let _b = next_request(&mut s, &mut buf).await;
        // A stale reply: neither A's id nor B's.
        s.write_all(b"{\"return\": {}, \"id\": 7}\n").await.unwrap();
        // The client must drop this connection and resync on a new one.
        let mut buf = Vec::new();
        let mut s2 = synced_peer(&listener, &mut buf).await;
        let c = next_request(&mut s2, &mut buf).await;
        answer(&mut s2, "{}", &c["id"]).await;
        drop(s);
        s2
    });
    let t = SocketTransport::new(&path);
    let a = t.submit(ping(), WAIT).await.unwrap();
    let b = t.submit(ping(), WAIT).await.unwrap();
    assert!(
        reply(a)
            .await
            .unwrap_err()
            .to_string()
            .contains("another request")
    );
    let b = reply(b).await.unwrap_err().to_string();
    assert!(
        b.contains("an earlier pipelined request failed"),
        "the request behind a foreign reply cannot be trusted: {b}"
    );
    let c = tokio::time::timeout(WAIT, t.call(ping(), WAIT))
        .await
        .unwrap();
    assert_eq!(c.unwrap(), AgentReply::Return(b"{}".to_vec()));
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn replies_in_flight_still_arrive_after_the_last_handle_is_dropped() {
    let (_dir, path, listener) = bind();
    let peer = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut s = synced_peer(&listener, &mut buf).await;
        let a = next_request(&mut s, &mut buf).await;
        let b = next_request(&mut s, &mut buf).await;
        // Answer only once the client side has let go of its transport.
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer(&mut s, "1", &a["id"]).await;
        answer(&mut s, "2", &b["id"]).await;
        s
    });
    let t = SocketTransport::new(&path);
    let a = t.submit(ping(), WAIT).await.unwrap();
    let b = t.submit(ping(), WAIT).await.unwrap();
    drop(t);
    assert_eq!(reply(a).await.unwrap(), AgentReply::Return(b"1".to_vec()));
    assert_eq!(reply(b).await.unwrap(), AgentReply::Return(b"2".to_vec()));
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn a_large_request_waits_for_an_empty_window() {
    let (_dir, path, listener) = bind();
    let peer = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut s = synced_peer(&listener, &mut buf).await;
        let a = next_request(&mut s, &mut buf).await;
        // Nothing more may arrive while A is unanswered.
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte)).await;
        assert!(early.is_err(), "the large request was written behind A");
        answer(&mut s, "1", &a["id"]).await;
        let b = next_request(&mut s, &mut buf).await;
        answer(&mut s, "2", &b["id"]).await;
        (b["execute"].clone(), s)
    });
    let t = SocketTransport::new(&path);
    let a = t.submit(ping(), WAIT).await.unwrap();
    let big = AgentRequest {
        execute: "guest-file-write".into(),
        arguments: Some(format!(
            r#"{{"handle":1,"buf-b64":"{}"}}"#,
            "A".repeat(8192)
        )),
        expects_reply: true,
    };
    let b = t.submit(big, WAIT).await.unwrap();
    assert_eq!(reply(a).await.unwrap(), AgentReply::Return(b"1".to_vec()));
    assert_eq!(reply(b).await.unwrap(), AgentReply::Return(b"2".to_vec()));
    let (execute, _s) = peer.await.unwrap();
    assert_eq!(execute.as_str(), Some("guest-file-write"));
}
