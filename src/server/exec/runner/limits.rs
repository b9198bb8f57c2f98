//! The exec's limits and its account: the deadline, the `max_bytes` budget (on output
//! taken from the guest, and on the output files' size while nobody reads), the kills
//! they cause, and the Exec call's outcome record when the program ends.

use std::time::Instant;

use tonic::Code;

use super::{COLLECT_CAP, PARK_POLL, Runner};
use crate::{
    pb::exec_event::Event,
    qga::{ExecEvent, KillOutcome},
    server::{
        exec::{event, exited},
        gate::Outcome,
    },
};

/// Why the daemon killed the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kill {
    Timeout,
    MaxBytes,
    Cancelled,
    Idle,
}

impl Runner {
    /// Kills the program for `why`, if it still runs; never signals an exited one.
    pub(super) async fn kill(&mut self, why: Kill) {
        match self.session.kill(why == Kill::Timeout).await {
            Ok(KillOutcome::Killed) => {
                tracing::info!(exec_id = %self.entry.id, ?why, "killed the exec's program");
                self.killed.get_or_insert(why);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(exec_id = %self.entry.id, error = %e, ?why, "killing the exec's program failed");
                if why == Kill::Timeout {
                    // Try again on the next check.
                    self.deadline_done = false;
                    self.limits.deadline = Instant::now() + PARK_POLL;
                }
            }
        }
    }

    pub(super) fn deadline_armed(&self) -> bool {
        !self.deadline_done && !self.session.has_exited()
    }

    /// Whether the output size must be watched (a budget not yet reached, program running).
    pub(super) fn sizing(&self) -> bool {
        self.limits.output.is_limited() && !self.over && !self.session.has_exited()
    }

    /// Kills the program once its output files hold more than `max_bytes`.
    pub(super) async fn check_size(&mut self) {
        if !self.sizing() {
            return;
        }
        match self.session.output_size().await {
            Ok(n) if self.limits.output.exceeded_by(n) => {
                self.over = true;
                self.kill(Kill::MaxBytes).await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(exec_id = %self.entry.id, error = %e, "output size not read"),
        }
    }

    /// Takes one event from the guest: output within the budget, or the exit.
    pub(super) async fn accept(&mut self, ev: ExecEvent) {
        match ev {
            ExecEvent::Stdout(d) => self.accept_data(d, true).await,
            ExecEvent::Stderr(d) => self.accept_data(d, false).await,
            ExecEvent::Exited(x) => {
                let mut done = exited(&x, self.over || self.capped.0, self.over || self.capped.1);
                done.timed_out = x.timed_out && self.killed == Some(Kill::Timeout);
                self.exit = Some(done);
                self.record_exit().await;
                self.pending.push_back(event(Event::Exited(done)));
            }
        }
    }

    pub(super) async fn accept_data(&mut self, mut d: Vec<u8>, stdout: bool) {
        let fits = self.limits.output.take_up_to(d.len());
        if fits < d.len() {
            d.truncate(fits);
            if !self.over {
                self.over = true;
                tracing::info!(exec_id = %self.entry.id, limit = ?self.limits.output.limit(),
                    "exec output reached the policy's max_bytes");
                self.kill(Kill::MaxBytes).await;
            }
        }
        if let Some(r) = &self.recording {
            r.output(&d).await;
        }
        if self.collect {
            let (kept, capped) = if stdout {
                (&mut self.collected.0, &mut self.capped.0)
            } else {
                (&mut self.collected.1, &mut self.capped.1)
            };
            let room = COLLECT_CAP.saturating_sub(*kept);
            if d.len() > room {
                d.truncate(room);
                *capped = true;
            }
            *kept += d.len();
        }
        if d.is_empty() {
            return;
        }
        self.accepted += d.len() as u64;
        self.pending.push_back(event(if stdout {
            Event::Stdout(d)
        } else {
            Event::Stderr(d)
        }));
    }

    pub(super) fn outcome(&self) -> Outcome {
        Outcome {
            exit_code: self.exit.and_then(|x| x.exit_code),
            signal: self.exit.and_then(|x| x.signal),
            bytes: Some(self.accepted),
        }
    }

    /// Records the Exec call's outcome once the program has ended (idempotent).
    pub(super) async fn record_exit(&mut self) {
        if self.exit.is_none()
            && let Some(x) = self.session.exit()
        {
            let mut done = exited(&x, self.over, self.over);
            done.timed_out = x.timed_out && self.killed == Some(Kill::Timeout);
            self.exit = Some(done);
        }
        if self.exit.is_some() {
            self.entry.mark_ended();
        }
        let Some(mut call) = self.call.take() else {
            return;
        };
        if let Some(r) = self.finish_recording().await {
            call.set_recording(r);
        }
        let mut parts = Vec::new();
        match self.killed {
            Some(Kill::Timeout) => parts.push(format!(
                "timed out: killed at its {} ms limit",
                self.limits.timeout.as_millis()
            )),
            Some(Kill::MaxBytes) => parts.push(format!(
                "killed: output reached max_bytes ({})",
                self.limits.output.limit().unwrap_or_default()
            )),
            Some(Kill::Cancelled) => parts.push("cancelled by ExecCancel".to_owned()),
            Some(Kill::Idle) => parts.push(
                "killed: the session had no input for its policy's idle_timeout_ms".to_owned(),
            ),
            None => {}
        }
        if self.client.is_none() {
            parts.push("ended while detached".to_owned());
        }
        if self.adopted {
            parts.push(
                "ended under a later daemon instance than the one that started it".to_owned(),
            );
        }
        call.finish_with(Code::Ok, &parts.join("; "), self.outcome())
            .await;
        self.forget_record().await;
    }

    /// Closes the session's recording (interactive sessions), for the outcome record.
    pub(super) async fn finish_recording(&mut self) -> Option<crate::audit::SessionRecording> {
        let r = self.recording.take()?;
        r.finish().await
    }
}
