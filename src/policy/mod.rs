//! Policy plugins in Rhai: every request is decided by the plugins of the policy
//! directory before anything reaches a guest.
//!
//! - [`engine`]: the sandboxed Rhai engine and its limits;
//! - [`request`]: the request map (`req.v == 1`) and path normalisation;
//! - [`plugin`]: loading a plugin set and evaluating it (any deny wins, else any allow,
//!   else the default; errors deny);
//! - [`tasks`]: named tasks with allowed parameter values;
//! - [`cases`]: `atp policy test` tables;
//! - [`PolicyEngine`]: the set in force, swapped atomically on reload.

pub mod agent_args;
pub mod cases;
pub mod engine;
pub mod path;
pub mod plugin;
pub mod reload;
pub mod request;
mod request_admin;
pub mod tasks;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;

use crate::sync::lock;
pub use plugin::PolicySet;
pub use request::PolicyRequest;

/// Why a policy set could not be loaded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The directory or a file could not be read.
    #[error("policy: {0}")]
    Io(String),
    /// A plugin does not compile, or its `tasks()` is malformed.
    #[error("policy plugin {plugin}: {message}")]
    Compile {
        /// The plugin (file name without `.rhai`).
        plugin: String,
        /// What is wrong, with the position.
        message: String,
    },
}

/// Limits an allowing plugin attached with `.with(#{ .. })`; the tightest wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Longest an exec (an interactive session included) may run.
    pub timeout_ms: Option<u64>,
    /// Most bytes a transfer or an exec's output may move.
    pub max_bytes: Option<u64>,
    /// Longest an interactive session may go without input.
    pub idle_timeout_ms: Option<u64>,
    /// An interactive session's recording keeps its input (any allowing plugin asks).
    pub record_input: bool,
    /// The user an exec runs as when its request names none (the first allowing plugin
    /// that sets one decides): a policy cannot rewrite the request, so it sets a default.
    pub run_as: Option<String>,
}

impl Limits {
    fn tighten(&mut self, d: &engine::PluginDecision) {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.timeout_ms = min(self.timeout_ms, d.timeout_ms);
        self.max_bytes = min(self.max_bytes, d.max_bytes);
        self.idle_timeout_ms = min(self.idle_timeout_ms, d.idle_timeout_ms);
        self.record_input |= d.record_input;
        if self.run_as.is_none() {
            self.run_as.clone_from(&d.run_as);
        }
    }
}

/// The outcome of policy evaluation for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allow: bool,
    /// The deciding plugin (`None` for the configured default).
    pub plugin: Option<String>,
    /// Why; shown to the caller on a deny and recorded in the audit log.
    pub reason: String,
    /// Limits the daemon enforces on an allowed request.
    pub limits: Limits,
}

impl Decision {
    fn deny(plugin: Option<&str>, reason: String) -> Self {
        Self {
            allow: false,
            plugin: plugin.map(str::to_owned),
            reason,
            limits: Limits::default(),
        }
    }
}

/// The plugin set in force. Evaluation reads a snapshot; reload swaps it atomically and,
/// when the new set fails to compile, keeps the old one and remembers the error.
#[derive(Debug)]
pub struct PolicyEngine {
    engine: Arc<rhai::Engine>,
    dir: PathBuf,
    default_allow: bool,
    settings: serde_json::Value,
    current: ArcSwap<PolicySet>,
    /// The last reload error, if the newest files do not compile. Short critical sections.
    last_error: Mutex<Option<PolicyError>>,
}

impl PolicyEngine {
    /// Loads `dir`; `settings` is handed to plugins as `req.settings`.
    pub fn load(
        dir: &Path,
        default_allow: bool,
        settings: serde_json::Value,
    ) -> Result<Self, PolicyError> {
        let engine = Arc::new(engine::build());
        let set = PolicySet::load(Arc::clone(&engine), dir, default_allow)?;
        Ok(Self {
            engine,
            dir: dir.to_owned(),
            default_allow,
            settings,
            current: ArcSwap::from_pointee(set),
            last_error: Mutex::new(None),
        })
    }

    /// Recompiles the directory and swaps the set in; on failure the previous set stays.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let res = PolicySet::load(Arc::clone(&self.engine), &self.dir, self.default_allow);
        let mut last = lock(&self.last_error);
        match res {
            Ok(set) => {
                let n = set.plugins().len();
                self.current.store(Arc::new(set));
                *last = None;
                metrics::counter!("atp_policy_reloads_total", "result" => "ok").increment(1);
                tracing::info!(plugins = n, dir = %self.dir.display(), "policy reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("atp_policy_reloads_total", "result" => "error").increment(1);
                tracing::error!(error = %e, "policy reload failed; the previous plugins stay in force");
                *last = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The error of the last failed reload, while it is not fixed.
    pub fn last_error(&self) -> Option<PolicyError> {
        lock(&self.last_error).clone()
    }

    /// The set in force.
    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `[policy] settings`, as plugins see them.
    pub fn settings(&self) -> &serde_json::Value {
        &self.settings
    }

    /// Decides `req` on the blocking pool (a plugin may take up to its deadline) and
    /// computes the audit hooks' extra fields.
    pub async fn evaluate(&self, req: PolicyRequest) -> (Decision, Option<serde_json::Value>) {
        let set = self.snapshot();
        let res = tokio::task::spawn_blocking(move || {
            let d = set.evaluate(&req);
            let extra = set.audit_fields(&req, &d);
            (d, extra)
        })
        .await;
        res.unwrap_or_else(|e| {
            (
                Decision::deny(None, format!("policy evaluation failed: {e}")),
                None,
            )
        })
    }
}
