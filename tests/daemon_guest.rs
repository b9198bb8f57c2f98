//! The daemon in front of the real TCG guest, reached both through a session libvirtd
//! (`lab/atp-dg`) and through the domain's second agent channel (`direct`): live exec,
//! file round trips with equal hashes, guest facts, and no handle left by a client that
//! cancels.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use common::{drain_exec, sh_request};
use ocloudview_atp::{
    pb::{
        GetGuestInfoRequest, ListDomainsRequest, ReadFileRequest, WriteFileHeader,
        WriteFileRequest, exec_event::Event, guest_agent_client::GuestAgentClient,
        write_file_request::Msg,
    },
    testbed::{Flavour, LibvirtSession},
};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

async fn open_fds(c: &mut GuestAgentClient<Channel>, domain: &str) -> usize {
    // The agent serving libvirt's channel, found by its command line (qemu-ga writes no
    // pid file unless it daemonizes). Exactly one process must match.
    let script = r#"n=0; for p in /proc/[0-9]*; do
      [ "$(cat $p/comm 2>/dev/null)" = qemu-ga ] || continue
      tr '\0' ' ' <$p/cmdline | grep -q 'guest_agent\.0 ' || continue
      n=$((n+1)); fds=$(ls $p/fd | wc -l)
    done; [ $n = 1 ] && echo $fds"#;
    let out = sh_out(c, domain, script).await;
    let n: usize = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no single agent found: {out:?}"));
    assert!(
        n >= 3,
        "an agent process has at least stdin/stdout/stderr open: {n}"
    );
    n
}

