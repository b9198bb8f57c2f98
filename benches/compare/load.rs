//! The work of section 8: clients running a mix of RPCs against many guests, ListDomains
//! asked while they do, and the daemon's memory and descriptors sampled throughout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail, ensure};
use ocloudview_atp::pb::{
    Argv, ExecRequest, GetOsInfoRequest, ListDomainsRequest, PingRequest, ReadFileRequest,
    exec_event::Event, exec_request,
};

use crate::{CHUNK, Grpc, MIB};

/// The mix, in the order a client's counter walks it.
pub(crate) const KINDS: [&str; 4] = ["Ping", "GetOsInfo", "Exec (echo)", "ReadFile 1 MiB"];

/// What one client (or all of them, merged) saw: latencies per kind, errors per kind and
/// the first error's text.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) lats: [Vec<Duration>; 4],
    pub(crate) errors: [u64; 4],
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    pub(crate) fn merge(&mut self, o: Outcome) {
        for (i, l) in o.lats.into_iter().enumerate() {
            self.lats[i].extend(l);
            self.errors[i] += o.errors[i];
        }
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// One client: until `stop`, takes the next number of the shared `counter`, which picks
/// the kind (`k % 4`) and the guest (`g{(k / 4) % guests}`), and checks each answer.
pub(crate) async fn client(
    mut c: Grpc,
    counter: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    reading: Arc<AtomicUsize>,
    guests: usize,
    file: String,
) -> Outcome {
    let mut out = Outcome::default();
    while !stop.load(Ordering::Relaxed) {
        let k = counter.fetch_add(1, Ordering::Relaxed);
        let kind = k % KINDS.len();
        let domain = format!("g{}", (k / KINDS.len()) % guests);
        let t = Instant::now();
        let res = match kind {
            0 => c
                .ping(PingRequest { domain })
                .await
                .map(drop)
                .map_err(Into::into),
            1 => c
                .get_os_info(GetOsInfoRequest { domain })
                .await
                .map(drop)
                .map_err(Into::into),
            2 => exec_echo(&mut c, domain, k).await,
            _ => {
                reading.fetch_add(1, Ordering::Relaxed);
                let r = read_mib(&mut c, domain, &file).await;
                reading.fetch_sub(1, Ordering::Relaxed);
                r
            }
        };
        match res {
            Ok(()) => out.lats[kind].push(t.elapsed()),
            Err(e) => {
                out.errors[kind] += 1;
                out.first_error
                    .get_or_insert_with(|| format!("{}: {e:#}", KINDS[kind]));
            }
        }
    }
    out
}

/// Exec `/bin/echo atp-K` (streamed output): exit 0 and exactly that line.
async fn exec_echo(c: &mut Grpc, domain: String, k: usize) -> Result<()> {
    let want = format!("atp-{k}\n");
    let mut s = c
        .exec(ExecRequest {
            domain,
            command: Some(exec_request::Command::Argv(Argv {
                path: "/bin/echo".into(),
                args: vec![format!("atp-{k}")],
            })),
            ..Default::default()
        })
        .await?
        .into_inner();
    let (mut stdout, mut exit) = (Vec::new(), None);
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Stdout(d)) => stdout.extend(d),
            Some(Event::Exited(x)) => exit = Some(x.exit_code),
            _ => {}
        }
    }
    ensure!(
        exit == Some(Some(0)) && stdout == want.as_bytes(),
        "exec: exit {exit:?}, stdout {:?}",
        String::from_utf8_lossy(&stdout)
    );
    Ok(())
}

/// ReadFile of the 1 MiB file: all of it, ending with an eof chunk.
async fn read_mib(c: &mut Grpc, domain: String, path: &str) -> Result<()> {
    let mut s = c
        .read_file(ReadFileRequest {
            domain,
            path: path.into(),
            chunk_size: CHUNK as u32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(ch) = s.message().await? {
        n += ch.data.len();
        if ch.eof {
            ensure!(n == MIB, "read {n} bytes");
            return Ok(());
        }
    }
    bail!("no eof chunk after {n} bytes")
}

/// What the ListDomains calls during the load saw.
#[derive(Default)]
pub(crate) struct Listings {
    pub(crate) lats: Vec<Duration>,
    pub(crate) errors: Vec<String>,
    /// The most guests one listing reported with `agent_connected = false` (its ping
    /// did not answer within ListDomains' own 1 s).
    pub(crate) most_unanswered: usize,
}

/// ListDomains every `every` until `stop`: each call's latency, or why it failed (or
/// listed another number of guests than `guests`).
pub(crate) async fn list_domains(
    mut c: Grpc,
    stop: Arc<AtomicBool>,
    every: Duration,
    guests: usize,
) -> Listings {
    let mut l = Listings::default();
    let (lats, errors) = (&mut l.lats, &mut l.errors);
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match c.list_domains(ListDomainsRequest {}).await {
            Ok(r) if r.get_ref().domains.len() == guests => {
                lats.push(t.elapsed());
                let down = r
                    .get_ref()
                    .domains
                    .iter()
                    .filter(|d| !d.agent_connected)
                    .count();
                l.most_unanswered = l.most_unanswered.max(down);
            }
            Ok(r) => errors.push(format!("listed {} guests", r.get_ref().domains.len())),
            Err(e) => errors.push(e.to_string()),
        }
        // Pacing: one listing per `every`, as a dashboard would ask.
        tokio::time::sleep(every.saturating_sub(t.elapsed())).await;
    }
    l
}

/// The daemon's process figures at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    /// VmRSS and VmHWM (peak RSS since start), KiB.
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) fds: u64,
    pub(crate) threads: u64,
    /// User + system CPU time so far, seconds.
    pub(crate) cpu_s: f64,
    /// ReadFiles in flight (from the clients' side) when sampled.
    pub(crate) reads: u64,
}

pub(crate) fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(ProcSample {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64,
        cpu_s: cpu_seconds(pid)?,
        reads: 0,
    })
}

/// utime + stime of `pid` (fields 14 and 15 of `/proc/PID/stat`), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Some(ticks as f64 / hz as f64)
}

/// Samples `pid` every 200 ms until `stop`; returns the samples.
/// `reading` counts the ReadFiles in flight, recorded with each sample.
pub(crate) async fn sampler(
    pid: u32,
    stop: Arc<AtomicBool>,
    reading: Arc<AtomicUsize>,
) -> Vec<ProcSample> {
    let mut v = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        v.extend(proc_sample(pid).map(|s| ProcSample {
            reads: reading.load(Ordering::Relaxed) as u64,
            ..s
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    v
}
