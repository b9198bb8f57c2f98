//! SetUserPassword and the authorized-keys RPCs. Policies and the audit log see the user
//! and, for a password, only that one was given; for keys, only their fingerprints.
//! The password lives in the request message only until it is encoded for the agent.

use std::fmt;

use tonic::Status;

use crate::{
    pb,
    policy::request::AccountInfo,
    qga::{SshPublicKey, ssh_key},
    server::{gate::Call, service::GuestAgentService, status::ApiError},
};

impl fmt::Debug for pb::SetUserPasswordRequest {
    /// Never the password (build.rs leaves this message without a derived `Debug`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetUserPasswordRequest")
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("crypted", &self.crypted)
            .finish()
    }
}

/// What policies see of a SetUserPassword request.
pub(crate) fn password_info(r: &pb::SetUserPasswordRequest) -> AccountInfo {
    AccountInfo {
        username: r.username.clone(),
        password_given: !r.password.is_empty(),
        crypted: r.crypted,
        ..AccountInfo::default()
    }
}

/// Checks `keys` before any policy sees them (they see the fingerprints).
pub(crate) fn parse_keys(keys: &[String]) -> Result<Vec<SshPublicKey>, Status> {
    SshPublicKey::parse_all(keys).map_err(|e| ApiError::InvalidArgument(e.to_string()).into())
}

/// What policies see of an authorized-keys request.
pub(crate) fn keys_info(username: &str, keys: &[SshPublicKey], reset: bool) -> AccountInfo {
    AccountInfo {
        username: username.to_owned(),
        key_fingerprints: keys.iter().map(|k| k.fingerprint().to_owned()).collect(),
        reset,
        ..AccountInfo::default()
    }
}

pub(crate) async fn set_password(
    s: &GuestAgentService,
    call: &Call,
    r: pb::SetUserPasswordRequest,
) -> Result<pb::SetUserPasswordResponse, Status> {
    let client = s.client(call).await?;
    client
        .set_user_password(&r.username, &r.password, r.crypted)
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::SetUserPasswordResponse {})
}

pub(crate) async fn get_keys(
    s: &GuestAgentService,
    call: &Call,
    r: pb::GetAuthorizedKeysRequest,
) -> Result<pb::GetAuthorizedKeysResponse, Status> {
    let client = s.client(call).await?;
    let keys = client
        .authorized_keys(&r.username)
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    let fingerprints = keys
        .iter()
        .map(|k| ssh_key::fingerprint(k).unwrap_or_default())
        .collect();
    Ok(pb::GetAuthorizedKeysResponse { keys, fingerprints })
}

pub(crate) async fn add_keys(
    s: &GuestAgentService,
    call: &Call,
    r: pb::AddAuthorizedKeysRequest,
) -> Result<pb::AddAuthorizedKeysResponse, Status> {
    let keys = parse_keys(&r.keys)?;
    let client = s.client(call).await?;
    client
        .add_authorized_keys(&r.username, &keys, r.reset)
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::AddAuthorizedKeysResponse {
        fingerprints: keys.iter().map(|k| k.fingerprint().to_owned()).collect(),
    })
}

pub(crate) async fn remove_keys(
    s: &GuestAgentService,
    call: &Call,
    r: pb::RemoveAuthorizedKeysRequest,
) -> Result<pb::RemoveAuthorizedKeysResponse, Status> {
    let keys = parse_keys(&r.keys)?;
    let client = s.client(call).await?;
    client
        .remove_authorized_keys(&r.username, &keys)
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    Ok(pb::RemoveAuthorizedKeysResponse {
        fingerprints: keys.iter().map(|k| k.fingerprint().to_owned()).collect(),
    })
}
