//! The pace of an attached exec's polls. A full round (both output files and the exit
//! status) backs off from 20 ms to 250 ms while the program is quiet; in between, a
//! program in its first second is asked for its exit alone every [`EXIT_LOOK`], one agent
//! call instead of three. Most commands end within that second: without these looks the
//! exit of a 0.2 s command was seen up to 0.1 s late, and the full rounds' calls took the
//! guest's one emulated CPU from the program itself.

use std::time::{Duration, Instant};

use super::{POLL_ECHO, Runner};

/// How often a young program's exit is looked at between full rounds.
const EXIT_LOOK: Duration = Duration::from_millis(25);
/// How long a program counts as young.
const YOUNG: Duration = Duration::from_secs(1);

impl Runner {
    /// Waits `pause` before the next full round, looking at a young program's exit
    /// meanwhile; returns early once it exited (the next round reads the rest and reports
    /// it), on stdin (its echo is coming) and on anything else that woke the wait.
    pub(super) async fn pause_watching_exit(&mut self, pause: Duration) {
        let end = Instant::now() + pause;
        while self.session.started().elapsed() < YOUNG
            && end.saturating_duration_since(Instant::now()) > EXIT_LOOK
        {
            if !self.wait(EXIT_LOOK).await || self.poll == POLL_ECHO {
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
