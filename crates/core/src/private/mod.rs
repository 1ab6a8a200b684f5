//! Helpers that several pattern crates need internally: **not part of the
//! public API**. Hidden from the docs, they may change in any release; every
//! pattern crate of one release depends on the same release of this crate.
//!
//! They live here rather than in an internal crate of their own because every
//! pattern crate already depends on core: one more published crate would add
//! a version to keep in lockstep and nothing else.

mod cache_padded;
pub mod loom;
mod wake_list;

pub use cache_padded::CachePadded;
pub use loom::lock;
pub use wake_list::WakeList;
