//! `atp`: the ocloudview-atp daemon and client. Parses the command line, sets up logging,
//! runs the subcommand and turns its outcome into an exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("atp: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_SOFTWARE);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("atp: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
