//! `guest-ping`: proves the agent is alive.

use serde::{Deserialize, Serialize};

use crate::qga::Command;

/// `guest-ping`: no arguments, empty reply.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestPing;

/// The empty object `guest-ping` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Empty {}

impl Command for GuestPing {
    const NAME: &'static str = "guest-ping";
    type Reply = Empty;
}
