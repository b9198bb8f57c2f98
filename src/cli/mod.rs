//! The `atp` command line: subcommands, logging setup and exit codes.

mod admin;
mod audit;
mod client;
mod cp;
// Directory trees (issue 15).
mod cp_tree;
#[cfg(feature = "testbed")]
mod demo;
mod fanout;
mod ls_dir;
mod policy;
mod remote;
mod run;
mod serve;
mod tty;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Configuration or usage problem (BSD `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Internal failure (BSD `EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;
/// A required service or component is unavailable (BSD `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Input data is bad: a broken audit chain (BSD `EX_DATAERR`).
pub const EXIT_DATAERR: u8 = 65;

/// Policy-controlled, audited access to KVM guests through the QEMU Guest Agent.
#[derive(Debug, Parser)]
#[command(name = "atp", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "ATP_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Where the daemon is, and the token to present.
    #[command(flatten)]
    connection: client::Connection,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC daemon.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, env = "ATP_CONFIG")]
        config: PathBuf,
    },
    /// Boot the embedded demo guest under QEMU and serve it; Ctrl-C tears everything down.
    #[cfg(feature = "testbed")]
    Demo(demo::DemoArgs),
    /// Check or test policy plugins.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the guests the daemon can reach; with DOM:/path, a guest directory.
    Ls(ls_dir::LsArgs),
    /// Ping a guest's agent.
    Ping(DomainArg),
    /// Agent version, enabled commands and guest facts.
    Info(DomainArg),
    /// The guest's operating system.
    Osinfo(DomainArg),
    /// Run a program in a guest, with live output; its exit code becomes atp's. With
    /// `--guests PATTERN`, on every matching guest, output lines prefixed with the guest.
    Exec {
        /// The guest (not with --guests).
        #[arg(required_unless_present = "guests", conflicts_with = "guests")]
        domain: Option<String>,
        #[command(flatten)]
        opts: run::ExecOpts,
        #[command(flatten)]
        fanout: fanout::FanoutOpts,
        /// Program and arguments (after --).
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Run a command line with the guest's shell (/bin/sh -c, or cmd.exe /c); `atp sh
    /// -it DOM` opens the guest user's login shell on a terminal.
    Sh {
        /// The guest.
        domain: String,
        /// The command line (optional with -t: the login shell).
        command: Option<String>,
        #[command(flatten)]
        opts: run::ExecOpts,
    },
    /// Copy a file into or out of a guest: `atp cp ./f DOM:/path` or `atp cp DOM:/path ./f`.
    Cp {
        /// Source: a local path or DOM:/path.
        src: String,
        /// Destination: a local path or DOM:/path.
        dst: String,
        #[command(flatten)]
        opts: cp::CpOpts,
    },
    /// The tasks policies offer for a guest.
    Tasks(DomainArg),
    /// Run a named task: `atp run DOM TASK key=value...`.
    Run {
        /// The guest.
        domain: String,
        /// The task.
        task: String,
        /// Parameters, key=value.
        params: Vec<String>,
    },
    /// Typed admin operations (freeze, thaw, passwd, ssh-key, time-sync).
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct OutputArg {
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    output: remote::Output,
}

#[derive(Debug, clap::Args)]
struct DomainArg {
    /// The guest.
    domain: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    output: remote::Output,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a log's hash chain and that it still ends where its head says; reports the
    /// first broken record.
    Verify {
        /// The JSONL audit log.
        file: PathBuf,
        /// `SEQ:HASH` exported earlier by `atp audit head`: the log must still hold that
        /// record (default: the log's own `FILE.head`, when present).
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<String>,
    },
    /// Print the last record's SEQ:HASH (after checking the chain), to keep elsewhere.
    Head {
        /// The JSONL audit log.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Compile every plugin in DIR and list its hooks and tasks.
    Check {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Run a CASES.toml table (request → expected decision) against the plugins in DIR.
    Test {
        /// The policy directory.
        dir: PathBuf,
        /// The table of cases.
        cases: PathBuf,
    },
}

/// Logs go to stderr; the filter comes from `ATP_LOG` (e.g. `debug`), default `info`.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("ATP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the chosen subcommand; `Ok(code)` is the exit code of a guest program.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let conn = &cli.connection;
    let client: Result<u8, client::ClientError> = match cli.command {
        Command::Ls(o) => match o.target {
            // Directory trees (issue 15).
            Some(t) => ls_dir::ls(conn, &t, o.limit, o.output).await.map(|()| 0),
            None => remote::ls(conn, o.output).await.map(|()| 0),
        },
        Command::Ping(d) => remote::ping(conn, d.domain, d.output).await.map(|()| 0),
        Command::Info(d) => remote::info(conn, d.domain, d.output).await.map(|()| 0),
        Command::Osinfo(d) => remote::osinfo(conn, d.domain, d.output).await.map(|()| 0),
        Command::Tasks(d) => remote::tasks(conn, d.domain, d.output).await.map(|()| 0),
        Command::Exec {
            domain,
            opts,
            fanout,
            argv,
        } => match domain {
            Some(domain) => run::exec(conn, domain, argv, &opts).await,
            None => run::exec_many(conn, argv, &opts, &fanout).await,
        },
        Command::Sh {
            domain,
            command,
            opts,
        } => run::sh(conn, domain, command, &opts).await,
        Command::Run {
            domain,
            task,
            params,
        } => run::run(conn, domain, task, params).await,
        Command::Cp { src, dst, opts } => cp::cp(conn, &src, &dst, &opts).await.map(|()| 0),
        Command::Admin(cmd) => admin::run(conn, cmd).await.map(|()| 0),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "atp", &mut std::io::stdout());
            Ok(0)
        }
        other => return run_local(other).await.map(|()| 0),
    };
    client.map_err(anyhow::Error::from)
}

