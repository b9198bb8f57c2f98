//! Section 7: interactive sessions through the daemon. Keystroke echo latency (one byte
//! sent on ExecInteractive → its echo by the guest's terminal received) on the host agent,
//! a TCG guest's direct socket and the same guest through libvirt; and streamed stdin
//! (`sha256sum` reading the stream) against WriteFile of the same bytes, same transport.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use ocloudview_atp::{
    pb::{
        Argv, ExecInput, ExecRequest, TerminalSize, exec_event::Event, exec_input::Msg,
        exec_request::Command,
    },
    testbed::{Flavour, GuestImage, HostAgent, LibvirtSession},
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{
    CHUNK, Grpc, LV_WRITE, MIB,
    daemon::Daemon,
    loops::{d_write_best, pattern},
    table::{Table, lat, met, mibs, pct, ratio},
};

/// Keystrokes timed per transport.
const KEYS: usize = 100;
/// Streamed-stdin size: host agent, and TCG guest (slow: a few MiB/s).
const HOST_STDIN_MIB: usize = 64;
const GUEST_STDIN_MIB: usize = 8;

type Events = tonic::Streaming<ocloudview_atp::pb::ExecEvent>;

async fn open(
    c: &mut Grpc,
    domain: &str,
    argv: &[&str],
    tty: bool,
) -> Result<(mpsc::Sender<ExecInput>, Events)> {
    let (tx, rx) = mpsc::channel(8);
    let start = ExecRequest {
        domain: domain.into(),
        command: Some(Command::Argv(Argv {
            path: argv[0].into(),
            args: argv[1..].iter().map(|a| (*a).to_owned()).collect(),
        })),
        tty,
        tty_size: tty.then_some(TerminalSize { rows: 24, cols: 80 }),
        timeout_ms: 3_600_000,
        ..Default::default()
    };
    tx.send(ExecInput {
        msg: Some(Msg::Start(start)),
    })
    .await?;
    let mut s = c
        .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match s.message().await?.and_then(|e| e.event) {
        Some(Event::Started(_)) => Ok((tx, s)),
        other => bail!("expected Started, got {other:?}"),
    }
}

/// Echo round trips through `cat` on a terminal: each key's time to come back.
async fn echoes(c: &mut Grpc, domain: &str) -> Result<Vec<Duration>> {
    let (tx, mut s) = open(c, domain, &["cat"], true).await?;
    let mut took = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = b'a' + u8::try_from(i % 26)?;
        let t = Instant::now();
        tx.send(ExecInput {
            msg: Some(Msg::Stdin(vec![key])),
        })
        .await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), s.message())
                .await
                .context("no echo within 30 s")??
                .and_then(|e| e.event);
            match ev {
                Some(Event::Stdout(d)) if d.contains(&key) => break,
                Some(Event::Exited(x)) => bail!("cat exited: {x:?}"),
                None => bail!("stream ended"),
                _ => {}
            }
        }
        took.push(t.elapsed());
        // A typist's pace: the next key comes after the echo, not in a burst.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(ExecInput {
        msg: Some(Msg::Stdin(b"\n".to_vec())),
    })
    .await?;
    tx.send(ExecInput {
        msg: Some(Msg::Eof(true)),
    })
    .await?;
    drain(&mut s).await?;
    Ok(took)
}

/// Reads to the exit; returns stdout.
async fn drain(s: &mut Events) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(600), s.message())
            .await
            .context("no exit within 600 s")??
            .and_then(|e| e.event)
        {
            Some(Event::Stdout(d)) => out.extend(d),
            Some(Event::Exited(x)) => {
                ensure!(x.exit_code == Some(0), "exit {x:?}");
                return Ok(out);
            }
            Some(_) => {}
            None => bail!("stream ended without an exit"),
        }
    }
}

