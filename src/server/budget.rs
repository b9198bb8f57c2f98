//! A policy's `max_bytes` for one request, as one type: how many bytes may still move.
//! Exec output, ReadFile and WriteFile each spend it their own way (truncate and kill,
//! stop, refuse), but the counting is here, once.

/// The bytes one request may still move under a policy's `max_bytes` (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ByteBudget {
    limit: Option<u64>,
    used: u64,
}

impl ByteBudget {
    /// A fresh budget of `limit` bytes.
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Self { limit, used: 0 }
    }

    /// The policy's limit.
    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Whether there is a limit at all.
    pub(crate) fn is_limited(&self) -> bool {
        self.limit.is_some()
    }

    /// Bytes spent so far.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Whether nothing more may move.
    pub(crate) fn is_spent(&self) -> bool {
        self.limit.is_some_and(|l| self.used >= l)
    }

    /// Spends what fits of `n` bytes and returns it (all of `n` without a limit): the
    /// caller keeps that much and drops the rest.
    pub(crate) fn take_up_to(&mut self, n: usize) -> usize {
        let fits = match self.limit {
            None => n,
            Some(l) => n.min(usize::try_from(l.saturating_sub(self.used)).unwrap_or(usize::MAX)),
        };
        self.used = self.used.saturating_add(fits as u64);
        fits
    }

    /// Spends `n` bytes if all of them fit; otherwise spends nothing and returns the limit
    /// that `n` would pass.
    pub(crate) fn take_all(&mut self, n: u64) -> Result<(), u64> {
        let after = self.used.saturating_add(n);
        match self.limit {
            Some(l) if after > l => Err(l),
            _ => {
                self.used = after;
                Ok(())
            }
        }
    }

    /// Whether `size` bytes (measured elsewhere, e.g. the guest's output files) pass the
    /// limit.
    pub(crate) fn exceeded_by(&self, size: u64) -> bool {
        self.limit.is_some_and(|l| size > l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_limit_everything_fits() {
        let mut b = ByteBudget::new(None);
        assert_eq!(b.take_up_to(usize::MAX), usize::MAX);
        assert_eq!(b.take_all(u64::MAX), Ok(()));
        assert!(!b.is_spent() && !b.exceeded_by(u64::MAX) && !b.is_limited());
    }

    #[test]
    fn take_up_to_keeps_what_fits_and_no_more() {
        let mut b = ByteBudget::new(Some(10));
        assert_eq!(b.take_up_to(4), 4);
        assert_eq!(b.take_up_to(8), 6);
        assert!(b.is_spent());
        assert_eq!(b.take_up_to(1), 0);
        assert_eq!(b.used(), 10);
    }

    #[test]
    fn take_all_refuses_without_spending() {
        let mut b = ByteBudget::new(Some(10));
        assert_eq!(b.take_all(7), Ok(()));
        assert_eq!(b.take_all(4), Err(10));
        assert_eq!(b.used(), 7, "a refused take spends nothing");
        assert_eq!(b.take_all(3), Ok(()));
        assert!(b.is_spent());
    }

    #[test]
    fn a_zero_budget_is_spent_from_the_start() {
        let b = ByteBudget::new(Some(0));
        assert!(b.is_spent() && b.exceeded_by(1) && !b.exceeded_by(0));
    }
}