async fn run_local(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve::run(&config).await,
        #[cfg(feature = "testbed")]
        Command::Demo(args) => demo::run(args).await,
        Command::Policy(PolicyCommand::Check { dir }) => policy::check(&dir),
        Command::Policy(PolicyCommand::Test { dir, cases }) => policy::test(&dir, &cases),
        Command::Audit(AuditCommand::Verify { file, head }) => {
            audit::verify(&file, head.as_deref()).await
        }
        Command::Audit(AuditCommand::Head { file }) => audit::head(&file).await,
        _ => unreachable!("client commands are handled by run()"),
    }
}

/// The exit code for a failed subcommand.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use ocloudview_atp::{
        audit::ChainBroken, config::ConfigError, policy::PolicyError, server::ServeError,
    };
    let policy = err.downcast_ref::<PolicyError>().is_some()
        || matches!(
            err.downcast_ref::<ServeError>(),
            Some(ServeError::Policy(_))
        );
    if err.downcast_ref::<ConfigError>().is_some() || policy {
        EXIT_CONFIG
    } else if let Some(c) = err.downcast_ref::<client::ClientError>() {
        c.code
    } else if err.downcast_ref::<ChainBroken>().is_some()
        || matches!(
            err.downcast_ref::<ServeError>(),
            Some(ServeError::AuditTampered(_))
        )
    {
        EXIT_DATAERR
    } else if testbed_failed(err) {
        EXIT_UNAVAILABLE
    } else {
        1
    }
}

/// Did the demo's test bed (QEMU, qemu-ga, the guest image) fail to start?
#[cfg(feature = "testbed")]
fn testbed_failed(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ocloudview_atp::testbed::TestbedError>()
        .is_some()
}

/// Without the `testbed` feature there is no demo, so no test-bed failure.
#[cfg(not(feature = "testbed"))]
fn testbed_failed(_: &anyhow::Error) -> bool {
    false
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
