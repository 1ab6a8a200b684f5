//! The sync primitives of the crate's state machines (the task state word,
//! the task's cell, the join waker, the worker inbox): core's shared shim,
//! which is std's in normal builds and loom's under `--cfg
//! async_patterns_loom`, so that the models in `loom_model.rs` explore every
//! interleaving of the code that ships.
//!
//! Two things are this crate's own. `Arc` is always std's: the task waker is
//! built with `futures_util::task::waker_ref`, which needs it. And the join
//! waker slot, which core's shim does not have, is futures' `AtomicWaker` or
//! loom's model of it.

pub(crate) use std::sync::Arc;

pub(crate) use async_patterns_core::__private::loom::{
    AtomicBool, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering, UnsafeCell,
};

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
