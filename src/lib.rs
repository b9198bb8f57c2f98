//! # ocloudview-atp
//!
//! Policy-controlled, audited access to KVM guests' QEMU Guest Agent (qemu-ga) without a
//! network: a gRPC daemon (`atp serve`), the `atp` CLI, and this library, all on one core.
//!
//! # Layout
//!
//! Data flows straight down: `server` → `guests` → `qga` → `transport` → agent.
//!
//! - [`pb`]: generated protobuf/gRPC types of `ocloudview.atp.v1`.
//! - [`transport`]: how bytes reach an agent — a direct UNIX socket (with the
//!   `guest-sync-delimited` discipline) or libvirt's `virDomainQemuAgentCommand`.
//! - [`qga`]: the guest-agent protocol: typed commands, replies and errors; knows nothing
//!   of gRPC.
//! - [`libvirt`]: [`libvirt::LibvirtManager`]: connections to libvirtd (one per
//!   hypervisor), domain lookup and listing. Talking to a domain's agent through libvirt
//!   is the transport's job ([`transport::libvirt_agent`]).
//! - [`guests`]: the registry mapping a guest name to its transport.
//! - [`policy`]: Rhai policy plugins: the request map, decisions, limits, tasks, reload.
//! - [`caller`]: who made a request, as the gate, policies and audit records see it.
//! - [`audit`]: the tamper-evident audit trail: hash-chained JSONL records, the writer
//!   and `atp audit verify`.
//! - [`config`]: the daemon's TOML configuration, parsed then validated.
//! - [`server`]: the tonic service, listeners, health and reflection.
//! - `testbed` (cargo feature `testbed`, on by default; off in a production build): real
//!   qemu-ga, QEMU guests and a session libvirtd for tests and the demo.

pub mod audit;
pub mod caller;
pub mod config;
pub mod guests;
pub mod libvirt;
pub mod policy;
pub mod qga;
pub mod server;
mod sync;
#[cfg(feature = "testbed")]
pub mod testbed;
pub mod transport;

/// Generated protobuf and gRPC code for `ocloudview.atp.v1`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("ocloudview.atp.v1");

    /// Encoded descriptor set of our protos, registered with server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("atp_descriptor");
}
