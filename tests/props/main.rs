//! Bad input at scale: property tests over the request fields of Ping, Exec, ReadFile and
//! WriteFile, against a real daemon serving a real host agent. Each property runs its
//! cases (64 by default; PROPTEST_CASES to change) against one daemon, and every answer
//! must be OK or a clean refusal (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
//! FAILED_PRECONDITION, RESOURCE_EXHAUSTED) — never INTERNAL, UNKNOWN, a hang or a
//! broken stream; afterwards the daemon is still running and answers Ping.
//!
//! The host agent acts on the host, so the generators stay harmless by construction:
//! Exec runs only `/bin/true`, `true`, `/bin/echo`, `echo` or programs under a
//! directory that does not exist (never a generated name looked up in PATH, never a
//! generated shell line), generated environment keys are prefixes of `ATP_PROP_…`,
//! ReadFile reads inside the agent's temp directory or paths that do not exist, and
//! WriteFile writes only inside the agent's temp directory (generated path segments never
//! contain `/` and are never `.` or `..`).
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "../common/mod.rs"]
mod common;

mod bed;
mod exec;
mod generators;
mod names;
mod ping;
mod read;
mod write;
