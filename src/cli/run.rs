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
    /// Stream this process's stdin to the program as it comes (EOF included).
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// Run the program on a terminal in the guest (implies -i): the local terminal goes
    /// raw, its size follows the window, Ctrl-C/Ctrl-Z/Ctrl-D reach the guest program.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Run the program as this guest user (name or uid) instead of root; with -t, `atp
    /// sh` opens that user's login shell.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The program's primary group (name or gid; with --user).
    #[arg(long, requires = "user")]
    pub group: Option<String>,
    /// With --user: the user's login environment (HOME, USER, LOGNAME, SHELL), starting
    /// in HOME unless --cwd is given.
    #[arg(long)]
    pub login: bool,
}

fn request(
    domain: String,
    command: pb::exec_request::Command,
    o: &ExecOpts,
) -> Result<pb::ExecRequest, ClientError> {
    Ok(pb::ExecRequest {
        domain,
        command: Some(command),
        env: o.env.clone(),
        timeout_ms: o
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        cwd: o.cwd.clone().unwrap_or_default(),
        user: o.user.clone().unwrap_or_default(),
        group: o.group.clone().unwrap_or_default(),
        login: o.login,
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
    start(conn, request(domain, argv_command(argv)?, o)?, o).await
}

/// `atp exec --guests PATTERN -- ARGV...`
pub async fn exec_many(
    conn: &Connection,
    argv: Vec<String>,
    o: &ExecOpts,
    fanout: &super::fanout::FanoutOpts,
) -> Result<u8, ClientError> {
    if o.stdin || o.tty {
        return Err(ClientError::new(
            exit::OTHER,
            "-i/-t stream one stdin to one program: they cannot be used with --guests",
        ));
    }
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

/// `atp sh DOM 'CMD'`; `atp sh -it DOM` opens the guest user's login shell.
pub async fn sh(
    conn: &Connection,
    domain: String,
    line: Option<String>,
    o: &ExecOpts,
) -> Result<u8, ClientError> {
    let line = match line {
        Some(l) => l,
        None if o.tty => super::tty::LOGIN_SHELL.to_owned(),
        None => {
            return Err(ClientError::new(
                exit::OTHER,
                "nothing to run: atp sh DOM 'COMMAND LINE', or atp sh -it DOM for a login shell",
            ));
        }
    };
    start(
        conn,
        request(domain, pb::exec_request::Command::Shell(line), o)?,
        o,
    )
    .await
}

/// Sends an Exec (an ExecInteractive with `-i`) and follows its events.
async fn start(conn: &Connection, req: pb::ExecRequest, o: &ExecOpts) -> Result<u8, ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    if o.tty {
        return terminal(&server, &mut c, req).await;
    }
    let stream = if o.stdin {
        c.exec_interactive(stdin_stream(req)).await
    } else {
        c.exec(req).await
    };
    let stream = stream.map_err(|s| explain(&server, &s))?.into_inner();
    follow(&server, &mut c, stream).await
}

/// A terminal session: raw mode while it lasts, the window size at start and on every
/// change, keystrokes as they come; the exit status is the guest program's.
async fn terminal(
    server: &str,
    c: &mut Client,
    mut req: pb::ExecRequest,
) -> Result<u8, ClientError> {
    use pb::exec_input::Msg;
    req.tty = true;
    req.tty_size = Some(super::tty::window());
    if !req.env.iter().any(|e| e.starts_with("TERM="))
        && let Ok(term) = std::env::var("TERM")
        && !term.is_empty()
    {
        req.env.push(format!("TERM={term}"));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let _ = tx.try_send(pb::ExecInput {
        msg: Some(Msg::Start(req)),
    });
    read_stdin(tx.clone());
    super::tty::forward_resizes(tx);
    let raw = super::tty::RawMode::enter();
    let res = async {
        let stream = c
            .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| explain(server, &s))?
            .into_inner();
        tokio::select! {
            r = follow(server, c, stream) => r,
            () = super::tty::terminated() => Ok(129),
        }
    }
    .await;
    drop(raw);
    res
}

/// `start`, then this process's stdin as it comes, then `eof`: read on a thread of its
/// own, at most a few chunks ahead of the daemon (the channel is the backpressure).
fn stdin_stream(req: pb::ExecRequest) -> tokio_stream::wrappers::ReceiverStream<pb::ExecInput> {
    use pb::exec_input::Msg;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = tx.try_send(pb::ExecInput {
        msg: Some(Msg::Start(req)),
    });
    read_stdin(tx);
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Passes this process's stdin to `tx` as `stdin` messages, then `eof`, from a thread.
fn read_stdin(tx: tokio::sync::mpsc::Sender<pb::ExecInput>) {
    use pb::exec_input::Msg;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let msg = match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) => Msg::Eof(true),
                Ok(n) => Msg::Stdin(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("atp: reading stdin: {e}; closing the program's stdin");
                    Msg::Eof(true)
                }
            };
            let eof = matches!(msg, Msg::Eof(_));
            if tx.blocking_send(pb::ExecInput { msg: Some(msg) }).is_err() || eof {
                break;
            }
        }
    });
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
