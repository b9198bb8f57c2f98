//! Side-by-side: the daemon vs a raw agent client doing the same work, same agent, same
//! chunk size, same run. Prints a table with ratios; asserts nothing.
//!
//! `cargo bench --bench compare` (env `ATP_BENCH_MIB`, default 64, sets the file size).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use ocloudview_atp::{
    pb::{
        PingRequest, ReadFileRequest, WriteFileHeader, WriteFileRequest,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    qga::AgentClient,
    testbed::HostAgent,
    transport::socket::SocketTransport,
};
use tonic::transport::{Channel, Endpoint, Uri};

const CHUNK: usize = 1 << 20;
const PINGS: usize = 2000;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn grpc(socket: &Path) -> GuestAgentClient<Channel> {
    for _ in 0..200 {
        let p = socket.to_owned();
        if let Ok(ch) = Endpoint::try_from("http://localhost")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
        {
            return GuestAgentClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon did not start");
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("ATP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let agent = HostAgent::start().expect("host qemu-ga");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("atp.toml");
    let sock = dir.path().join("atp.sock");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"unix://{}\"]\n[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            sock.display(),
            agent.socket().display()
        ),
    )
    .expect("config");
    let data: Vec<u8> = (0..mib << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let src = agent.dir().join("src.bin");
    std::fs::write(&src, &data).expect("source file");
    let src = src.display().to_string();

    // Raw: our own agent client, no daemon.
    let transport = SocketTransport::new(agent.socket());
    let raw = AgentClient::new(transport.clone()).with_timeout(Duration::from_secs(60));
    raw.ping().await.expect("ping");
    let mut raw_ping: Vec<Duration> = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        raw.ping().await.expect("ping");
        raw_ping.push(t.elapsed());
    }
    let t = Instant::now();
    let h = raw.file_open(&src, Some("r")).await.expect("open");
    let mut n = 0;
    loop {
        let r = raw.file_read(h, Some(CHUNK)).await.expect("read");
        n += r.data().expect("b64").len();
        if r.eof {
            break;
        }
    }
    raw.file_close(h).await.expect("close");
    let raw_read = t.elapsed();
    assert_eq!(n, data.len());
    let dst = agent.dir().join("raw-dst.bin").display().to_string();
    let t = Instant::now();
    let h = raw.file_open(&dst, Some("w")).await.expect("open");
    for c in data.chunks(CHUNK) {
        raw.file_write(h, c).await.expect("write");
    }
    raw.file_flush(h).await.expect("flush");
    raw.file_close(h).await.expect("close");
    let raw_write = t.elapsed();
    transport.close().await; // the agent serves one client at a time

    // Through the daemon.
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_atp"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("ATP_LOG", "warn")
        .spawn()
        .expect("atp serve");
    let mut c = grpc(&sock).await;
    c.ping(PingRequest {
        domain: "host".into(),
    })
    .await
    .expect("ping");
    let mut d_ping: Vec<Duration> = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        c.ping(PingRequest {
            domain: "host".into(),
        })
        .await
        .expect("ping");
        d_ping.push(t.elapsed());
    }
    let t = Instant::now();
    let mut s = c
        .read_file(ReadFileRequest {
            domain: "host".into(),
            path: src.clone(),
            chunk_size: CHUNK as u32,
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    let mut n = 0;
    while let Some(ch) = s.message().await.expect("chunk") {
        n += ch.data.len();
        if ch.eof {
            break;
        }
    }
    let d_read = t.elapsed();
    assert_eq!(n, data.len());
    let mut msgs = vec![WriteFileRequest {
        msg: Some(Msg::Header(WriteFileHeader {
            domain: "host".into(),
            path: agent.dir().join("d-dst.bin").display().to_string(),
            atomic: Some(false),
            ..Default::default()
        })),
    }];
    msgs.extend(data.chunks(CHUNK).map(|c| WriteFileRequest {
        msg: Some(Msg::Data(c.to_vec())),
    }));
    let t = Instant::now();
    c.write_file(tokio_stream::iter(msgs)).await.expect("write");
    let d_write = t.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();

    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    let (rp50, rp99) = (pct(&mut raw_ping, 0.5), pct(&mut raw_ping, 0.99));
    let (dp50, dp99) = (pct(&mut d_ping, 0.5), pct(&mut d_ping, 0.99));
    println!(
        "host qemu-ga, {mib} MiB file, {} KiB chunks, {PINGS} pings",
        CHUNK >> 10
    );
    println!(
        "{:<22} {:>12} {:>12} {:>8}",
        "measure", "raw agent", "daemon", "ratio"
    );
    println!(
        "{:<22} {:>12.1?} {:>12.1?} {:>8.2}",
        "ping p50",
        rp50,
        dp50,
        dp50.as_secs_f64() / rp50.as_secs_f64()
    );
    println!(
        "{:<22} {:>12.1?} {:>12.1?} {:>8.2}",
        "ping p99",
        rp99,
        dp99,
        dp99.as_secs_f64() / rp99.as_secs_f64()
    );
    println!(
        "{:<22} {:>12.1} {:>12.1} {:>8.2}",
        "read MiB/s",
        rate(raw_read),
        rate(d_read),
        rate(d_read) / rate(raw_read)
    );
    println!(
        "{:<22} {:>12.1} {:>12.1} {:>8.2}",
        "write MiB/s",
        rate(raw_write),
        rate(d_write),
        rate(d_write) / rate(raw_write)
    );
    println!(
        "ping overhead p50: {:.0} µs",
        (dp50.as_secs_f64() - rp50.as_secs_f64()) * 1e6
    );
}
