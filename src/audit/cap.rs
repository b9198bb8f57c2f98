//! Bounds on what one record may hold, applied to every entry before it is sealed: a
//! caller controls most of a record (paths, argv, domain names, plugin reasons quoting
//! them), and control characters cost six bytes each once JSON-escaped, so without caps a
//! handful of requests could fill the audit disk and refuse everyone's requests.
//!
//! A string longer than [`MAX_STRING`] characters is replaced by
//! `{"cut": <its first PREFIX characters>, "len": <bytes>, "sha256": <hex of the whole>}`;
//! a list longer than [`MAX_ITEMS`] keeps its first items and ends with
//! `{"cut_items": <total>, "sha256": <hex of the whole list's JSON>}`; nesting deeper
//! than [`MAX_DEPTH`] is replaced like a long string. The digest lets an investigator
//! match the full value held elsewhere (e.g. the client's own log).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::AuditEntry;

/// Longest string kept whole, in characters.
pub const MAX_STRING: usize = 256;
/// Characters kept of a longer string.
const PREFIX: usize = 64;
/// Most list items kept.
pub const MAX_ITEMS: usize = 32;
/// Deepest nesting kept.
pub const MAX_DEPTH: usize = 8;

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a string is kept whole: short, and no more than a few control characters (each
/// costs six bytes escaped).
fn fits(s: &str) -> bool {
    let mut chars = 0;
    let mut controls = 0;
    for c in s.chars() {
        chars += 1;
        controls += usize::from(c.is_control());
        if chars > MAX_STRING || controls > 16 {
            return false;
        }
    }
    true
}

/// A string as kept: itself, or its prefix with its length and digest.
pub fn string(s: &str) -> Value {
    if fits(s) {
        return Value::String(s.to_owned());
    }
    let prefix: String = s
        .chars()
        .take(PREFIX)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    json!({ "cut": prefix, "len": s.len(), "sha256": hex(s.as_bytes()) })
}

/// A plain-text field (reason, message, domain): the same cut, as text.
pub fn text(s: &str) -> String {
    match string(s) {
        Value::String(s) => s,
        cut => cut.to_string(),
    }
}

/// A JSON value with every string, list and nesting level bounded.
pub fn value(v: Value) -> Value {
    bounded(v, 0)
}

fn bounded(v: Value, depth: usize) -> Value {
    match v {
        Value::String(s) => string(&s),
        v @ (Value::Array(_) | Value::Object(_)) if depth >= MAX_DEPTH => {
            let text = v.to_string();
            json!({ "cut": "(nested too deep)", "len": text.len(), "sha256": hex(text.as_bytes()) })
        }
        Value::Array(items) => {
            let total = items.len();
            if total <= MAX_ITEMS {
                return Value::Array(items.into_iter().map(|i| bounded(i, depth + 1)).collect());
            }
            let digest = hex(Value::Array(items.clone()).to_string().as_bytes());
            let mut kept: Vec<Value> = items
                .into_iter()
                .take(MAX_ITEMS)
                .map(|i| bounded(i, depth + 1))
                .collect();
            kept.push(json!({ "cut_items": total, "sha256": digest }));
            Value::Array(kept)
        }
        Value::Object(m) => {
            let total = m.len();
            let mut out = Map::new();
            for (i, (k, v)) in m.into_iter().enumerate() {
                if i == MAX_ITEMS {
                    out.insert("cut_members".into(), json!(total));
                    break;
                }
                out.insert(text(&k), bounded(v, depth + 1));
            }
            Value::Object(out)
        }
        other => other,
    }
}

impl AuditEntry {
    /// This entry with every caller-influenced field bounded (see the module docs).
    pub fn bounded(mut self) -> Self {
        self.request_id = text(&self.request_id);
        self.caller.id = text(&self.caller.id);
        self.caller.peer = text(&self.caller.peer);
        self.caller.roles = self
            .caller
            .roles
            .iter()
            .take(MAX_ITEMS)
            .map(|r| text(r))
            .collect();
        self.domain = text(&self.domain);
        self.summary = self.summary.map(value);
        self.extra = self.extra.map(value);
        for f in [&mut self.reason, &mut self.message, &mut self.plugin] {
            *f = f.as_deref().map(text);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_whole() {
        let v = json!({"path": "/etc/hosts", "args": ["a", "b"], "n": 3});
        assert_eq!(value(v.clone()), v);
    }

    #[test]
    fn long_strings_keep_a_prefix_their_length_and_digest() {
        let long = "x".repeat(10_000);
        let cut = string(&long);
        assert_eq!(cut["len"], 10_000);
        assert_eq!(cut["cut"].as_str().unwrap().len(), PREFIX);
        assert_eq!(cut["sha256"], hex(long.as_bytes()));
        // Control characters: a short string of them is cut too (6 bytes each escaped).
        let ctl = "\u{1}".repeat(100);
        let cut = string(&ctl);
        assert!(cut.is_object(), "{cut}");
        assert!(cut.to_string().len() < 300, "{cut}");
    }

    #[test]
    fn long_lists_and_deep_nesting_are_cut() {
        let args: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        let v = value(json!({ "args": args }));
        let kept = v["args"].as_array().unwrap();
        assert_eq!(kept.len(), MAX_ITEMS + 1);
        assert_eq!(kept[MAX_ITEMS]["cut_items"], 10_000);
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(value(deep).to_string().len() < 200);
    }

    #[test]
    fn a_record_is_bounded_whatever_the_caller_sends() {
        let caller = super::super::Caller {
            id: "anonymous".into(),
            auth: crate::caller::AuthMethod::None,
            roles: vec![],
            peer: "127.0.0.1:1".into(),
        };
        let mut e = AuditEntry::new(
            super::super::EntryKind::Decision,
            "r".into(),
            caller,
            "ReadFile",
            &"\u{1}".repeat(512),
        );
        let huge: Vec<String> = (0..1000).map(|_| "\u{7}".repeat(4096)).collect();
        e.summary = Some(json!({ "exec": { "args": huge, "path": "\u{1}".repeat(1 << 20) } }));
        e.reason = Some(format!("path {} is not allowed", "\u{2}".repeat(1 << 16)));
        let line = serde_json::to_string(&e.bounded()).unwrap();
        assert!(line.len() < 16 * 1024, "{} bytes", line.len());
    }
}
