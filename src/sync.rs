//! Locking the std mutexes that guard plain data (caches, registries, counters).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data even if a thread panicked while holding it: every mutex
/// in this crate guards plain data that a panic cannot leave half-updated, so poisoning
/// carries no information worth failing a request over. Never hold the guard across an
/// `.await`.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
