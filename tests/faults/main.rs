//! Fault injection against real components, no mocks: a host qemu-ga killed in the middle
//! of a ReadFile, a WriteFile and an Exec, then replaced on the same socket while the
//! daemon keeps running; the TCG guest reset under a streaming Exec; 1,000 random client
//! cancellations against a guest's agent socket without one misrouted reply; the session
//! libvirtd restarted under a ping load; SIGTERM in the middle of a 64 MiB ReadFile (exit
//! 0, handles closed, the audit outcome written); a ReadFile asking for 64 MiB chunks
//! over libvirt, which must be clamped and leave the domain's agent healthy; and a hung
//! (SIGSTOPped) libvirtd, which keepalive turns into UNAVAILABLE, then a reconnect; and a
//! remote libvirtd over `qemu+ssh://` (an sshd on 127.0.0.1), killed mid-ReadFile and its
//! ssh session hung mid-Exec, then reconnected.
//!
//! Every wait is bounded. The tests that boot a guest hold [`GUEST`] while it runs, so at
//! most one TCG guest runs at a time.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod guest;
mod helpers;
mod libvirtd;
mod libvirtd_hung;
mod libvirtd_process;
mod remote;
mod respawned;
mod shutdown;

/// Held by every test that boots a TCG guest: one guest at a time on a 2-core machine.
static GUEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
