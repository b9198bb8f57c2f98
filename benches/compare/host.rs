//! Sections 1 and 5: one host qemu-ga, raw vs daemon; then ping fairness during a ReadFile.

use std::{sync::Arc, time::Instant};

use anyhow::{Result, ensure};
use ocloudview_atp::{
    pb::PingRequest, qga::AgentClient, testbed::HostAgent, transport::socket::SocketTransport,
};

use crate::{
    CHUNK, HOST_PINGS, MIB, REPEAT, TIMEOUT,
    daemon::Daemon,
    loops::{
        d_pings, d_read, d_read_best, d_write_best, pattern, raw_pings, raw_read_best,
        raw_write_best,
    },
    table::{Table, mibs, pct},
};

pub(crate) async fn host_section(
    agent: &HostAgent,
    mib: usize,
    out: &mut Vec<Table>,
) -> Result<()> {
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
