//! The sync primitives of the crate's state machines (the task state word,
//! the task's cell, the join waker, the worker inbox): std's and futures' in
//! normal builds, loom's under `--cfg async_patterns_loom` so that the models in
//! `tests/loom*.rs` explore every interleaving. `Arc` is always std's: the
//! task waker is built with `futures_util::task::waker_ref`, which needs it.

pub(crate) use std::sync::Arc;

#[cfg(async_patterns_loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// `std::cell::UnsafeCell` with loom's closure-based access API.
#[cfg(not(async_patterns_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(async_patterns_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A waker slot that one side registers in and the other wakes: futures'
/// `AtomicWaker`, or loom's model of it.
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker {
    #[cfg(not(async_patterns_loom))]
    inner: futures_util::task::AtomicWaker,
    #[cfg(async_patterns_loom)]
    inner: loom::future::AtomicWaker,
}

impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker::default()
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        #[cfg(not(async_patterns_loom))]
        self.inner.register(waker);
        #[cfg(async_patterns_loom)]
        self.inner.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.inner.wake();
    }
}
