//! The pace of an attached exec's polls. A full round (both output files and the exit
//! status) backs off from 20 ms to 250 ms while the program is quiet; in between, the
//! program is asked for its exit alone (one agent call instead of three): every
//! [`EXIT_LOOK`] in its first second, then every 5% of its age, until that reaches the
//! full rounds' pace (at 5 s). Most commands end within the first second: without these
//! looks the exit of a 0.2 s command was seen up to 0.1 s late, and the full rounds' calls
//! took the guest's one emulated CPU from the program itself. A quiet program of a few
//! seconds (an Ansible module in a TCG guest) was seen up to 250 ms late, 125 ms on
//! average; at 5% of its age (libvirt_qemu's pace) about 65 ms.
//! In the program's first 150 ms every round asks for the exit alone (see
//! [`ExecSession::step`](crate::qga::ExecSession::step)).

use std::time::{Duration, Instant};

use super::{POLL_ECHO, POLL_MAX, Runner};

/// How often a program's exit is looked at between full rounds in its first second.
const EXIT_LOOK: Duration = Duration::from_millis(25);
/// How long a program counts as young (looked at every [`EXIT_LOOK`]).
const YOUNG: Duration = Duration::from_secs(1);

/// The longest pause between full rounds of a program that has been quiet this long.
const QUIET_ROUND_MAX: Duration = Duration::from_secs(1);

/// The full rounds' longest pause after `quiet` without output: 250 ms, then a tenth of
/// the quiet (from 2.5 s), at most 1 s. Each round reads both files (two agent calls, each
/// taking the guest's CPU from the program): a program quiet for 8 s is read in 22 rounds
/// instead of 31, one quiet for 30 s in 45 instead of 119; output after a long quiet
/// arrives at most a tenth of it (and 1 s) late. The exit is looked at on its own pace.
pub(super) fn round_max(quiet: Duration) -> Duration {
    (quiet / 10).clamp(POLL_MAX, QUIET_ROUND_MAX)
}

/// How long to wait before the next look at the exit of a program of this `age`.
fn exit_look(age: Duration) -> Duration {
    if age < YOUNG { EXIT_LOOK } else { age / 20 }
}

impl Runner {
    /// Waits `pause` before the next full round, looking at the program's exit meanwhile
    /// ([`exit_look`]); returns early once it exited (the next round reads the rest and
    /// reports it), on stdin (its echo is coming) and on anything else that woke the wait.
    pub(super) async fn pause_watching_exit(&mut self, pause: Duration) {
        let end = Instant::now() + pause;
        loop {
            let look = exit_look(self.session.started().elapsed());
            if end.saturating_duration_since(Instant::now()) <= look {
                break;
            }
            if !self.wait(look).await || self.poll == POLL_ECHO {
                return;
            }
            match self.session.poll_exit().await {
                Ok(false) => {}
                // Exited, or an error the next full round meets and reports.
                Ok(true) | Err(_) => return,
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            self.wait(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_looked_at_often_while_young_then_at_a_share_of_the_age() {
        let ms = Duration::from_millis;
        assert_eq!(exit_look(ms(0)), EXIT_LOOK);
        assert_eq!(exit_look(ms(900)), EXIT_LOOK);
        assert_eq!(exit_look(ms(1000)), ms(50));
        assert_eq!(exit_look(ms(2600)), ms(130));
        // From 5 s on no look fits between two full rounds (at most 250 ms apart).
        assert!(exit_look(ms(5000)) >= ms(250));
    }

    #[test]
    fn full_rounds_slow_down_with_the_quiet_up_to_a_second() {
        let ms = Duration::from_millis;
        assert_eq!(round_max(ms(0)), POLL_MAX);
        assert_eq!(round_max(ms(2500)), POLL_MAX);
        assert_eq!(round_max(ms(8000)), ms(800));
        assert_eq!(round_max(ms(60_000)), QUIET_ROUND_MAX);
    }
}
