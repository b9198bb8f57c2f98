//! `[limits]` and `[files]`: the bounds every request and connection lives within, so no
//! caller can exhaust the daemon or a guest agent for the others.

use std::time::Duration;

use super::{ConfigError, invalid, nonzero_millis, raw::RawLimits};

/// Validated `[limits]`. Every resource a request holds has one of these bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Guest file handles the daemon holds open on one guest at once (qemu-ga has about
    /// 1,023 fds in all); an open beyond it fails RESOURCE_EXHAUSTED.
    pub open_handles_per_guest: usize,
    /// Open server streams (ReadFile, WriteFile, Exec, ExecAttach, RunTask) per caller.
    pub streams_per_caller: usize,
    /// Running or parked execs one caller may have at once.
    pub execs_per_caller: usize,
    /// Bytes buffered per response stream, whatever the message sizes.
    pub stream_buffer_bytes: usize,
    /// A stream whose client reads nothing for this long is ended (its guest handles are
    /// closed; an exec is parked).
    pub stream_idle_timeout: Duration,
    /// A WriteFile must send its header within this time.
    pub write_header_timeout: Duration,
    /// Connections served at once per listener; further ones wait in the backlog.
    pub max_connections: usize,
    /// A connection must finish its HTTP/2 (and TLS) handshake within this time.
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive ping interval (a peer that does not answer is dropped).
    pub http2_keepalive: Duration,
    /// Longest FsFreeze `thaw_deadline_s` (the guest's writers block meanwhile).
    pub max_thaw_deadline: Duration,
}

/// Defaults: well below qemu-ga's fd limit and the daemon's own `LimitNOFILE=`.
impl Default for Limits {
    fn default() -> Self {
        Self {
            open_handles_per_guest: 256,
            streams_per_caller: 64,
            execs_per_caller: 64,
            stream_buffer_bytes: 4 << 20,
            stream_idle_timeout: Duration::from_secs(60),
            write_header_timeout: Duration::from_secs(10),
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            http2_keepalive: Duration::from_secs(30),
            max_thaw_deadline: Duration::from_secs(600),
        }
    }
}

fn count(key: &str, v: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(invalid(key, "0", "must be at least 1")),
        Some(n) => usize::try_from(n).map_err(|_| invalid(key, &n.to_string(), "too large")),
    }
}

/// Validates `[limits]`.
pub(super) fn limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        open_handles_per_guest: count(
            "limits.open_handles_per_guest",
            raw.open_handles_per_guest,
            d.open_handles_per_guest,
        )?,
        streams_per_caller: count(
            "limits.streams_per_caller",
            raw.streams_per_caller,
            d.streams_per_caller,
        )?,
        execs_per_caller: count(
            "limits.execs_per_caller",
            raw.execs_per_caller,
            d.execs_per_caller,
        )?,
        stream_buffer_bytes: count(
            "limits.stream_buffer_bytes",
            raw.stream_buffer_bytes,
            d.stream_buffer_bytes,
        )?,
        stream_idle_timeout: nonzero_millis(
            "limits.stream_idle_timeout_ms",
            raw.stream_idle_timeout_ms,
            d.stream_idle_timeout,
        )?,
        write_header_timeout: nonzero_millis(
            "limits.write_header_timeout_ms",
            raw.write_header_timeout_ms,
            d.write_header_timeout,
        )?,
        max_connections: count(
            "limits.max_connections",
            raw.max_connections,
            d.max_connections,
        )?,
        handshake_timeout: nonzero_millis(
            "limits.handshake_timeout_ms",
            raw.handshake_timeout_ms,
            d.handshake_timeout,
        )?,
        http2_keepalive: nonzero_millis(
            "limits.http2_keepalive_ms",
            raw.http2_keepalive_ms,
            d.http2_keepalive,
        )?,
        max_thaw_deadline: match raw.max_thaw_deadline_s {
            None => d.max_thaw_deadline,
            Some(s @ 1..=86_400) => Duration::from_secs(s),
            Some(s) => {
                return Err(invalid(
                    "limits.max_thaw_deadline_s",
                    &s.to_string(),
                    "must be 1..=86400 (a day)",
                ));
            }
        },
    })
}

/// Mode of a file WriteFile creates when the request gives no `permissions`.
pub const DEFAULT_NEW_FILE_MODE: u32 = 0o644;

/// Validates `[files] new_file_mode`, an octal string such as "0644".
pub(super) fn new_file_mode(raw: Option<String>) -> Result<u32, ConfigError> {
    let Some(s) = raw else {
        return Ok(DEFAULT_NEW_FILE_MODE);
    };
    let key = "files.new_file_mode";
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| invalid(key, &s, "not an octal mode such as \"0644\""))?;
    if m > 0o777 {
        return Err(invalid(key, &s, "only permission bits (at most 0777)"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thaw_deadline_bound_is_one_second_to_a_day() {
        let with = |s| RawLimits {
            max_thaw_deadline_s: Some(s),
            ..RawLimits::default()
        };
        assert_eq!(
            limits(RawLimits::default()).unwrap().max_thaw_deadline,
            Duration::from_secs(600)
        );
        assert_eq!(
            limits(with(30)).unwrap().max_thaw_deadline,
            Duration::from_secs(30)
        );
        for bad in [0, 86_401] {
            let e = limits(with(bad)).unwrap_err().to_string();
            assert!(e.contains("limits.max_thaw_deadline_s"), "{e}");
        }
    }
}
