//! Admin client commands: `atp freeze`, `thaw`, `freeze-status`, `passwd`, `ssh-key`,
//! `time-sync`. A password is read from the terminal (echo off) or `--password-stdin`,
//! never from the command line.

use std::{io::BufRead, path::PathBuf, time::Duration};

use ocloudview_atp::pb;

use super::client::{ClientError, Connection, exit, explain};

/// The admin subcommands (flattened into `atp`'s).
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Freeze a guest's file systems; the daemon thaws them at the deadline at the latest.
    Freeze {
        /// The guest.
        domain: String,
        /// When the daemon thaws, e.g. `60s` (at most 10 min).
        #[arg(long, value_parser = humantime::parse_duration)]
        deadline: Duration,
        /// Freeze only this mount point (repeatable; default: all).
        #[arg(long = "mountpoint")]
        mountpoints: Vec<String>,
    },
    /// Thaw a guest's file systems.
    Thaw {
        /// The guest.
        domain: String,
    },
    /// Whether a guest's file systems are frozen, and until when.
    FreezeStatus {
        /// The guest.
        domain: String,
    },
    /// Set a guest user's password (prompted for, or read from stdin).
    Passwd {
        /// The guest.
        domain: String,
        /// The guest user.
        user: String,
        /// Read the password from the first line of stdin instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// The input is a crypt(3) hash (`$6$...`), not a clear-text password.
        #[arg(long)]
        crypted: bool,
    },
    /// List, add or remove a guest user's SSH authorized keys.
    #[command(subcommand)]
    SshKey(SshKeyCommand),
    /// Set the guest clock from the host's.
    TimeSync {
        /// The guest.
        domain: String,
    },
}

/// `atp ssh-key ...`
#[derive(Debug, clap::Subcommand)]
pub enum SshKeyCommand {
    /// The user's keys, with their fingerprints.
    Ls {
        /// The guest.
        domain: String,
        /// The guest user.
        user: String,
    },
    /// Add the keys of KEYFILE (one per line; `-` for stdin).
    Add {
        /// The guest.
        domain: String,
        /// The guest user.
        user: String,
        /// A public key file, e.g. ~/.ssh/id_ed25519.pub.
        keyfile: PathBuf,
    },
    /// Remove the keys of KEYFILE.
    Rm {
        /// The guest.
        domain: String,
        /// The guest user.
        user: String,
        /// A public key file.
        keyfile: PathBuf,
    },
}

