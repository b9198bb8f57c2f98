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
        let map = req.to_dynamic();
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
                        limits.tighten(pd.timeout_ms, pd.max_bytes);
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
        let map = req.to_dynamic();
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
        with_deadline(|| engine.call_fn::<Dynamic>(&mut Scope::new(), ast, hook, args))
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
