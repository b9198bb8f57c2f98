//! Section 3: many host agents behind one daemon, many concurrent clients.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use ocloudview_atp::{
    pb::{GetOsInfoRequest, PingRequest},
    testbed::HostAgent,
};

use crate::{
    AGENTS, CLIENTS, SCALE_RUN,
    daemon::{Daemon, rss_kib},
    table::{Table, kib, lat, met, pct},
};

pub(crate) async fn scale_section(out: &mut Vec<Table>) -> Result<()> {
    let t0 = Instant::now();
    let mut agents = Vec::with_capacity(AGENTS);
    for i in 0..AGENTS {
        match HostAgent::start() {
            Ok(a) => agents.push(a),
            Err(e) => {
                println!("\n(section 3: host agent {i} failed to start: {e}; continuing with {i})");
                break;
            }
        }
    }
    ensure!(!agents.is_empty(), "no host agent started");
    let started = t0.elapsed();
    let body: String = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "[[guests]]\nname = \"h{i}\"\nsocket = \"{}\"\n\n",
                a.socket().display()
            )
        })
        .collect();
    let daemon = Daemon::start(&body)?;
    let pid = daemon.pid();
    let mut warm = daemon.client().await?;
    for i in 0..agents.len() {
        warm.ping(PingRequest {
            domain: format!("h{i}"),
        })
        .await
        .with_context(|| format!("warm-up ping h{i}"))?;
    }
    let rss_before = rss_kib(pid).unwrap_or(0);

    let n_agents = agents.len();
    let counter = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(k) = rss_kib(pid) {
                    peak.fetch_max(k, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks = Vec::with_capacity(CLIENTS);
    let t_run = Instant::now();
    let mut first_error = None;
    for _ in 0..CLIENTS {
        let mut c = daemon.client().await?;
        let (counter, errors, stop) =
            (Arc::clone(&counter), Arc::clone(&errors), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let mut first: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let k = counter.fetch_add(1, Ordering::Relaxed);
                let domain = format!("h{}", k % n_agents);
                let t = Instant::now();
                let res = if (k / n_agents) % 2 == 0 {
                    c.ping(PingRequest { domain }).await.map(drop)
                } else {
                    c.get_os_info(GetOsInfoRequest { domain }).await.map(drop)
                };
                match res {
                    Ok(()) => lats.push(t.elapsed()),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lats, first)
        }));
    }
    tokio::time::sleep(SCALE_RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut lats = Vec::new();
    for t in tasks {
        let (l, f) = t.await?;
        lats.extend(l);
        if first_error.is_none() {
            first_error = f;
        }
    }
    let run = t_run.elapsed();
    let _ = sampler.await;
    let rss_after = rss_kib(pid).unwrap_or(0);
    let errors = errors.load(Ordering::Relaxed);
    let ok = lats.len();

    let mut t = Table::new(
        format!(
            "3. {n_agents} host agents, one daemon, {CLIENTS} concurrent clients, Ping/GetOsInfo round robin for {:.1} s",
            run.as_secs_f64()
        ),
        ["measure", "value", "", "target"],
    );
    t.row(
        "RPC/s",
        format!("{:.0}", ok as f64 / run.as_secs_f64()),
        String::new(),
        String::new(),
    );
    t.row(
        "completed RPCs",
        ok.to_string(),
        String::new(),
        String::new(),
    );
    t.row(
        "latency p50",
        lat(pct(&mut lats, 0.5)),
        String::new(),
        String::new(),
    );
    t.row(
        "latency p99",
        lat(pct(&mut lats, 0.99)),
        String::new(),
        String::new(),
    );
    t.row(
        "errors",
        errors.to_string(),
        String::new(),
        format!("0: {}", met(errors == 0)),
    );
    t.row(
        "daemon RSS after warm-up",
        kib(rss_before),
        String::new(),
        String::new(),
    );
    t.row(
        "daemon RSS peak during run",
        kib(peak.load(Ordering::Relaxed)),
        String::new(),
        String::new(),
    );
    t.row(
        "daemon RSS after run",
        kib(rss_after),
        String::new(),
        String::new(),
    );
    t.note(format!(
        "{n_agents} of {AGENTS} agents started in {started:.1?} (no process limit hit).{}",
        first_error
            .map(|e| format!(" First error: {e}"))
            .unwrap_or_default()
    ));
    eprintln!("bench: done: {}", t.title);
    out.push(t);
    drop(daemon);
    drop(agents);
    Ok(())
}
