//! The sync primitives of the detector's lock-free state, from loom under
//! `cfg(async_patterns_loom)` (so the models in `tests/loom*.rs` explore every interleaving)
//! and from std otherwise.

#[cfg(async_patterns_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};

#[cfg(not(async_patterns_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};
