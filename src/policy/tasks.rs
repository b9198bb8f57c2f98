//! Named tasks defined by plugins' `tasks()` hooks: a fixed argv with `{param}`
//! placeholders, each parameter restricted to listed values. A placeholder must be a
//! whole argv element, so a value is always one argument and never spliced into a
//! string a shell would parse.

use std::collections::BTreeMap;

use rhai::{Dynamic, Map};

/// A task as a plugin defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDef {
    /// Task name (the key in the `tasks()` map).
    pub name: String,
    /// What it does, for `ListTasks`.
    pub description: String,
    /// The plugin that defines it.
    pub plugin: String,
    /// Program and arguments; an element `{p}` is replaced by parameter `p`.
    pub argv: Vec<String>,
    /// Parameters and their allowed values (all parameters are required).
    pub params: BTreeMap<String, Vec<String>>,
}

impl TaskDef {
    /// Parses one entry of a `tasks()` map: `#{ description, argv: [..], params: #{ p: [..] } }`.
    pub fn parse(plugin: &str, name: &str, v: &Dynamic) -> Result<Self, String> {
        let m = v.clone().try_cast::<Map>().ok_or("a task must be a map")?;
        let description = m
            .get("description")
            .and_then(|d| d.clone().into_string().ok())
            .unwrap_or_default();
        let argv: Vec<String> = m
            .get("argv")
            .and_then(|a| a.clone().try_cast::<rhai::Array>())
            .ok_or("a task needs `argv`, an array of strings")?
            .into_iter()
            .map(|s| {
                s.into_string()
                    .map_err(|t| format!("argv element of type {t}"))
            })
            .collect::<Result<_, _>>()?;
        if argv.is_empty() {
            return Err("argv is empty".into());
        }
        let mut params = BTreeMap::new();
        if let Some(p) = m.get("params") {
            let pm = p
                .clone()
                .try_cast::<Map>()
                .ok_or("`params` must be a map")?;
            for (k, allowed) in pm {
                let values: Vec<String> = allowed
                    .try_cast::<rhai::Array>()
                    .ok_or(format!("params.{k} must be an array of allowed values"))?
                    .into_iter()
                    .map(|s| {
                        s.into_string()
                            .map_err(|t| format!("params.{k}: value of type {t}"))
                    })
                    .collect::<Result<_, _>>()?;
                if values.is_empty() {
                    return Err(format!("params.{k} allows no value"));
                }
                params.insert(k.to_string(), values);
            }
        }
        for a in &argv {
            if let Some(p) = placeholder(a) {
                if !params.contains_key(p) {
                    return Err(format!("argv uses {{{p}}} but params has no `{p}`"));
                }
            } else if is_partial(a) {
                return Err(format!(
                    "placeholder inside {a:?}: a parameter must be a whole argv element"
                ));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            description,
            plugin: plugin.to_owned(),
            argv,
            params,
        })
    }

    /// The argv for `values`, after checking every parameter against its allowed values.
    pub fn argv_for(&self, values: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
        if let Some(k) = values.keys().find(|k| !self.params.contains_key(*k)) {
            return Err(format!("task {} has no parameter {k:?}", self.name));
        }
        for (k, allowed) in &self.params {
            match values.get(k) {
                None => {
                    return Err(format!(
                        "task {} needs parameter {k:?} (one of {allowed:?})",
                        self.name
                    ));
                }
                Some(v) if !allowed.contains(v) => {
                    return Err(format!(
                        "parameter {k}={v:?} is not allowed; allowed: {allowed:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(self
            .argv
            .iter()
            .map(|a| match placeholder(a) {
                Some(p) => values.get(p).cloned().unwrap_or_default(),
                None => a.clone(),
            })
            .collect())
    }
}

fn placeholder(a: &str) -> Option<&str> {
    a.strip_prefix('{')?
        .strip_suffix('}')
        .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

fn is_partial(a: &str) -> bool {
    a.match_indices('{').any(|(i, _)| {
        a[i + 1..].split('}').next().is_some_and(|p| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(src: &str) -> Result<TaskDef, String> {
        let e = rhai::Engine::new();
        let v: Dynamic = e.eval(src).unwrap();
        TaskDef::parse("p", "t", &v)
    }

    #[test]
    fn placeholders_are_whole_arguments_with_allowed_values() {
        let t = def(r#"#{ argv: ["systemctl", "restart", "{unit}"], params: #{ unit: ["nginx", "sshd"] } }"#).unwrap();
        let ok: BTreeMap<_, _> = [("unit".to_string(), "nginx".to_string())].into();
        assert_eq!(
            t.argv_for(&ok).unwrap(),
            vec!["systemctl", "restart", "nginx"]
        );
        let bad: BTreeMap<_, _> = [("unit".to_string(), "nginx; rm -rf /".to_string())].into();
        assert!(t.argv_for(&bad).unwrap_err().contains("not allowed"));
        assert!(
            t.argv_for(&BTreeMap::new())
                .unwrap_err()
                .contains("needs parameter")
        );
        assert!(
            def(r#"#{ argv: ["sh", "-c", "restart {unit}"], params: #{ unit: ["a"] } }"#)
                .unwrap_err()
                .contains("whole argv element")
        );
        assert!(
            def(r#"#{ argv: ["x", "{nope}"] }"#)
                .unwrap_err()
                .contains("no `nope`")
        );
    }
}
