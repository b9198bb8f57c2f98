//! Section 6: a thousand guests under real work. `FLEET_AGENTS` host qemu-ga processes
//! (dangerous commands blocked with `-b`, as every host agent of the test bed) behind one
//! daemon as direct-socket guests; `CLIENTS` concurrent clients run Ping, GetOsInfo, Exec
//! with output and a 1 MiB ReadFile for `FLEET_RUN`, while ListDomains is asked every
//! second and the daemon's RSS and open descriptors are sampled.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use ocloudview_atp::{pb::PingRequest, testbed::HostAgent};

use crate::{
    CLIENTS, MIB,
    daemon::Daemon,
    load::{KINDS, Outcome, ProcSample, client, list_domains, proc_sample, sampler},
    loops::pattern,
    table::{Table, kib, lat, met, pct},
};

/// Guests behind the daemon (`ATP_BENCH_FLEET` overrides, for a quick run).
const FLEET_AGENTS: usize = 1000;
const FLEET_RUN: Duration = Duration::from_secs(30);
/// Targets of issue 17.
const RSS_TARGET_KIB: u64 = 150 * 1024;
const LIST_TARGET: Duration = Duration::from_secs(2);

pub(crate) async fn fleet_section(out: &mut Vec<Table>) -> Result<()> {
    let want: usize = std::env::var("ATP_BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FLEET_AGENTS);
    let t0 = Instant::now();
    let agents = start_agents(want)?;
    let started = t0.elapsed();
    let n = agents.len();
    let file = agents[0].dir().join("fleet-1mib.bin");
    std::fs::write(&file, pattern(MIB, 6))?;
    let file = file.display().to_string();
    let body: String = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "[[guests]]\nname = \"g{i}\"\nsocket = \"{}\"\n\n",
                a.socket().display()
            )
        })
        .collect();
    let daemon = Daemon::start(&body)?;
    let pid = daemon.pid();
    let mut warm = daemon.client().await?;
    let t = Instant::now();
    for i in 0..n {
        warm.ping(PingRequest {
            domain: format!("g{i}"),
        })
        .await
        .with_context(|| format!("warm-up ping g{i}"))?;
    }
    let warm_up = t.elapsed();
    let idle = proc_sample(pid).context("no /proc figures for the daemon")?;
    let t = Instant::now();
    let listed = warm
        .list_domains(ocloudview_atp::pb::ListDomainsRequest {})
        .await?;
    let list_idle = t.elapsed();
    ensure!(
        listed.get_ref().domains.len() == n,
        "ListDomains listed {} of {n}",
        listed.get_ref().domains.len()
    );

    let (counter, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let before_run = proc_sample(pid).unwrap_or_default();
    let reading = Arc::new(AtomicUsize::new(0));
    let samples = tokio::spawn(sampler(pid, Arc::clone(&stop), Arc::clone(&reading)));
    let lister = tokio::spawn(list_domains(
        daemon.client().await?,
        Arc::clone(&stop),
        Duration::from_secs(1),
        n,
    ));
    let mut tasks = Vec::with_capacity(CLIENTS);
    let t_run = Instant::now();
    for _ in 0..CLIENTS {
        let c = daemon.client().await?;
        tasks.push(tokio::spawn(client(
            c,
            Arc::clone(&counter),
            Arc::clone(&stop),
            Arc::clone(&reading),
            n,
            file.clone(),
        )));
    }
    tokio::time::sleep(FLEET_RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Outcome::default();
    for t in tasks {
        all.merge(t.await?);
    }
    let run = t_run.elapsed();
    let listings = lister.await?;
    let (mut list_lats, list_errors) = (listings.lats, listings.errors);
    let samples = samples.await?;
    let after = proc_sample(pid).unwrap_or_default();

    let mut t = Table::new(
        format!(
            "8. {n} host agents, one daemon, {CLIENTS} concurrent clients, Ping/GetOsInfo/Exec/1 MiB ReadFile for {:.1} s",
            run.as_secs_f64()
        ),
        ["measure", "value", "count", "target"],
    );
    let ok: usize = all.lats.iter().map(Vec::len).sum();
    let errors: u64 = all.errors.iter().sum();
    t.row(
        "RPC/s (all kinds)",
        format!("{:.0}", ok as f64 / run.as_secs_f64()),
        ok.to_string(),
        String::new(),
    );
    for (i, name) in KINDS.iter().enumerate() {
        let l = &mut all.lats[i];
        t.row(
            format!("{name} p50 / p99"),
            format!("{} / {}", lat(pct(l, 0.5)), lat(pct(l, 0.99))),
            format!("{} ok, {} failed", l.len(), all.errors[i]),
            String::new(),
        );
    }
    t.row(
        "errors",
        errors.to_string(),
        String::new(),
        format!("0: {}", met(errors == 0)),
    );
    let list_max = list_lats.iter().copied().max().unwrap_or_default();
    t.row(
        "ListDomains under load p50 / max",
        format!("{} / {}", lat(pct(&mut list_lats, 0.5)), lat(list_max)),
        format!("{} ok, {} failed", list_lats.len(), list_errors.len()),
        format!(
            "≤ 2 s: {}",
            met(list_max <= LIST_TARGET && list_errors.is_empty() && !list_lats.is_empty())
        ),
    );
    t.row(
        "ListDomains idle",
        lat(list_idle),
        String::new(),
        String::new(),
    );
    t.row(
        "most guests listed not connected (ping > 1 s)",
        listings.most_unanswered.to_string(),
        String::new(),
        String::new(),
    );
    let peak =
        |f: fn(&ProcSample) -> u64| samples.iter().map(f).chain([f(&after)]).max().unwrap_or(0);
    let hwm = peak(|s| s.hwm_kib);
    t.row(
        "daemon VmRSS after warm-up",
        kib(idle.rss_kib),
        String::new(),
        String::new(),
    );
    t.row(
        "daemon VmRSS peak / VmHWM",
        format!("{} / {}", kib(peak(|s| s.rss_kib)), kib(hwm)),
        format!("{} samples", samples.len()),
        format!("≤ 150 MiB: {}", met(hwm <= RSS_TARGET_KIB)),
    );
    let at_peak = samples
        .iter()
        .max_by_key(|s| s.rss_kib)
        .copied()
        .unwrap_or_default();
    t.row(
        "at the RSS peak: ReadFiles in flight, RSS above warm-up per ReadFile",
        at_peak.reads.to_string(),
        kib(at_peak.rss_kib.saturating_sub(idle.rss_kib) / at_peak.reads.max(1)),
        String::new(),
    );
    let fd_peak = peak(|s| s.fds);
    // One socket per agent, one per client connection, plus the daemon's own handful:
    // growth beyond that during the run would be a leak.
    let fd_bound = idle.fds + CLIENTS as u64 + 2 + 64;
    t.row(
        "daemon open fds: warm-up / peak / after",
        format!("{} / {fd_peak} / {}", idle.fds, after.fds),
        String::new(),
        format!("≤ {fd_bound}: {}", met(fd_peak <= fd_bound)),
    );
    t.row(
        "daemon CPU during the run",
        format!(
            "{:.0} % of one core",
            100.0 * (after.cpu_s - before_run.cpu_s) / run.as_secs_f64()
        ),
        String::new(),
        String::new(),
    );
    t.row(
        "daemon threads peak",
        peak(|s| s.threads).to_string(),
        String::new(),
        String::new(),
    );
    t.note(format!(
        "{n} of {want} agents started in {started:.1?}; warm-up (one Ping each, in turn) {warm_up:.1?}. \
         Every client has its own connection; kinds and guests go round robin. ListDomains \
         once a second on another connection (it pings every guest it lists).{}{}",
        all.first_error
            .map(|e| format!(" First error: {e}"))
            .unwrap_or_default(),
        list_errors
            .first()
            .map(|e| format!(" First ListDomains error: {e}"))
            .unwrap_or_default(),
    ));
    eprintln!("bench: done: {}", t.title);
    out.push(t);
    drop(daemon);
    drop(agents);
    Ok(())
}

/// Starts `want` host agents on 8 threads; stops at the first that fails (a process or
/// file limit), reporting how many started.
fn start_agents(want: usize) -> Result<Vec<HostAgent>> {
    const THREADS: usize = 8;
    let results: Vec<Result<Vec<HostAgent>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut v = Vec::new();
                    for _ in (t..want).step_by(THREADS) {
                        match HostAgent::start() {
                            Ok(a) => v.push(a),
                            Err(e) => return Err(format!("after {}: {e}", v.len())),
                        }
                    }
                    Ok(v)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a starter thread panicked".into()))
            })
            .collect()
    });
    let mut agents = Vec::with_capacity(want);
    let mut failure = None;
    for r in results {
        match r {
            Ok(v) => agents.extend(v),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        println!(
            "\n(section 8: a host agent failed to start ({e}); continuing with {})",
            agents.len()
        );
    }
    ensure!(!agents.is_empty(), "no host agent started");
    Ok(agents)
}