/// Runs one admin subcommand.
pub async fn run(conn: &Connection, cmd: AdminCommand) -> Result<(), ClientError> {
    let server = conn.server();
    let mut c = conn.connect().await?;
    let fail = |s: tonic::Status| explain(&server, &s);
    match cmd {
        AdminCommand::Freeze {
            domain,
            deadline,
            mountpoints,
        } => {
            // Rounded up: `500ms` asks for 1 s; `0s` is refused by the daemon.
            let secs = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
            let thaw_deadline_s = u32::try_from(secs).unwrap_or(u32::MAX);
            let r = c
                .fs_freeze(pb::FsFreezeRequest {
                    domain: domain.clone(),
                    mountpoints,
                    thaw_deadline_s,
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "{domain}: {} file system(s) frozen; thawed in {thaw_deadline_s} s at the latest (`atp thaw {domain}`)",
                r.frozen
            );
        }
        AdminCommand::Thaw { domain } => {
            let r = c
                .fs_thaw(pb::FsThawRequest {
                    domain: domain.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!("{domain}: {} file system(s) thawed", r.thawed);
        }
        AdminCommand::FreezeStatus { domain } => {
            let r = c
                .fs_freeze_status(pb::FsFreezeStatusRequest {
                    domain: domain.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            let state = if r.frozen { "frozen" } else { "thawed" };
            match r.thaw_deadline_unix_ms {
                Some(ms) => println!(
                    "{domain}: {state} by {}; thawed at {}",
                    r.frozen_by,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(ms)
                    )
                ),
                None => println!("{domain}: {state}"),
            }
        }
        AdminCommand::Passwd {
            domain,
            user,
            password_stdin,
            crypted,
        } => {
            let password = if password_stdin {
                first_line(std::io::stdin().lock())?
            } else {
                prompt_twice(&user)?
            };
            c.set_user_password(pb::SetUserPasswordRequest {
                domain: domain.clone(),
                username: user.clone(),
                password,
                crypted,
            })
            .await
            .map_err(fail)?;
            println!("{domain}: password of {user} set");
        }
        AdminCommand::SshKey(SshKeyCommand::Ls { domain, user }) => {
            let r = c
                .get_authorized_keys(pb::GetAuthorizedKeysRequest {
                    domain,
                    username: user,
                })
                .await
                .map_err(fail)?
                .into_inner();
            for (k, fp) in r.keys.iter().zip(&r.fingerprints) {
                let comment = k.split_whitespace().nth(2).unwrap_or_default();
                println!("{fp} {comment}");
            }
        }
        AdminCommand::SshKey(SshKeyCommand::Add {
            domain,
            user,
            keyfile,
        }) => {
            let r = c
                .add_authorized_keys(pb::AddAuthorizedKeysRequest {
                    domain,
                    username: user,
                    keys: key_lines(&keyfile)?,
                    reset: false,
                })
                .await
                .map_err(fail)?
                .into_inner();
            r.fingerprints.iter().for_each(|f| println!("added {f}"));
        }
        AdminCommand::SshKey(SshKeyCommand::Rm {
            domain,
            user,
            keyfile,
        }) => {
            let r = c
                .remove_authorized_keys(pb::RemoveAuthorizedKeysRequest {
                    domain,
                    username: user,
                    keys: key_lines(&keyfile)?,
                })
                .await
                .map_err(fail)?
                .into_inner();
            r.fingerprints.iter().for_each(|f| println!("removed {f}"));
        }
        AdminCommand::TimeSync { domain } => {
            let r = c
                .sync_time(pb::SyncTimeRequest {
                    domain: domain.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            match r.offset_before_ms {
                Some(ms) => println!("{domain}: clock set from the host; it was {ms} ms off"),
                None => println!("{domain}: clock set from the host"),
            }
        }
    }
    Ok(())
}

/// The key lines of a public key file (`-`: stdin), comments and blank lines left out.
fn key_lines(path: &PathBuf) -> Result<Vec<String>, ClientError> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| ClientError::local(path, &e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn first_line(mut r: impl BufRead) -> Result<String, ClientError> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| ClientError::new(exit::NO_INPUT, format!("reading the password: {e}")))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(ClientError::new(exit::NO_INPUT, "no password on stdin"));
    }
    Ok(line)
}

/// Asks twice on the terminal, echo off.
fn prompt_twice(user: &str) -> Result<String, ClientError> {
    let a = prompt(&format!("New password for {user}: "))?;
    let b = prompt("Retype it: ")?;
    if a != b {
        return Err(ClientError::new(exit::OTHER, "the passwords differ"));
    }
    if a.is_empty() {
        return Err(ClientError::new(exit::OTHER, "empty password"));
    }
    Ok(a)
}

fn prompt(text: &str) -> Result<String, ClientError> {
    use rustix::termios::{self, LocalModes, OptionalActions};
    use std::io::Write;
    let no_tty = |e: std::io::Error| {
        ClientError::new(
            exit::NO_INPUT,
            format!("no terminal to ask for the password ({e}); use --password-stdin"),
        )
    };
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    let saved = termios::tcgetattr(&tty).map_err(|e| no_tty(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    termios::tcsetattr(&tty, OptionalActions::Now, &quiet).map_err(|e| no_tty(e.into()))?;
    let _ = write!(tty, "{text}");
    let _ = tty.flush();
    let line = first_line(std::io::BufReader::new(&tty));
    let _ = termios::tcsetattr(&tty, OptionalActions::Now, &saved);
    let _ = writeln!(tty);
    line.or_else(|_| Ok(String::new()))
}
