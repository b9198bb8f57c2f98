//! Fault injection against real components, no mocks: a host qemu-ga killed in the middle
//! of a ReadFile, a WriteFile and an Exec, then replaced on the same socket while the
//! daemon keeps running; the TCG guest reset under a streaming Exec; 1,000 random client
//! cancellations against a guest's agent socket without one misrouted reply; the session
//! libvirtd restarted under a ping load; SIGTERM in the middle of a 64 MiB ReadFile (exit
//! 0, handles closed, the audit outcome written); and a ReadFile asking for 64 MiB chunks
//! over libvirt, which must be clamped and leave the domain's agent healthy.
//!
//! Every wait is bounded. The tests that boot a guest hold [`GUEST`] while it runs, so at
//! most one TCG guest runs at a time.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{Daemon, daemon_for, drain_exec, sh_request};
use ocloudview_atp::{
    libvirt::LibvirtManager,
    pb::{
        AgentCommandRequest, Argv, ExecRequest, FileChunk, GetAgentInfoRequest, GetOsInfoRequest,
        ListDomainsRequest, PingRequest, ReadFileRequest, WriteFileHeader, WriteFileRequest,
        exec_event::Event, exec_request, guest_agent_client::GuestAgentClient,
        write_file_request::Msg,
    },
    testbed::{
        BootOptions, Flavour, HOST_BLOCKED_COMMANDS, HostAgent, LibvirtDomain, LibvirtSession,
        QemuGuest, wait_for_agent, wait_for_socket_agent,
    },
    transport::libvirt::LibvirtTransport,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Status, transport::Channel};

/// Held by every test that boots a TCG guest: one guest at a time on a 2-core machine.
static GUEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `[agent] timeout_ms` of the host-agent tests.
const AGENT_TIMEOUT: Duration = Duration::from_millis(2000);

type Client = GuestAgentClient<Channel>;

/// Runs `f`, failing the test if it takes longer than `limit`.
async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// xorshift64: enough randomness for deadlines, no new dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn ping(domain: &str) -> PingRequest {
    PingRequest {
        domain: domain.into(),
    }
}

fn read_req(domain: &str, path: &str, chunk_size: u32) -> ReadFileRequest {
    ReadFileRequest {
        domain: domain.into(),
        path: path.into(),
        chunk_size,
        ..Default::default()
    }
}

fn argv(domain: &str, path: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        domain: domain.into(),
        command: Some(exec_request::Command::Argv(Argv {
            path: path.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        })),
        ..Default::default()
    }
}

/// Where each file descriptor of process `pid` points.
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Reads a whole ReadFile stream: the data and the final (`eof`) chunk.
async fn read_to_end(c: &mut Client, r: ReadFileRequest) -> Result<(Vec<u8>, FileChunk), Status> {
    let mut s = c.read_file(r).await?.into_inner();
    let mut data = Vec::new();
    loop {
        let Some(chunk) = s.message().await? else {
            return Err(Status::internal("stream ended without an eof chunk"));
        };
        data.extend_from_slice(&chunk.data);
        if chunk.eof {
            if s.message().await?.is_some() {
                return Err(Status::internal("a message after the eof chunk"));
            }
            return Ok((data, chunk));
        }
    }
}

/// Reads a server stream until it fails, returning the status and the number of messages
/// that came first. Panics if the stream ends cleanly or `limit` passes.
async fn stream_error<T>(
    s: &mut tonic::Streaming<T>,
    limit: Duration,
    what: &str,
) -> (Status, usize) {
    bounded(limit, what, async {
        let mut n = 0;
        loop {
            match s.message().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("{what}: the stream ended cleanly after {n} more messages"),
                Err(st) => return (st, n),
            }
        }
    })
    .await
}

