//! A budget for the audit records of anonymous denials. Anonymous callers (auth "none")
//! are accountable to nobody, so their denied requests must not be able to fill the
//! audit disk (which would then refuse everyone's requests): past
//! `[audit] anonymous_denials_per_minute` in a minute, further ones are counted instead
//! of recorded, and one summary record per minute says how many were left out and from
//! which peers.

use std::{
    collections::BTreeSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::sync::lock;

/// The budget's window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Peers named in one summary record.
const MAX_PEERS: usize = 16;

/// Anonymous denials left out of the log during one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// How many.
    pub(crate) count: u64,
    /// Some of their peer addresses (at most 16).
    pub(crate) peers: Vec<String>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    recorded: u32,
    suppressed: u64,
    peers: BTreeSet<String>,
}

/// Counts anonymous denials per window.
#[derive(Debug)]
pub(crate) struct DenialBudget {
    per_window: u32,
    state: Mutex<State>,
}

impl DenialBudget {
    /// At most `per_window` anonymous denials recorded per [`WINDOW`].
    pub(crate) fn new(per_window: u32) -> Self {
        Self {
            per_window,
            state: Mutex::new(State {
                started: Instant::now(),
                recorded: 0,
                suppressed: 0,
                peers: BTreeSet::new(),
            }),
        }
    }

    /// Whether this anonymous denial gets its records, and the summary of a window that
    /// just ended, if it left some out (the caller records it).
    pub(crate) fn check(&self, peer: &str, now: Instant) -> (bool, Option<Suppressed>) {
        let mut st = lock(&self.state);
        let ended = roll(&mut st, now);
        if st.recorded < self.per_window {
            st.recorded += 1;
            return (true, ended);
        }
        st.suppressed += 1;
        if st.peers.len() < MAX_PEERS {
            st.peers.insert(peer.chars().take(64).collect());
        }
        (false, ended)
    }

    /// The summary of a window that has ended with denials left out (periodic flush).
    pub(crate) fn expired(&self, now: Instant) -> Option<Suppressed> {
        let mut st = lock(&self.state);
        roll(&mut st, now)
    }
}

impl DenialBudget {
    /// What the current window left out so far (shutdown: recorded before the log closes).
    pub(crate) fn take_pending(&self) -> Option<Suppressed> {
        let mut st = lock(&self.state);
        (st.suppressed > 0).then(|| Suppressed {
            count: std::mem::take(&mut st.suppressed),
            peers: std::mem::take(&mut st.peers).into_iter().collect(),
        })
    }
}

/// Starts a new window if the current one is over; returns what it left out.
fn roll(st: &mut State, now: Instant) -> Option<Suppressed> {
    if now.duration_since(st.started) < WINDOW {
        return None;
    }
    let out = (st.suppressed > 0).then(|| Suppressed {
        count: st.suppressed,
        peers: std::mem::take(&mut st.peers).into_iter().collect(),
    });
    st.started = now;
    st.recorded = 0;
    st.suppressed = 0;
    st.peers.clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_up_to_the_budget_then_counts() {
        let b = DenialBudget::new(3);
        let t0 = Instant::now();
        let got: Vec<bool> = (0..5).map(|i| b.check(&format!("p{i}"), t0).0).collect();
        assert_eq!(got, [true, true, true, false, false]);
        assert_eq!(b.expired(t0), None, "the window is not over");
        let later = t0 + WINDOW;
        let (recorded, ended) = b.check("p9", later);
        assert!(recorded, "a new window has a new budget");
        assert_eq!(
            ended,
            Some(Suppressed {
                count: 2,
                peers: vec!["p3".into(), "p4".into()]
            })
        );
        assert_eq!(b.expired(later + WINDOW), None, "nothing left out since");
    }
}
