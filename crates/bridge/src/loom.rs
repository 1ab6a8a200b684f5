//! The synchronization primitives of the crate's state machines: core's
//! shared shim (`std`'s in normal builds, loom's under
//! `cfg(async_patterns_loom)`), plus the two pieces only this crate needs —
//! thread parking and an `AtomicWaker` — so that the loom models in
//! `tests/loom*.rs` explore the same code that ships.

pub(crate) use async_patterns_core::__private::loom::{
    Arc, AtomicUsize, Mutex, MutexGuard, Ordering, UnsafeCell,
};
pub(crate) use async_patterns_core::__private::{CachePadded, lock};

#[cfg(not(async_patterns_loom))]
mod imp {
    pub(crate) mod thread {
        pub(crate) use std::thread::{Thread, current, park, park_timeout};
    }

    pub(crate) use futures_util::task::AtomicWaker;
}

#[cfg(async_patterns_loom)]
mod imp {
    pub(crate) mod thread {
        pub(crate) use loom::thread::{Thread, current, park};

        /// Loom has no clock: a timed park is modelled as a park, which the
        /// models only use where an unpark is guaranteed.
        pub(crate) fn park_timeout(_: std::time::Duration) {
            park();
        }
    }

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
