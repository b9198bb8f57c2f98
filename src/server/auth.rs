//! Who is calling: UNIX peer credentials, a bearer token (stored as SHA-256), or the
//! subject of a verified client certificate (mTLS). Runs as a tonic interceptor and puts
//! a [`Caller`] into each request's extensions.

use std::{collections::HashMap, sync::Arc};

use sha2::{Digest, Sha256};
use tonic::{Request, Status, transport::server::UdsConnectInfo};

use super::status::ApiError;
use crate::config::TokenEntry;

pub use crate::caller::{AuthMethod, Caller};

/// Authenticates requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Arc<Vec<TokenEntry>>,
    /// Roles of local users on UNIX listeners, by uid.
    unix_roles: Arc<HashMap<u32, Vec<String>>>,
    /// TCP callers must present a token or certificate.
    require_tcp_auth: bool,
}

impl Authenticator {
    /// An authenticator for the configured tokens; TCP callers must authenticate when
    /// tokens or mTLS are configured.
    pub fn new(tokens: Vec<TokenEntry>, mtls: bool) -> Self {
        Self::with_unix_roles(tokens, mtls, HashMap::new())
    }

    /// [`Authenticator::new`], with roles for local users on the UNIX listeners.
    pub fn with_unix_roles(
        tokens: Vec<TokenEntry>,
        mtls: bool,
        unix_roles: HashMap<u32, Vec<String>>,
    ) -> Self {
        let require_tcp_auth = !tokens.is_empty() || mtls;
        Self {
            unix_roles: Arc::new(unix_roles),
            tokens: Arc::new(tokens),
            require_tcp_auth,
        }
    }

    /// Establishes the caller of `req`.
    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let unix = req.extensions().get::<UdsConnectInfo>();
        let peer = match (unix, req.remote_addr()) {
            (Some(u), _) => u.peer_cred.map_or_else(
                || "unix".to_owned(),
                |c| format!("unix:pid={}", c.pid().unwrap_or(0)),
            ),
            (None, Some(a)) => a.to_string(),
            (None, None) => "unknown".to_owned(),
        };
        if let Some(value) = req.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthenticated("authorization must be `Bearer <token>`"))?;
            let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            let entry = self
                .tokens
                .iter()
                .find(|t| t.sha256 == digest)
                .ok_or_else(|| unauthenticated("unknown bearer token"))?;
            return Ok(Caller {
                id: entry.identity.clone(),
                auth: AuthMethod::Token,
                roles: entry.roles.clone(),
                peer,
            });
        }
        if let Some(u) = unix {
            let uid = u.peer_cred.map(|c| c.uid());
            return Ok(Caller {
                id: uid.map_or_else(|| "unix:unknown".to_owned(), |u| format!("uid:{u}")),
                auth: AuthMethod::Unix,
                roles: uid
                    .and_then(|u| self.unix_roles.get(&u).cloned())
                    .unwrap_or_default(),
                peer,
            });
        }
        if let Some(certs) = req.peer_certs()
            && let Some(leaf) = certs.first()
        {
            return Ok(Caller {
                id: cert_identity(leaf.as_ref())?,
                auth: AuthMethod::Mtls,
                roles: Vec::new(),
                peer,
            });
        }
        if self.require_tcp_auth {
            return Err(unauthenticated(
                "this daemon requires a bearer token (authorization: Bearer <token>) or a client certificate",
            ));
        }
        Ok(Caller {
            id: "anonymous".into(),
            auth: AuthMethod::None,
            roles: Vec::new(),
            peer,
        })
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.authenticate(&req)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// The certificate's subject common name, else its first DNS name.
fn cert_identity(der: &[u8]) -> Result<String, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| unauthenticated("unreadable client certificate"))?;
    if let Some(cn) = cert.subject().iter_common_name().next()
        && let Ok(s) = cn.as_str()
    {
        return Ok(s.to_owned());
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                return Ok((*d).to_owned());
            }
        }
    }
    Err(unauthenticated("client certificate names no subject"))
}

/// The caller the interceptor attached to a request.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| unauthenticated("request was not authenticated"))
}

/// UNAUTHENTICATED with its reason (through [`super::status`], like every status).
fn unauthenticated(message: &str) -> Status {
    ApiError::Unauthenticated(message.to_owned()).into()
}
