//! The synchronisation primitives of the lease state machine: std's, or
//! loom's models of them when built with `--cfg async_patterns_loom`, so that the same code
//! runs under the loom model checker (`tests/loom*.rs`).

#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: every critical section leaves the
/// state consistent before it calls code that may panic (`T::clone`, a
/// weigher), so a panic there does not break the state's invariants.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
