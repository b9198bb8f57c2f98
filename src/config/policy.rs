//! `[policy]`: the plugin directory, the default decision and the plugins' settings.

use std::path::{Path, PathBuf};

use super::{ConfigError, invalid, raw::RawPolicy};

/// A validated `[policy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// The plugin directory (checked to exist).
    pub dir: PathBuf,
    /// What happens when no plugin allows or denies.
    pub default_allow: bool,
    /// `req.settings` for plugins.
    pub settings: serde_json::Value,
}

/// Validates `[policy]`: the directory must exist; `default` is "deny" or "allow".
pub(super) fn policy(p: RawPolicy, base: &Path) -> Result<PolicyConfig, ConfigError> {
    let dir = base.join(&p.dir);
    if !dir.is_dir() {
        return Err(invalid("policy.dir", &p.dir, "not a directory"));
    }
    let default_allow = match p.default.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            return Err(invalid(
                "policy.default",
                other,
                "expected \"deny\" or \"allow\"",
            ));
        }
    };
    let settings = match p.settings {
        Some(t) => serde_json::to_value(t)
            .map_err(|e| invalid("policy.settings", "(table)", &e.to_string()))?,
        None => serde_json::Value::Null,
    };
    Ok(PolicyConfig {
        dir,
        default_allow,
        settings,
    })
}
