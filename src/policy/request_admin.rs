//! The request-map sections of the typed admin RPCs (`req.fsfreeze`, `req.account`).
//! They name what an admin operation does, never its secrets: a password is only
//! `password_given`, SSH keys only their fingerprints.

use serde::{Deserialize, Serialize};

/// `req.fsfreeze`: FsFreeze (FsThaw and FsFreezeStatus have no section).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FreezeInfo {
    /// Mount points asked for; empty means every freezable file system.
    pub mountpoints: Vec<String>,
    /// Seconds until the daemon thaws.
    pub thaw_deadline_s: i64,
}

/// `req.account`: SetUserPassword and the authorized-keys RPCs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AccountInfo {
    /// The guest user.
    pub username: String,
    /// SetUserPassword: always true (a password was given; its text is never here).
    pub password_given: bool,
    /// SetUserPassword: the secret is a crypt(3) hash.
    pub crypted: bool,
    /// Add/RemoveAuthorizedKeys: `SHA256:` fingerprints of the keys, in order.
    pub key_fingerprints: Vec<String>,
    /// AddAuthorizedKeys: the user's keys are replaced.
    pub reset: bool,
}
