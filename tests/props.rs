//! Bad input at scale: property tests over the request fields of Ping, Exec, ReadFile and
//! WriteFile, against a real daemon serving a real host agent. Each property runs its
//! cases (64 by default; PROPTEST_CASES to change) against one daemon, and every answer
//! must be OK or a clean refusal (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
//! FAILED_PRECONDITION, RESOURCE_EXHAUSTED) — never INTERNAL, UNKNOWN, a hang or a
//! broken stream; afterwards the daemon is still running and answers Ping.
//!
//! The host agent acts on the host, so the generators stay harmless by construction:
//! Exec runs only `/bin/true`, `true`, `/bin/echo`, `echo` or programs under a
//! directory that does not exist (never a generated name looked up in PATH, never a
//! generated shell line), generated environment keys are prefixes of `ATP_PROP_…`,
//! ReadFile reads inside the agent's temp directory or paths that do not exist, and
//! WriteFile writes only inside the agent's temp directory (generated path segments never
//! contain `/` and are never `.` or `..`).
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    collections::BTreeSet,
    fmt::Debug,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{Daemon, daemon_for};
use ocloudview_atp::{
    pb::{
        Argv, ExecAttachRequest, ExecEvent, ExecMode, ExecRequest, PingRequest, ReadFileRequest,
        WriteFileHeader, WriteFileRequest, WriteMode, exec_event::Event, exec_request::Command,
        guest_agent_client::GuestAgentClient, write_file_request::Msg,
    },
    policy::request::normalize_path,
    testbed::HostAgent,
};
use proptest::{
    collection::vec,
    prelude::*,
    sample::select,
    test_runner::{Config, TestCaseError, TestError, TestRunner},
};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tonic::{Code, Status, Streaming, transport::Channel};

type Client = GuestAgentClient<Channel>;

/// The clean answers to a bad request.
const CLEAN: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::PermissionDenied,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

/// No single call may take longer than this (a hang is a failure).
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// A directory that does not exist; generated programs and paths live below it.
const NOWHERE: &str = "/nonexistent-atp-props";

/// 64 cases per property unless PROPTEST_CASES says otherwise; shrinking is bounded, and
/// nothing is written to the source tree.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One daemon serving one host agent, and the runtime that drives the clients.
struct Bed {
    rt: Runtime,
    agent: HostAgent,
    daemon: Daemon,
}

impl Bed {
    fn start() -> Bed {
        common::init_logging();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let agent = HostAgent::start().unwrap();
        let daemon = rt.block_on(daemon_for(&agent, ""));
        Bed { rt, agent, daemon }
    }

    /// A client on a connection of its own: an answer that breaks the HTTP/2 connection
    /// must fail the case that caused it, not the next one.
    fn client(&self) -> Client {
        self.rt.block_on(self.daemon.client())
    }

    fn dir(&self) -> String {
        self.agent.dir().display().to_string()
    }

    /// Runs one property over `strategy` (printing how many cases ran and how they were
    /// answered), then checks that the daemon survived it; fails the test with the
    /// property's minimal failing input, the daemon's state, or both.
    fn check<S: Strategy>(
        &self,
        name: &str,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: Debug,
    {
        let mut runner = TestRunner::new(config());
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let t0 = std::time::Instant::now();
        let res = runner.run(&strategy, |v| {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            test(v)
        });
        let answers: Vec<String> = SEEN
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(name))
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        eprintln!(
            "{name}: {} runs (shrinking included) in {:?}; answers: {}",
            runs.into_inner(),
            t0.elapsed(),
            answers.join(", ")
        );
        let failed = match res {
            Ok(()) => None,
            Err(TestError::Fail(why, input)) => {
                Some(format!("{why}\nminimal input: {}", short(&input)))
            }
            Err(e) => Some(e.to_string()),
        };
        match (failed, self.alive()) {
            (None, Ok(_)) => {}
            (Some(f), Ok(pid)) => panic!("{name}: {f}\n(the daemon, pid {pid}, still answers)"),
            (f, Err(e)) => panic!("{name}: {}\nafterwards: {e}", f.unwrap_or_default()),
        }
    }

