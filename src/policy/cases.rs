//! `atp policy test DIR CASES.toml`: a table of requests and the decision each must get.
//!
//! ```toml
//! [settings]                      # optional: req.settings for every case
//! read_paths = ["/etc/", "/var/log/"]
//!
//! [[case]]
//! name = "ops may check a unit"
//! expect = "allow"                # or "deny"
//! plugin = "30-role-exec"         # optional: the deciding plugin ("" = the default)
//! [case.request]
//! rpc = "Exec"
//! caller = { id = "alice", auth = "token", roles = ["ops"] }
//! domain = { name = "web-01" }
//! exec = { path = "systemctl", args = ["status", "nginx"] }
//! ```
//!
//! File paths are normalised exactly as the daemon does before the plugins run.

use serde::Deserialize;

use super::{
    PolicySet,
    request::{PolicyRequest, REQUEST_VERSION, normalize_path},
};

/// The CASES file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// `req.settings` for every case.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// The cases.
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

/// One row of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// `allow` or `deny`.
    pub expect: String,
    /// The deciding plugin, when it matters (`""` for the configured default).
    pub plugin: Option<String>,
    /// The request.
    pub request: PolicyRequest,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Whether it matched.
    pub passed: bool,
    /// What happened, in one line.
    pub detail: String,
}

/// Parses a CASES file.
pub fn parse(text: &str) -> Result<CaseFile, String> {
    let f: CaseFile = toml::from_str(text).map_err(|e| e.to_string())?;
    for c in &f.cases {
        if c.expect != "allow" && c.expect != "deny" {
            return Err(format!(
                "case {:?}: expect must be \"allow\" or \"deny\"",
                c.name
            ));
        }
    }
    Ok(f)
}

/// Runs every case against `set`.
pub fn run(set: &PolicySet, file: &CaseFile) -> Vec<CaseResult> {
    file.cases
        .iter()
        .map(|c| {
            let mut req = c.request.clone();
            req.v = REQUEST_VERSION;
            if req.settings.is_null() {
                req.settings = file.settings.clone();
            }
            if let Some(f) = req.file.as_mut() {
                f.path = normalize_path(&f.path);
            }
            if let Some(e) = req.exec.as_mut() {
                e.path = normalize_path(&e.path);
                e.cwd = normalize_path(&e.cwd);
            }
            let d = set.evaluate(&req);
            let got = if d.allow { "allow" } else { "deny" };
            let by = d.plugin.clone().unwrap_or_default();
            let plugin_ok = c.plugin.as_ref().is_none_or(|p| *p == by);
            let passed = got == c.expect && plugin_ok;
            let detail = format!(
                "expected {}{}, got {got} by {} ({})",
                c.expect,
                c.plugin
                    .as_ref()
                    .map(|p| format!(" by {}", if p.is_empty() { "default" } else { p }))
                    .unwrap_or_default(),
                if by.is_empty() { "default" } else { &by },
                d.reason
            );
            CaseResult {
                name: c.name.clone(),
                passed,
                detail,
            }
        })
        .collect()
}
