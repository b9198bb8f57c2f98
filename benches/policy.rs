//! Policy evaluation cost per request: the shipped plugins plus ten more generic ones,
//! on the requests the shipped cases use. `cargo bench --bench policy`.

use std::{path::Path, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use ocloudview_atp::policy::{PolicySet, cases, engine};

fn extra_plugin(i: usize) -> String {
    format!(
        "// generic rule {i}\nfn authorize(req) {{\n  if req.domain.name == \"blocked-{i}\" {{ return deny(\"guest {i} is blocked\"); }}\n  if req.caller.id == \"auditor-{i}\" && req.rpc in [\"Ping\", \"GetOsInfo\"] {{ return allow(\"auditor\"); }}\n  ()\n}}\n"
    )
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&shipped).expect("policies") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "rhai") {
            std::fs::copy(&p, tmp.path().join(p.file_name().expect("name"))).expect("copy");
            n += 1;
        }
    }
    for i in 0..10 {
        std::fs::write(tmp.path().join(format!("5{i}-extra.rhai")), extra_plugin(i))
            .expect("write");
    }
    let set = PolicySet::load(Arc::new(engine::build()), tmp.path(), false).expect("load");
    assert_eq!(set.plugins().len(), n + 10);
    let text = std::fs::read_to_string(shipped.join("cases.toml")).expect("cases");
    let file = cases::parse(&text).expect("parse");
    let requests: Vec<_> = file.cases.iter().map(|c| c.request.clone()).collect();
    let mut i = 0;
    c.bench_function(
        "policy evaluate (shipped plugins + 10, shipped cases)",
        |b| {
            b.iter(|| {
                let r = &requests[i % requests.len()];
                i += 1;
                std::hint::black_box(set.evaluate(r))
            })
        },
    );
}

fn parts(c: &mut Criterion) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/cases.toml"))
            .expect("cases");
    let file = cases::parse(&text).expect("parse");
    let r = file.cases[20].request.clone();
    c.bench_function("request map: to_dynamic", |b| {
        b.iter(|| std::hint::black_box(r.to_dynamic()))
    });
    let d = r.to_dynamic();
    c.bench_function("request map: clone", |b| {
        b.iter(|| std::hint::black_box(d.clone()))
    });
}

criterion_group!(benches, bench, parts);
criterion_main!(benches);
