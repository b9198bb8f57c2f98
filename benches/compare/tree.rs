//! Section 6 (issue 15 item 5): a directory tree of `ATP_BENCH_TREE_FILES` (1000) files
//! of 4 KiB plus one of `ATP_BENCH_TREE_BIG_MIB` (64) MiB, pushed and pulled through the
//! daemon (PushTree, PullTree), against a per-file loop of WriteFile/ReadFile and against
//! the raw `tar` through guest-exec people use today (WriteFile of a tar + Exec `tar x`;
//! Exec `tar c` + ReadFile of the tar). Same busybox TCG guest over its direct socket,
//! same daemon, one run each. The per-file loops run `ATP_BENCH_TREE_LOOP` (100) of the
//! small files and are scaled to all of them (plus the big file, measured once): a full
//! loop takes minutes under emulation.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ocloudview_atp::{
    pb::{
        self, EntryKind, ExecMode, PullTreeRequest, PushTreeHeader, PushTreeRequest,
        ReadFileRequest, TreeEntry, TreeSummary, WriteFileHeader, WriteFileRequest,
        exec_event::Event, push_tree_request::Msg, write_file_request::Msg as WMsg,
    },
    testbed::{BootOptions, GuestImage, QemuGuest},
};

use crate::{
    Grpc, MIB,
    daemon::Daemon,
    loops::pattern,
    table::{Table, ratio},
};

const DOM: &str = "tcg";
const SMALL: usize = 4 << 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tree: (name, content); small files spread over 10 directories.
fn tree(files: usize, big_mib: usize) -> Vec<(String, Vec<u8>)> {
    let mut t: Vec<(String, Vec<u8>)> = (0..files)
        .map(|i| (format!("d{}/f{i:04}", i % 10), pattern(SMALL, i)))
        .collect();
    if big_mib > 0 {
        t.push(("big.bin".into(), pattern(big_mib * MIB, 99)));
    }
    t
}

fn entry(path: &str, kind: EntryKind, size: u64) -> TreeEntry {
    TreeEntry {
        path: path.into(),
        kind: kind as i32,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        mtime: 1_700_000_000,
        size,
        ..Default::default()
    }
}

async fn push_tree(c: &mut Grpc, dest: &str, t: &[(String, Vec<u8>)]) -> Result<Duration> {
    let dirs: std::collections::BTreeSet<&str> = t
        .iter()
        .filter_map(|(n, _)| n.rsplit_once('/').map(|(d, _)| d))
        .collect();
    let mut entries = vec![entry(".", EntryKind::Dir, 0)];
    entries.extend(dirs.iter().map(|d| entry(d, EntryKind::Dir, 0)));
    let mut summary = TreeSummary {
        entries: entries.len() as u64,
        ..Default::default()
    };
    for (_, d) in t {
        summary.entries += 1;
        summary.bytes += d.len() as u64;
        summary.largest = summary.largest.max(d.len() as u64);
    }
    let mut msgs = vec![PushTreeRequest {
        msg: Some(Msg::Header(PushTreeHeader {
            domain: DOM.into(),
            path: dest.into(),
            summary: Some(summary),
            ..Default::default()
        })),
    }];
    msgs.extend(entries.into_iter().map(|e| PushTreeRequest {
        msg: Some(Msg::Entry(e)),
    }));
    for (n, d) in t {
        msgs.push(PushTreeRequest {
            msg: Some(Msg::Entry(entry(n, EntryKind::File, d.len() as u64))),
        });
        msgs.extend(d.chunks(MIB).map(|c| PushTreeRequest {
            msg: Some(Msg::Data(c.to_vec())),
        }));
    }
    let t0 = Instant::now();
    let r = c.push_tree(tokio_stream::iter(msgs)).await?.into_inner();
    ensure!(r.bytes == summary.bytes, "pushed {} bytes", r.bytes);
    Ok(t0.elapsed())
}

