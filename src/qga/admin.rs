//! Typed admin operations on an agent: file-system freeze and thaw, a user's password,
//! SSH authorized keys and the guest clock. Arguments are checked here, before anything
//! reaches the guest; secrets never appear in errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    AgentClient, QgaError,
    commands::{
        FsfreezeStatus, GuestFsfreezeFreeze, GuestFsfreezeFreezeList, GuestFsfreezeStatus,
        GuestFsfreezeThaw, GuestGetTime, GuestSetTime, GuestSetUserPassword,
        GuestSshAddAuthorizedKeys, GuestSshGetAuthorizedKeys, GuestSshRemoveAuthorizedKeys,
    },
    ssh_key::SshPublicKey,
};

/// Longest user name accepted (Linux allows 32; Windows 104 for a UPN prefix).
const MAX_USERNAME: usize = 256;

/// Checks a guest user name: non-empty, bounded, no control characters or `:`
/// (chpasswd's separator).
pub fn check_username(user: &str) -> Result<(), QgaError> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USERNAME
        && !user.chars().any(|c| c.is_control() || c == ':');
    if ok {
        Ok(())
    } else {
        Err(QgaError::InvalidArgument(format!(
            "user name must be 1..={MAX_USERNAME} bytes without control characters or ':'"
        )))
    }
}

/// Checks a password (or crypt(3) hash) without ever naming it: non-empty, at most
/// 1 KiB, no line breaks or NUL (chpasswd reads one `user:password` line).
pub fn check_password(secret: &str) -> Result<(), QgaError> {
    if secret.is_empty() || secret.len() > 1024 || secret.contains(['\n', '\r', '\0']) {
        return Err(QgaError::InvalidArgument(
            "password must be 1..=1024 bytes without line breaks or NUL".into(),
        ));
    }
    Ok(())
}

impl AgentClient {
    /// `guest-fsfreeze-freeze`, or `-freeze-list` for some `mountpoints`: returns how many
    /// file systems were frozen. While frozen the agent answers only ping, info, sync and
    /// the fsfreeze status and thaw commands; Linux never thaws by itself.
    pub async fn fsfreeze(
        &self,
        mountpoints: &[String],
        timeout: Duration,
    ) -> Result<i64, QgaError> {
        if mountpoints.is_empty() {
            self.call_with_timeout(&GuestFsfreezeFreeze, timeout).await
        } else {
            let cmd = GuestFsfreezeFreezeList {
                mountpoints: Some(mountpoints.to_vec()),
            };
            self.call_with_timeout(&cmd, timeout).await
        }
    }

    /// `guest-fsfreeze-thaw`: how many file systems were thawed.
    pub async fn fsthaw(&self) -> Result<i64, QgaError> {
        self.call(&GuestFsfreezeThaw).await
    }

    /// `guest-fsfreeze-status`.
    pub async fn fsfreeze_status(&self) -> Result<FsfreezeStatus, QgaError> {
        self.call(&GuestFsfreezeStatus).await
    }

    /// `guest-set-user-password` for `user`: `secret` is clear text, or a crypt(3) hash
    /// when `crypted`. Needs `chpasswd` in a Linux guest.
    pub async fn set_user_password(
        &self,
        user: &str,
        secret: &str,
        crypted: bool,
    ) -> Result<(), QgaError> {
        check_username(user)?;
        check_password(secret)?;
        let cmd = if crypted {
            GuestSetUserPassword::crypted(user, secret)
        } else {
            GuestSetUserPassword::plain(user, secret)
        };
        self.call(&cmd).await.map(drop)
    }

    /// `guest-ssh-get-authorized-keys`: `user`'s keys (qemu-ga ≥ 5.2; fails when the user
    /// has no `authorized_keys`).
    pub async fn authorized_keys(&self, user: &str) -> Result<Vec<String>, QgaError> {
        check_username(user)?;
        let cmd = GuestSshGetAuthorizedKeys {
            username: user.to_owned(),
        };
        Ok(self.call(&cmd).await?.keys)
    }

    /// `guest-ssh-add-authorized-keys`: appends `keys` (or replaces the file's keys with
    /// them when `reset`), creating `~user/.ssh` when needed.
    pub async fn add_authorized_keys(
        &self,
        user: &str,
        keys: &[SshPublicKey],
        reset: bool,
    ) -> Result<(), QgaError> {
        check_username(user)?;
        let cmd = GuestSshAddAuthorizedKeys {
            username: user.to_owned(),
            keys: keys.iter().map(|k| k.line().to_owned()).collect(),
            reset: reset.then_some(true),
        };
        self.call(&cmd).await.map(drop)
    }

    /// `guest-ssh-remove-authorized-keys`.
    pub async fn remove_authorized_keys(
        &self,
        user: &str,
        keys: &[SshPublicKey],
    ) -> Result<(), QgaError> {
        check_username(user)?;
        let cmd = GuestSshRemoveAuthorizedKeys {
            username: user.to_owned(),
            keys: keys.iter().map(|k| k.line().to_owned()).collect(),
        };
        self.call(&cmd).await.map(drop)
    }

    /// `guest-get-time`: the guest clock, in nanoseconds since the Unix epoch.
    pub async fn guest_time(&self) -> Result<i64, QgaError> {
        self.call(&GuestGetTime).await
    }

    /// `guest-set-time` to `time` (and the guest's RTC with it); returns the nanoseconds
    /// since the Unix epoch that were set. Needs `/sbin/hwclock` in a Linux guest.
    pub async fn set_guest_time(&self, time: SystemTime) -> Result<i64, QgaError> {
        let ns = time
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| QgaError::InvalidArgument("time out of range".into()))?;
        self.call(&GuestSetTime { time: Some(ns) }).await?;
        Ok(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_and_passwords_are_checked_without_echoing_them() {
        check_username("root").unwrap();
        for bad in ["", "a:b", "a\nb", &"x".repeat(MAX_USERNAME + 1)] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        check_password("s3cr\u{e9}t").unwrap();
        for bad in ["", "hunter2\nroot:x", "nul\0byte"] {
            let e = check_password(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("nul"), "{e}");
        }
    }
}
