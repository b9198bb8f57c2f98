//! Section 4: daemon RSS while it streams a large file.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use ocloudview_atp::testbed::HostAgent;

use crate::{
    BIG_MIB, CHUNK, MIB,
    daemon::{Daemon, rss_kib},
    loops::{d_pings, d_read, pattern},
    table::{Table, kib, met, mibs},
};

pub(crate) async fn rss_section(agent: &HostAgent, out: &mut Vec<Table>) -> Result<()> {
    let path = agent.dir().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::with_capacity(4 * MIB, std::fs::File::create(&path)?);
        let mut block = pattern(MIB, 3);
        for i in 0..BIG_MIB {
            block[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let daemon = Daemon::start(&format!(
        "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        agent.socket().display()
    ))?;
    let pid = daemon.pid();
    let mut c = daemon.client().await?;
    d_pings(&mut c, "host", 10).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kib(pid).context("no VmRSS")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(k) = rss_kib(pid) {
                    samples.push(k);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let (n, dur) = d_read(&mut c, "host", &path.display().to_string(), CHUNK).await?;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    let after = rss_kib(pid).unwrap_or(0);
    ensure!(n == BIG_MIB * MIB, "read {n} bytes");
    let _ = std::fs::remove_file(&path);
    let peak = samples.iter().copied().max().unwrap_or(baseline).max(after);
    let growth = peak.saturating_sub(baseline);

    let mut t = Table::new(
        format!(
            "4. daemon RSS while streaming a {BIG_MIB} MiB file from a host agent (ReadFile, 1 MiB chunks)"
        ),
        ["measure", "value", "", "target"],
    );
    t.row(
        "baseline VmRSS",
        kib(baseline),
        String::new(),
        String::new(),
    );
    t.row("peak VmRSS", kib(peak), String::new(), String::new());
    t.row("VmRSS after", kib(after), String::new(), String::new());
    t.row(
        "growth (peak - baseline)",
        kib(growth),
        String::new(),
        format!("< 64 MiB: {}", met(growth < 64 * 1024)),
    );
    t.row(
        "ReadFile MiB/s",
        format!("{:.1}", mibs(n, dur)),
        String::new(),
        String::new(),
    );
    t.note(format!("{} samples, every 100 ms.", samples.len()));
    eprintln!("bench: done: {}", t.title);
    out.push(t);
    Ok(())
}
