//! The synchronization primitives of the pattern crates' state machines:
//! `std`'s in normal builds, [loom](https://docs.rs/loom)'s under our own
//! `--cfg async_patterns_loom`, so that the loom models explore the very code
//! that ships. (Never the bare `loom` cfg: a user's own loom tests set it for
//! every crate they build.)

#[cfg(not(async_patterns_loom))]
mod imp {
    pub use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
    pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// `std`'s `UnsafeCell` behind loom's closure-based interface, so that
    /// loom can check every access in the models.
    #[derive(Debug)]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        pub const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Reads through a pointer that is valid for the closure's duration.
        #[inline(always)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Writes through a pointer that is valid for the closure's duration.
        #[inline(always)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// A hint that the caller is spinning.
    #[inline(always)]
    pub fn spin_hint() {
        std::hint::spin_loop();
    }
}

#[cfg(async_patterns_loom)]
mod imp {
    pub use loom::cell::UnsafeCell;
    pub use loom::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
    pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// Under loom a spin must let the other threads run, or the model
    /// explores an endless loop.
    #[inline(always)]
    pub fn spin_hint() {
        loom::thread::yield_now();
    }
}

pub use imp::*;

/// Locks `mutex`, ignoring poisoning. For the crates' internal state only:
/// each of their critical sections leaves the state consistent before
/// anything that could panic (user code always runs outside the lock), so a
/// panic elsewhere while the lock was held leaves nothing half-done.
#[inline]
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
