//! Validation of the authentication keys: TLS files, token digests, and the rule that a
//! non-loopback TCP listener needs callers to authenticate — mTLS (`client_ca`) or
//! tokens — unless `insecure = true`. TLS alone encrypts but identifies nobody.

use std::path::{Path, PathBuf};

use super::{ConfigError, Listen, invalid, raw};

/// TLS material for TCP listeners, read and checked at load time.
#[derive(Clone)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Server key, PEM.
    pub key_pem: Vec<u8>,
    /// Client CA, PEM; clients must present a certificate signed by it.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Where the certificate came from (for messages).
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_path", &self.cert_path)
            .field("mtls", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// An accepted bearer token: its SHA-256, and who presenting it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Caller identity.
    pub identity: String,
    /// Caller roles.
    pub roles: Vec<String>,
}

pub(super) fn tls(t: raw::RawTls, base: &Path) -> Result<TlsConfig, ConfigError> {
    let read = |key: &str, p: &str| {
        let path = base.join(p);
        std::fs::read(&path).map_err(|e| invalid(key, p, &format!("cannot read: {e}")))
    };
    let cert_pem = read("server.tls.cert", &t.cert)?;
    let key_pem = read("server.tls.key", &t.key)?;
    let client_ca_pem = t
        .client_ca
        .as_deref()
        .map(|p| read("server.tls.client_ca", p))
        .transpose()?;
    for (key, pem) in [("server.tls.cert", &cert_pem), ("server.tls.key", &key_pem)] {
        if !pem.starts_with(b"-----BEGIN") {
            return Err(invalid(key, "(file)", "not PEM"));
        }
    }
    Ok(TlsConfig {
        cert_pem,
        key_pem,
        client_ca_pem,
        cert_path: base.join(t.cert),
    })
}

pub(super) fn tokens(raw: Vec<raw::RawToken>) -> Result<Vec<TokenEntry>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, t)| {
            let key = format!("server.tokens[{i}].sha256");
            let bytes = hex_decode(&t.sha256).ok_or_else(|| {
                invalid(
                    &key,
                    &t.sha256,
                    "expected 64 hex digits (sha256 of the token)",
                )
            })?;
            if t.identity.is_empty() {
                return Err(invalid(
                    &format!("server.tokens[{i}].identity"),
                    "",
                    "must not be empty",
                ));
            }
            Ok(TokenEntry {
                sha256: bytes,
                identity: t.identity,
                roles: t.roles,
            })
        })
        .collect()
}

/// Refuses listener layouts that admit callers nobody identified. A TCP caller is
/// anonymous unless it presents a token or a client certificate; anonymous TCP callers
/// are admitted only with `server.insecure = true`, and never without `[policy]` (every
/// admitted request would then be allowed: root in every guest for anyone who can
/// connect, loopback included, since any local user or process can).
pub(super) fn check_exposure(
    listen: &[Listen],
    mtls: bool,
    tokens: bool,
    insecure: bool,
    policy: bool,
) -> Result<(), ConfigError> {
    for (i, l) in listen.iter().enumerate() {
        if !matches!(l, Listen::Tcp(_)) || mtls || tokens {
            continue;
        }
        let key = format!("server.listen[{i}]");
        if !insecure {
            return Err(invalid(
                &key,
                &l.to_string(),
                "a TCP listener needs callers to authenticate: [[server.tokens]] or \
                 [server.tls] with client_ca (or `insecure = true` to admit anonymous callers)",
            ));
        }
        if !policy {
            return Err(invalid(
                &key,
                &l.to_string(),
                "anonymous TCP callers (`insecure = true`) need a [policy]: without one \
                 every request is allowed",
            ));
        }
    }
    Ok(())
}

fn hex_decode(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn exposure_rule() {
        let parse = |t: &str| Config::parse(t, Path::new("/"));
        for addr in ["0.0.0.0:5000", "127.0.0.1:5000"] {
            let e = parse(&format!("[server]\nlisten=[\"tcp://{addr}\"]"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("server.listen[0]") && e.contains("insecure"),
                "{e}"
            );
            // Anonymous callers without a policy would be allowed everything.
            let e = parse(&format!(
                "[server]\nlisten=[\"tcp://{addr}\"]\ninsecure=true"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("[policy]"), "{e}");
        }
        let dir = std::env::temp_dir();
        parse(&format!(
            "[server]\nlisten=[\"tcp://127.0.0.1:5000\"]\ninsecure=true\n[policy]\ndir={:?}",
            dir.display().to_string()
        ))
        .unwrap();
        parse("[server]\nlisten=[\"unix:///run/a.sock\"]").unwrap();
        let ok = format!(
            "[server]\nlisten=[\"tcp://0.0.0.0:5000\"]\n[[server.tokens]]\nsha256=\"{}\"\nidentity=\"ci\"\nroles=[\"ops\"]",
            "ab".repeat(32)
        );
        let c = parse(&ok).unwrap();
        assert_eq!(c.tokens[0].roles, vec!["ops".to_string()]);
        let bad =
            "[server]\nlisten=[\"unix:///a\"]\n[[server.tokens]]\nsha256=\"xyz\"\nidentity=\"ci\"";
        let e = parse(bad).unwrap_err().to_string();
        assert!(
            e.contains("server.tokens[0].sha256") && e.contains("xyz"),
            "{e}"
        );
    }
}
