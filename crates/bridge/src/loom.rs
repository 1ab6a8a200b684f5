//! The synchronization primitives of the crate's state machines: `std`'s in
//! normal builds, loom's under `cfg(async_patterns_loom)`, so that the loom models in
//! `tests/loom*.rs` explore the same code that ships.

#[cfg(not(async_patterns_loom))]
mod imp {
    pub(crate) mod sync {
        pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

        pub(crate) mod atomic {
            pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        }
    }

    pub(crate) mod thread {
        pub(crate) use std::thread::{Thread, current, park, park_timeout};
    }

    pub(crate) use futures_util::task::AtomicWaker;

    /// `std`'s `UnsafeCell` behind loom's closure-based interface.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(async_patterns_loom)]
mod imp {
    pub(crate) mod sync {
        pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

        pub(crate) mod atomic {
            pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        }
    }

    pub(crate) mod thread {
        pub(crate) use loom::thread::{Thread, current, park};

        /// Loom has no clock: a timed park is modelled as a park, which the
        /// models only use where an unpark is guaranteed.
        pub(crate) fn park_timeout(_: std::time::Duration) {
            park();
        }
    }

    pub(crate) use loom::cell::UnsafeCell;

    /// Loom's `AtomicWaker` behind the interface of `futures`'.
    #[derive(Debug)]
    pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            AtomicWaker(loom::future::AtomicWaker::new())
        }

        pub(crate) fn register(&self, waker: &std::task::Waker) {
            self.0.register_by_ref(waker);
        }

        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }
}

pub(crate) use imp::*;
