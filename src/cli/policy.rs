//! `atp policy check DIR` and `atp policy test DIR CASES.toml`.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use ocloudview_atp::policy::{PolicySet, cases, engine};

fn load(dir: &Path) -> anyhow::Result<PolicySet> {
    Ok(PolicySet::load(Arc::new(engine::build()), dir, false)?)
}

/// Compiles every plugin and lists what each provides.
pub fn check(dir: &Path) -> anyhow::Result<()> {
    let set = load(dir)?;
    for p in set.plugins() {
        let hooks = if p.hooks.is_empty() {
            "(no hooks)".to_owned()
        } else {
            p.hooks.join(", ")
        };
        println!("{:<28} {hooks}", p.name);
    }
    for t in set.tasks().values() {
        let params: Vec<String> = t
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect();
        println!(
            "  task {:<22} {} [{}] ({})",
            t.name,
            t.argv.join(" "),
            params.join(", "),
            t.plugin
        );
    }
    println!(
        "ok: {} plugins, {} tasks",
        set.plugins().len(),
        set.tasks().len()
    );
    Ok(())
}

/// Runs a CASES table; fails when any case does not get its expected decision.
pub fn test(dir: &Path, cases_path: &Path) -> anyhow::Result<()> {
    let set = load(dir)?;
    let text = std::fs::read_to_string(cases_path)
        .with_context(|| format!("reading {}", cases_path.display()))?;
    let file = cases::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", cases_path.display()))?;
    let results = cases::run(&set, &file);
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    for r in &results {
        println!(
            "{} {}: {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.name,
            r.detail
        );
    }
    println!(
        "{} cases, {} passed, {} failed",
        results.len(),
        results.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("{} of {} policy cases failed", failed.len(), results.len());
    }
    Ok(())
}
