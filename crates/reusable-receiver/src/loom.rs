//! The synchronisation primitives of the lease state machine, from core's
//! shared shim: std's, or loom's models of them under
//! `--cfg async_patterns_loom`, so that the loom models (`tests/loom*.rs`)
//! explore the very code that ships. `lock` ignores poisoning: every
//! critical section leaves the state consistent before it calls code that
//! may panic (`T::clone`, a weigher), so a panic there breaks no invariant.

pub(crate) use async_patterns_core::__private::lock;
pub(crate) use async_patterns_core::__private::loom::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell, fence,
};
