//! A plugin set: every `*.rhai` file of the policy directory, in file-name order,
//! compiled once, with the hooks each defines and the tasks they declare.

use std::{
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::Arc,
};

use rhai::{AST, Dynamic, Engine, Map, Scope};

use super::{
    Decision, Limits, PolicyError,
    engine::{PluginDecision, with_deadline},
    request::PolicyRequest,
    tasks::TaskDef,
};

/// One compiled plugin.
#[derive(Debug)]
pub struct Plugin {
    /// File name without `.rhai`.
    pub name: String,
    ast: AST,
    /// Which hooks it defines: `authorize`, `audit`, `tasks`.
    pub hooks: Vec<&'static str>,
}

/// The plugins in force, immutable once loaded (reload builds a new set).
#[derive(Debug)]
pub struct PolicySet {
    engine: Arc<Engine>,
    plugins: Vec<Plugin>,
    tasks: BTreeMap<String, TaskDef>,
    default_allow: bool,
}

impl PolicySet {
    /// Compiles every `*.rhai` in `dir`; any failure names the plugin and position.
    pub fn load(engine: Arc<Engine>, dir: &Path, default_allow: bool) -> Result<Self, PolicyError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| PolicyError::Io(format!("{}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        files.sort();
        let mut plugins = Vec::new();
        let mut tasks = BTreeMap::new();
        for path in files {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let src = std::fs::read_to_string(&path)
                .map_err(|e| PolicyError::Io(format!("{}: {e}", path.display())))?;
            let ast = engine
                .compile(super::engine::rewrite_with(&src))
                .map_err(|e| PolicyError::Compile {
                    plugin: name.clone(),
                    message: e.to_string(),
                })?;
            let mut hooks = Vec::new();
            for f in ast.iter_functions() {
                match (f.name, f.params.len()) {
                    ("authorize", 1) => hooks.push("authorize"),
                    ("audit", 2) => hooks.push("audit"),
                    ("tasks", 0) => hooks.push("tasks"),
                    _ => {}
                }
            }
            let plugin = Plugin { name, ast, hooks };
            if plugin.hooks.contains(&"tasks") {
                for t in plugin_tasks(&engine, &plugin)? {
                    if let Some(other) = tasks.insert(t.name.clone(), t.clone()) {
                        return Err(PolicyError::Compile {
                            plugin: plugin.name.clone(),
                            message: format!(
                                "task {} is already defined by {}",
                                t.name, other.plugin
                            ),
                        });
                    }
                }
            }
            plugins.push(plugin);
        }
        Ok(Self {
            engine,
            plugins,
            tasks,
            default_allow,
        })
    }

    /// The plugins, in evaluation order.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// Every task, by name.
    pub fn tasks(&self) -> &BTreeMap<String, TaskDef> {
        &self.tasks
    }

    /// Decides `req`: any deny wins, else any allow, else the default. A plugin that
    /// errs, panics, hits a limit or returns something else denies (fail closed).
    pub fn evaluate(&self, req: &PolicyRequest) -> Decision {
        // One read-only map shared by every plugin: no per-plugin copy, and no plugin can
        // change what the next one sees (assigning to it is an error, which denies).
        let map = req.to_dynamic().into_read_only().into_shared();
        let mut allowed: Option<(String, String)> = None;
        let mut limits = Limits::default();
        for p in self
            .plugins
            .iter()
            .filter(|p| p.hooks.contains(&"authorize"))
        {
            let out = call(&self.engine, &p.ast, "authorize", (map.clone(),));
            match out {
                Err(e) => {
                    return Decision::deny(
                        Some(&p.name),
                        format!("plugin failed, request denied: {e}"),
                    );
                }
                Ok(d) if d.is_unit() => {}
                Ok(d) => match d.try_cast::<PluginDecision>() {
                    Some(pd) if !pd.allow => return Decision::deny(Some(&p.name), pd.reason),
                    Some(pd) => {
                        limits.tighten(&pd);
                        allowed.get_or_insert((p.name.clone(), pd.reason));
                    }
                    None => {
                        return Decision::deny(
                            Some(&p.name),
                            "authorize must return allow(..), deny(..) or () (request denied)"
                                .into(),
                        );
                    }
                },
            }
        }
        match allowed {
            Some((plugin, reason)) => Decision {
                allow: true,
                plugin: Some(plugin),
                reason,
                limits,
            },
            None if self.default_allow => Decision {
                allow: true,
                plugin: None,
                reason: "no plugin decided; default allow".into(),
                limits,
            },
            None => Decision::deny(None, "no plugin allowed this request (default deny)".into()),
        }
    }

    /// Extra audit fields from every plugin's `audit(req, decision)` hook; a failing hook
    /// is recorded as such, never fatal.
    pub fn audit_fields(&self, req: &PolicyRequest, d: &Decision) -> Option<serde_json::Value> {
        let mut out = serde_json::Map::new();
        let mut dm = Map::new();
        dm.insert("allowed".into(), d.allow.into());
        dm.insert("reason".into(), d.reason.clone().into());
        dm.insert("plugin".into(), d.plugin.clone().unwrap_or_default().into());
        let map = req.to_dynamic().into_read_only().into_shared();
        for p in self.plugins.iter().filter(|p| p.hooks.contains(&"audit")) {
            match call(
                &self.engine,
                &p.ast,
                "audit",
                (map.clone(), Dynamic::from_map(dm.clone())),
            ) {
                Ok(v) if v.is_unit() => {}
                Ok(v) => match rhai::serde::from_dynamic::<serde_json::Value>(&v) {
                    Ok(serde_json::Value::Object(m)) => out.extend(m),
                    _ => {
                        out.insert(
                            format!("{}.error", p.name),
                            "audit hook must return a map".into(),
                        );
                    }
                },
                Err(e) => {
                    out.insert(format!("{}.error", p.name), e.into());
                }
            }
        }
        (!out.is_empty()).then_some(serde_json::Value::Object(out))
    }
}

/// Calls a hook with the deadline armed, turning errors and panics into messages.
fn call(
    engine: &Engine,
    ast: &AST,
    hook: &str,
    args: impl rhai::FuncArgs,
) -> Result<Dynamic, String> {
    let res = catch_unwind(AssertUnwindSafe(|| {
        // Plugins are function definitions; their top level need not run on every call.
        let opts = rhai::CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(false);
        with_deadline(|| {
            engine.call_fn_with_options::<Dynamic>(opts, &mut Scope::new(), ast, hook, args)
        })
    }));
    match res {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{hook} panicked")),
    }
}

fn plugin_tasks(engine: &Engine, p: &Plugin) -> Result<Vec<TaskDef>, PolicyError> {
    let err = |message: String| PolicyError::Compile {
        plugin: p.name.clone(),
        message,
    };
    let v = call(engine, &p.ast, "tasks", ()).map_err(|e| err(format!("tasks(): {e}")))?;
    let m = v
        .try_cast::<Map>()
        .ok_or_else(|| err("tasks() must return a map".into()))?;
    m.iter()
        .map(|(name, def)| {
            TaskDef::parse(&p.name, name, def).map_err(|e| err(format!("task {name}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(plugins: &[(&str, &str)]) -> PolicySet {
        let dir = tempfile::tempdir().unwrap();
        for (name, src) in plugins {
            std::fs::write(dir.path().join(format!("{name}.rhai")), src).unwrap();
        }
        PolicySet::load(Arc::new(super::super::engine::build()), dir.path(), false).unwrap()
    }

    fn req(rpc: &str) -> PolicyRequest {
        PolicyRequest {
            v: 1,
            rpc: rpc.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plugin_cannot_change_what_the_next_one_sees() {
        let s = set(&[
            ("10-tamper", "fn authorize(req) { req.rpc = \"Ping\"; () }"),
            (
                "20-ping",
                "fn authorize(req) { if req.rpc == \"Ping\" { allow(\"ping\") } }",
            ),
        ]);
        let d = s.evaluate(&req("Exec"));
        assert!(!d.allow, "{d:?}");
        let untouched = set(&[(
            "20-ping",
            "fn authorize(req) { if req.rpc == \"Ping\" { allow(\"ping\") } }",
        )]);
        assert!(untouched.evaluate(&req("Ping")).allow);
    }

    #[test]
    fn deny_wins_allow_beats_default_and_limits_tighten() {
        let s = set(&[
            (
                "10-a",
                "fn authorize(req) { allow(\"a\").with(#{ timeout_ms: 5000, max_bytes: 10 }) }",
            ),
            (
                "20-b",
                "fn authorize(req) { allow(\"b\").with(#{ timeout_ms: 1000 }) }",
            ),
        ]);
        let d = s.evaluate(&req("Exec"));
        assert!(d.allow);
        assert_eq!(
            (d.limits.timeout_ms, d.limits.max_bytes),
            (Some(1000), Some(10))
        );
        assert_eq!(d.plugin.as_deref(), Some("10-a"));
        let s = set(&[
            ("10-a", "fn authorize(req) { allow(\"a\") }"),
            ("20-no", "fn authorize(req) { deny(\"no\") }"),
        ]);
        let d = s.evaluate(&req("Exec"));
        assert!(!d.allow && d.plugin.as_deref() == Some("20-no") && d.reason == "no");
        let s = set(&[("10-abstain", "fn authorize(req) { () }")]);
        assert!(!s.evaluate(&req("Exec")).allow);
    }

    #[test]
    fn run_as_comes_from_the_first_allowing_plugin_and_must_be_a_name() {
        let s = set(&[
            ("10-a", "fn authorize(req) { allow(\"a\") }"),
            (
                "20-b",
                "fn authorize(req) { allow(\"b\").with(#{ run_as: \"nobody\" }) }",
            ),
            (
                "30-c",
                "fn authorize(req) { allow(\"c\").with(#{ run_as: \"65534\" }) }",
            ),
        ]);
        let d = s.evaluate(&req("Exec"));
        assert_eq!(d.limits.run_as.as_deref(), Some("nobody"), "{d:?}");
        let bad = set(&[(
            "10-bad",
            "fn authorize(req) { allow(\"x\").with(#{ run_as: \"root;id\" }) }",
        )]);
        let d = bad.evaluate(&req("Exec"));
        assert!(!d.allow && d.reason.contains("run_as"), "{d:?}");
    }
}
