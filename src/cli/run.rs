//! `atp exec`, `atp sh` and `atp run`: live output, the guest's exit code as ours (a
//! signal becomes 128+N), and Ctrl-C cancels the guest process.

use std::{collections::HashMap, io::Write as _, time::Duration};

use ocloudview_atp::pb::{self, exec_event::Event};
use tonic::Streaming;

use super::client::{Client, ClientError, Connection, exit, explain};

/// Options shared by `exec` and `sh`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecOpts {
    /// Environment entry KEY=value (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory in the guest.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Kill the program after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Send this process's stdin to the program.
    #[arg(long, short = 'i')]
    pub stdin: bool,
}

fn request(
    domain: String,
    command: pb::exec_request::Command,
    o: &ExecOpts,
) -> Result<pb::ExecRequest, ClientError> {
    let stdin = if o.stdin {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| ClientError::new(exit::NO_INPUT, format!("reading stdin: {e}")))?;
        buf
    } else {
        Vec::new()
    };
    Ok(pb::ExecRequest {
        domain,
        command: Some(command),
        env: o.env.clone(),
        stdin,
        timeout_ms: o
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        cwd: o.cwd.clone().unwrap_or_default(),
        ..Default::default()
    })
}

/// `atp exec DOM -- ARGV...`
pub async fn exec(
    conn: &Connection,
    domain: String,
    argv: Vec<String>,
    o: &ExecOpts,
) -> Result<u8, ClientError> {
    start(conn, request(domain, argv_command(argv)?, o)?).await
}

/// `atp exec --guests PATTERN -- ARGV...`
pub async fn exec_many(
    conn: &Connection,
    argv: Vec<String>,
    o: &ExecOpts,
    fanout: &super::fanout::FanoutOpts,
) -> Result<u8, ClientError> {
    let req = request(String::new(), argv_command(argv)?, o)?;
    super::fanout::exec(conn, req, fanout).await
}

fn argv_command(argv: Vec<String>) -> Result<pb::exec_request::Command, ClientError> {
    let mut argv = argv.into_iter();
    let path = argv.next().ok_or_else(|| {
        ClientError::new(
            exit::OTHER,
            "nothing to run: atp exec DOM -- PROGRAM [ARGS]",
        )
    })?;
    Ok(pb::exec_request::Command::Argv(pb::Argv {
        path,
        args: argv.collect(),
    }))
}

/// `atp sh DOM 'CMD'`
pub async fn sh(
    conn: &Connection,
    domain: String,
    line: String,
    o: &ExecOpts,
) -> Result<u8, ClientError> {
    start(
        conn,
        request(domain, pb::exec_request::Command::Shell(line), o)?,
    )
    .await
}

/// Sends an Exec and follows its events.
async fn start(conn: &Connection, req: pb::ExecRequest) -> Result<u8, ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let stream = c
        .exec(req)
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    follow(&server, &mut c, stream).await
}

/// `atp run DOM TASK key=value...`
pub async fn run(
    conn: &Connection,
    domain: String,
    task: String,
    params: Vec<String>,
) -> Result<u8, ClientError> {
    let mut map = HashMap::new();
    for p in params {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            ClientError::new(exit::OTHER, format!("parameter {p:?} is not key=value"))
        })?;
        map.insert(k.to_owned(), v.to_owned());
    }
    let server = conn.server();
    let mut c = conn.connect().await?;
    let stream = c
        .run_task(pb::RunTaskRequest {
            domain,
            task,
            params: map,
        })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    follow(&server, &mut c, stream).await
}

/// Prints events as they come; on Ctrl-C asks the daemon to kill the program.
async fn follow(
    server: &str,
    c: &mut Client,
    mut stream: Streaming<pb::ExecEvent>,
) -> Result<u8, ClientError> {
    let mut exec_id = String::new();
    let mut interrupted = false;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                if !exec_id.is_empty() {
                    eprintln!("atp: interrupted; cancelling the guest process");
                    let _ = c.exec_cancel(pb::ExecCancelRequest { exec_id: exec_id.clone() }).await;
                }
                continue;
            }
        };
        match msg.map_err(|s| explain(server, &s))? {
            None => {
                return Err(ClientError::new(
                    exit::TEMPFAIL,
                    "the stream ended before the program did",
                ));
            }
            Some(ev) => match ev.event {
                Some(Event::Started(s)) => exec_id = s.exec_id,
                Some(Event::Stdout(d)) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&d);
                    let _ = out.flush();
                }
                Some(Event::Stderr(d)) => {
                    let _ = std::io::stderr().write_all(&d);
                }
                Some(Event::Exited(x)) => {
                    if x.timed_out {
                        eprintln!("atp: the program ran out of time and was killed");
                    }
                    if interrupted {
                        return Ok(130);
                    }
                    return Ok(match (x.exit_code, x.signal) {
                        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
                        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(1),
                        (None, None) => 1,
                    });
                }
                None => {}
            },
        }
    }
}
