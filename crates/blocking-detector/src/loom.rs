//! The sync primitives of the detector's lock-free state, from loom under
//! `cfg(loom)` (so the models in `tests/loom*.rs` explore every interleaving)
//! and from std otherwise.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};
