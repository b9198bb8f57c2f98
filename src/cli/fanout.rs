//! `atp exec --guests PATTERN -- CMD`: one command on many guests, as SSM's send-command
//! does. A client-side helper, not an RPC: each guest gets an ordinary Exec, so each is
//! decided by the policies and audited on its own. At most `--max-concurrency` run at once;
//! once more than `--max-errors` guests failed, no new guest is started (the running ones
//! finish). Output lines are prefixed with the guest; a summary goes to stderr; the exit
//! code is 0 only if every matched guest ran and exited 0.

use std::{io::Write as _, sync::Arc};

use ocloudview_atp::pb::{self, exec_event::Event};
use tokio::sync::Semaphore;

use super::client::{ClientError, Connection, exit, explain};

/// Fan-out options of `atp exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOpts {
    /// Run on every guest whose name matches this shell pattern (`web-*`, `lab/db-?`)
    /// instead of one guest.
    #[arg(long, value_name = "PATTERN")]
    pub guests: Option<String>,
    /// Guests running the command at once.
    #[arg(long, default_value_t = 16, requires = "guests", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrency: u32,
    /// Start no new guest once more than this many have failed (default: no limit).
    #[arg(long, requires = "guests")]
    pub max_errors: Option<u32>,
}

/// How one guest ended.
#[derive(Debug)]
enum End {
    Exited(i32),
    Signalled(i32),
    Failed(String),
}

/// The guests of `pattern`, by name, from ListDomains (only running ones).
async fn matching(conn: &Connection, pattern: &str) -> Result<Vec<String>, ClientError> {
    let pat = glob::Pattern::new(pattern)
        .map_err(|e| ClientError::new(exit::OTHER, format!("bad --guests pattern: {e}")))?;
    let server = conn.server();
    let mut c = conn.connect().await?;
    let listed = c
        .list_domains(pb::ListDomainsRequest {})
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let mut names: Vec<String> = listed
        .domains
        .into_iter()
        .filter(|d| d.state != "shut off" && pat.matches(&d.name))
        .map(|d| d.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `req` (its `domain` set per guest) on every guest matching the pattern.
pub async fn exec(
    conn: &Connection,
    req: pb::ExecRequest,
    o: &FanoutOpts,
) -> Result<u8, ClientError> {
    let pattern = o.guests.as_deref().unwrap_or_default();
    let guests = matching(conn, pattern).await?;
    if guests.is_empty() {
        return Err(ClientError::new(
            exit::UNKNOWN_GUEST,
            format!("no running guest matches {pattern:?}; `atp ls` lists the guests"),
        ));
    }
    let slots = Arc::new(Semaphore::new(o.max_concurrency as usize));
    let failed = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut runs = tokio::task::JoinSet::new();
    let mut not_run = Vec::new();
    for g in &guests {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|_| ClientError::new(exit::OTHER, "fan-out stopped"))?;
        if o.max_errors
            .is_some_and(|m| failed.load(std::sync::atomic::Ordering::SeqCst) > m)
        {
            not_run.push(g.clone());
            continue;
        }
        let (conn, mut req, failed, g) =
            (conn.clone(), req.clone(), Arc::clone(&failed), g.clone());
        req.domain = g.clone();
        runs.spawn(async move {
            let end = one(&conn, req, &g).await;
            if !matches!(end, End::Exited(0)) {
                failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            drop(permit);
            (g, end)
        });
    }
    let mut ends = Vec::new();
    while let Some(r) = runs.join_next().await {
        if let Ok(e) = r {
            ends.push(e);
        }
    }
    ends.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(summary(&guests, &ends, &not_run))
}

/// Prints the summary; returns the exit code (0: all ran and exited 0).
fn summary(guests: &[String], ends: &[(String, End)], not_run: &[String]) -> u8 {
    let bad: Vec<String> = ends
        .iter()
        .filter_map(|(g, e)| match e {
            End::Exited(0) => None,
            End::Exited(c) => Some(format!("{g}: exit {c}")),
            End::Signalled(s) => Some(format!("{g}: signal {s}")),
            End::Failed(m) => Some(format!("{g}: {m}")),
        })
        .collect();
    let ok = ends.len() - bad.len();
    eprintln!(
        "atp: {} guests: {ok} ok, {} failed, {} not run",
        guests.len(),
        bad.len(),
        not_run.len()
    );
    for b in &bad {
        eprintln!("atp:   {b}");
    }
    if !not_run.is_empty() {
        eprintln!(
            "atp:   not run (--max-errors reached): {}",
            not_run.join(", ")
        );
    }
    u8::from(!bad.is_empty() || !not_run.is_empty())
}

/// One guest's Exec, its output lines prefixed with the guest.
async fn one(conn: &Connection, req: pb::ExecRequest, guest: &str) -> End {
    let server = conn.server();
    let mut c = match conn.connect().await {
        Ok(c) => c,
        Err(e) => return End::Failed(e.message),
    };
    let mut stream = match c.exec(req).await {
        Ok(s) => s.into_inner(),
        Err(st) => return End::Failed(explain(&server, &st).message),
    };
    let (mut out, mut err) = (Lines::new(guest, false), Lines::new(guest, true));
    let end = loop {
        match stream.message().await {
            Ok(Some(ev)) => match ev.event {
                Some(Event::Stdout(d)) => out.push(&d),
                Some(Event::Stderr(d)) => err.push(&d),
                Some(Event::Exited(x)) => {
                    break match (x.exit_code, x.signal) {
                        (Some(code), _) => End::Exited(code),
                        (None, Some(sig)) => End::Signalled(sig),
                        (None, None) => End::Failed("ended without a status".into()),
                    };
                }
                _ => {}
            },
            Ok(None) => break End::Failed("the stream ended before the program did".into()),
            Err(st) => break End::Failed(explain(&server, &st).message),
        }
    };
    out.finish();
    err.finish();
    end
}

/// Output split into lines, each written whole with the guest's prefix.
struct Lines<'a> {
    guest: &'a str,
    stderr: bool,
    partial: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(guest: &'a str, stderr: bool) -> Self {
        Self {
            guest,
            stderr,
            partial: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            self.write(&line);
        }
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.write(&line);
        }
    }

    fn write(&self, line: &[u8]) {
        let mut buf = format!("{}: ", self.guest).into_bytes();
        buf.extend_from_slice(line);
        if self.stderr {
            let _ = std::io::stderr().lock().write_all(&buf);
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&buf);
            let _ = o.flush();
        }
    }
}