    /// The daemon's pid, if its process is alive and it answers Ping for the real guest
    /// on a new connection.
    fn alive(&self) -> Result<u32, String> {
        let config = self.daemon.dir.path().join("atp.toml");
        let pid = daemon_pid(&config).ok_or("the daemon process is gone (or a zombie)")?;
        let pong = self.rt.block_on(async {
            let mut c = self.daemon.client().await;
            let ping = c.ping(PingRequest {
                domain: "host".into(),
            });
            tokio::time::timeout(CALL_LIMIT, ping).await
        });
        match pong {
            Ok(Ok(_)) => Ok(pid),
            Ok(Err(st)) => Err(format!(
                "the daemon (pid {pid}) no longer answers Ping: {st:?}"
            )),
            Err(_) => Err(format!(
                "the daemon (pid {pid}) no longer answers Ping (hung)"
            )),
        }
    }

    fn block<T>(&self, what: &str, f: impl Future<Output = T>) -> Result<T, TestCaseError> {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
            .map_err(|_| TestCaseError::fail(format!("{what}: no answer within {CALL_LIMIT:?}")))
    }
}

/// Pid of the live (not zombie) `atp serve --config <config>` process.
fn daemon_pid(config: &Path) -> Option<u32> {
    let want = config.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !cmdline.split(|&b| b == 0).any(|a| a == want) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, s)| s.chars().next());
        if state != Some(Some('Z')) {
            return Some(pid);
        }
    }
    None
}

/// A Debug rendering for humans: runs of one character longer than 12 are written
/// `c×N`, and the whole is cut to 3000 characters (inputs may hold 100 KB of argv).
fn short(v: &impl Debug) -> String {
    let full = format!("{v:?}");
    let mut s = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        let mut n = 1;
        while chars.peek() == Some(&c) {
            chars.next();
            n += 1;
        }
        if n > 12 {
            s.push_str(&format!("{c}×{n}"));
        } else {
            s.extend(std::iter::repeat_n(c, n));
        }
    }
    if s.len() <= 3000 {
        return s;
    }
    let mut cut = 3000;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} chars in all)", &s[..cut], s.len())
}

/// How each RPC answered, by property, printed after the property (what it exercised).
static SEEN: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn seen(rpc: &str, answer: &str) {
    *SEEN
        .lock()
        .unwrap()
        .entry(format!("{rpc}: {answer}"))
        .or_default() += 1;
}

/// Passes OK and the clean refusals (plus `also`); prints and fails anything else.
fn clean(rpc: &str, input: &impl Debug, st: &Status, also: &[Code]) -> Result<(), TestCaseError> {
    seen(rpc, &format!("{:?}", st.code()));
    if CLEAN.contains(&st.code()) || also.contains(&st.code()) {
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "{rpc} answered {:?} ({}) to {}",
        st.code(),
        short(&st.message()),
        short(input)
    )))
}

// ---------------------------------------------------------------------------------------
// Generators

/// Characters that break naive code: newlines, quotes, shell and format metacharacters,
/// '=', combining marks, bidi overrides, BOM, noncharacters, emoji. NUL comes only from
/// [`with_nul`], where a generator asks for it.
fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        2 => proptest::char::range('a', 'z'),
        2 => select(vec![
            '\n', '\r', '\t', '\u{1b}', '\u{7f}', '\\', '=', '"', '\'', '$', '`', '*',
            '?', '%', ' ', '-', ':', ';', '&', '|', '\u{85}', '\u{a0}', '\u{fffd}', '\u{202e}',
            '\u{feff}', '\u{301}', '\u{200b}', '\u{fdd0}', '\u{10ffff}', 'é', 'ß', '€', '💥',
        ]),
    ]
}

fn odd_string(max: usize) -> impl Strategy<Value = String> {
    vec(odd_char(), 0..=max).prop_map(String::from_iter)
}

/// One path segment: no `/`, never `.` or `..`; sometimes around NAME_MAX (255 bytes).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => odd_string(20).prop_map(|s| s.replace('/', "_")),
        1 => (240usize..=300).prop_map(|n| "n".repeat(n)),
        1 => (60usize..=80).prop_map(|n| "é".repeat(n) + "💥".repeat(n / 4).as_str()),
    ]
    .prop_filter("a segment is never . or ..", |s| s != "." && s != "..")
}

