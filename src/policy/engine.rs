//! The Rhai engine policies run in: `Engine::new_raw()` plus the standard packages, every
//! limit set explicitly (the same in debug and release builds), no `eval`, no module
//! loading from disk, `print`/`debug` into tracing, and a wall-clock deadline per call.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine, Map, packages::Package};

/// Wall-clock budget of one hook call; past it the call is stopped (and denies).
pub const CALL_DEADLINE: Duration = Duration::from_millis(50);

/// Limits, with why: a policy is a few comparisons; anything near these is a bug or an
/// attack, and stopping it early keeps a request's policy cost in microseconds.
pub mod limits {
    /// Operations per hook call (a `loop {}` stops here, well under the deadline).
    pub const OPERATIONS: u64 = 200_000;
    /// Nested function calls (runaway recursion stops here).
    pub const CALL_LEVELS: usize = 32;
    /// Expression nesting at top level / inside functions.
    pub const EXPR_DEPTH: (usize, usize) = (64, 32);
    /// Characters in one string (a doubling string bomb stops here).
    pub const STRING: usize = 64 * 1024;
    /// Elements in one array / entries in one map.
    pub const ARRAY: usize = 10_000;
    /// Entries in one object map.
    pub const MAP: usize = 10_000;
    /// Variables alive at once.
    pub const VARIABLES: usize = 1_000;
    /// Functions one plugin may define.
    pub const FUNCTIONS: usize = 256;
}

thread_local! {
    /// Deadline of the hook call running on this thread (hooks run synchronously).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with the per-call wall-clock deadline armed on this thread.
pub fn with_deadline<T>(f: impl FnOnce() -> T) -> T {
    DEADLINE.with(|d| d.set(Some(Instant::now() + CALL_DEADLINE)));
    let out = f();
    DEADLINE.with(|d| d.set(None));
    out
}

/// `with` is a reserved word in Rhai, so `allow(..).with(#{..})` in a plugin is rewritten
/// to call this method before compiling (see [`rewrite_with`]).
pub const WITH_METHOD: &str = "with_limits";

/// Rewrites method calls `.with(` (spaces allowed around `with`) to `.with_limits(`,
/// outside string literals and comments, keeping line numbers.
pub fn rewrite_with(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 32);
    let (mut i, mut last) = (0, 0);
    let mut in_str: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match in_str {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    in_str = None;
                }
            }
            None if c == b'"' || c == b'`' || c == b'\'' => in_str = Some(c),
            None if c == b'/' && b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            None if c == b'.' => {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if src[j..].starts_with("with") {
                    let mut k = j + 4;
                    while k < b.len() && b[k].is_ascii_whitespace() {
                        k += 1;
                    }
                    if b.get(k) == Some(&b'(') {
                        out.push_str(&src[last..i]);
                        out.push('.');
                        out.push_str(WITH_METHOD);
                        last = j + 4;
                        i = j + 4;
                        continue;
                    }
                }
            }
            None => {}
        }
        i += 1;
    }
    out.push_str(&src[last..]);
    out
}

/// What `allow(..)` / `deny(..)` return inside a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginDecision {
    /// Allow (true) or deny (false).
    pub allow: bool,
    /// Why, for the caller and the audit log.
    pub reason: String,
    /// `with(#{ timeout_ms })`: the longest an exec may run.
    pub timeout_ms: Option<u64>,
    /// `with(#{ max_bytes })`: the most bytes a file transfer or exec output may move.
    pub max_bytes: Option<u64>,
    /// `with(#{ idle_timeout_ms })`: an interactive session with no input for this long
    /// is ended (its program killed).
    pub idle_timeout_ms: Option<u64>,
    /// `with(#{ record_input: true })`: an interactive session's recording keeps its
    /// input too (off by default: passwords are typed there).
    pub record_input: bool,
    /// `with(#{ run_as: "nobody" })`: the user an Exec or interactive session runs as
    /// when its request names none (a user name or a numeric uid).
    pub run_as: Option<String>,
}

fn positive(m: &Map, key: &str) -> Option<u64> {
    m.get(key)
        .and_then(|v| v.as_int().ok())
        .and_then(|v| u64::try_from(v).ok())
}

/// Builds the policy engine.
pub fn build() -> Engine {
    let mut e = Engine::new_raw();
    e.register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
    e.set_max_operations(limits::OPERATIONS)
        .set_max_call_levels(limits::CALL_LEVELS)
        .set_max_expr_depths(limits::EXPR_DEPTH.0, limits::EXPR_DEPTH.1)
        .set_max_string_size(limits::STRING)
        .set_max_array_size(limits::ARRAY)
        .set_max_map_size(limits::MAP)
        .set_max_variables(limits::VARIABLES)
        .set_max_functions(limits::FUNCTIONS)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .set_optimization_level(rhai::OptimizationLevel::Full);
    // No eval, and no modules at all: a plugin is one self-contained file.
    e.disable_symbol("eval");
    e.disable_symbol("import");
    e.on_progress(|ops| {
        // Reading the clock on every operation would cost more than the policy itself.
        if ops % 512 != 0 {
            return None;
        }
        let late = DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() > t));
        late.then(|| Dynamic::from("policy call exceeded its time budget"))
    });
    e.on_print(|s| tracing::info!(target: "atp::policy", "{s}"));
    e.on_debug(|s, src, pos| tracing::debug!(target: "atp::policy", source = src.unwrap_or(""), %pos, "{s}"));
    e.register_type_with_name::<PluginDecision>("Decision")
        .register_fn("allow", |reason: &str| PluginDecision {
            allow: true,
            reason: reason.to_owned(),
            ..Default::default()
        })
        .register_fn("allow", || PluginDecision {
            allow: true,
            ..Default::default()
        })
        .register_fn("deny", |reason: &str| PluginDecision {
            allow: false,
            reason: reason.to_owned(),
            ..Default::default()
        })
        .register_fn(WITH_METHOD, |d: &mut PluginDecision, limits: Map| {
            let mut d = d.clone();
            if let Some(v) = limits.get("run_as") {
                let name = v.clone().into_string().ok().filter(|n| crate::qga::valid_account(n));
                match name {
                    Some(n) => d.run_as = Some(n),
                    None => {
                        return Err(Box::<rhai::EvalAltResult>::from(format!(
                            "run_as must be a user name ([a-z_][a-z0-9_.-]*[$]?) or a numeric uid, not {v}"
                        )));
                    }
                }
            }
            d.timeout_ms = positive(&limits, "timeout_ms").or(d.timeout_ms);
            d.max_bytes = positive(&limits, "max_bytes").or(d.max_bytes);
            d.idle_timeout_ms = positive(&limits, "idle_timeout_ms").or(d.idle_timeout_ms);
            if let Some(v) = limits.get("record_input").and_then(|v| v.as_bool().ok()) {
                d.record_input = v;
            }
            Ok(d)
        })
        .register_get("allowed", |d: &mut PluginDecision| d.allow)
        .register_get("reason", |d: &mut PluginDecision| d.reason.clone());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_is_rewritten_outside_strings_and_comments() {
        let src = "allow(\"a.with(b)\").with(#{ x: 1 }) // .with(\n x . with (1)";
        assert_eq!(
            rewrite_with(src),
            "allow(\"a.with(b)\").with_limits(#{ x: 1 }) // .with(\n x .with_limits (1)"
        );
    }
}
