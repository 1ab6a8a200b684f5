//! The synchronization primitives of the channel, from `std` normally and
//! from [loom](https://docs.rs/loom) under `--cfg loom`, so that the same
//! state machine runs in the loom models of `tests/loom*.rs`.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicUsize, Ordering},
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicUsize, Ordering},
};

/// Runs `future` to completion on the calling thread, parking it between
/// polls. Only called where [`RuntimeContext`](async_patterns_core::RuntimeContext)
/// says the thread may block.
#[cfg(not(loom))]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // A wake between the poll and here leaves a token, so `park`
        // returns at once; spurious returns only cost one more poll.
        thread::park();
    }
}

#[cfg(loom)]
pub(crate) use loom::future::block_on;
