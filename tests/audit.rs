//! The audit log on a real file: concurrent writers, reopening, tampering found by
//! `verify` (and the `atp audit verify` message), a sink that cannot write, throughput.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "../src/cli/audit.rs"]
#[allow(dead_code)] // `atp audit head` is exercised in tests/security_audit.rs
mod cli_audit;

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Instant};

use ocloudview_atp::audit::{
    AuditEntry, AuditError, AuditLog, Caller, EntryKind, OnFailure, VerifyError, verify,
};

fn entry(request_id: String) -> AuditEntry {
    let caller = Caller {
        id: "alice".into(),
        auth: ocloudview_atp::caller::AuthMethod::Token,
        roles: vec!["ops".into()],
        peer: "127.0.0.1:40000".into(),
    };
    let mut e = AuditEntry::new(EntryKind::Decision, request_id, caller, "Ping", "vm1");
    e.summary = Some(serde_json::json!({ "argv": ["uptime"] }));
    e.decision = Some("allow".into());
    e.plugin = Some("00-baseline".into());
    e.reason = Some("ping is allowed".into());
    e
}

/// Writes `tasks * each` records concurrently; returns records/s.
async fn write_concurrently(log: &AuditLog, tasks: usize, each: usize) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..each {
                seqs.push(log.record(entry(format!("{t}-{i}"))).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        let seqs = handle.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one task's seqs increase"
        );
        all.extend(seqs);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    let first = all[0];
    assert_eq!(all, (first..first + all.len() as u64).collect::<Vec<_>>());
    rate
}

/// Verifies a tampered copy of the log; returns (line, seq) of the broken record.
async fn broken(dir: &Path, name: &str, text: &str) -> (u64, Option<u64>) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let message = cli_audit::verify(&path, None)
        .await
        .unwrap_err()
        .to_string();
    match verify(&path) {
        Err(VerifyError::Broken { line, seq, reason }) => {
            let seq_text = seq.map_or("unknown".into(), |s| s.to_string());
            let expected = format!(
                "{}: record broken at line {line} (seq {seq_text}): {reason}",
                path.display()
            );
            assert_eq!(message, expected);
            (line, seq)
        }
        other => panic!("{name}: expected a broken chain, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chain_survives_concurrency_and_reopening_and_shows_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log/audit.jsonl");
    let log = AuditLog::open(&path, OnFailure::Refuse).await.unwrap();
    let rate = write_concurrently(&log, 8, 125).await;
    println!("audit throughput: {rate:.0} records/s (8 tasks, group commit with fdatasync)");
    let start = Instant::now();
    for i in 0..50 {
        log.record(entry(format!("solo-{i}"))).await.unwrap();
    }
    let solo = 50.0 / start.elapsed().as_secs_f64();
    println!("audit throughput: {solo:.0} records/s (1 task, one fdatasync per record)");
    log.close().await;
    assert_eq!(verify(&path).unwrap().records, 1050);

    let log = AuditLog::open(&path, OnFailure::Refuse).await.unwrap();
    for i in 0..10 {
        assert_eq!(
            log.record(entry(format!("again-{i}"))).await.unwrap(),
            1051 + i
        );
    }
    log.close().await;
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 1060);
    cli_audit::verify(&path, None).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == 1);
    assert!(lines[0].contains(&format!("\"prev\":\"{}\"", "0".repeat(64))));
    assert!(lines[1059].ends_with(&format!(",\"hash\":\"{}\"}}", report.last_hash)));

    let mut edited = lines.clone();
    let line500 = edited[499].replace(r#""rpc":"Ping""#, r#""rpc":"Exec""#);
    edited[499] = &line500;
    let edited = edited.join("\n") + "\n";
    assert_eq!(
        broken(dir.path(), "edited", &edited).await,
        (500, Some(500))
    );

    let mut deleted = lines.clone();
    deleted.remove(299);
    let deleted = deleted.join("\n") + "\n";
    assert_eq!(
        broken(dir.path(), "deleted", &deleted).await,
        (300, Some(301))
    );

    let cut = text.len() - lines[1059].len() / 2;
    assert_eq!(
        broken(dir.path(), "cut", &text[..cut]).await,
        (1060, Some(1060))
    );
    let no_newline = &text[..text.len() - 1];
    assert_eq!(
        broken(dir.path(), "nl", no_newline).await,
        (1060, Some(1060))
    );
    std::fs::write(dir.path().join("empty"), "").unwrap();
    assert_eq!(verify(&dir.path().join("empty")).unwrap().records, 0);
}

#[tokio::test]
async fn opening_creates_0600_locks_and_refuses_a_broken_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/audit.jsonl");
    let log = AuditLog::open(&path, OnFailure::Refuse).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = AuditLog::open(&path, OnFailure::Refuse).await.unwrap_err();
    assert!(second.to_string().contains("locked"), "{second}");
    let mut big = entry("big".into());
    big.extra = Some(serde_json::json!({ "blob": "x".repeat(200_000) }));
    assert_eq!(log.record(big).await.unwrap(), 1);
    log.close().await;
    let closed = log.record(entry("late".into())).await;
    assert!(
        matches!(closed, Err(AuditError::Closed { .. })),
        "{closed:?}"
    );

    let log = AuditLog::open(&path, OnFailure::Refuse).await.unwrap();
    assert_eq!(log.record(entry("after big".into())).await.unwrap(), 2);
    log.close().await;
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(r#"{"seq":3,"ti"#);
    std::fs::write(&path, text).unwrap();
    match AuditLog::open(&path, OnFailure::Continue)
        .await
        .unwrap_err()
    {
        AuditError::BrokenTail { line, reason, .. } => assert_eq!(line, 3, "{reason}"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_sink_that_cannot_write_refuses_or_continues() {
    // /dev/full fails every write with ENOSPC, even for root; Linux always has it.
    let full = Path::new("/dev/full");
    assert!(full.exists(), "/dev/full is missing: this test needs it");
    let log = AuditLog::open(full, OnFailure::Refuse).await.unwrap();
    match log.record(entry("r".into())).await {
        Err(AuditError::Write { error, .. }) => {
            assert_eq!(error.raw_os_error(), Some(nix::libc::ENOSPC), "{error}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    log.close().await;
    let log = AuditLog::open(full, OnFailure::Continue).await.unwrap();
    assert_eq!(log.record(entry("c".into())).await.unwrap(), 1);
    assert_eq!(
        log.record(entry("d".into())).await.unwrap(),
        1,
        "nothing was written"
    );
    log.close().await;
}
