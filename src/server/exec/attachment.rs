//! The client currently following an exec, and the one place events are sent to clients
//! (every send of an exec event goes through [`send`], [`send_now`] or [`send_error`]).

use tonic::{Code, Status};

use super::{
    super::gate::{Call, Outcome},
    registry::EventTx,
};
use crate::pb;

/// A client stream attached to an exec's task: the Exec request's own stream (no call of
/// its own: the Exec call lives as long as the program) or an ExecAttach (its call is
/// finished when the attachment ends).
#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) tx: EventTx,
    pub(super) call: Option<Call>,
    /// Output bytes delivered on this stream.
    pub(super) bytes: u64,
}

/// Why an attachment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detached {
    /// The client closed its stream.
    Left,
    /// The client read nothing for `limits.stream_idle_timeout`.
    Idle,
}

/// Sends one event once the stream has room. Cancel-safe: the event is cloned only
/// after room was reserved, so a caller racing this against timers never loses one.
/// Every event a client sees goes through here.
pub(super) async fn send(tx: &EventTx, ev: &pb::ExecEvent) -> bool {
    match tx.reserve().await {
        Ok(permit) => {
            permit.send(Ok(ev.clone()));
            true
        }
        Err(_) => false,
    }
}

/// Sends without waiting: the first message on a stream just created, which has room.
pub(super) fn send_now(tx: &EventTx, ev: pb::ExecEvent) -> bool {
    tx.try_send(Ok(ev)).is_ok()
}

/// Ends a stream with an error status, if there is room for it (never waits).
pub(super) fn send_error(tx: &EventTx, st: Status) {
    let _ = tx.try_send(Err(st));
}

impl Attachment {
    /// Finishes this attachment's own call (ExecAttach) with its delivered bytes.
    pub(super) async fn finish(self, code: Code, message: &str, exit: Option<&pb::ExecExited>) {
        if let Some(call) = self.call {
            let outcome = Outcome {
                exit_code: exit.and_then(|x| x.exit_code),
                signal: exit.and_then(|x| x.signal),
                bytes: Some(self.bytes),
            };
            call.finish_with(code, message, outcome).await;
        }
    }
}
