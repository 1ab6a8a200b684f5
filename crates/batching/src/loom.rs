//! The synchronization primitives of the batching channel and the flush
//! signal: `std`'s normally, loom's under `cfg(async_patterns_loom)`, so that the loom
//! models in `tests/loom*.rs` check the very code that ships.

#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: every critical section of this crate
/// leaves the state consistent before anything that could panic (user code —
/// weighers, item destructors — always runs outside the lock).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