/// `dir` plus segments joined by odd but harmless separators (`//`, `/./`, `/x/../`),
/// sometimes with a trailing `/` or `/.`: it stays inside `dir` after normalisation.
fn under(dir: String) -> impl Strategy<Value = String> {
    let sep = select(vec!["/", "/", "/", "//", "/./", "/zz/../"]);
    (
        vec((sep, segment()), 1..=3),
        select(vec!["", "", "", "/", "/."]),
    )
        .prop_map(move |(parts, tail)| {
            let mut p = dir.clone();
            for (s, seg) in parts {
                p.push_str(s);
                p.push_str(&seg);
            }
            p.push_str(tail);
            p
        })
}

/// Inserts NUL at a random character position.
fn with_nul(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (s, any::<prop::sample::Index>()).prop_map(|(s, i)| {
        let at = s
            .char_indices()
            .map(|(b, _)| b)
            .nth(i.index(s.chars().count() + 1))
            .unwrap_or(s.len());
        let mut s = s;
        s.insert(at, '\0');
        s
    })
}

/// The guest name: mostly the real one, so that requests get past resolution.
fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => Just("host".to_owned()),
        1 => Just(String::new()),
        1 => odd_string(24),
        1 => with_nul(Just("host".to_owned())),
        1 => odd_string(8).prop_map(|s| format!("host/{s}")),
        1 => odd_string(8).prop_map(|s| format!("{s}/host")),
        1 => (1usize..=100_000).prop_map(|n| "h".repeat(n)),
    ]
}

fn absurd_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => Just(0u64),
        6 => 0u64..=1024,
        1 => Just(1u64 << 40),
        1 => Just(i64::MAX as u64),
        1 => Just(i64::MAX as u64 + 1),
        1 => Just(u64::MAX - 1),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

fn chunk_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1u32),
        2u32..=64,
        Just(1u32 << 20),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

// ---------------------------------------------------------------------------------------
// Ping

