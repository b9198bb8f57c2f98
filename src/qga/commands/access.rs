//! Access to the guest: a user's password and `~/.ssh/authorized_keys`.
//!
//! On Linux, `guest-set-user-password` runs the guest's `chpasswd`, and the SSH key
//! commands edit `~user/.ssh/authorized_keys` directly (creating `~/.ssh` when adding).
//! qemu-ga checks SSH keys only loosely, so callers should validate them first.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use super::Empty;
use crate::qga::Command;

/// `guest-set-user-password`: set a guest user's password.
///
/// Built by [`GuestSetUserPassword::plain`] or [`GuestSetUserPassword::crypted`], which
/// base64-encode the secret as the agent requires. `Debug` never shows it.
#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct GuestSetUserPassword {
    username: String,
    password: String,
    crypted: bool,
}

impl GuestSetUserPassword {
    /// Sets `username`'s password to the clear-text `password`.
    pub fn plain(username: impl Into<String>, password: &str) -> Self {
        Self {
            username: username.into(),
            password: STANDARD.encode(password),
            crypted: false,
        }
    }

    /// Sets `username`'s password hash to `hash`, already in the guest's crypt(3) format
    /// (e.g. `$6$...`); not every guest OS accepts this.
    pub fn crypted(username: impl Into<String>, hash: &str) -> Self {
        Self {
            username: username.into(),
            password: STANDARD.encode(hash),
            crypted: true,
        }
    }

    /// The account whose password is set.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether the secret is a crypt(3) hash rather than clear text.
    pub fn is_crypted(&self) -> bool {
        self.crypted
    }
}

impl fmt::Debug for GuestSetUserPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestSetUserPassword")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("crypted", &self.crypted)
            .finish()
    }
}

impl Command for GuestSetUserPassword {
    const NAME: &'static str = "guest-set-user-password";
    type Reply = Empty;
}

/// `guest-ssh-get-authorized-keys`: the keys in a user's `~/.ssh/authorized_keys`.
///
/// Fails when the file does not exist (qemu-ga 7.2: "failed to read ...").
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GuestSshGetAuthorizedKeys {
    /// The guest user.
    pub username: String,
}

/// What `guest-ssh-get-authorized-keys` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AuthorizedKeys {
    /// Keys in authorized_keys format, one per entry (comments and blank lines dropped).
    /// The order is not the file's: qemu-ga 7.2 lists the last line first.
    pub keys: Vec<String>,
}

impl Command for GuestSshGetAuthorizedKeys {
    const NAME: &'static str = "guest-ssh-get-authorized-keys";
    type Reply = AuthorizedKeys;
}

/// `guest-ssh-add-authorized-keys`: append keys to a user's `~/.ssh/authorized_keys`
/// (keys already present are not duplicated).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GuestSshAddAuthorizedKeys {
    /// The guest user.
    pub username: String,
    /// Keys in authorized_keys format.
    pub keys: Vec<String>,
    /// Replace the file's content with `keys` instead of appending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
}

impl Command for GuestSshAddAuthorizedKeys {
    const NAME: &'static str = "guest-ssh-add-authorized-keys";
    type Reply = Empty;
}

/// `guest-ssh-remove-authorized-keys`: remove keys from a user's
/// `~/.ssh/authorized_keys`; keys that are not there are not an error.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GuestSshRemoveAuthorizedKeys {
    /// The guest user.
    pub username: String,
    /// Keys in authorized_keys format.
    pub keys: Vec<String>,
}

impl Command for GuestSshRemoveAuthorizedKeys {
    const NAME: &'static str = "guest-ssh-remove-authorized-keys";
    type Reply = Empty;
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0ZlJ9mU4rA0yQqvK1yqg7ZQ3Vq8fQx0bqG2bqKxJq t@atp";

    fn args<C: Command>(cmd: &C) -> String {
        serde_json::to_string(cmd).unwrap()
    }

    #[test]
    fn password_is_base64_on_the_wire_and_never_in_debug() {
        let cmd = GuestSetUserPassword::plain("root", "s3cr\u{e9}t!");
        assert_eq!(
            args(&cmd),
            r#"{"username":"root","password":"czNjcsOpdCE=","crypted":false}"#
        );
        let dbg = format!("{cmd:?}");
        assert!(!dbg.contains("s3cr"), "{dbg}");
        assert!(!dbg.contains("czNjcsOpdCE="), "{dbg}");
        assert!(dbg.contains("root") && dbg.contains("<redacted>"), "{dbg}");
        assert_eq!(cmd.username(), "root");
        assert!(!cmd.is_crypted());

        let cmd = GuestSetUserPassword::crypted("alice", "$6$salt$hash");
        assert_eq!(
            args(&cmd),
            r#"{"username":"alice","password":"JDYkc2FsdCRoYXNo","crypted":true}"#
        );
        assert!(!format!("{cmd:#?}").contains("JDYk"));
    }

    #[test]
    fn encodes_ssh_key_commands() {
        let get = GuestSshGetAuthorizedKeys {
            username: "root".into(),
        };
        assert_eq!(args(&get), r#"{"username":"root"}"#);
        let add = GuestSshAddAuthorizedKeys {
            username: "root".into(),
            keys: vec![KEY.into()],
            reset: None,
        };
        assert_eq!(
            args(&add),
            format!(r#"{{"username":"root","keys":["{KEY}"]}}"#)
        );
        let add = GuestSshAddAuthorizedKeys {
            reset: Some(true),
            ..add
        };
        assert!(args(&add).ends_with(r#","reset":true}"#));
        let rm = GuestSshRemoveAuthorizedKeys {
            username: "root".into(),
            keys: vec![KEY.into()],
        };
        assert_eq!(
            args(&rm),
            format!(r#"{{"username":"root","keys":["{KEY}"]}}"#)
        );
    }

    #[test]
    fn decodes_authorized_keys() {
        // qemu-ga 7.2, after one guest-ssh-add-authorized-keys.
        let keys: AuthorizedKeys =
            serde_json::from_str(&format!(r#"{{"keys": ["{KEY}"]}}"#)).unwrap();
        assert_eq!(keys.keys, vec![KEY.to_owned()]);
        let none: AuthorizedKeys = serde_json::from_str(r#"{"keys": []}"#).unwrap();
        assert!(none.keys.is_empty());
    }
}