async fn pull_tree(c: &mut Grpc, src: &str, want: u64) -> Result<Duration> {
    let t0 = Instant::now();
    let mut s = c
        .pull_tree(PullTreeRequest {
            domain: DOM.into(),
            path: src.into(),
            allow_special: false,
        })
        .await?
        .into_inner();
    let mut got = 0u64;
    let mut done = false;
    while let Some(m) = s.message().await? {
        match m.msg {
            Some(pb::pull_tree_response::Msg::Data(d)) => got += d.len() as u64,
            Some(pb::pull_tree_response::Msg::Done(_)) => done = true,
            _ => {}
        }
    }
    ensure!(done && got == want, "pulled {got} of {want} bytes");
    Ok(t0.elapsed())
}

async fn write(c: &mut Grpc, path: &str, data: &[u8]) -> Result<()> {
    let mut msgs = vec![WriteFileRequest {
        msg: Some(WMsg::Header(WriteFileHeader {
            domain: DOM.into(),
            path: path.into(),
            ..Default::default()
        })),
    }];
    msgs.extend(data.chunks(MIB).map(|c| WriteFileRequest {
        msg: Some(WMsg::Data(c.to_vec())),
    }));
    let r = c.write_file(tokio_stream::iter(msgs)).await?.into_inner();
    ensure!(
        r.bytes_written as usize == data.len(),
        "wrote {}",
        r.bytes_written
    );
    Ok(())
}

async fn read(c: &mut Grpc, path: &str) -> Result<usize> {
    let mut s = c
        .read_file(ReadFileRequest {
            domain: DOM.into(),
            path: path.into(),
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
    Ok(n)
}

/// `/bin/sh -c script` through Exec (COLLECT); fails unless it exits 0.
async fn sh(c: &mut Grpc, script: &str) -> Result<()> {
    let mut s = c
        .exec(pb::ExecRequest {
            domain: DOM.into(),
            command: Some(pb::exec_request::Command::Argv(pb::Argv {
                path: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
            })),
            mode: ExecMode::Collect as i32,
            timeout_ms: 600_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut err = Vec::new();
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Stderr(d)) => err.extend(d),
            Some(Event::Exited(x)) => {
                ensure!(
                    x.exit_code == Some(0),
                    "{script}: {:?} {}",
                    x.exit_code,
                    String::from_utf8_lossy(&err)
                );
                return Ok(());
            }
            _ => {}
        }
    }
    anyhow::bail!("{script}: no exit")
}

/// The tree as one tar, built locally (what a script does before pushing it raw).
fn tarball(t: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, d) in t {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, n, &d[..])?;
    }
    Ok(b.into_inner()?)
}

