//! Side-by-side: the daemon vs a raw agent client doing the same work, same agent, same
//! chunk size, same run. Prints one table per section with ratios (daemon/raw) and the
//! targets of issue 7; asserts nothing. A section that cannot run reports why and the
//! others still run.
//!
//! `cargo bench --bench compare` (or `scripts/bench.sh`, which runs setup first);
//! `ATP_BENCH_ONLY=2` (a comma list) runs only some sections.
//!
//! 1. host qemu-ga (`ATP_BENCH_MIB`, default 256 MiB, 1 MiB chunks): ping, ReadFile, WriteFile;
//! 2. a TCG guest under a session libvirtd (16 MiB), over libvirt (2 MiB reads, 128 KiB
//!    writes) and over its second agent channel (direct socket, 1 MiB), plus a
//!    `virsh qemu-agent-command` loop;
//! 3. 100 host agents behind one daemon, 32 concurrent clients, Ping/GetOsInfo for 10 s;
//! 4. daemon RSS while streaming a 1 GiB file;
//! 5. Ping latency during a large ReadFile (fairness) vs idle;
//! 6. directory trees (issue 15): PushTree/PullTree of 1000 × 4 KiB + 64 MiB on a busybox
//!    TCG guest vs a per-file WriteFile/ReadFile loop and vs raw `tar` through guest-exec
//!    (`ATP_BENCH_TREE_FILES`, `ATP_BENCH_TREE_BIG_MIB`, `ATP_BENCH_TREE_LOOP`).
//! 7. interactive sessions: keystroke echo through a terminal, streamed stdin vs WriteFile.
//! 8. 1,000 host agents behind one daemon, 32 concurrent clients running Ping, GetOsInfo,
//!    Exec with output and 1 MiB ReadFile for 30 s, ListDomains asked during the load;
//!    daemon RSS and open fds sampled (`ATP_BENCH_FLEET=N` for another number of agents).

mod daemon;
mod fleet;
mod guest;
mod host;
mod interactive;
mod load;
mod loops;
mod rss;
mod scale;
mod table;
mod tree;

use std::time::{Duration, Instant};

use ocloudview_atp::{pb::guest_agent_client::GuestAgentClient, testbed::HostAgent};
use tonic::transport::Channel;

use crate::{
    fleet::fleet_section, guest::guest_section, host::host_section, rss::rss_section,
    scale::scale_section, table::Table,
};

const MIB: usize = 1 << 20;
/// Host agent and direct socket chunk.
const CHUNK: usize = MIB;
/// libvirt's per-call bounds (`transport::libvirt_agent::CHUNK_BOUNDS`).
const LV_READ: usize = 2 * MIB;
const LV_WRITE: usize = 128 << 10;
const HOST_PINGS: usize = 2000;
const GUEST_PINGS: usize = 300;
const GUEST_MIB: usize = 16;
const AGENTS: usize = 100;
const CLIENTS: usize = 32;
const SCALE_RUN: Duration = Duration::from_secs(10);
const BIG_MIB: usize = 1024;
/// Runs of each transfer; the best is reported.
const REPEAT: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(120);

type Grpc = GuestAgentClient<Channel>;

fn failed(out: &mut Vec<Table>, n: u32, e: &anyhow::Error) {
    eprintln!("bench: section {n} failed: {e:#}");
    let mut t = Table::new(format!("{n}. FAILED"), ["", "", "", ""]);
    t.note(format!("{e:#}"));
    out.push(t);
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench targets too
    // (whatever their `test` flag), without it: there, building this is the check.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compare: a benchmark; run it with `cargo bench --bench compare`");
        return;
    }
    let mib: usize = std::env::var("ATP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let t0 = Instant::now();
    let loadavg = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    // `ATP_BENCH_ONLY=2,3` runs only those sections (5 runs with 1).
    let only: Option<Vec<u32>> = std::env::var("ATP_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let want = |n: u32| only.as_ref().is_none_or(|v| v.contains(&n));
    let load_start = loadavg();
    let mut out = Vec::new();
    if want(1) || want(4) {
        match HostAgent::start() {
            Ok(agent) => {
                if want(1) {
                    eprintln!("bench: 1 + 5, host agent, {mib} MiB");
                    if let Err(e) = host_section(&agent, mib, &mut out).await {
                        failed(&mut out, 1, &e);
                    }
                }
                if want(4) {
                    eprintln!("bench: 4, RSS while streaming {BIG_MIB} MiB");
                    if let Err(e) = rss_section(&agent, &mut out).await {
                        failed(&mut out, 4, &e);
                    }
                }
            }
            Err(e) => failed(&mut out, 1, &e.into()),
        }
    }
    if want(2) {
        eprintln!("bench: 2, TCG guest ({:.0?} so far)", t0.elapsed());
        if let Err(e) = guest_section(&mut out).await {
            failed(&mut out, 2, &e);
        }
    }
    if want(3) {
        eprintln!(
            "bench: 3, {AGENTS} host agents ({:.0?} so far)",
            t0.elapsed()
        );
        if let Err(e) = scale_section(&mut out).await {
            failed(&mut out, 3, &e);
        }
    }
    // Directory trees (issue 15).
    if want(6) {
        eprintln!("bench: 6, directory trees ({:.0?} so far)", t0.elapsed());
        if let Err(e) = tree::tree_section(&mut out).await {
            failed(&mut out, 6, &e);
        }
    }
    if want(7) {
        eprintln!(
            "bench: 7, interactive sessions ({:.0?} so far)",
            t0.elapsed()
        );
        if let Err(e) = interactive::interactive_section(&mut out).await {
            failed(&mut out, 7, &e);
        }
    }
    if want(8) {
        eprintln!("bench: 8, a thousand guests ({:.0?} so far)", t0.elapsed());
        if let Err(e) = fleet_section(&mut out).await {
            failed(&mut out, 8, &e);
        }
    }
    out.sort_by(|a, b| a.title.cmp(&b.title));
    println!(
        "# atp daemon vs raw agent\n\n{} CPUs, load average {load_start} at the start and {} at \
         the end ({:.0?} in all). A shared machine: other work may have been running.",
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg(),
        t0.elapsed()
    );
    for t in &out {
        t.print();
    }
}
