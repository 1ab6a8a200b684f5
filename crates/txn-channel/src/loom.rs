//! The synchronization primitives of the channel, from `std` normally and
//! from [loom](https://docs.rs/loom) under `--cfg async_patterns_loom`, so that the same
//! state machine runs in the loom models of `tests/loom*.rs`.

#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicUsize, Ordering},
};

#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicUsize, Ordering},
};

/// Runs `future` to completion on the calling thread, parking it between
/// polls. Only called where [`RuntimeContext`](async_patterns_core::RuntimeContext)
/// says the thread may block.
#[cfg(not(async_patterns_loom))]
pub(crate) use async_patterns_core::park_on as block_on;

#[cfg(async_patterns_loom)]
pub(crate) use loom::future::block_on;
