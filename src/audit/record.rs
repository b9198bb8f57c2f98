//! The record type handed to the log, and the one rule that seals a record into a line
//! and checks it again (see [the module docs](super) for the rule).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use crate::caller::Caller;

/// Which of a request's two records this is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// The policy decision, durable before dispatch.
    Decision,
    /// What happened once the request ran (or was refused).
    Outcome,
    /// How many anonymous denials a minute left out of the log (their budget was spent).
    Suppressed,
    /// What the daemon did by itself for an earlier request (`request_id`), e.g. a thaw
    /// at an FsFreeze's deadline or at shutdown.
    Daemon,
}

/// What the gate hands to the log; `seq`, `time`, `prev` and `hash` are added by the sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Decision or outcome.
    pub kind: EntryKind,
    /// Ties a decision to its outcome.
    pub request_id: String,
    /// Who asked.
    pub caller: Caller,
    /// RPC name, e.g. `Exec`.
    pub rpc: String,
    /// Target guest.
    pub domain: String,
    /// Redacted request summary (decision records): never env values, stdin, file data
    /// or passwords.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub summary: Option<serde_json::Value>,
    /// `allow` or `deny`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<String>,
    /// The deciding plugin.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plugin: Option<String>,
    /// The plugin's reason.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Fields added by policy `audit` hooks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub extra: Option<serde_json::Value>,
    /// Outcome: gRPC code name, e.g. `OK`, `NOT_FOUND`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    /// Outcome: error message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// Outcome: exit code of an exec.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<i32>,
    /// Outcome: signal that ended an exec.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signal: Option<i32>,
    /// Outcome: the failure's `google.rpc.ErrorInfo` reason (e.g. `POLICY_DENIED`), as
    /// the client got it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_reason: Option<String>,
    /// Outcome: bytes transferred.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    /// Outcome: time taken.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// Outcome of an interactive session: its recording, kept on the daemon's host.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recording: Option<SessionRecording>,
}

/// An interactive session's recording (asciicast v2) as the outcome record names it: the
/// SHA-256 in the sealed log proves the file was not edited afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecording {
    /// The file, on the daemon's host.
    pub path: std::path::PathBuf,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// False when the file ends early: a write failed, or it reached its size limit
    /// (256 MiB).
    pub complete: bool,
}

impl AuditEntry {
    /// A record of `kind` for one request, with every optional field empty; the gate fills
    /// in what applies (decision or outcome details).
    pub fn new(
        kind: EntryKind,
        request_id: String,
        caller: Caller,
        rpc: &str,
        domain: &str,
    ) -> Self {
        Self {
            kind,
            request_id,
            caller,
            rpc: rpc.to_owned(),
            domain: domain.to_owned(),
            summary: None,
            decision: None,
            plugin: None,
            reason: None,
            extra: None,
            status: None,
            message: None,
            error_reason: None,
            exit_code: None,
            signal: None,
            bytes: None,
            duration_ms: None,
            recording: None,
        }
    }
}

/// A record as written, without its hash: fixed member order.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    time: &'a str,
    prev: &'a str,
    #[serde(flatten)]
    entry: &'a AuditEntry,
}

/// The chain members of a line, as read back.
#[derive(Debug, Deserialize)]
pub(crate) struct Head {
    pub seq: u64,
    #[allow(dead_code)] // required to be present, not checked
    pub time: String,
    pub prev: String,
    pub hash: String,
}

/// Serializes a record and seals it: returns the line (with its `\n`) and its hash.
pub(crate) fn seal(
    seq: u64,
    time: &str,
    prev: &str,
    entry: &AuditEntry,
) -> serde_json::Result<(Vec<u8>, String)> {
    let mut line = serde_json::to_vec(&Unsealed {
        seq,
        time,
        prev,
        entry,
    })?;
    let hash = format!("{:x}", Sha256::digest(&line));
    line.pop(); // the closing '}'
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// Parses the chain members of one line (without its `\n`).
pub(crate) fn parse(line: &[u8]) -> Result<Head, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a valid record: {e}"))
}

/// Checks the seal of a parsed line (without its `\n`): see the hash rule.
pub(crate) fn check_seal(line: &[u8], head: &Head) -> Result<(), String> {
    let suffix = format!(",\"hash\":\"{}\"}}", head.hash);
    let Some(body) = line.strip_suffix(suffix.as_bytes()) else {
        return Err("\"hash\" is not the last member".into());
    };
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    if format!("{:x}", hasher.finalize()) != head.hash {
        return Err(format!("hash mismatch: record edited (hash {})", head.hash));
    }
    Ok(())
}

/// [`parse`] then [`check_seal`].
pub(crate) fn unseal(line: &[u8]) -> Result<Head, String> {
    let head = parse(line)?;
    check_seal(line, &head)?;
    Ok(head)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry() -> AuditEntry {
        let caller = Caller {
            id: "alice".into(),
            auth: crate::caller::AuthMethod::Token,
            roles: vec!["ops".into()],
            peer: "127.0.0.1:5".into(),
        };
        let mut e = AuditEntry::new(EntryKind::Decision, "r1".into(), caller, "Ping", "vm1");
        e.summary = Some(serde_json::json!({"argv": ["ls", "/"], "env_keys": ["A"]}));
        e.decision = Some("allow".into());
        e.plugin = Some("10-base".into());
        e
    }

    #[test]
    fn sealed_line_has_fixed_order_and_verifies() {
        let (line, hash) = seal(1, "2026-01-01T00:00:00.000Z", GENESIS, &entry()).unwrap();
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with(r#"{"seq":1,"time":"2026-01-01T00:00:00.000Z","prev":"000"#));
        assert!(text.contains(r#""kind":"decision","request_id":"r1""#));
        assert!(!text.contains("exit_code"), "None members are left out");
        assert!(text.ends_with(&format!(",\"hash\":\"{hash}\"}}\n")));
        let head = unseal(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            (head.seq, head.prev.as_str(), head.hash),
            (1, GENESIS, hash)
        );
        let back: AuditEntry = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, entry());
    }

    #[test]
    fn any_edit_breaks_the_seal() {
        let (line, _) = seal(7, "t", GENESIS, &entry()).unwrap();
        let text = std::str::from_utf8(&line[..line.len() - 1]).unwrap();
        let edited = text.replace(r#""rpc":"Ping""#, r#""rpc":"Exec""#);
        assert!(
            unseal(edited.as_bytes())
                .unwrap_err()
                .contains("hash mismatch")
        );
        let spaced = text.replace(r#""seq":7"#, r#""seq": 7"#);
        assert!(unseal(spaced.as_bytes()).is_err());
        assert!(
            unseal(&text.as_bytes()[..40])
                .unwrap_err()
                .contains("not a valid")
        );
    }
}
