//! The QEMU Guest Agent protocol, independent of how bytes travel.
//!
//! - [`Command`]: one type per QGA command, with its reply type;
//! - [`commands`]: the typed commands and replies;
//! - [`AgentClient`]: the async client over a [`Transport`](crate::transport::Transport);
//! - [`QgaError`]: what can go wrong, from the transport to the agent's own refusals.

mod client;
mod command;
pub mod commands;
mod error;

pub use client::{AgentClient, DEFAULT_TIMEOUT};
pub use command::Command;
pub use error::QgaError;