#[test]
fn ping_answers_cleanly_whatever_the_domain() {
    let bed = Bed::start();
    bed.check("Ping", domain(), |domain| {
        let mut c = bed.client();
        let req = PingRequest {
            domain: domain.clone(),
        };
        match bed.block("Ping", c.ping(req.clone()))? {
            Ok(_) => {
                seen("Ping", "OK");
                prop_assert_eq!(&domain, "host", "Ping succeeded for another name");
            }
            Err(st) => {
                prop_assert_ne!(&domain, "host", "Ping of the real guest failed: {:?}", st);
                clean("Ping", &req, &st, &[])?;
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Exec

fn harmless_program() -> impl Strategy<Value = String> {
    prop_oneof![
        14 => select(vec!["/bin/true", "true", "/bin/echo", "echo"]).prop_map(str::to_owned),
        2 => segment().prop_map(|s| format!("{NOWHERE}/{s}")),
        1 => Just(String::new()),
        1 => with_nul(Just("/bin/true".to_owned())),
    ]
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        10 => vec(odd_string(16), 0..8),
        // Thousands of arguments, up to ~100 KB in all.
        1 => (1000usize..=3000, 0usize..=30).prop_map(|(n, len)| {
            (0..n).map(|i| format!("{i}:{}", "a".repeat(len))).collect()
        }),
        // One long argument (Linux takes up to 128 KiB per argument).
        1 => (1usize..=100_000).prop_map(|n| vec!["x".repeat(n)]),
        1 => vec(with_nul(odd_string(8)), 1..3),
    ]
}

/// `KEY=value` entries with odd '=' placement, empty keys, odd Unicode and NUL. A valid
/// entry's key is always a prefix of `ATP_PROP_…`, so no real variable is set.
fn env_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (odd_string(12), any::<prop::sample::Index>()).prop_map(|(s, i)| {
            let mut e = format!("ATP_PROP_{s}");
            let at = e
                .char_indices()
                .map(|(b, _)| b)
                .nth(i.index(e.chars().count() + 1))
                .unwrap_or(e.len());
            e.insert(at, '=');
            e
        }),
        6 => odd_string(30).prop_map(|v| format!("ATP_PROP_V={v}")),
        1 => select(vec!["", "=", "==", "=x", "ATP_PROP", "ATP_PROP_A=b\0c", "\0=x"])
            .prop_map(str::to_owned),
    ]
}

fn exec_request(dir: String) -> impl Strategy<Value = ExecRequest> {
    let command = prop_oneof![
        16 => (harmless_program(), argv())
            .prop_map(|(path, args)| Some(Command::Argv(Argv { path, args }))),
        1 => select(vec!["", "true", "\0"]).prop_map(|s| Some(Command::Shell(s.to_owned()))),
        1 => Just(None),
    ];
    let cwd = prop_oneof![
        4 => Just(String::new()),
        1 => Just(dir.clone()),
        1 => under(dir),
        1 => segment().prop_map(|s| format!("{NOWHERE}/{s}")),
        1 => odd_string(12),
        1 => with_nul(Just("/tmp".to_owned())),
    ];
    let stdin = prop_oneof![
        4 => Just(Vec::new()),
        2 => vec(any::<u8>(), 0..256),
        1 => (1usize..=256 << 10).prop_map(|n| vec![b'z'; n]),
    ];
    let timeout = prop_oneof![
        3 => Just(0u64),
        1 => 1u64..=50,
        1 => 5_000u64..=60_000,
        1 => Just(i64::MAX as u64 + 1),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ];
    let mode = prop_oneof![
        3 => Just(ExecMode::Stream as i32),
        3 => Just(ExecMode::Collect as i32),
        1 => any::<i32>(),
    ];
    (
        domain(),
        command,
        prop_oneof![2 => Just(Vec::new()), 3 => vec(env_entry(), 1..5)],
        stdin,
        timeout,
        cwd,
        mode,
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(domain, command, env, stdin, timeout_ms, cwd, mode, detach)| ExecRequest {
                domain,
                command,
                env,
                stdin,
                timeout_ms,
                cwd,
                mode,
                detach,
            },
        )
}

/// What an exec stream delivered, or the status that ended it.
#[derive(Debug, Default)]
struct ExecSeen {
    exec_id: String,
    started: bool,
    stdout: Vec<u8>,
    exited: Option<ocloudview_atp::pb::ExecExited>,
    error: Option<Status>,
    events_after_exit: usize,
}

async fn drain(mut s: Streaming<ExecEvent>) -> ExecSeen {
    let mut seen = ExecSeen::default();
    loop {
        match s.message().await {
            Ok(Some(ev)) => {
                if seen.exited.is_some() {
                    seen.events_after_exit += 1;
                }
                match ev.event {
                    Some(Event::Started(st)) => {
                        seen.started = true;
                        seen.exec_id = st.exec_id;
                    }
                    Some(Event::Stdout(d)) => seen.stdout.extend(d),
                    Some(Event::Stderr(_)) | None => {}
                    Some(Event::Exited(x)) => seen.exited = Some(x),
                }
            }
            Ok(None) => return seen,
            Err(st) => {
                seen.error = Some(st);
                return seen;
            }
        }
    }
}

#[test]
fn exec_answers_cleanly_to_odd_argv_env_cwd_and_limits() {
    let bed = Bed::start();
    bed.check("Exec", exec_request(bed.dir()), |req| {
        let mut c = bed.client();
        let st = match bed.block("Exec", c.exec(req.clone()))? {
            Err(st) => return clean("Exec", &req, &st, &[]),
            Ok(s) => s.into_inner(),
        };
        let mut seen = bed.block("Exec stream", drain(st))?;
        if let Some(st) = &seen.error {
            return clean("Exec (stream)", &req, st, &[]);
        }
        prop_assert!(
            seen.started,
            "an OK exec stream has no Started: {}",
            short(&seen)
        );
        if req.detach {
            prop_assert!(seen.exited.is_none(), "a detached exec reported its exit");
            // Follow it to its end, so that it is not left parked.
            let attached = bed.block(
                "ExecAttach",
                c.exec_attach(ExecAttachRequest {
                    exec_id: seen.exec_id.clone(),
                }),
            )?;
            let s = match attached {
                Err(st) => return clean("ExecAttach", &req, &st, &[]),
                Ok(s) => s.into_inner(),
            };
            seen = bed.block("ExecAttach stream", drain(s))?;
            if let Some(st) = &seen.error {
                return clean("ExecAttach (stream)", &req, st, &[]);
            }
        }
        let Some(x) = seen.exited else {
            return Err(TestCaseError::fail(format!(
                "exec stream ended without Exited or an error: {}",
                short(&req)
            )));
        };
        prop_assert_eq!(seen.events_after_exit, 0, "events after Exited");
        self::seen(
            "Exec",
            &match (x.exit_code, x.timed_out) {
                (_, true) => "OK, timed out".to_owned(),
                (Some(c), _) => format!("OK, exit {c}"),
                (None, _) => format!("OK, signal {:?}", x.signal),
            },
        );
        // The programs we know: their outcome, when nothing in the request stands in
        // the way (a short limit, a working directory, an environment entry).
        let plain =
            req.cwd.is_empty() && (req.timeout_ms == 0 || req.timeout_ms >= 5_000) && !req.detach;
        if let (true, Some(Command::Argv(a))) = (plain, &req.command) {
            if a.path == "/bin/true" || a.path == "true" {
                prop_assert_eq!(x.exit_code, Some(0), "true failed: {:?}", x);
            }
            let echo = a.path == "/bin/echo" || a.path == "echo";
            if echo && !a.args.iter().any(|s| s.starts_with('-')) {
                prop_assert_eq!(x.exit_code, Some(0), "echo failed: {:?}", x);
                let want = format!("{}\n", a.args.join(" "));
                prop_assert!(
                    seen.stdout == want.as_bytes(),
                    "echo printed {} bytes, expected {}",
                    seen.stdout.len(),
                    want.len()
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// ReadFile

/// Files the read property finds in the agent's directory.
const DATA: &str = "data";
const EMPTY: &str = "empty";

fn read_path(dir: String) -> impl Strategy<Value = String> {
    let existing = select(vec![DATA, EMPTY, "", "state", "qga.log", "qga.sock"]);
    prop_oneof![
        6 => existing.prop_map({
            let dir = dir.clone();
            move |name| format!("{dir}/{name}")
        }),
        1 => Just(format!("{dir}/./zz/..//{DATA}")),
        3 => under(dir.clone()),
        1 => segment().prop_map(|s| format!("{NOWHERE}/{s}")),
        1 => segment().prop_map(|s| format!("relative/{s}")),
        1 => segment().prop_map(|s| format!("C:\\atp-props\\{s}")),
        1 => Just(String::new()),
        1 => with_nul(Just(format!("{dir}/{DATA}"))),
    ]
}

fn read_request(dir: String) -> impl Strategy<Value = ReadFileRequest> {
    (
        domain(),
        read_path(dir),
        absurd_u64(),
        absurd_u64(),
        chunk_size(),
    )
        .prop_map(
            |(domain, path, offset, length, chunk_size)| ReadFileRequest {
                domain,
                path,
                offset,
                length,
                chunk_size,
            },
        )
}

#[test]
fn read_file_answers_cleanly_to_odd_paths_offsets_and_chunk_sizes() {
    let bed = Bed::start();
    let dir = bed.dir();
    let content: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(format!("{dir}/{DATA}"), &content).unwrap();
    std::fs::write(format!("{dir}/{EMPTY}"), b"").unwrap();
    bed.check("ReadFile", read_request(dir.clone()), |req| {
        let mut c = bed.client();
        let mut s = match bed.block("ReadFile", c.read_file(req.clone()))? {
            Err(st) => return clean("ReadFile", &req, &st, &[]),
            Ok(s) => s.into_inner(),
        };
        let mut data = Vec::new();
        let last = loop {
            match bed.block("ReadFile stream", s.message())? {
                Ok(Some(chunk)) => {
                    prop_assert_eq!(
                        chunk.offset,
                        req.offset.wrapping_add(data.len() as u64),
                        "chunk offset"
                    );
                    data.extend_from_slice(&chunk.data);
                    if chunk.eof {
                        break chunk;
                    }
                }
                Ok(None) => {
                    return Err(TestCaseError::fail(format!(
                        "ReadFile stream ended without eof or an error: {}",
                        short(&req)
                    )));
                }
                Err(st) => return clean("ReadFile (stream)", &req, &st, &[]),
            }
        };
        prop_assert!(
            bed.block("ReadFile end", s.message())?
                .is_ok_and(|m| m.is_none()),
            "messages after eof"
        );
        prop_assert_eq!(last.total_bytes, data.len() as u64);
        seen(
            "ReadFile",
            if data.is_empty() {
                "OK, empty"
            } else {
                "OK, data"
            },
        );
        prop_assert_eq!(last.sha256, Sha256::digest(&data).to_vec());
        if req.length > 0 {
            prop_assert!(data.len() as u64 <= req.length, "read past the length");
        }
        // The files we made: exactly the bytes asked for.
        let path = normalize_path(&req.path);
        let ours = if path == format!("{dir}/{DATA}") {
            Some(&content[..])
        } else if path == format!("{dir}/{EMPTY}") {
            Some(&[][..])
        } else {
            None
        };
        if let Some(file) = ours {
            let from = usize::try_from(req.offset).map_or(file.len(), |o| o.min(file.len()));
            let mut want = &file[from..];
            if req.length > 0 {
                want =
                    &want[..usize::try_from(req.length).map_or(want.len(), |l| l.min(want.len()))];
            }
            prop_assert!(
                data == want,
                "read {} bytes, expected {} (offset {}, length {})",
                data.len(),
                want.len(),
                req.offset,
                req.length
            );
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// WriteFile

/// A file and a directory the write property may target.
const EXISTING: &str = "existing";
const SUBDIR: &str = "subdir";

#[derive(Debug, Clone, Copy)]
enum Order {
    /// Header, then data.
    Normal,
    /// No messages at all.
    Empty,
    /// Data first.
    DataFirst,
    /// Header, data, header again.
    HeaderTwice,
}

#[derive(Debug, Clone, Copy)]
enum Checksum {
    None,
    Right,
    Wrong,
    Length(usize),
}

#[derive(Debug, Clone)]
struct WriteCase {
    header: WriteFileHeader,
    checksum: Checksum,
    data: Vec<u8>,
    piece: usize,
    order: Order,
}

fn write_path(dir: String) -> impl Strategy<Value = String> {
    let existing = select(vec![EXISTING, SUBDIR, "", "state"]);
    prop_oneof![
        3 => existing.prop_map({
            let dir = dir.clone();
            move |name| format!("{dir}/{name}")
        }),
        8 => under(dir.clone()),
        1 => segment().prop_map(|s| format!("{NOWHERE}/{s}")),
        1 => segment().prop_map(|s| format!("relative/{s}")),
        1 => Just(String::new()),
        1 => with_nul(Just(format!("{dir}/{EXISTING}"))),
    ]
}

fn write_case(dir: String) -> impl Strategy<Value = WriteCase> {
    let mode = prop_oneof![
        12 => 0i32..=3,
        1 => Just(4i32),
        1 => Just(-1i32),
        1 => any::<i32>(),
    ];
    let permissions = prop_oneof![
        16 => Just(None),
        1 => Just(Some(0o644u32)),
        1 => Just(Some(0u32)),
        1 => Just(Some(0o7777u32)),
        1 => Just(Some(0o10000u32)),
        1 => Just(Some(u32::MAX)),
        1 => any::<u32>().prop_map(Some),
    ];
    let checksum = prop_oneof![
        6 => Just(Checksum::None),
        3 => Just(Checksum::Right),
        1 => Just(Checksum::Wrong),
        1 => select(vec![1usize, 31, 33, 64]).prop_map(Checksum::Length),
    ];
    let data = prop_oneof![
        2 => Just(Vec::new()),
        4 => vec(any::<u8>(), 0..512),
        1 => (1usize..=200_000).prop_map(|n| vec![b'w'; n]),
    ];
    let order = prop_oneof![
        20 => Just(Order::Normal),
        1 => Just(Order::Empty),
        1 => Just(Order::DataFirst),
        1 => Just(Order::HeaderTwice),
    ];
    (
        (
            domain(),
            write_path(dir),
            mode,
            permissions,
            prop::option::of(any::<bool>()),
        ),
        checksum,
        data,
        1usize..=70_000,
        order,
    )
        .prop_map(
            |((domain, path, mode, permissions, atomic), checksum, data, piece, order)| WriteCase {
                header: WriteFileHeader {
                    domain,
                    path,
                    mode,
                    permissions,
                    atomic,
                    expected_sha256: Vec::new(),
                },
                checksum,
                data,
                piece,
                order,
            },
        )
}

impl WriteCase {
    fn messages(&self) -> Vec<WriteFileRequest> {
        let mut header = self.header.clone();
        header.expected_sha256 = match self.checksum {
            Checksum::None => Vec::new(),
            Checksum::Right => Sha256::digest(&self.data).to_vec(),
            Checksum::Wrong => Sha256::digest(b"something else").to_vec(),
            Checksum::Length(n) => vec![0xab; n],
        };
        let header = WriteFileRequest {
            msg: Some(Msg::Header(header)),
        };
        let data = self.data.chunks(self.piece).map(|c| WriteFileRequest {
            msg: Some(Msg::Data(c.to_vec())),
        });
        match self.order {
            Order::Normal => std::iter::once(header).chain(data).collect(),
            Order::Empty => Vec::new(),
            Order::DataFirst => {
                let first = WriteFileRequest {
                    msg: Some(Msg::Data(b"first".to_vec())),
                };
                [first, header].into_iter().chain(data).collect()
            }
            Order::HeaderTwice => {
                let again = header.clone();
                std::iter::once(header)
                    .chain(data)
                    .chain(std::iter::once(again))
                    .collect()
            }
        }
    }
}

/// Staging directories of writes (`.atp-<32 hex>`, and the older temp files
/// `.atp-<32 hex>.tmp`) anywhere under `dir`.
fn temp_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix(".atp-")
                .map(|n| n.strip_suffix(".tmp").unwrap_or(n));
            if id.is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())) {
                out.insert(p);
            }
        }
    }
    out
}

#[test]
fn write_file_answers_cleanly_to_odd_headers_and_streams() {
    let bed = Bed::start();
    let dir = bed.dir();
    std::fs::create_dir(format!("{dir}/{SUBDIR}")).unwrap();
    bed.check("WriteFile", write_case(dir.clone()), |case| {
        // A fresh existing file per case, so that TRUNCATE/EXCLUSIVE/APPEND see one.
        let existing = format!("{dir}/{EXISTING}");
        std::fs::write(&existing, b"before\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = bed.client();
        let res = bed.block(
            "WriteFile",
            c.write_file(tokio_stream::iter(case.messages())),
        )?;
        let leftovers = temp_files(Path::new(&dir));
        for p in &leftovers {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
        prop_assert!(
            leftovers.is_empty(),
            "temp files left behind: {:?} (answer {:?})",
            leftovers,
            res.as_ref().map(|r| r.get_ref().bytes_written)
        );
        let resp = match res {
            // ALREADY_EXISTS is the documented answer of EXCLUSIVE on an existing file.
            Err(st) => return clean("WriteFile", &case, &st, &[Code::AlreadyExists]),
            Ok(r) => r.into_inner(),
        };
        seen("WriteFile", "OK");
        // OK means: the normalised path is now a regular file holding the data.
        prop_assert_eq!(resp.bytes_written, case.data.len() as u64);
        prop_assert_eq!(&resp.sha256, &Sha256::digest(&case.data).to_vec());
        let path = normalize_path(&case.header.path);
        prop_assert!(
            path.starts_with(&dir),
            "wrote outside the agent dir: {}",
            path
        );
        let meta = std::fs::metadata(&path);
        prop_assert!(
            meta.as_ref().is_ok_and(std::fs::Metadata::is_file),
            "WriteFile answered OK but {:?} is not a regular file ({:?})",
            path,
            meta.map(|m| m.file_type())
        );
        let now = std::fs::read(&path).unwrap();
        if case.header.mode == WriteMode::Append as i32 {
            prop_assert!(now.ends_with(&case.data), "append lost the data");
        } else {
            prop_assert!(
                now == case.data,
                "file holds {} bytes, sent {}",
                now.len(),
                case.data.len()
            );
        }
        // `permissions` apply to a file the write creates or replaces atomically; an
        // existing file written in place (APPEND, atomic = false) keeps its mode.
        let in_place =
            case.header.mode == WriteMode::Append as i32 || case.header.atomic == Some(false);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        if path == existing && in_place {
            prop_assert_eq!(
                mode,
                0o644,
                "an existing file written in place keeps its mode"
            );
        } else if let Some(p) = case.header.permissions {
            prop_assert_eq!(mode, p, "permissions");
        }
        if path != existing {
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    });
}

/// A legal file name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`, and no Unicode
/// noncharacter (which the agent's JSON parser refuses); often close to 255 bytes.
fn legal_name() -> impl Strategy<Value = String> {
    let ok = |c: &char| {
        let u = u32::from(*c);
        *c != '/' && *c != '\0' && !(0xFDD0..=0xFDEF).contains(&u) && (u & 0xFFFE) != 0xFFFE
    };
    let chars = vec(odd_char().prop_filter("legal in a name", ok), 1..=255);
    prop_oneof![
        chars.prop_map(String::from_iter),
        (1usize..=255).prop_map(|n| "n".repeat(n)),
        (200usize..=255).prop_map(|n| "n".repeat(n)),
    ]
    .prop_map(|s| {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    })
    .prop_filter("a name is never . or ..", |s| s != "." && s != "..")
}

#[test]
fn write_file_takes_every_legal_file_name() {
    let bed = Bed::start();
    let dir = bed.dir();
    let case = (
        legal_name(),
        prop::option::of(any::<bool>()),
        vec(any::<u8>(), 0..64),
    );
    bed.check("Legal names", case, |(name, atomic, data)| {
        let path = format!("{dir}/{name}");
        let header = WriteFileHeader {
            domain: "host".into(),
            path: path.clone(),
            atomic,
            ..Default::default()
        };
        let msgs = vec![
            WriteFileRequest {
                msg: Some(Msg::Header(header)),
            },
            WriteFileRequest {
                msg: Some(Msg::Data(data.clone())),
            },
        ];
        let mut c = bed.client();
        let res = bed.block("WriteFile", c.write_file(tokio_stream::iter(msgs)))?;
        let written = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        match res {
            Ok(_) => seen("Legal names", "OK"),
            Err(st) => {
                seen("Legal names", &format!("{:?}", st.code()));
                return Err(TestCaseError::fail(format!(
                    "a {}-byte name was refused: {:?} ({}), atomic {atomic:?}",
                    name.len(),
                    st.code(),
                    short(&st.message())
                )));
            }
        }
        prop_assert!(
            written.is_ok_and(|w| w == data),
            "the file does not hold the data"
        );
        Ok(())
    });
}

#[test]
fn write_file_never_replaces_a_directory() {
    let bed = Bed::start();
    let dir = bed.dir();
    std::fs::create_dir(format!("{dir}/{SUBDIR}")).unwrap();
    let case = (
        select(vec!["", SUBDIR, "state"]),
        select(vec!["", "/", "/."]),
        0i32..=3,
        prop::option::of(any::<bool>()),
        vec(any::<u8>(), 0..64),
    );
    bed.check("Directories", case, |(name, tail, mode, atomic, data)| {
        let path = format!("{dir}/{name}{tail}");
        let header = WriteFileHeader {
            domain: "host".into(),
            path: path.clone(),
            mode,
            atomic,
            ..Default::default()
        };
        let msgs = vec![
            WriteFileRequest {
                msg: Some(Msg::Header(header.clone())),
            },
            WriteFileRequest {
                msg: Some(Msg::Data(data)),
            },
        ];
        let mut c = bed.client();
        let res = bed.block("WriteFile", c.write_file(tokio_stream::iter(msgs)))?;
        let leftovers = temp_files(Path::new(&dir));
        for p in &leftovers {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
        let answer = match &res {
            Ok(r) => format!("OK ({} bytes)", r.get_ref().bytes_written),
            Err(st) => format!("{:?}", st.code()),
        };
        seen("Directories", answer.split(' ').next().unwrap_or_default());
        prop_assert!(
            res.is_err(),
            "WriteFile to the directory {} answered {}; files left: {:?}",
            path,
            answer,
            leftovers
        );
        prop_assert!(
            leftovers.is_empty(),
            "temp files left behind: {:?}",
            leftovers
        );
        if let Err(st) = &res {
            clean("Directories", &header, st, &[Code::AlreadyExists])?;
        }
        Ok(())
    });
}
