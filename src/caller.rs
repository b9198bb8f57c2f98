//! Who made a request: one type for the gate, the policy request map and the audit
//! records, so the three always agree on what a caller is.

use serde::{Deserialize, Serialize};

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// Peer credentials of a UNIX-socket connection.
    Unix,
    /// A configured bearer token.
    Token,
    /// A client certificate verified against `server.tls.client_ca`.
    Mtls,
    /// Nothing: a loopback (or `insecure`) TCP caller when no authentication is configured.
    #[default]
    None,
}

impl AuthMethod {
    /// Lower-case name, as policies and audit records see it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Unix => "unix",
            AuthMethod::Token => "token",
            AuthMethod::Mtls => "mtls",
            AuthMethod::None => "none",
        }
    }
}

/// The authenticated caller of one request (`req.caller` for policies, `caller` in audit
/// records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Caller {
    /// `uid:N`, a token's identity, a certificate's common name, or `anonymous`.
    pub id: String,
    /// How `id` was established.
    pub auth: AuthMethod,
    /// Roles (from the token entry).
    pub roles: Vec<String>,
    /// The peer address, for logs and audit.
    pub peer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_policies_and_audit_records_spell_it() {
        for m in [
            AuthMethod::Unix,
            AuthMethod::Token,
            AuthMethod::Mtls,
            AuthMethod::None,
        ] {
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json, serde_json::json!(m.as_str()));
            assert_eq!(serde_json::from_value::<AuthMethod>(json).unwrap(), m);
        }
        let c = Caller {
            id: "alice".into(),
            auth: AuthMethod::Token,
            roles: vec!["ops".into()],
            peer: "127.0.0.1:1".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"id": "alice", "auth": "token", "roles": ["ops"], "peer": "127.0.0.1:1"})
        );
    }
}