/// `len` bytes streamed into `sha256sum`, in 1 MiB messages, until its exit is reported;
/// the digest is checked.
async fn stdin_rate(c: &mut Grpc, domain: &str, data: &Arc<Vec<u8>>) -> Result<Duration> {
    let (tx, mut s) = open(c, domain, &["sha256sum"], false).await?;
    let want = format!("{:x}", Sha256::digest(data.as_slice()));
    let t = Instant::now();
    let feed = {
        let data = Arc::clone(data);
        tokio::spawn(async move {
            for chunk in data.chunks(MIB) {
                if tx
                    .send(ExecInput {
                        msg: Some(Msg::Stdin(chunk.to_vec())),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx
                .send(ExecInput {
                    msg: Some(Msg::Eof(true)),
                })
                .await;
        })
    };
    let out = drain(&mut s).await?;
    let took = t.elapsed();
    feed.await?;
    ensure!(
        String::from_utf8_lossy(&out).starts_with(&want),
        "sha256sum saw other bytes"
    );
    Ok(took)
}

struct Row {
    name: String,
    echo: Vec<Duration>,
    stdin: Duration,
    write: Duration,
    len: usize,
    echo_target: Option<Duration>,
}

async fn measure(
    c: &mut Grpc,
    name: &str,
    domain: &str,
    dir: &str,
    mib: usize,
    chunk: usize,
    echo_target: Option<Duration>,
) -> Result<Row> {
    let data = Arc::new(pattern(mib * MIB, 11));
    let echo = echoes(c, domain).await?;
    // Best of REPEAT, as the WriteFile beside it.
    let mut stdin = Duration::MAX;
    for _ in 0..crate::REPEAT {
        stdin = stdin.min(stdin_rate(c, domain, &data).await?);
    }
    let write = d_write_best(
        c,
        domain,
        &format!("{dir}/bench-stdin-vs-write.bin"),
        &data,
        chunk,
    )
    .await?;
    Ok(Row {
        name: name.to_owned(),
        echo,
        stdin,
        write,
        len: data.len(),
        echo_target,
    })
}

pub(crate) async fn interactive_section(out: &mut Vec<Table>) -> Result<()> {
    let mut rows = Vec::new();
    {
        let agent = HostAgent::start()?;
        let dir = tempfile::tempdir()?;
        let daemon = Daemon::start(&format!(
            "[[guests]]\nname = \"host\"\nsocket = \"{}\"\n",
            agent.socket().display()
        ))?;
        let mut c = daemon.client().await?;
        let d = dir.path().display().to_string();
        rows.push(
            measure(
                &mut c,
                "host agent",
                "host",
                &d,
                HOST_STDIN_MIB,
                CHUNK,
                None,
            )
            .await?,
        );
    }
    const DOM: &str = "atp-bench-i";
    let image = tokio::task::spawn_blocking(GuestImage::ensure)
        .await?
        .context("guest image (run scripts/setup.sh)")?;
    let session = LibvirtSession::start().await?;
    let dom = session.create_domain(DOM, &image, Flavour::Debian).await?;
    let daemon = Daemon::start(&format!(
        "[[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n\n[[guests]]\nname = \"direct\"\nsocket = \"{}\"\n",
        session.uri(),
        dom.direct_socket().display()
    ))?;
    let mut c = daemon.client().await?;
    rows.push(
        measure(
            &mut c,
            "TCG guest, direct socket",
            "direct",
            "/data",
            GUEST_STDIN_MIB,
            CHUNK,
            Some(Duration::from_millis(30)),
        )
        .await?,
    );
    rows.push(
        measure(
            &mut c,
            "TCG guest, libvirt",
            &format!("lab/{DOM}"),
            "/data",
            GUEST_STDIN_MIB,
            LV_WRITE,
            Some(Duration::from_millis(60)),
        )
        .await?,
    );
    drop(daemon);
    drop(dom);
    drop(session);

    let mut t = Table::new(
        format!(
            "7. Interactive sessions: keystroke echo through a terminal ({KEYS} keys, p50/p99) and streamed stdin vs WriteFile ({HOST_STDIN_MIB} MiB host, {GUEST_STDIN_MIB} MiB guest)"
        ),
        ["measure", "value", "reference", "ratio"],
    );
    let mut notes = Vec::new();
    for mut r in rows {
        let p50 = pct(&mut r.echo, 0.5);
        let p99 = pct(&mut r.echo, 0.99);
        t.row(
            format!("{}: echo p50 / p99", r.name),
            lat(p50),
            lat(p99),
            r.echo_target.map_or_else(String::new, |target| {
                format!("target p50 ≤ {} {}", lat(target), met(p50 <= target))
            }),
        );
        let (s, w) = (mibs(r.len, r.stdin), mibs(r.len, r.write));
        t.row(
            format!("{}: stdin MiB/s vs WriteFile", r.name),
            format!("{s:.1}"),
            format!("{w:.1}"),
            ratio(s, w),
        );
        notes.push(format!(
            "{} stdin/WriteFile {:.2} {}",
            r.name,
            s / w,
            met(s / w >= 0.8)
        ));
    }
    t.note(format!(
        "Target: streamed stdin ≥ 0.8× WriteFile on the same transport: {}.",
        notes.join("; ")
    ));
    eprintln!("bench: done: {}", t.title);
    out.push(t);
    Ok(())
}
