//! What the loom models share.

use loom::thread::{self, JoinHandle};

/// `thread::spawn`, then a yield of the spawning thread. loom 0.7 never runs
/// a spawned thread ahead of its parent when the child's first operation is
/// an atomic load (tokio-rs/loom#392) — and a send, a commit and a drop of a
/// delivery all start with one — so without the yield a model might not
/// explore the child going first. Both orders are explored with it.
pub(crate) fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> JoinHandle<T> {
    let handle = thread::spawn(f);
    thread::yield_now();
    handle
}
