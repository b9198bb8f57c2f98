//! The QEMU Guest Agent protocol, independent of how bytes travel.
//!
//! - [`Command`]: one type per QGA command, with its reply type;
//! - [`commands`]: the typed commands and replies;
//! - [`AgentClient`]: the async client over a [`Transport`](crate::transport::Transport):
//!   typed calls, capability checks, exec (collecting or streaming) and chunked files;
//! - [`QgaClient`]: the seed guide's blocking API on top of it;
//! - admin operations (freeze, passwords, SSH keys, time) on [`AgentClient`], keys
//!   checked by [`SshPublicKey`];
//! - [`QgaError`]: what can go wrong, from the transport to the agent's own refusals.

mod admin;
mod blocking;
mod client;
pub mod codepage;
mod command;
pub mod commands;
mod dirpool;
mod error;
mod exec;
mod file;
pub mod guestpath;
mod kill;
mod probe;
pub mod ssh_key;
mod stage_file;
mod stdin;
mod stream;
mod sweep;
pub mod tree;
mod tty;
mod user;
mod wrapper;

pub use admin::{check_password, check_username};
pub use blocking::QgaClient;
pub use client::{AgentClient, DEFAULT_TIMEOUT, Submitted};
pub use command::Command;
pub use dirpool::TransferGuard;
pub use error::QgaError;
pub use exec::{ExecEvent, ExecExit, ExecResult, ExecSession, GuestExecCommand, valid_env_entry};
pub use file::{DEFAULT_CHUNK, OpenFile};
pub use kill::KillOutcome;
pub use ssh_key::SshPublicKey;
pub use stdin::{FAST_MAX, SEGMENT_MAX, SPOOL_SEGMENTS, StdinFeed};
pub use tty::{ALLOWED_SIGNALS, DEFAULT_TERM, TerminalSize};
pub use user::{RunAs, valid_account};
