//! Section 2: a TCG guest under a session libvirtd, over libvirt and its direct socket,
//! plus the `virsh qemu-agent-command` loop people use today.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use base64::Engine;
use ocloudview_atp::{
    libvirt::LibvirtManager,
    qga::AgentClient,
    testbed::{Flavour, GuestImage, LibvirtSession},
    transport::{libvirt_agent::LibvirtTransport, socket::SocketTransport},
};

use crate::{
    CHUNK, GUEST_MIB, GUEST_PINGS, LV_READ, LV_WRITE, MIB, REPEAT, TIMEOUT,
    daemon::Daemon,
    loops::{
        d_pings, d_read_best, d_write_best, pattern, raw_pings, raw_read_best, raw_write_best,
    },
    table::{Table, met, mibs, pct, ratio},
};

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

pub(crate) async fn guest_section(out: &mut Vec<Table>) -> Result<()> {
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
