//! Exec: odd argv, env, cwd, modes and limits, with harmless programs only.

use std::fmt::Debug;

use ocloudview_atp::pb::{
    Argv, ExecAttachRequest, ExecEvent, ExecMode, ExecRequest, exec_event::Event,
    exec_request::Command,
};
use proptest::{collection::vec, prelude::*, sample::select, test_runner::TestCaseError};
use tonic::{Status, Streaming};

use crate::{bed::*, generators::*};

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
                // A terminal needs ExecInteractive: Exec refuses it (tests/exec_tty.rs).
                ..Default::default()
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
