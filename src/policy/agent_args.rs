//! What policies and the audit log see of a raw `AgentCommand`'s arguments: everything
//! except the secrets and bulk data some agent commands carry, which are replaced by
//! their size (`{"redacted": true, "len": N}`, N in bytes of the JSON string):
//! passwords (`guest-set-user-password`), stdin and environment values (`guest-exec`:
//! `input-data`, the value part of each `env` entry), file contents
//! (`guest-file-write`: `buf-b64`), and SSH keys (`guest-ssh-*-authorized-keys`: each key
//! becomes its OpenSSH SHA256 fingerprint). Any member named like a secret (`password`,
//! `passwd`, `secret`, `token`, `private`), at any depth, of any command, is redacted too.

use base64::{Engine as _, engine::general_purpose};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Member names whose values are always redacted, whatever the command.
const SECRET_NAMES: &[&str] = &["password", "passwd", "secret", "token", "private"];

fn redacted(v: &Value) -> Value {
    let len = match v {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    };
    json!({ "redacted": true, "len": len })
}

/// `SHA256:<base64>` of an OpenSSH public key line, or its size when it is not one.
fn fingerprint(key: &Value) -> Value {
    let blob = key
        .as_str()
        .and_then(|k| k.split_whitespace().nth(1))
        .and_then(|b| general_purpose::STANDARD.decode(b).ok());
    match blob {
        Some(b) => Value::String(format!(
            "SHA256:{}",
            general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&b))
        )),
        None => redacted(key),
    }
}

fn redact_names(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                let lower = k.to_ascii_lowercase();
                if SECRET_NAMES.iter().any(|s| lower.contains(s)) {
                    *val = redacted(val);
                } else {
                    redact_names(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_names),
        _ => {}
    }
}

/// The arguments of `command` as policies and the audit log may see them.
pub fn redact(command: &str, mut args: Value) -> Value {
    if let Some(m) = args.as_object_mut() {
        for (name, val) in m.iter_mut() {
            match (command, name.as_str()) {
                ("guest-exec", "input-data") | ("guest-file-write", "buf-b64") => {
                    *val = redacted(val);
                }
                ("guest-exec", "env") => {
                    if let Some(entries) = val.as_array_mut() {
                        for e in entries {
                            let text = e.as_str().unwrap_or_default();
                            let (key, value) = text.split_once('=').unwrap_or((text, ""));
                            *e = Value::String(format!("{key}=<{} bytes redacted>", value.len()));
                        }
                    }
                }
                (c, "keys") if c.starts_with("guest-ssh-") => {
                    if let Some(keys) = val.as_array_mut() {
                        keys.iter_mut().for_each(|k| *k = fingerprint(k));
                    }
                }
                _ => {}
            }
        }
    }
    redact_names(&mut args);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_keep_their_names_and_sizes_only() {
        let exec = redact(
            "guest-exec",
            json!({"path": "/bin/sh", "arg": ["-c", "id"], "env": ["A=topsecret", "B"],
                   "input-data": "c2VjcmV0"}),
        );
        assert_eq!(exec["path"], "/bin/sh");
        assert_eq!(
            exec["env"],
            json!(["A=<9 bytes redacted>", "B=<0 bytes redacted>"])
        );
        assert_eq!(exec["input-data"], json!({"redacted": true, "len": 8}));
        let w = redact("guest-file-write", json!({"handle": 3, "buf-b64": "QUJD"}));
        assert_eq!(
            w,
            json!({"handle": 3, "buf-b64": {"redacted": true, "len": 4}})
        );
        let p = redact(
            "guest-set-user-password",
            json!({"username": "root", "password": "aHVudGVyMg==", "crypted": false}),
        );
        assert_eq!(p["username"], "root");
        assert_eq!(p["password"], json!({"redacted": true, "len": 12}));
        let nested = redact("x-custom", json!({"a": [{"db_Password": "p"}]}));
        assert_eq!(nested["a"][0]["db_Password"]["redacted"], true);
        assert!(!nested.to_string().contains("\"p\""));
    }

    #[test]
    fn ssh_keys_become_fingerprints() {
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";
        let v = redact(
            "guest-ssh-add-authorized-keys",
            json!({"username": "root", "keys": [k, "junk"]}),
        );
        let fp = v["keys"][0].as_str().unwrap();
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
        assert_eq!(v["keys"][1], json!({"redacted": true, "len": 4}));
        assert!(!v.to_string().contains("AAAAC3"));
    }
}
