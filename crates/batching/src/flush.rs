//! [`Flusher`]: a handle that asks a batcher, from any task or thread, to
//! close its current batch now.

use std::fmt;
use std::task::Waker;

use async_patterns_core::__private::lock;
use async_patterns_core::__private::loom::{Arc, AtomicBool, Mutex, Ordering};

/// A request flag plus the waker of the task that consumes batches.
#[derive(Default)]
pub(crate) struct FlushSignal {
    requested: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl FlushSignal {
    /// Takes a pending request, if any.
    pub(crate) fn take(&self) -> bool {
        // The load keeps the common no-request path free of writes.
        self.requested.load(Ordering::Relaxed) && self.requested.swap(false, Ordering::AcqRel)
    }

    /// Remembers the consumer's waker. Call before the last [`take`]
    /// (Self::take) of a poll that returns `Pending`, so that a request made
    /// in between is either seen or wakes the consumer.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn request(&self) {
        self.requested.store(true, Ordering::Release);
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Asks a batcher to close its current batch now, with
/// [`FlushReason::Flush`](crate::FlushReason::Flush): cloneable, `Send` and
/// `Sync`, usable from any task or thread.
///
/// A flush takes effect on the consumer's next poll (it is woken for it):
/// the batcher first takes everything its input has ready — for the
/// channel, every item whose `send` has completed — then closes the batch.
/// A flush while the batch is empty does nothing; batches are never empty.
/// Flushing a batcher that is gone does nothing either.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{ChannelBuilder, FlushReason};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = ChannelBuilder::new().max_delay(Duration::from_secs(60)).build().unwrap();
/// let flusher = rx.flusher();
///
/// tx.send("urgent").await.unwrap();
/// flusher.flush(); // do not wait a minute
/// let batch = rx.recv().await.unwrap();
/// assert_eq!((&*batch, batch.reason()), (&["urgent"][..], FlushReason::Flush));
/// # }
/// ```
#[derive(Clone)]
pub struct Flusher {
    signal: Arc<FlushSignal>,
}

impl Flusher {
    pub(crate) fn new(signal: Arc<FlushSignal>) -> Self {
        Flusher { signal }
    }

    /// Asks for the current batch to be closed and handed out.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(8);
    /// let config = BatchConfig::new(100, Duration::from_secs(60)).unwrap();
    /// let mut batches = async_patterns_batching::batched(rx, config);
    /// let flusher = batches.flusher();
    ///
    /// tokio::spawn(async move {
    ///     tx.send(1).await.unwrap();
    ///     tx.send(2).await.unwrap();
    ///     flusher.flush();
    ///     std::future::pending::<()>().await; // keep the channel open
    /// });
    /// let batch = batches.next().await.unwrap();
    /// assert_eq!((&*batch, batch.reason()), (&[1, 2][..], FlushReason::Flush));
    /// # }
    /// ```
    pub fn flush(&self) {
        self.signal.request();
    }
}

impl fmt::Debug for Flusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher")
            .field("requested", &self.signal.requested.load(Ordering::Relaxed))
            .finish()
    }
}
