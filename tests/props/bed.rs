//! The bed every property runs on: one daemon serving one host agent, the proptest
//! configuration, and what counts as a clean answer (and how answers are tallied).

use std::{fmt::Debug, path::Path, time::Duration};

use ocloudview_atp::{
    pb::{PingRequest, guest_agent_client::GuestAgentClient},
    testbed::HostAgent,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestError, TestRunner},
};
use tokio::runtime::Runtime;
use tonic::{Code, Status, transport::Channel};

use crate::common::{Daemon, daemon_for};

pub(crate) type Client = GuestAgentClient<Channel>;

/// The clean answers to a bad request.
pub(crate) const CLEAN: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::PermissionDenied,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

/// No single call may take longer than this (a hang is a failure).
pub(crate) const CALL_LIMIT: Duration = Duration::from_secs(60);

/// A directory that does not exist; generated programs and paths live below it.
pub(crate) const NOWHERE: &str = "/nonexistent-atp-props";

/// 64 cases per property unless PROPTEST_CASES says otherwise; shrinking is bounded, and
/// nothing is written to the source tree.
pub(crate) fn config() -> Config {
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
pub(crate) struct Bed {
    pub(crate) rt: Runtime,
    pub(crate) agent: HostAgent,
    pub(crate) daemon: Daemon,
}

impl Bed {
    pub(crate) fn start() -> Bed {
        crate::common::init_logging();
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
    pub(crate) fn client(&self) -> Client {
        self.rt.block_on(self.daemon.client())
    }

    pub(crate) fn dir(&self) -> String {
        self.agent.dir().display().to_string()
    }

    /// Runs one property over `strategy` (printing how many cases ran and how they were
    /// answered), then checks that the daemon survived it; fails the test with the
    /// property's minimal failing input, the daemon's state, or both.
    pub(crate) fn check<S: Strategy>(
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
    pub(crate) fn alive(&self) -> Result<u32, String> {
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

    pub(crate) fn block<T>(
        &self,
        what: &str,
        f: impl Future<Output = T>,
    ) -> Result<T, TestCaseError> {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
            .map_err(|_| TestCaseError::fail(format!("{what}: no answer within {CALL_LIMIT:?}")))
    }
}

/// Pid of the live (not zombie) `atp serve --config <config>` process.
pub(crate) fn daemon_pid(config: &Path) -> Option<u32> {
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
pub(crate) fn short(v: &impl Debug) -> String {
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
pub(crate) static SEEN: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

pub(crate) fn seen(rpc: &str, answer: &str) {
    *SEEN
        .lock()
        .unwrap()
        .entry(format!("{rpc}: {answer}"))
        .or_default() += 1;
}

/// Passes OK and the clean refusals (plus `also`); prints and fails anything else.
pub(crate) fn clean(
    rpc: &str,
    input: &impl Debug,
    st: &Status,
    also: &[Code],
) -> Result<(), TestCaseError> {
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
