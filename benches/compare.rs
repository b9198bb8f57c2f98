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
//! 5. Ping latency during a large ReadFile (fairness) vs idle.

use std::{
    path::PathBuf,
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use hyper_util::rt::TokioIo;
use ocloudview_atp::{
    libvirt::LibvirtManager,
    pb::{
        GetOsInfoRequest, PingRequest, ReadFileRequest, WriteFileHeader, WriteFileRequest,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    qga::AgentClient,
    testbed::{Flavour, GuestImage, HostAgent, LibvirtSession},
    transport::{libvirt::LibvirtTransport, socket::SocketTransport},
};
use tonic::transport::{Channel, Endpoint, Uri};

const MIB: usize = 1 << 20;
/// Host agent and direct socket chunk.
const CHUNK: usize = MIB;
/// libvirt's per-call bounds (`transport::libvirt::CHUNK_BOUNDS`).
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

// ---------------------------------------------------------------- output

struct Table {
    title: String,
    head: [&'static str; 4],
    rows: Vec<[String; 4]>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: impl Into<String>, head: [&'static str; 4]) -> Self {
        Self {
            title: title.into(),
            head,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, measure: impl Into<String>, a: String, b: String, ratio: String) {
        self.rows.push([measure.into(), a, b, ratio]);
    }

    /// p50 and p99 rows, ratio b/a.
    fn latency(&mut self, what: &str, a: &mut [Duration], b: &mut [Duration]) {
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (x, y) = (pct(a, p), pct(b, p));
            self.row(
                format!("{what} {name}"),
                lat(x),
                lat(y),
                ratio(y.as_secs_f64(), x.as_secs_f64()),
            );
        }
    }

    /// A MiB/s row, ratio b/a.
    fn rate(&mut self, what: &str, a: f64, b: f64) {
        self.row(
            format!("{what} MiB/s"),
            format!("{a:.1}"),
            format!("{b:.1}"),
            ratio(b, a),
        );
    }

    fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    fn print(&self) {
        let mut w = [0usize; 4];
        for r in std::iter::once(&self.head.map(str::to_owned)).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        println!("\n## {}\n", self.title);
        if self.rows.is_empty() {
            for n in &self.notes {
                println!("{n}");
            }
            return;
        }
        let line = |r: &[String; 4]| {
            println!(
                "| {:<a$} | {:>b$} | {:>c$} | {:>d$} |",
                r[0],
                r[1],
                r[2],
                r[3],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3]
            );
        };
        line(&self.head.map(str::to_owned));
        println!(
            "|{}|{}:|{}:|{}:|",
            "-".repeat(w[0] + 2),
            "-".repeat(w[1] + 1),
            "-".repeat(w[2] + 1),
            "-".repeat(w[3] + 1)
        );
        for r in &self.rows {
            line(r);
        }
        for n in &self.notes {
            println!("\n{n}");
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn lat(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 {
        format!("{:.2}", num / den)
    } else {
        "-".into()
    }
}

fn mibs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i + seed).wrapping_mul(2654435761) >> 11) as u8)
        .collect()
}

// ---------------------------------------------------------------- daemon

/// `atp serve` in its own temp dir, killed on drop.
struct Daemon {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(body: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("atp-bench.").tempdir()?;
        let cfg = dir.path().join("atp.toml");
        let sock = dir.path().join("atp.sock");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = [\"unix://{}\"]\n\n{body}",
                sock.display()
            ),
        )?;
        let child = Command::new(env!("CARGO_BIN_EXE_atp"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("ATP_LOG", "error")
            .spawn()
            .context("atp serve")?;
        Ok(Self {
            child,
            sock,
            _dir: dir,
        })
    }

    /// A new connection (its own HTTP/2 channel), retried until the daemon listens.
    async fn client(&self) -> Result<Grpc> {
        for _ in 0..200 {
            let p = self.sock.clone();
            if let Ok(ch) = Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await
            {
                return Ok(GuestAgentClient::new(ch)
                    .max_decoding_message_size(64 * MIB)
                    .max_encoding_message_size(64 * MIB));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("daemon did not listen on {}", self.sock.display())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

// ---------------------------------------------------------------- the measured loops

/// Both ping loops run in a spawned task, as an async client would: a call from the
/// `block_on` thread pays two extra cross-thread wake-ups per round trip, on either side.
async fn raw_pings(c: &AgentClient, n: usize) -> Result<Vec<Duration>> {
    let c = c.clone();
    tokio::spawn(async move {
        c.ping().await?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            c.ping().await?;
            v.push(t.elapsed());
        }
        Ok(v)
    })
    .await?
}

/// The naive chunked loop: open, read `chunk` until eof, close. Returns bytes and time.
async fn raw_read(c: &AgentClient, path: &str, chunk: usize) -> Result<(usize, Duration)> {
    let t = Instant::now();
    let h = c.file_open(path, Some("r")).await?;
    let mut n = 0;
    loop {
        let r = c.file_read(h, Some(chunk)).await?;
        let len = r.data()?.len();
        n += len;
        if r.eof || len == 0 {
            break;
        }
    }
    c.file_close(h).await?;
    Ok((n, t.elapsed()))
}

async fn raw_write(c: &AgentClient, path: &str, data: &[u8], chunk: usize) -> Result<Duration> {
    let t = Instant::now();
    let h = c.file_open(path, Some("w")).await?;
    for ch in data.chunks(chunk) {
        let w = c.file_write(h, ch).await?;
        ensure!(w.count as usize == ch.len(), "short write");
    }
    c.file_flush(h).await?;
    c.file_close(h).await?;
    Ok(t.elapsed())
}

async fn d_pings(c: &mut Grpc, domain: &str, n: usize) -> Result<Vec<Duration>> {
    let mut c = c.clone();
    let domain = domain.to_owned();
    tokio::spawn(async move {
        let req = || PingRequest {
            domain: domain.clone(),
        };
        c.ping(req()).await?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            c.ping(req()).await?;
            v.push(t.elapsed());
        }
        Ok(v)
    })
    .await?
}

async fn d_read(c: &mut Grpc, domain: &str, path: &str, chunk: usize) -> Result<(usize, Duration)> {
    let t = Instant::now();
    let mut s = c
        .read_file(ReadFileRequest {
            domain: domain.into(),
            path: path.into(),
            chunk_size: chunk as u32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(ch) = s.message().await? {
        n += ch.data.len();
        if ch.eof {
            break;
        }
    }
    Ok((n, t.elapsed()))
}

async fn d_write(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    data: Arc<Vec<u8>>,
    chunk: usize,
) -> Result<Duration> {
    let header = WriteFileRequest {
        msg: Some(Msg::Header(WriteFileHeader {
            domain: domain.into(),
            path: path.into(),
            atomic: Some(false),
            ..Default::default()
        })),
    };
    let len = data.len();
    let msgs =
        std::iter::once(header).chain((0..len.div_ceil(chunk)).map(move |i| WriteFileRequest {
            msg: Some(Msg::Data(
                data[i * chunk..((i + 1) * chunk).min(len)].to_vec(),
            )),
        }));
    let t = Instant::now();
    let r = c.write_file(tokio_stream::iter(msgs)).await?.into_inner();
    ensure!(
        r.bytes_written as usize == len,
        "daemon wrote {}",
        r.bytes_written
    );
    Ok(t.elapsed())
}

/// Transfers are repeated [`REPEAT`] times and the best time kept: the machine is shared.
async fn raw_read_best(c: &AgentClient, path: &str, chunk: usize, len: usize) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        let (n, d) = raw_read(c, path, chunk).await?;
        ensure!(n == len, "raw read {n} of {len} bytes");
        best = best.min(d);
    }
    Ok(best)
}

async fn raw_write_best(
    c: &AgentClient,
    path: &str,
    data: &[u8],
    chunk: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        best = best.min(raw_write(c, path, data, chunk).await?);
    }
    Ok(best)
}

async fn d_read_best(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    chunk: usize,
    len: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        let (n, d) = d_read(c, domain, path, chunk).await?;
        ensure!(n == len, "daemon read {n} of {len} bytes");
        best = best.min(d);
    }
    Ok(best)
}

async fn d_write_best(
    c: &mut Grpc,
    domain: &str,
    path: &str,
    data: &Arc<Vec<u8>>,
    chunk: usize,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..REPEAT {
        best = best.min(d_write(c, domain, path, Arc::clone(data), chunk).await?);
    }
    Ok(best)
}

// ---------------------------------------------------------------- 1 + 5: host agent

async fn host_section(agent: &HostAgent, mib: usize, out: &mut Vec<Table>) -> Result<()> {
    let data = Arc::new(pattern(mib * MIB, 0));
    let src = agent.dir().join("src.bin");
    std::fs::write(&src, &*data)?;
    let src = src.display().to_string();
    let dst = |n: &str| agent.dir().join(n).display().to_string();

    let transport = SocketTransport::new(agent.socket());
    let raw = AgentClient::new(transport.clone()).with_timeout(TIMEOUT);
    let mut r_ping = raw_pings(&raw, HOST_PINGS).await?;
    let r_read = raw_read_best(&raw, &src, CHUNK, data.len()).await?;
    let r_write = raw_write_best(&raw, &dst("raw-dst.bin"), &data, CHUNK).await?;
    transport.close().await; // the agent serves one client at a time

    let daemon = Daemon::start(&format!(
        "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
        agent.socket().display()
    ))?;
    let mut c = daemon.client().await?;
    let mut d_ping = d_pings(&mut c, "host", HOST_PINGS).await?;
    let d_rd = d_read_best(&mut c, "host", &src, CHUNK, data.len()).await?;
    let d_wr = d_write_best(&mut c, "host", &dst("d-dst.bin"), &data, CHUNK).await?;
    let _ = std::fs::remove_file(dst("raw-dst.bin"));
    let _ = std::fs::remove_file(dst("d-dst.bin"));

    let mut t = Table::new(
        format!(
            "1. host qemu-ga: {mib} MiB file, {} KiB chunks, best of {REPEAT} transfers, {HOST_PINGS} pings",
            CHUNK >> 10
        ),
        ["measure", "raw agent", "daemon", "daemon/raw"],
    );
    t.latency("ping", &mut r_ping, &mut d_ping);
    t.rate("ReadFile", mibs(data.len(), r_read), mibs(data.len(), d_rd));
    t.rate(
        "WriteFile",
        mibs(data.len(), r_write),
        mibs(data.len(), d_wr),
    );
    t.note(format!(
        "ping overhead p50: {:.0} µs",
        (pct(&mut d_ping, 0.5).as_secs_f64() - pct(&mut r_ping, 0.5).as_secs_f64()) * 1e6
    ));
    eprintln!("bench: done: {}", t.title);
    out.push(t);

    // 5. Fairness, same daemon and agent: pings from a second client, idle vs during a
    // ReadFile of the same file.
    let mut pinger = daemon.client().await?;
    let mut idle = d_pings(&mut pinger, "host", 500).await?;
    let mut reader = daemon.client().await?;
    let path = src.clone();
    let read = tokio::spawn(async move { d_read(&mut reader, "host", &path, CHUNK).await });
    let mut busy = Vec::new();
    let mut errors = 0;
    while !read.is_finished() {
        let t0 = Instant::now();
        match pinger
            .ping(PingRequest {
                domain: "host".into(),
            })
            .await
        {
            Ok(_) => busy.push(t0.elapsed()),
            Err(_) => errors += 1,
        }
    }
    let (n, dur) = read.await??;
    ensure!(n == data.len(), "fairness read {n} bytes");
    let mut t = Table::new(
        format!(
            "5. fairness: Ping to the host agent, idle vs during a {mib} MiB ReadFile (1 MiB chunks)"
        ),
        ["measure", "idle", "during ReadFile", "during/idle"],
    );
    t.latency("ping", &mut idle, &mut busy);
    t.note(format!(
        "{} pings during the transfer ({errors} errors); the transfer ran at {:.1} MiB/s.",
        busy.len(),
        mibs(n, dur)
    ));
    eprintln!("bench: done: {}", t.title);
    out.push(t);
    Ok(())
}

// ---------------------------------------------------------------- 2: TCG guest

fn virsh(uri: &str, dom: &str, json: &str) -> Result<serde_json::Value> {
    let out = Command::new("virsh")
        .args(["-c", uri, "qemu-agent-command", dom, json])
        .output()
        .context("running virsh")?;
    if !out.status.success() {
        bail!(
            "virsh {json}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["return"].take())
}

/// What people do today: one `virsh qemu-agent-command` process per chunk.
fn virsh_read(uri: &str, dom: &str, path: &str, chunk: usize) -> Result<(usize, Duration)> {
    let t = Instant::now();
    let open =
        serde_json::json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}});
    let h = virsh(uri, dom, &open.to_string())?
        .as_i64()
        .context("no handle")?;
    let read = serde_json::json!({"execute": "guest-file-read", "arguments": {"handle": h, "count": chunk}})
        .to_string();
    let mut n = 0;
    loop {
        let r = virsh(uri, dom, &read)?;
        let b64 = r["buf-b64"].as_str().context("no buf-b64")?;
        let len = base64::engine::general_purpose::STANDARD.decode(b64)?.len();
        n += len;
        if r["eof"].as_bool().unwrap_or(true) || len == 0 {
            break;
        }
    }
    let close = serde_json::json!({"execute": "guest-file-close", "arguments": {"handle": h}});
    virsh(uri, dom, &close.to_string())?;
    Ok((n, t.elapsed()))
}

async fn guest_section(out: &mut Vec<Table>) -> Result<()> {
    const DOM: &str = "atp-bench";
    let t0 = Instant::now();
    let image = tokio::task::spawn_blocking(GuestImage::ensure)
        .await?
        .context("guest image (run scripts/setup.sh)")?;
    let session = LibvirtSession::start().await?;
    let dom = session.create_domain(DOM, &image, Flavour::Debian).await?;
    let boot = t0.elapsed();
    let uri = session.uri().to_owned();
    let data = Arc::new(pattern(GUEST_MIB * MIB, 7));
    let len = data.len();
    let src = "/data/bench-src.bin";

    // Raw over libvirt: our AgentClient on a LibvirtTransport from our own connection.
    let u = uri.clone();
    let lv_domain = tokio::task::spawn_blocking(move || {
        LibvirtManager::connect_uri(&u).and_then(|m| m.lookup_domain_by_name(DOM))
    })
    .await??;
    let lv = AgentClient::new(LibvirtTransport::new(lv_domain, DOM)).with_timeout(TIMEOUT);
    let mut r_lv_ping = raw_pings(&lv, GUEST_PINGS).await?;
    let r_lv_write = raw_write_best(&lv, src, &data, LV_WRITE).await?;
    let r_lv_read = raw_read_best(&lv, src, LV_READ, len).await?;

    // virsh, the same file in the same 2 MiB chunks.
    let u = uri.clone();
    let virsh_res = tokio::task::spawn_blocking(move || virsh_read(&u, DOM, src, LV_READ)).await?;

    // Raw over the direct socket; closed before the daemon connects.
    let transport = SocketTransport::new(dom.direct_socket());
    let direct = AgentClient::new(transport.clone()).with_timeout(TIMEOUT);
    let mut r_dir_ping = raw_pings(&direct, GUEST_PINGS).await?;
    let r_dir_write = raw_write_best(&direct, "/data/bench-raw-direct.bin", &data, CHUNK).await?;
    let r_dir_read = raw_read_best(&direct, src, CHUNK, len).await?;
    transport.close().await;

    let daemon = Daemon::start(&format!(
        "[[hypervisors]]\nname = \"lab\"\nuri = \"{uri}\"\n\n[[guests]]\nname = \"direct\"\nsocket = \"{}\"\n",
        dom.direct_socket().display()
    ))?;
    let mut c = daemon.client().await?;
    let lab = format!("lab/{DOM}");
    let mut d_lv_ping = d_pings(&mut c, &lab, GUEST_PINGS).await?;
    let d_lv_write = d_write_best(&mut c, &lab, "/data/bench-d-lv.bin", &data, LV_WRITE).await?;
    let d_lv_read = d_read_best(&mut c, &lab, src, LV_READ, len).await?;
    let mut d_dir_ping = d_pings(&mut c, "direct", GUEST_PINGS).await?;
    let d_dir_write =
        d_write_best(&mut c, "direct", "/data/bench-d-direct.bin", &data, CHUNK).await?;
    let d_dir_read = d_read_best(&mut c, "direct", src, CHUNK, len).await?;

    let mut t = Table::new(
        format!(
            "2. TCG guest (libvirt session, 1 vCPU): {GUEST_MIB} MiB file, best of {REPEAT} transfers (virsh: one), {GUEST_PINGS} pings"
        ),
        ["measure", "raw agent", "daemon", "daemon/raw"],
    );
    t.latency("libvirt ping", &mut r_lv_ping, &mut d_lv_ping);
    t.rate(
        "libvirt read (2 MiB)",
        mibs(len, r_lv_read),
        mibs(len, d_lv_read),
    );
    t.rate(
        "libvirt write (128 KiB)",
        mibs(len, r_lv_write),
        mibs(len, d_lv_write),
    );
    t.latency("direct ping", &mut r_dir_ping, &mut d_dir_ping);
    t.rate(
        "direct read (1 MiB)",
        mibs(len, r_dir_read),
        mibs(len, d_dir_read),
    );
    t.rate(
        "direct write (1 MiB)",
        mibs(len, r_dir_write),
        mibs(len, d_dir_write),
    );
    match &virsh_res {
        Ok((n, d)) if *n == len => {
            let v = mibs(len, *d);
            let dl = mibs(len, d_lv_read);
            t.row(
                "virsh loop read (2 MiB) vs daemon libvirt",
                format!("{v:.1}"),
                format!("{dl:.1}"),
                ratio(dl, v),
            );
        }
        Ok((n, _)) => t.note(format!("virsh loop read {n} of {len} bytes")),
        Err(e) => t.note(format!("virsh loop failed: {e:#}")),
    }
    let lv_ratio = mibs(len, d_lv_read) / mibs(len, r_lv_read);
    let lv_wratio = mibs(len, d_lv_write) / mibs(len, r_lv_write);
    let dir_ratio = mibs(len, d_dir_read) / mibs(len, r_dir_read);
    let overhead =
        pct(&mut d_dir_ping, 0.5).as_secs_f64() - pct(&mut r_dir_ping, 0.5).as_secs_f64();
    t.note(format!(
        "guest boot {boot:.1?} (image + libvirtd + domain). Targets: libvirt daemon ≥ 0.95× raw: \
         read {lv_ratio:.2} {}, write {lv_wratio:.2} {}; direct read daemon above the naive raw \
         loop: {dir_ratio:.2} {}; direct ping overhead p50 ≤ 0.3 ms: {:.0} µs {}.",
        met(lv_ratio >= 0.95),
        met(lv_wratio >= 0.95),
        met(dir_ratio > 1.0),
        overhead * 1e6,
        met(overhead <= 0.3e-3),
    ));
    eprintln!("bench: done: {}", t.title);
    out.push(t);
    drop(daemon);
    drop(dom);
    drop(session);
    Ok(())
}

// ---------------------------------------------------------------- 3: 100 agents

async fn scale_section(out: &mut Vec<Table>) -> Result<()> {
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

// ---------------------------------------------------------------- 4: RSS, 1 GiB

async fn rss_section(agent: &HostAgent, out: &mut Vec<Table>) -> Result<()> {
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

// ---------------------------------------------------------------- main

fn failed(out: &mut Vec<Table>, n: u32, e: &anyhow::Error) {
    eprintln!("bench: section {n} failed: {e:#}");
    let mut t = Table::new(format!("{n}. FAILED"), ["", "", "", ""]);
    t.note(format!("{e:#}"));
    out.push(t);
}

#[tokio::main]
async fn main() {
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
