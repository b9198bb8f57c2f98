//! OpenSSH public keys as `authorized_keys` takes them: checked before they reach the
//! guest (qemu-ga checks them only loosely) and named by their `SHA256:` fingerprint,
//! which is what policies and the audit log see instead of the key.

use base64::{
    Engine as _, engine::general_purpose::STANDARD, engine::general_purpose::STANDARD_NO_PAD,
};
use sha2::{Digest, Sha256};

use super::QgaError;

/// Longest key line accepted: an RSA-16384 key with options and a comment fits.
pub const MAX_KEY_LEN: usize = 16 * 1024;

/// Most keys one request may carry.
pub const MAX_KEYS: usize = 64;

/// One `authorized_keys` line, validated: no line breaks or NUL, at most [`MAX_KEY_LEN`]
/// bytes, and a key type followed by base64 whose blob names that same type.
#[derive(Clone, PartialEq, Eq)]
pub struct SshPublicKey {
    line: String,
    fingerprint: String,
}

impl SshPublicKey {
    /// Checks `line` (options before the key type and a comment after are allowed).
    pub fn parse(line: &str) -> Result<Self, QgaError> {
        let bad = |why: &str| Err(QgaError::InvalidArgument(format!("SSH key: {why}")));
        let line = line.trim();
        if line.is_empty() {
            return bad("empty");
        }
        if line.len() > MAX_KEY_LEN {
            return bad(&format!("longer than {MAX_KEY_LEN} bytes"));
        }
        if line.contains(['\n', '\r', '\0']) {
            return bad("contains a line break or NUL (one key per entry)");
        }
        if line.starts_with('#') {
            return bad("a comment, not a key");
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for pair in tokens.windows(2) {
            if let Some(fp) = fingerprint_of(pair[0], pair[1]) {
                return Ok(Self {
                    line: line.to_owned(),
                    fingerprint: fp,
                });
            }
        }
        bad("no key type followed by a valid base64 key blob of that type")
    }

    /// Checks every key of a request (at most [`MAX_KEYS`], at least one).
    pub fn parse_all(lines: &[String]) -> Result<Vec<Self>, QgaError> {
        if lines.is_empty() {
            return Err(QgaError::InvalidArgument("no SSH key given".into()));
        }
        if lines.len() > MAX_KEYS {
            return Err(QgaError::InvalidArgument(format!(
                "at most {MAX_KEYS} SSH keys per request"
            )));
        }
        lines.iter().map(|l| Self::parse(l)).collect()
    }

    /// The line as given (trimmed).
    pub fn line(&self) -> &str {
        &self.line
    }

    /// `SHA256:<base64, no padding>` of the key blob, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl std::fmt::Debug for SshPublicKey {
    /// Only the fingerprint: keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SshPublicKey")
            .field(&self.fingerprint)
            .finish()
    }
}

/// The fingerprint of a line's key, or `None` when it has none (for listing keys).
pub fn fingerprint(line: &str) -> Option<String> {
    SshPublicKey::parse(line).ok().map(|k| k.fingerprint)
}

/// The fingerprint when `kind` is a key type and `b64` a blob that starts with it.
fn fingerprint_of(kind: &str, b64: &str) -> Option<String> {
    let known = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-sha2-");
    if !known {
        return None;
    }
    let blob = STANDARD.decode(b64).ok()?;
    // The blob starts with the type as an SSH string: a u32 length, then the name.
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    if blob.get(4..4 + len)? != kind.as_bytes() {
        return None;
    }
    Some(format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(&blob))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ed25519 key; `ssh-keygen -lf` prints the fingerprint asserted below.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";

    #[test]
    fn valid_keys_get_their_openssh_fingerprint() {
        let k = SshPublicKey::parse(KEY).unwrap();
        assert_eq!(
            k.fingerprint(),
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
        let with_opts = SshPublicKey::parse(&format!("from=\"10.0.0.1\",no-pty {KEY}")).unwrap();
        assert_eq!(with_opts.fingerprint(), k.fingerprint());
        assert!(!format!("{k:?}").contains("AAAA"));
        assert_eq!(fingerprint(KEY).as_deref(), Some(k.fingerprint()));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "   ",
            "# a comment",
            "ssh-ed25519",
            "ssh-ed25519 not*base64",
            // A blob of another type than the line says.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        ] {
            assert!(SshPublicKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SshPublicKey::parse(&format!("{KEY}\nssh-rsa AAAA")).is_err());
        assert!(SshPublicKey::parse(&format!("{KEY} {}", "x".repeat(MAX_KEY_LEN))).is_err());
        assert!(SshPublicKey::parse_all(&[]).is_err());
        assert!(SshPublicKey::parse_all(&vec![KEY.to_owned(); MAX_KEYS + 1]).is_err());
        assert_eq!(SshPublicKey::parse_all(&[KEY.to_owned()]).unwrap().len(), 1);
    }
}