/// A qemu-ga started by this file on an existing socket path (the test bed's `HostAgent`
/// cannot be restarted), with the test bed's block list; its state lives in a temp dir of
/// its own. Killed on drop.
struct Respawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Respawned {
    async fn start(socket: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("atp-fault-qga.")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let log = std::fs::File::create(dir.path().join("qga.log")).unwrap();
        let log2 = log.try_clone().unwrap();
        let child = Command::new("qemu-ga")
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(socket)
            .arg("-t")
            .arg(&state)
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .arg("-b")
            .arg(HOST_BLOCKED_COMMANDS.join(","))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap();
        let agent = Self { child, _dir: dir };
        // The killed agent's socket file is still there: wait until the new one answers.
        wait_for_socket_agent(socket, "respawned qemu-ga", Duration::from_secs(10))
            .await
            .unwrap();
        agent
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Respawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Size of the largest file in `dir` whose name starts with `prefix`.
fn largest(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
}

/// After an agent came back: Ping and a small ReadFile work through the same daemon.
async fn works_again(c: &mut Client, small: &Path) {
    bounded(
        Duration::from_secs(10),
        "requests after the restart",
        async {
            c.ping(ping("host")).await.unwrap();
            let (data, _) = read_to_end(c, read_req("host", &small.display().to_string(), 0))
                .await
                .unwrap();
            assert_eq!(data, b"still here\n");
        },
    )
    .await;
}

/// Kills a process the killed agent left behind (found by pid, checked by name).
fn kill_orphan(pid: i64, comm: &str) {
    let seen = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if seen.trim() == comm
        && let Ok(pid) = i32::try_from(pid)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn agent_killed_mid_read_write_and_exec_is_unavailable_then_replaced_without_daemon_restart()
{
    common::init_logging();
    bounded(Duration::from_secs(90), "agent kill test", async {
        let mut agent = HostAgent::start().unwrap();
        let socket = agent.socket().to_owned();
        let d = daemon_for(&agent, "\n[agent]\ntimeout_ms = 2000\n").await;
        let mut c = d.client().await;
        let big = agent.dir().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let small = agent.dir().join("small.txt");
        std::fs::write(&small, "still here\n").unwrap();
        c.ping(ping("host")).await.unwrap();

        // 1. Killed in the middle of a 64 MiB ReadFile.
        let mut s = c
            .read_file(read_req("host", &big.display().to_string(), 1 << 20))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..2 {
            let chunk = s.message().await.unwrap().unwrap();
            assert!(!chunk.eof);
        }
        let t0 = Instant::now();
        agent.kill();
        let (st, more) =
            stream_error(&mut s, Duration::from_secs(10), "ReadFile after the kill").await;
        let took = t0.elapsed();
        eprintln!(
            "mid-ReadFile kill: {more} buffered chunks, then {:?} after {took:?}: {}",
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(took < AGENT_TIMEOUT, "UNAVAILABLE took {took:?}");
        let t0 = Instant::now();
        let mut a1 = Respawned::start(&socket).await;
        works_again(&mut c, &small).await;
        eprintln!(
            "agent replaced; requests work again {:?} after its start",
            t0.elapsed()
        );

        // 2. Killed while a WriteFile streams.
        let target = agent.dir().join("w.bin");
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteFileRequest>(4);
        tx.send(WriteFileRequest {
            msg: Some(Msg::Header(WriteFileHeader {
                domain: "host".into(),
                path: target.display().to_string(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let producer = tokio::spawn(async move {
            let block = vec![0x5a_u8; 1 << 20];
            for _ in 0..256 {
                let msg = WriteFileRequest {
                    msg: Some(Msg::Data(block.clone())),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        let mut cw = c.clone();
        let mut upload = tokio::spawn(async move {
            cw.write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        let dir = agent.dir().to_owned();
        bounded(Duration::from_secs(10), "upload under way", async {
            while largest(&dir, ".atp-") < 4 << 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let t0 = Instant::now();
        a1.kill();
        let res = bounded(
            Duration::from_secs(10),
            "WriteFile after the kill",
            &mut upload,
        )
        .await
        .unwrap();
        let took = t0.elapsed();
        producer.abort();
        let st = res.expect_err("the upload succeeded although its agent was killed");
        eprintln!(
            "mid-WriteFile kill ({} MiB written): {:?} after {took:?}: {}",
            largest(&dir, ".atp-") >> 20,
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(took < AGENT_TIMEOUT, "UNAVAILABLE took {took:?}");
        assert!(!target.exists(), "a failed upload replaced its target");
        let mut a2 = Respawned::start(&socket).await;
        works_again(&mut c, &small).await;

        // 3. Killed under a running Exec.
        let mut s = c
            .exec(argv("host", "sleep", &["30"]))
            .await
            .unwrap()
            .into_inner();
        let pid = match s.message().await.unwrap().unwrap().event.unwrap() {
            Event::Started(st) => st.pid,
            other => panic!("expected Started, got {other:?}"),
        };
        let exec_dir = fd_targets(a2.pid())
            .into_iter()
            .find(|t| t.contains("/.atp-exec-"))
            .and_then(|t| Some(Path::new(&t).parent()?.to_owned()));
        let t0 = Instant::now();
        a2.kill();
        let rest = bounded(
            Duration::from_secs(10),
            "Exec after the kill",
            drain_exec(s),
        )
        .await;
        let took = t0.elapsed();
        // What the dead agent cannot clean up: its orphaned program and exec directory.
        kill_orphan(pid, "sleep");
        if let Some(dir) = &exec_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        assert!(rest.exited.is_none(), "{rest:?}");
        let st = rest.error.expect("the exec stream ended without a status");
        eprintln!(
            "mid-Exec kill: {:?} after {took:?}: {}",
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(took < AGENT_TIMEOUT, "UNAVAILABLE took {took:?}");

        // The last replacement: it works, and it is left with no handle open.
        let a3 = Respawned::start(&socket).await;
        works_again(&mut c, &small).await;
        let baseline = fd_count(a3.pid());
        for _ in 0..3 {
            works_again(&mut c, &small).await;
            let (data, last) = read_to_end(&mut c, read_req("host", &big.display().to_string(), 0))
                .await
                .unwrap();
            assert_eq!((data.len(), last.total_bytes), (64 << 20, 64 << 20));
            let o = bounded(Duration::from_secs(10), "exec on the new agent", async {
                drain_exec(
                    c.exec(sh_request("host", "echo ok"))
                        .await
                        .unwrap()
                        .into_inner(),
                )
                .await
            })
            .await;
            assert_eq!(
                (o.stdout.as_slice(), o.exited.and_then(|x| x.exit_code)),
                (&b"ok\n"[..], Some(0))
            );
        }
        common::eventually(
            || fd_count(a3.pid()) <= baseline,
            "the new agent back at its baseline of open files",
        )
        .await;
        eprintln!(
            "new agent: {} open files, baseline {baseline}",
            fd_count(a3.pid())
        );
        drop(a3);
    })
    .await;
}

#[tokio::test]
async fn sigterm_mid_read_exits_zero_closes_handles_and_audits_the_outcome() {
    common::init_logging();
    bounded(Duration::from_secs(60), "SIGTERM test", async {
        let agent = HostAgent::start().unwrap();
        let idle = agent.open_files().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let audit = tmp.path().join("audit.jsonl");
        let mut d = daemon_for(
            &agent,
            &format!(
                "shutdown_grace_ms = 2000\n\n[audit]\npath = \"{}\"\n",
                audit.display()
            ),
        )
        .await;
        let mut c = d.client().await;
        c.ping(ping("host")).await.unwrap();
        let connected = agent.open_files().unwrap();
        let big = agent.dir().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();

        let mut s = c
            .read_file(read_req("host", &big.display().to_string(), 1 << 20))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..2 {
            assert!(!s.message().await.unwrap().unwrap().eof);
        }
        let during = agent.open_files().unwrap();
        eprintln!("agent fds: idle {idle}, connected {connected}, reading {during}");
        assert!(during > connected, "the read holds no agent handle?");

        let started = Instant::now();
        let mut term = tokio::task::spawn_blocking(move || {
            let st = d.terminate();
            (st, started.elapsed(), d)
        });
        let (st, more) =
            stream_error(&mut s, Duration::from_secs(10), "ReadFile after SIGTERM").await;
        eprintln!(
            "stream ended {:?} after SIGTERM ({more} buffered chunks first): {:?} {}",
            started.elapsed(),
            st.code(),
            st.message()
        );
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        let (status, took, d) = bounded(Duration::from_secs(15), "daemon exit", &mut term)
            .await
            .unwrap();
        eprintln!("daemon exited {took:?} after SIGTERM: {status:?}");
        assert!(status.success(), "{status:?}");
        assert!(
            took < Duration::from_millis(2000),
            "exit took {took:?}, grace is 2 s"
        );
        assert!(!d.socket.exists(), "socket file left behind");
        common::eventually(
            || agent.open_files().unwrap() <= idle,
            "agent back to its idle open files (read handle and connection closed)",
        )
        .await;

        // The audit trail: the read's decision, then its outcome.
        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let decision = lines
            .iter()
            .find(|l| l["kind"] == "decision" && l["rpc"] == "ReadFile")
            .unwrap_or_else(|| panic!("no ReadFile decision in the audit log:\n{text}"));
        let id = decision["request_id"].as_str().unwrap();
        let outcome = lines
            .iter()
            .find(|l| l["kind"] == "outcome" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no outcome record for ReadFile {id}:\n{text}"));
        eprintln!("audit outcome of the read: {outcome}");
        assert_eq!(outcome["status"], "UNAVAILABLE", "{outcome}");
        let out = Command::new(env!("CARGO_BIN_EXE_atp"))
            .args(["audit", "verify"])
            .arg(&audit)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "atp audit verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

/// A session libvirtd, a domain booted in it and a daemon serving it as `lab/NAME`.
async fn libvirt_guest(name: &str) -> (LibvirtSession, LibvirtDomain, Daemon) {
    let image = common::image().await;
    let session = LibvirtSession::start().await.unwrap();
    let dom = session
        .create_domain(name, &image, Flavour::Debian)
        .await
        .unwrap();
    eprintln!("{name}: agent up {:?} after create", dom.boot_time());
    let d = Daemon::start(
        &[],
        &format!(
            "[[hypervisors]]\nname = \"lab\"\nuri = \"{}\"\n",
            session.uri()
        ),
    )
    .await;
    (session, dom, d)
}

/// Pings `domain` until it answers; returns how long that took.
async fn ping_until_up(c: &mut Client, domain: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < limit {
        match tokio::time::timeout(Duration::from_secs(15), c.ping(ping(domain))).await {
            Ok(Ok(_)) => return t0.elapsed(),
            Ok(Err(st)) => last = Some(format!("{:?}: {}", st.code(), st.message())),
            Err(_) => last = Some("a ping hung for 15 s".into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{domain} did not answer within {limit:?}; last: {last:?}");
}

#[tokio::test]
async fn guest_reset_mid_exec_ends_the_stream_and_a_new_exec_works_after_boot() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(240), "reset test", async {
        let (_session, dom, d) = libvirt_guest("atp-fault-rb").await;
        let mut c = d.client().await;
        let domain = "lab/atp-fault-rb";
        let mut s = c
            .exec(sh_request(domain, "echo started; sleep 60"))
            .await
            .unwrap()
            .into_inner();
        match s.message().await.unwrap().unwrap().event.unwrap() {
            Event::Started(_) => {}
            other => panic!("expected Started, got {other:?}"),
        }
        // Output flowing proves the stream is live before the reset.
        match bounded(Duration::from_secs(10), "first output", s.message())
            .await
            .unwrap()
            .unwrap()
            .event
            .unwrap()
        {
            Event::Stdout(d) => assert_eq!(d, b"started\n"),
            other => panic!("expected stdout, got {other:?}"),
        }
        // A hard reset (QMP system_reset through libvirt), as a crash-reboot would.
        let handle = dom.domain().clone();
        let t0 = Instant::now();
        tokio::task::spawn_blocking(move || handle.reset())
            .await
            .unwrap()
            .unwrap();
        let (st, more) =
            stream_error(&mut s, Duration::from_secs(60), "Exec after the reset").await;
        let took = t0.elapsed();
        eprintln!(
            "reset mid-exec: stream ended {took:?} later ({more} messages first) with {:?}: {}",
            st.code(),
            st.message()
        );
        assert_ne!(st.code(), Code::Ok);
        if !matches!(
            st.code(),
            Code::Unavailable | Code::Aborted | Code::NotFound
        ) {
            eprintln!(
                "NOTE: unexpected code {:?} for an exec lost to a reboot",
                st.code()
            );
        }
        let up = ping_until_up(&mut c, domain, Duration::from_secs(120)).await;
        eprintln!("agent answers again {up:?} after the stream ended");
        let o = bounded(Duration::from_secs(30), "exec after the reboot", async {
            drain_exec(
                c.exec(sh_request(domain, "echo back"))
                    .await
                    .unwrap()
                    .into_inner(),
            )
            .await
        })
        .await;
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(o.stdout, b"back\n");
        assert_eq!(o.exited.and_then(|x| x.exit_code), Some(0));
    })
    .await;
}

/// One request of kind `kind`; `Err` describes an error status or a reply that belongs
/// to another request.
async fn one_call(c: &mut Client, domain: &str, kind: u64) -> Result<(), String> {
    let err = |what: &str, st: Status| format!("{what}: {:?} {}", st.code(), st.message());
    match kind {
        0 => c
            .ping(ping(domain))
            .await
            .map(drop)
            .map_err(|st| err("Ping", st)),
        1 => {
            let r = c
                .get_os_info(GetOsInfoRequest {
                    domain: domain.into(),
                })
                .await
                .map_err(|st| err("GetOsInfo", st))?
                .into_inner();
            if r.id == "debian" && !r.kernel_release.is_empty() {
                Ok(())
            } else {
                Err(format!("GetOsInfo answered {r:?}"))
            }
        }
        2 => {
            let r = c
                .get_agent_info(GetAgentInfoRequest {
                    domain: domain.into(),
                })
                .await
                .map_err(|st| err("GetAgentInfo", st))?
                .into_inner();
            if !r.version.is_empty() && r.supported_commands.iter().any(|c| c.name == "guest-ping")
            {
                Ok(())
            } else {
                Err(format!(
                    "GetAgentInfo answered version {:?} with {} commands",
                    r.version,
                    r.supported_commands.len()
                ))
            }
        }
        _ => {
            let (data, last) = read_to_end(c, read_req(domain, "/etc/hostname", 0))
                .await
                .map_err(|st| err("ReadFile", st))?;
            let want = b"qga-debian\n";
            if data == want
                && last.total_bytes == 11
                && last.sha256 == Sha256::digest(want).to_vec()
            {
                Ok(())
            } else {
                Err(format!(
                    "ReadFile /etc/hostname gave {:?} ({last:?})",
                    String::from_utf8_lossy(&data)
                ))
            }
        }
    }
}

/// Open descriptors of the guest's agent on `port`, counted in the guest.
async fn guest_agent_fds(c: &mut Client, domain: &str, port: &str) -> usize {
    let o = bounded(Duration::from_secs(20), "counting the agent's fds", async {
        drain_exec(
            c.exec(sh_request(
                domain,
                &format!(
                    "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' <$p/cmdline)\" in \
                     'qemu-ga '*'/{port} '*) ls $p/fd | wc -l ;; esac; done 2>/dev/null"
                ),
            ))
            .await
            .unwrap()
            .into_inner(),
        )
        .await
    })
    .await;
    let n = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        n > 0,
        "cannot count the agent's fds: {o:?} stderr {}",
        String::from_utf8_lossy(&o.stderr)
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_cancellations_misroute_no_reply() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(180), "cancellation test", async {
        let image = common::image().await;
        let guest = QemuGuest::boot(&image, BootOptions::default()).await.unwrap();
        eprintln!("guest agent up after {:?}", guest.boot_time());
        let d = Daemon::start(
            &[],
            &format!(
                "[[guests]]\nname = \"g\"\nsocket = \"{}\"\n",
                guest.agent_socket().display()
            ),
        )
        .await;
        let mut c = d.client().await;
        // Warm up, and learn how long each kind takes when left alone.
        let mut latency = [Duration::ZERO; 4];
        for kind in 0..4 {
            one_call(&mut c, "g", kind).await.unwrap();
            let t = Instant::now();
            one_call(&mut c, "g", kind).await.unwrap();
            latency[kind as usize] = t.elapsed();
        }
        eprintln!("alone: Ping {:?}, GetOsInfo {:?}, GetAgentInfo {:?}, ReadFile {:?}", latency[0], latency[1], latency[2], latency[3]);
        // Deadlines are 0-20 ms. A ReadFile is six agent calls, each queued behind the
        // other calls in flight: with 0-20 ms none would ever finish and have its reply
        // checked, so its range is ten times its time alone.
        let read_ms = u64::try_from(10 * latency[3].as_millis()).unwrap().max(20);
        let max_ms = [20, 20, 20, read_ms];
        let port = "org.qemu.guest_agent.0";
        let fds = guest_agent_fds(&mut c, "g", port).await;

        let seed = std::env::var("ATP_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
        eprintln!(
            "cancellation seed {seed} (ATP_FAULT_SEED={seed} repeats it); deadlines 0-{max_ms:?} ms"
        );
        let mut rng = XorShift(seed | 1);
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tally = [[0usize; 2]; 4]; // per kind: [completed, cancelled]
        let mut set = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        for _ in 0..1000 {
            while set.len() >= 8 {
                let (kind, done): (usize, bool) = set.join_next().await.unwrap().unwrap();
                tally[kind][usize::from(!done)] += 1;
            }
            let kind = rng.next() % 4;
            let deadline = Duration::from_millis(rng.next() % (max_ms[kind as usize] + 1));
            let (mut c, failures) = (c.clone(), Arc::clone(&failures));
            set.spawn(async move {
                match tokio::time::timeout(deadline, one_call(&mut c, "g", kind)).await {
                    Ok(Ok(())) => (kind as usize, true),
                    Ok(Err(e)) => {
                        failures.lock().unwrap().push(e);
                        (kind as usize, true)
                    }
                    Err(_) => (kind as usize, false),
                }
            });
        }
        while let Some(r) = set.join_next().await {
            let (kind, done) = r.unwrap();
            tally[kind][usize::from(!done)] += 1;
        }
        let took = t0.elapsed();
        let completed: usize = tally.iter().map(|t| t[0]).sum();
        let cancelled: usize = tally.iter().map(|t| t[1]).sum();
        eprintln!(
            "1000 calls in {took:?}: {completed} completed, {cancelled} cancelled \
             (Ping {:?}, GetOsInfo {:?}, GetAgentInfo {:?}, ReadFile {:?} as [completed, cancelled])",
            tally[0], tally[1], tally[2], tally[3]
        );
        let failures = std::mem::take(&mut *failures.lock().unwrap());
        assert!(failures.is_empty(), "{} bad replies: {failures:#?}", failures.len());
        assert!(cancelled >= 100, "too few cancellations to mean anything: {cancelled}");
        assert!(completed >= 50, "too few completions to check routing: {completed}");

        for i in 0..20 {
            bounded(Duration::from_secs(10), "a call after the storm", one_call(&mut c, "g", i % 4))
                .await
                .unwrap();
        }
        // Cancelled reads closed their guest handles.
        let mut now = guest_agent_fds(&mut c, "g", port).await;
        for _ in 0..20 {
            if now <= fds {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            now = guest_agent_fds(&mut c, "g", port).await;
        }
        eprintln!("guest agent fds: {fds} before, {now} after");
        assert!(now <= fds, "guest agent handles leaked: {fds} before, {now} after");
        drop(guest);
    })
    .await;
}

/// The pid of the libvirtd this test process started for `session` (found through /proc
/// by its parent and its `XDG_RUNTIME_DIR`).
fn libvirtd_pid(root: &Path) -> u32 {
    let want = format!("XDG_RUNTIME_DIR={}", root.join("run").display());
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "libvirtd" {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if ppid == me && environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return pid;
        }
    }
    panic!("no libvirtd with {want} among this process's children");
}

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()), sig);
}

/// Pids of the QEMU processes running domain `name`.
fn qemu_pids(name: &str) -> Vec<u32> {
    let needle = format!("guest={name}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_qemu = args.first()?.ends_with(b"qemu-system-x86_64");
            (is_qemu && args.iter().any(|a| a.starts_with(needle.as_bytes()))).then_some(pid)
        })
        .collect()
}

/// A second libvirtd on the state of a session whose first daemon was stopped, started
/// the way the test bed starts it (once [`RestartedLibvirtd::start`] ran). On drop it destroys the session's domains (the
/// session's own cleanup would find no daemon), stops, and kills any QEMU of `domain`
/// still running.
struct RestartedLibvirtd {
    child: Option<Child>,
    uri: String,
    domain: String,
}

impl RestartedLibvirtd {
    /// Starts the second libvirtd.
    fn start(&mut self, root: &Path) {
        let mut cmd = if nix::unistd::Uid::effective().is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "libvirtd",
            ]);
            c
        } else {
            Command::new("libvirtd")
        };
        let child = cmd
            .env("HOME", root)
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env_remove("LIBVIRT_DEFAULT_URI")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("libvirtd-restarted.stderr")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
}

impl Drop for RestartedLibvirtd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mgr) = LibvirtManager::connect_uri(&self.uri)
                && let Ok(domains) = mgr.connection().list_all_domains(0)
            {
                for d in domains {
                    let _ = d.destroy();
                }
            }
            signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in qemu_pids(&self.domain) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// One ping of the load: when it was sent (since the start), how long it took, and its
/// code (`None`: no answer within 20 s).
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    took: Duration,
    code: Option<Code>,
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libvirtd_restarted_under_load_is_unavailable_then_reconnected() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(200), "libvirtd restart test", async {
        let name = "atp-fault-lvd";
        let domain = "lab/atp-fault-lvd";
        let (session, _dom, d) = libvirt_guest(name).await;
        let mut c = d.client().await;
        c.ping(ping(domain)).await.unwrap();
        let uri = session.uri().to_owned();
        let root: PathBuf = uri
            .split_once("socket=")
            .map(|(_, s)| Path::new(s).ancestors().nth(3).unwrap().to_owned())
            .unwrap();
        let pid = libvirtd_pid(&root);
        // Whatever happens below, the domain's QEMU must not outlive the test.
        let mut restarted = RestartedLibvirtd {
            child: None,
            uri: uri.clone(),
            domain: name.into(),
        };

        // The load: two pingers, and an exec streaming through libvirt.
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut pingers = Vec::new();
        for _ in 0..2 {
            let (mut c, stop) = (c.clone(), Arc::clone(&stop));
            pingers.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let res = tokio::time::timeout(Duration::from_secs(20), c.ping(ping(domain))).await;
                    let (code, message) = match res {
                        Ok(Ok(_)) => (Some(Code::Ok), String::new()),
                        Ok(Err(st)) => (Some(st.code()), st.message().to_owned()),
                        Err(_) => (None, "no answer within 20 s".into()),
                    };
                    samples.push(Sample {
                        at: t - origin,
                        took: t.elapsed(),
                        code,
                        message,
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                samples
            }));
        }
        let mut s = c
            .exec(sh_request(domain, "sleep 60"))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            s.message().await.unwrap().unwrap().event,
            Some(Event::Started(_))
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Stop libvirtd the way a service manager does (TERM, then KILL).
        let killed_at = origin.elapsed();
        signal(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while !exited(pid) && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !exited(pid) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        eprintln!("libvirtd {pid} stopped in {:?}", t0.elapsed());
        let exec_end = tokio::time::timeout(Duration::from_secs(15), async {
            let mut n = 0;
            loop {
                match s.message().await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => return (None, n),
                    Err(st) => return (Some(st), n),
                }
            }
        })
        .await;
        let exec_took = origin.elapsed() - killed_at;
        // A few seconds without libvirtd.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut next = c.clone();
        let t1 = Instant::now();
        let next_res = tokio::time::timeout(Duration::from_secs(15), next.ping(ping(domain))).await;
        let next_took = t1.elapsed();

        // Start libvirtd again on the same state; it finds the running QEMU.
        let restarted_at = origin.elapsed();
        restarted.start(&root);
        let uri2 = uri.clone();
        let back = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            loop {
                let up = LibvirtManager::connect_uri(&uri2)
                    .and_then(|m| m.list_domains())
                    .is_ok_and(|l| l.iter().any(|d| d.name == "atp-fault-lvd" && d.active));
                if up || t0.elapsed() > Duration::from_secs(60) {
                    return up.then(|| t0.elapsed());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .unwrap();
        let back = back.expect("the restarted libvirtd did not list the running domain within 60 s");
        eprintln!("libvirtd restarted; it lists the domain after {back:?}");
        // The agent answers through a new connection to the new libvirtd: from here on,
        // a failure is the daemon's.
        let uri3 = uri.clone();
        let handle = tokio::task::spawn_blocking(move || {
            LibvirtManager::connect_uri(&uri3)?.lookup_domain_by_name("atp-fault-lvd")
        })
        .await
        .unwrap()
        .unwrap();
        let fresh = wait_for_agent(
            LibvirtTransport::new(handle, "atp-fault-lvd"),
            "agent through the restarted libvirtd",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        eprintln!("a fresh libvirt connection reaches the agent after {fresh:?}");
        // The daemon should find its way back without a restart of its own.
        let mut reconnect = None;
        let t2 = Instant::now();
        while t2.elapsed() < Duration::from_secs(30) {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(15), c.ping(ping(domain))).await {
                reconnect = Some(t2.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Diagnostic only: a name the daemon has not resolved before goes through a fresh
        // lookup (which reconnects) unless the registry hands out a cached client.
        let bare = tokio::time::timeout(Duration::from_secs(15), c.ping(ping("atp-fault-lvd"))).await;
        eprintln!("ping by the bare domain name after the restart: {bare:?}");
        let list = tokio::time::timeout(Duration::from_secs(15), c.list_domains(ListDomainsRequest {})).await;
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for p in pingers {
            samples.extend(bounded(Duration::from_secs(25), "pinger", p).await.unwrap());
        }
        samples.sort_by_key(|s| s.at);

        // What the load saw.
        let outage: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at + s.took >= killed_at && s.at < restarted_at)
            .collect();
        let after: Vec<&Sample> = samples.iter().filter(|s| s.at > restarted_at + back).collect();
        let count = |v: &[&Sample], code: Option<Code>| v.iter().filter(|s| s.code == code).count();
        let slowest = outage.iter().map(|s| s.took).max().unwrap_or_default();
        eprintln!(
            "pings while libvirtd was down: {} ({} UNAVAILABLE, {} OK, {} hung), slowest {slowest:?}; first error: {:?}",
            outage.len(),
            count(&outage, Some(Code::Unavailable)),
            count(&outage, Some(Code::Ok)),
            count(&outage, None),
            outage.iter().find(|s| s.code != Some(Code::Ok)).map(|s| (s.code, &s.message)),
        );
        eprintln!(
            "pings after the restart: {} ({} OK); last: {:?}",
            after.len(),
            count(&after, Some(Code::Ok)),
            after.last().map(|s| (s.code, &s.message)),
        );
        eprintln!("in-flight exec after the stop ({exec_took:?}): {exec_end:?}");
        eprintln!("next ping after the stop ({next_took:?}): {next_res:?}");
        eprintln!("daemon ping after the restart: {reconnect:?}; ListDomains: {list:?}");

        let (exec_st, _) = exec_end.expect("the in-flight exec hung for 15 s after libvirtd stopped");
        let exec_st = exec_st.expect("the in-flight exec ended cleanly without libvirtd");
        assert_eq!(exec_st.code(), Code::Unavailable, "{exec_st:?}");
        let next_st = next_res
            .expect("a ping with libvirtd down hung for 15 s")
            .expect_err("a ping succeeded with libvirtd down");
        assert_eq!(next_st.code(), Code::Unavailable, "{next_st:?}");
        assert!(!outage.is_empty());
        for s in &outage {
            assert!(s.code.is_some() && s.took < Duration::from_secs(15), "a ping hung: {s:?}");
            assert!(
                matches!(s.code, Some(Code::Unavailable | Code::Ok)),
                "a ping during the outage failed with {s:?}"
            );
        }
        let up = reconnect.unwrap_or_else(|| {
            panic!(
                "the daemon did not reconnect within 30 s of libvirtd coming back; last ping: {:?}",
                samples.last()
            )
        });
        eprintln!("daemon answered {up:?} after libvirtd was back");
        let list = list.expect("ListDomains hung").expect("ListDomains failed after the restart");
        assert!(
            list.get_ref().domains.iter().any(|d| d.name == domain && d.agent_connected),
            "{list:?}"
        );
        drop(restarted);
        drop(session);
    })
    .await;
}

#[tokio::test]
async fn oversized_read_chunks_are_clamped_over_libvirt_and_the_agent_stays_healthy() {
    common::init_logging();
    let _one_guest = GUEST.lock().await;
    bounded(Duration::from_secs(180), "oversized reply test", async {
        let (_session, _dom, d) = libvirt_guest("atp-fault-big").await;
        let mut c = d.client().await;
        let domain = "lab/atp-fault-big";
        let path = "/data/big12.bin";
        let size = 12 << 20;
        let o = bounded(Duration::from_secs(60), "making the guest file", async {
            drain_exec(
                c.exec(sh_request(
                    domain,
                    &format!("head -c {size} /dev/urandom > {path} && sha256sum {path}"),
                ))
                .await
                .unwrap()
                .into_inner(),
            )
            .await
        })
        .await;
        assert_eq!(o.exited.and_then(|x| x.exit_code), Some(0), "{o:?}");
        let guest_sum = String::from_utf8(o.stdout).unwrap();
        let guest_sum = guest_sum.split_whitespace().next().unwrap().to_owned();

        let t0 = Instant::now();
        let mut s = c
            .read_file(read_req(domain, path, 64 << 20))
            .await
            .unwrap()
            .into_inner();
        let (mut data, mut largest_chunk, mut chunks) = (Vec::new(), 0, 0);
        let last = bounded(Duration::from_secs(90), "12 MiB over libvirt", async {
            loop {
                let chunk = s.message().await.unwrap().unwrap();
                largest_chunk = largest_chunk.max(chunk.data.len());
                chunks += 1;
                data.extend_from_slice(&chunk.data);
                if chunk.eof {
                    break chunk;
                }
            }
        })
        .await;
        let took = t0.elapsed();
        eprintln!(
            "12 MiB with chunk_size 64 MiB over libvirt: {chunks} messages, largest {largest_chunk} bytes, {:.1} MiB/s",
            12.0 / took.as_secs_f64()
        );
        assert!(largest_chunk <= 2 << 20, "a chunk of {largest_chunk} bytes");
        assert_eq!((data.len(), last.total_bytes), (size, size as u64));
        let ours: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        let theirs: String = last.sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!((ours.as_str(), theirs.as_str()), (guest_sum.as_str(), guest_sum.as_str()));
        // The domain's agent channel is fine afterwards.
        for _ in 0..3 {
            bounded(Duration::from_secs(15), "ping after the read", c.ping(ping(domain)))
                .await
                .unwrap();
        }

        // The raw passthrough cannot ask for a big reply: guest-file-read is refused.
        let st = c
            .agent_command(AgentCommandRequest {
                domain: domain.into(),
                command: "guest-file-read".into(),
                arguments_json: r#"{"handle":1000,"count":50331648}"#.into(),
                timeout_ms: 0,
            })
            .await
            .unwrap_err();
        eprintln!("AgentCommand guest-file-read: {:?} {}", st.code(), st.message());
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        let r = c
            .agent_command(AgentCommandRequest {
                domain: domain.into(),
                command: "guest-ping".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.return_json, "{}");
    })
    .await;
}