async fn round_trip(
    c: &mut GuestAgentClient<Channel>,
    domain: &str,
    path: &str,
    data: &[u8],
) -> (f64, f64) {
    let digest = Sha256::digest(data).to_vec();
    let mut msgs = vec![WriteFileRequest {
        msg: Some(Msg::Header(WriteFileHeader {
            domain: domain.into(),
            path: path.into(),
            expected_sha256: digest.clone(),
            ..Default::default()
        })),
    }];
    msgs.extend(data.chunks(1 << 20).map(|c| WriteFileRequest {
        msg: Some(Msg::Data(c.to_vec())),
    }));
    let t0 = Instant::now();
    let w = c
        .write_file(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let write_s = t0.elapsed().as_secs_f64();
    assert_eq!(w.sha256, digest);
    let t0 = Instant::now();
    let mut s = c
        .read_file(ReadFileRequest {
            domain: domain.into(),
            path: path.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut back: Vec<u8> = Vec::new();
    let last = loop {
        let ch = s.message().await.unwrap().unwrap();
        back.extend_from_slice(&ch.data);
        if ch.eof {
            break ch;
        }
    };
    let read_s = t0.elapsed().as_secs_f64();
    assert_eq!(last.sha256, digest);
    assert!(back == data, "{domain}: data differs");
    let mib = data.len() as f64 / 1048576.0;
    (mib / write_s, mib / read_s)
}

#[tokio::test]
async fn daemon_over_libvirt_and_direct_socket() {
    common::init_logging();
    let image = common::image().await;
    let session = LibvirtSession::start().await.unwrap();
    let dom = session
        .create_domain("atp-dg", &image, Flavour::Debian)
        .await
        .unwrap();
    let d = common::Daemon::start(
        &[],
        &format!(
            "[[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n\n[[guests]]\nname = \"direct\"\nsocket = \"{}\"\n",
            session.uri(),
            dom.direct_socket().display()
        ),
    )
    .await;
    let mut c = d.client().await;

    let list = c
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list
        .domains
        .iter()
        .map(|d| (d.name.as_str(), d.state.as_str(), d.agent_connected))
        .collect();
    assert!(
        names.contains(&("lab/atp-dg", "running", true)),
        "{names:?}"
    );
    assert!(names.contains(&("direct", "socket", true)), "{names:?}");

    let info = c
        .get_guest_info(GetGuestInfoRequest {
            domain: "lab/atp-dg".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.hostname.as_deref(), Some("qga-debian"));
    assert_eq!(info.vcpus_online, Some(1));

    for domain in ["lab/atp-dg", "direct"] {
        let t0 = Instant::now();
        let mut s = c
            .exec(sh_request(
                domain,
                "for i in 1 2 3; do echo $i; sleep 1; done",
            ))
            .await
            .unwrap()
            .into_inner();
        let (mut first, mut exit) = (None, None);
        while let Some(ev) = s.message().await.unwrap() {
            match ev.event.unwrap() {
                Event::Stdout(_) => {
                    first.get_or_insert(t0.elapsed());
                }
                Event::Exited(x) => exit = Some((t0.elapsed(), x)),
                _ => {}
            }
        }
        let (exit_at, x) = exit.unwrap();
        assert_eq!(x.exit_code, Some(0));
        let first = first.unwrap();
        eprintln!("{domain}: first output {first:?}, exit {exit_at:?}");
        assert!(
            first + Duration::from_millis(1500) < exit_at,
            "{domain}: first {first:?} exit {exit_at:?}"
        );
    }

    let data: Vec<u8> = (0..(4 << 20) + 77)
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for (domain, path) in [
        ("lab/atp-dg", "/data/lv.bin"),
        ("direct", "/data/direct.bin"),
    ] {
        let (w, r) = round_trip(&mut c, domain, path, &data).await;
        eprintln!("{domain}: 4 MiB write {w:.1} MiB/s, read {r:.1} MiB/s");
    }

    // A reader that cancels mid-stream leaves no handle open in the guest's agent.
    let baseline = open_fds(&mut c, "lab/atp-dg").await;
    for _ in 0..3 {
        let mut s = c
            .read_file(ReadFileRequest {
                domain: "lab/atp-dg".into(),
                path: "/data/lv.bin".into(),
                chunk_size: 256 << 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let _ = s.message().await.unwrap().unwrap();
        drop(s);
    }
    let mut settled = false;
    for _ in 0..50 {
        if open_fds(&mut c, "lab/atp-dg").await <= baseline {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "guest agent handles did not return to {baseline}");

    exec_dirs_made_ahead(&mut c, "lab/atp-dg").await;
    drop(dom);
}

/// Runs `script` on `domain` and returns its stdout, requiring exit 0.
async fn sh_out(c: &mut GuestAgentClient<Channel>, domain: &str, script: &str) -> String {
    let o = drain_exec(
        c.exec(sh_request(domain, script))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let exit = o.exited.as_ref().and_then(|x| x.exit_code);
    assert_eq!(exit, Some(0), "{script}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// The daemon runs small commands in exec directories made ahead (one guest process per
/// command): each in a directory of its own, removed after; the ones waiting are private
/// (0700, root's, empty outputs) and their names are in no process's command line; and
/// when they are gone (a restarted guest, say), the next command still runs.
async fn exec_dirs_made_ahead(c: &mut GuestAgentClient<Channel>, domain: &str) {
    let mut dirs = Vec::new();
    for _ in 0..6 {
        let out = sh_out(c, domain, "readlink /proc/self/fd/1").await;
        let dir = out.trim().strip_suffix("/out").unwrap().to_owned();
        assert!(dir.starts_with("/tmp/.atp-exec-"), "{out:?}");
        dirs.push(dir);
    }
    let mut distinct = dirs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        dirs.len(),
        "a directory was used twice: {dirs:?}"
    );
    let left = format!(
        "for d in {}; do [ -e \"$d\" ] && echo \"$d\"; done; true",
        dirs.join(" ")
    );
    let mut gone = false;
    for _ in 0..100 {
        if sh_out(c, domain, &left).await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "finished exec directories were not removed");

    // The waiting ones: no `pid` yet (no program ran there).
    let check = r#"n=0
for d in /tmp/.atp-exec-*; do
  [ -d "$d" ] && [ ! -e "$d/pid" ] || continue
  n=$((n + 1))
  [ "$(stat -c '%a %u' "$d")" = "700 0" ] || echo "open: $d"
  [ -f "$d/out" ] && [ ! -s "$d/out" ] && [ -f "$d/err" ] && [ ! -s "$d/err" ] || echo "not empty: $d"
  for c in /proc/[0-9]*/cmdline; do
    l=$(tr '\0' ' ' <"$c" 2>/dev/null)
    case $l in *"${d##*/}"*) echo "named by $c: $l" ;; esac
  done
done
echo "waiting $n""#;
    let report = sh_out(c, domain, check).await;
    assert!(
        report.ends_with("\n") && report.lines().count() == 1,
        "{report}"
    );
    let waiting: usize = report
        .trim()
        .strip_prefix("waiting ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(waiting >= 1, "no exec directory made ahead: {report}");

    // All gone at once: the next command makes its own and runs.
    let removed = sh_out(
        c,
        domain,
        r#"for d in /tmp/.atp-exec-*; do [ -e "$d/pid" ] || { rm -rf "$d"; echo "$d"; }; done"#,
    )
    .await;
    eprintln!(
        "removed {} waiting exec directories",
        removed.lines().count()
    );
    for i in 0..3 {
        assert_eq!(
            sh_out(c, domain, &format!("echo after {i}")).await,
            format!("after {i}\n")
        );
    }
}