pub(crate) async fn tree_section(out: &mut Vec<Table>) -> Result<()> {
    let files = env("ATP_BENCH_TREE_FILES", 1000);
    let big_mib = env("ATP_BENCH_TREE_BIG_MIB", 64);
    let loop_n = env("ATP_BENCH_TREE_LOOP", 100).clamp(1, files.max(1));
    let t0 = Instant::now();
    let image = tokio::task::spawn_blocking(GuestImage::ensure)
        .await?
        .context("guest image (run scripts/setup.sh)")?;
    let guest = QemuGuest::boot(
        &image,
        BootOptions {
            memory_mib: 1024,
            ..Default::default()
        },
    )
    .await?;
    let boot = t0.elapsed();
    let d = Daemon::start(&format!(
        "[[guests]]\nname = \"{DOM}\"\nsocket = \"{}\"\n",
        guest.agent_socket().display()
    ))?;
    let mut c = d.client().await?;
    sh(&mut c, "mkdir -p /data").await?;
    let small = tree(files, 0);
    let full = tree(files, big_mib);
    let bytes_of = |t: &[(String, Vec<u8>)]| t.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());

    // Push: the tree RPC, the raw tar, the per-file loop (scaled).
    let push_small = push_tree(&mut c, "/data/ps", &small).await?;
    let push_full = push_tree(&mut c, "/data/pf", &full).await?;
    let raw_push = |t: Vec<(String, Vec<u8>)>, dir: &'static str| {
        let mut c = c.clone();
        async move {
            let t0 = Instant::now();
            let tar = tarball(&t)?;
            write(&mut c, "/data/raw.tar", &tar).await?;
            sh(
                &mut c,
                &format!("mkdir -p {dir} && tar -x -f /data/raw.tar -C {dir} && rm /data/raw.tar"),
            )
            .await?;
            Ok::<_, anyhow::Error>(t0.elapsed())
        }
    };
    let raw_small = raw_push(small.clone(), "/data/rs").await?;
    let raw_full = raw_push(full.clone(), "/data/rf").await?;
    sh(&mut c, "mkdir -p /data/loop/d0").await?;
    let t1 = Instant::now();
    for (i, (_, data)) in small.iter().take(loop_n).enumerate() {
        write(&mut c, &format!("/data/loop/d0/f{i:04}"), data).await?;
    }
    let per_file = t1.elapsed().div_f64(loop_n as f64);
    let t1 = Instant::now();
    if big_mib > 0 {
        write(&mut c, "/data/loop/big.bin", &full[files].1).await?;
    }
    let loop_big = t1.elapsed();
    let loop_small = per_file.mul_f64(files as f64);
    let loop_full = loop_small + loop_big;

    // Pull: the tree RPC, the raw tar (Exec tar c + ReadFile), the per-file loop.
    let pull_small = pull_tree(&mut c, "/data/ps", bytes_of(&small)).await?;
    let pull_full = pull_tree(&mut c, "/data/pf", bytes_of(&full)).await?;
    let raw_pull = |dir: &'static str| {
        let mut c = c.clone();
        async move {
            let t0 = Instant::now();
            sh(&mut c, &format!("tar -c -f /data/out.tar -C {dir} .")).await?;
            let n = read(&mut c, "/data/out.tar").await?;
            let t = t0.elapsed();
            sh(&mut c, "rm /data/out.tar").await?;
            Ok::<_, anyhow::Error>((t, n))
        }
    };
    let (raw_pull_small, _) = raw_pull("/data/ps").await?;
    let (raw_pull_full, _) = raw_pull("/data/pf").await?;
    let t1 = Instant::now();
    for (i, (name, _)) in small.iter().take(loop_n).enumerate() {
        let n = read(&mut c, &format!("/data/ps/{name}")).await?;
        ensure!(n == SMALL, "read {n} of file {i}");
    }
    let per_read = t1.elapsed().div_f64(loop_n as f64);
    let t1 = Instant::now();
    if big_mib > 0 {
        read(&mut c, "/data/pf/big.bin").await?;
    }
    let read_big = t1.elapsed();
    let rloop_small = per_read.mul_f64(files as f64);
    let rloop_full = rloop_small + read_big;

    let mut t = Table::new(
        "6. Directory trees (busybox TCG guest, direct socket)",
        ["", "tree RPC", "other way", "other / tree"],
    );
    let full_name = format!("{files} × 4 KiB + {big_mib} MiB");
    let small_name = format!("{files} × 4 KiB");
    for (what, tree_t, other, how) in [
        (
            &small_name,
            push_small,
            loop_small,
            "push vs WriteFile loop",
        ),
        (&small_name, push_small, raw_small, "push vs raw tar"),
        (&full_name, push_full, loop_full, "push vs WriteFile loop"),
        (&full_name, push_full, raw_full, "push vs raw tar"),
        (
            &small_name,
            pull_small,
            rloop_small,
            "pull vs ReadFile loop",
        ),
        (&small_name, pull_small, raw_pull_small, "pull vs raw tar"),
        (&full_name, pull_full, rloop_full, "pull vs ReadFile loop"),
        (&full_name, pull_full, raw_pull_full, "pull vs raw tar"),
    ] {
        t.row(
            format!("{how}, {what}"),
            secs(tree_t),
            secs(other),
            ratio(other.as_secs_f64(), tree_t.as_secs_f64()),
        );
    }
    t.note(format!(
        "Loops: {loop_n} files measured ({:.0} ms per WriteFile, {:.0} ms per ReadFile of 4 KiB) \
         and scaled to {files}, plus the big file measured once. Raw tar push = build the tar \
         locally + WriteFile + Exec `tar -x`; raw tar pull = Exec `tar -c` + ReadFile. Targets: \
         the push at least 20× faster than the loop, and within 1.2× of the raw tar \
         (other / tree ≥ 0.83). Guest boot {boot:.0?}.",
        per_file.as_secs_f64() * 1e3,
        per_read.as_secs_f64() * 1e3,
    ));
    out.push(t);
    drop(guest);
    Ok(())
}
