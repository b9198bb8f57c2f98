//! Prometheus metrics: requests by RPC and status code, latency histograms, bytes moved
//! and per-guest queue depth. Served on their own listener (`[metrics] listen`); without
//! it the recording calls are no-ops.

use std::{net::SocketAddr, time::Instant};

use tonic::Code;

/// Times one RPC and counts its outcome; an RPC dropped before finishing counts as
/// `Cancelled` (the client left).
#[derive(Debug)]
pub(crate) struct RpcTimer {
    rpc: &'static str,
    start: Instant,
    done: bool,
}

impl RpcTimer {
    pub(crate) fn start(rpc: &'static str) -> Self {
        metrics::gauge!("atp_rpc_in_flight", "rpc" => rpc).increment(1.0);
        Self {
            rpc,
            start: Instant::now(),
            done: false,
        }
    }

    pub(crate) fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        metrics::gauge!("atp_rpc_in_flight", "rpc" => self.rpc).decrement(1.0);
        metrics::counter!("atp_rpc_requests_total", "rpc" => self.rpc, "code" => code_name(code))
            .increment(1);
        metrics::histogram!("atp_rpc_duration_seconds", "rpc" => self.rpc)
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for RpcTimer {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// Counts file bytes moved between clients and guests.
pub(crate) fn bytes(direction: &'static str, n: usize) {
    metrics::counter!("atp_file_bytes_total", "direction" => direction).increment(n as u64);
}

/// Counts the open streams of all callers (`limits.streams_per_caller` bounds each one).
pub(crate) fn streams_open(delta: f64) {
    metrics::gauge!("atp_streams_open").increment(delta);
}

/// Records how many agent requests wait for `guest`.
pub(crate) fn queue_depth(guest: &str, depth: usize) {
    metrics::gauge!("atp_guest_queue_depth", "guest" => guest.to_owned()).set(depth as f64);
}

/// Installs the Prometheus recorder and its HTTP listener (must run inside the runtime).
pub(crate) fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| e.to_string())
}

pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
