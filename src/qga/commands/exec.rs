//! `guest-exec` and `guest-exec-status`: start a process in the guest, poll and reap it.
//!
//! qemu-ga returns captured output only once the process has exited, base64-encoded and
//! capped at 16 MiB per stream; `guest-exec-status` reaps the process on the first
//! `exited: true`, after which the pid is unknown to the agent.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::qga::Command;

/// `guest-exec`: run `path` with `arg` (no shell involved).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct GuestExec {
    /// Program; looked up in the guest's `PATH` when not absolute.
    pub path: String,
    /// Arguments, passed as argv (never through a shell).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arg: Vec<String>,
    /// `KEY=value` entries; when given they replace the agent's environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// stdin, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
    /// Whether the agent captures stdout/stderr (returned at exit by `guest-exec-status`).
    pub capture_output: bool,
}

/// What `guest-exec` returns.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct ExecPid {
    /// The guest process id.
    pub pid: i64,
}

impl Command for GuestExec {
    const NAME: &'static str = "guest-exec";
    type Reply = ExecPid;
}

/// `guest-exec-status`: state of a process started by `guest-exec`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GuestExecStatus {
    /// The pid `guest-exec` returned.
    pub pid: i64,
}

/// What `guest-exec-status` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct ExecStatus {
    /// Whether the process has finished (and has now been reaped by the agent).
    pub exited: bool,
    /// Exit code, when it exited normally.
    #[serde(rename = "exitcode")]
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did (then there is no exit code).
    pub signal: Option<i32>,
    /// Captured stdout, base64-encoded; absent when empty or not captured.
    pub out_data: Option<String>,
    /// Captured stderr, base64-encoded; absent when empty or not captured.
    pub err_data: Option<String>,
    /// The agent dropped stdout beyond its 16 MiB cap.
    #[serde(default)]
    pub out_truncated: bool,
    /// The agent dropped stderr beyond its 16 MiB cap.
    #[serde(default)]
    pub err_truncated: bool,
}

impl ExecStatus {
    /// Captured stdout bytes (empty when none).
    pub fn stdout(&self) -> Vec<u8> {
        decode_b64(self.out_data.as_deref())
    }

    /// Captured stderr bytes (empty when none).
    pub fn stderr(&self) -> Vec<u8> {
        decode_b64(self.err_data.as_deref())
    }

    /// Captured stdout as text (invalid UTF-8 replaced), `None` when there was none.
    pub fn decode_stdout(&self) -> Option<String> {
        lossy(self.stdout())
    }

    /// Captured stderr as text (invalid UTF-8 replaced), `None` when there was none.
    pub fn decode_stderr(&self) -> Option<String> {
        lossy(self.stderr())
    }
}

impl Command for GuestExecStatus {
    const NAME: &'static str = "guest-exec-status";
    type Reply = ExecStatus;
}

fn decode_b64(s: Option<&str>) -> Vec<u8> {
    s.and_then(|s| STANDARD.decode(s).ok()).unwrap_or_default()
}

fn lossy(bytes: Vec<u8>) -> Option<String> {
    lossy_text(&bytes)
}

/// Bytes as text with invalid UTF-8 replaced; `None` for no bytes.
pub(crate) fn lossy_text(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_use_qga_names() {
        let e = GuestExec {
            path: "/bin/sh".into(),
            arg: vec!["-c".into(), "echo hi".into()],
            input_data: Some("aGk=".into()),
            capture_output: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"path":"/bin/sh","arg":["-c","echo hi"],"input-data":"aGk=","capture-output":true}"#
        );
    }

    #[test]
    fn status_decodes_exit_signal_and_output() {
        let s: ExecStatus = serde_json::from_str(
            r#"{"exitcode":3,"out-data":"aGVsbG8K","err-data":"/w==","out-truncated":false,"exited":true}"#,
        )
        .unwrap();
        assert_eq!(s.exit_code, Some(3));
        assert_eq!(s.decode_stdout().as_deref(), Some("hello\n"));
        assert_eq!(s.stderr(), vec![0xff]);
        assert_eq!(s.decode_stderr().as_deref(), Some("\u{fffd}"));
        let k: ExecStatus = serde_json::from_str(r#"{"signal":9,"exited":true}"#).unwrap();
        assert_eq!((k.exit_code, k.signal), (None, Some(9)));
        assert_eq!(k.decode_stdout(), None);
        let r: ExecStatus = serde_json::from_str(r#"{"exited":false}"#).unwrap();
        assert!(!r.exited);
    }
}
