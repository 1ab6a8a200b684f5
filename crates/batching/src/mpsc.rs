//! [`batched`]: batches from a `tokio::sync::mpsc::Receiver`, drained with
//! `recv_many` straight into the batch's buffer instead of one item per
//! poll.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_patterns_core::outcome::{Outcome, Summary};
use futures_core::{FusedStream, Stream};
use tokio::sync::mpsc::Receiver;

use crate::assemble::{Assembler, Pulled};
use crate::{Batch, BatchConfig, BatchMetrics, Flusher};

/// Batches the items of a bounded tokio channel as `config` says.
///
/// Without a weigher, items move from the channel into the batch's buffer
/// in bulk, one `recv_many` per wake-up, which releases the senders'
/// permits in bulk too. With a weigher, they are received in bulk into a
/// side buffer (at most `max_items` items) and weighed one by one.
///
/// # Panics
///
/// Polling the batches panics outside a tokio runtime with the time driver
/// enabled, once a batch has to wait for its deadline.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, FlushReason};
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(1024);
/// let config = BatchConfig::new(512, Duration::from_millis(10)).unwrap();
/// let mut batches = async_patterns_batching::batched(rx, config);
///
/// tokio::spawn(async move {
///     for i in 0..1000u64 {
///         tx.send(i).await.unwrap();
///     }
/// });
/// let mut total = 0;
/// while let Some(batch) = batches.next().await {
///     assert!(batch.len() <= 512);
///     total += batch.len();
/// }
/// assert_eq!(total, 1000);
/// # }
/// ```
pub fn batched<T>(rx: Receiver<T>, config: BatchConfig<T>) -> BatchedMpsc<T> {
    BatchedMpsc {
        rx,
        asm: Assembler::new(config),
    }
}

/// The stream of [`Batch`]es made by [`batched`].
///
/// # Nothing is lost
///
/// Items taken from the channel live in this value, never in a future:
/// dropping a `next()` future — a `select!` branch that lost — leaves them
/// here, and the next poll carries on. When every sender is gone and the
/// channel is empty, the partial batch goes out with
/// [`Closed`](crate::FlushReason::Closed) at once, without waiting for its
/// deadline. [`into_remainder`](Self::into_remainder) hands back the items
/// already taken and the receiver with the ones still queued; dropping this
/// value drops both, counting the taken ones in
/// [`BatchMetrics::dropped`] of the [`outcome`](Self::outcome).
///
/// # Examples
///
/// ```
/// use async_patterns_batching::BatchConfig;
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(16);
/// let config = BatchConfig::new(10, Duration::from_secs(1)).unwrap();
/// let mut batches = async_patterns_batching::batched(rx, config);
/// for i in 0..3 {
///     tx.send(i).await.unwrap();
/// }
/// tokio::select! {
///     _ = batches.next() => unreachable!("not due before 1 s"),
///     _ = tokio::time::sleep(Duration::from_millis(10)) => {}
/// }
/// tx.send(3).await.unwrap();
/// // Shutting down: 0..3 were taken from the channel, 3 is still in it.
/// let (taken, mut rx) = batches.into_remainder();
/// assert_eq!(taken, [0, 1, 2]);
/// assert_eq!(rx.try_recv(), Ok(3));
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct BatchedMpsc<T> {
    rx: Receiver<T>,
    asm: Assembler<T>,
}

impl<T> BatchedMpsc<T> {
    /// A handle that closes the current batch on demand, from any task: the
    /// batch then holds every item sent before the flush.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, FlushReason};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(16);
    /// let config = BatchConfig::new(10, Duration::from_secs(60)).unwrap();
    /// let mut batches = async_patterns_batching::batched(rx, config);
    /// tx.send("a").await.unwrap();
    /// batches.flusher().flush();
    /// let batch = batches.next().await.unwrap();
    /// assert_eq!((&*batch, batch.reason()), (&["a"][..], FlushReason::Flush));
    /// # }
    /// ```
    pub fn flusher(&self) -> Flusher {
        self.asm.flusher()
    }

    /// A snapshot of the metrics so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(16);
    /// let config = BatchConfig::new(2, Duration::from_secs(1)).unwrap();
    /// let mut batches = async_patterns_batching::batched(rx, config);
    /// for i in 0..3 {
    ///     tx.send(i).await.unwrap();
    /// }
    /// drop(tx);
    /// while batches.next().await.is_some() {}
    /// let metrics = batches.metrics();
    /// assert_eq!((metrics.batches.full, metrics.batches.closed), (1, 1));
    /// # }
    /// ```
    pub fn metrics(&self) -> BatchMetrics {
        self.asm.metrics()
    }

    /// A handle that resolves to the final metrics: with `finished: true`
    /// when the stream ends, or `finished: false` when it is dropped or
    /// taken apart first. Asking again replaces the previous handle, which
    /// then resolves to [`Dropped`](async_patterns_core::outcome::Dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(16);
    /// let config = BatchConfig::new(10, Duration::from_secs(1)).unwrap();
    /// let mut batches = async_patterns_batching::batched(rx, config);
    /// let outcome = batches.outcome();
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// // Stop early: the adapter is dropped with its items buffered.
    /// let _ = futures::poll!(batches.next());
    /// drop(batches);
    /// let summary = outcome.await.unwrap();
    /// assert!(!summary.finished);
    /// assert_eq!(summary.value.dropped, 2);
    /// # }
    /// ```
    pub fn outcome(&mut self) -> Outcome<Summary<BatchMetrics>> {
        self.asm.outcome()
    }

    /// Gives a buffer taken with [`Batch::into_vec`] back for later batches;
    /// its items are dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(16);
    /// let config = BatchConfig::new(4, Duration::from_secs(1)).unwrap();
    /// let mut batches = async_patterns_batching::batched(rx, config);
    /// for i in 0..4 {
    ///     tx.send(i).await.unwrap();
    /// }
    /// let items = batches.next().await.unwrap().into_vec();
    /// let buffer = items.as_ptr();
    /// batches.recycle(items);
    /// tx.send(4).await.unwrap();
    /// drop(tx);
    /// assert_eq!(batches.next().await.unwrap().as_ptr(), buffer);
    /// # }
    /// ```
    pub fn recycle(&self, buffer: Vec<T>) {
        self.asm.recycle(buffer);
    }

    /// The receiver, to look at its state; receiving from it directly would
    /// bypass the batches.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = tokio::sync::mpsc::channel::<u8>(16);
    /// let batches = async_patterns_batching::batched(rx, BatchConfig::new(4, Duration::from_secs(1)).unwrap());
    /// drop(tx);
    /// assert!(batches.get_ref().is_closed());
    /// ```
    pub fn get_ref(&self) -> &Receiver<T> {
        &self.rx
    }

    /// Takes the adapter apart: the items already taken from the channel,
    /// oldest first (counted as [`handed_back`](BatchMetrics::handed_back)),
    /// and the receiver, still open, with the items not taken yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(16);
    /// let config = BatchConfig::new(10, Duration::from_secs(1)).unwrap();
    /// let batches = async_patterns_batching::batched(rx, config);
    /// tx.send(1).await.unwrap();
    /// let (taken, mut rx) = batches.into_remainder();
    /// assert!(taken.is_empty()); // never polled: nothing was taken
    /// assert_eq!(rx.recv().await, Some(1));
    /// # }
    /// ```
    pub fn into_remainder(self) -> (Vec<T>, Receiver<T>) {
        let BatchedMpsc { rx, mut asm } = self;
        (asm.take_remainder(), rx)
    }
}

impl<T> Stream for BatchedMpsc<T> {
    type Item = Batch<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch<T>>> {
        let this = self.get_mut();
        let asm = &mut this.asm;
        if let Some(done) = asm.poll_start() {
            return Poll::Ready(done);
        }
        loop {
            let pulled = if asm.config.weighs() {
                pull_weighed(asm, &mut this.rx, cx)
            } else {
                pull_bulk(asm, &mut this.rx, cx)
            };
            match pulled {
                Pulled::Batch(batch) => return Poll::Ready(Some(batch)),
                Pulled::Ended => return asm.poll_ended(),
                Pulled::Pending => {}
            }
            if let Some(poll) = asm.poll_idle(cx) {
                return poll;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.asm.is_terminated() {
            (0, Some(0))
        } else {
            (
                usize::from(self.asm.buffered() > 0 || !self.rx.is_empty()),
                None,
            )
        }
    }
}

impl<T> FusedStream for BatchedMpsc<T> {
    fn is_terminated(&self) -> bool {
        self.asm.is_terminated()
    }
}

/// Every item weighs 1: receive straight into the batch's buffer.
fn pull_bulk<T>(asm: &mut Assembler<T>, rx: &mut Receiver<T>, cx: &mut Context<'_>) -> Pulled<T> {
    if asm.input_done {
        return Pulled::Ended;
    }
    let max_items = asm.config.max_items;
    loop {
        // Never full here: a batch is closed the moment it fills.
        let room = max_items - asm.open.len();
        let was_empty = asm.open.is_empty();
        if was_empty {
            asm.open.provision(&asm.pool);
        }
        match rx.poll_recv_many(cx, &mut asm.open.items, room) {
            Poll::Ready(0) => {
                asm.input_done = true;
                return Pulled::Ended;
            }
            Poll::Ready(n) => {
                asm.took(n);
                asm.open.appended(was_empty, n);
                if asm.open.len() >= max_items {
                    return Pulled::Batch(asm.seal(crate::FlushReason::Full));
                }
                // Not full: look again, which also registers for a wake-up
                // when the channel turns out to be empty.
            }
            Poll::Pending => return Pulled::Pending,
        }
    }
}

/// Items must be weighed one by one: receive in bulk ahead into `carry`.
fn pull_weighed<T>(
    asm: &mut Assembler<T>,
    rx: &mut Receiver<T>,
    cx: &mut Context<'_>,
) -> Pulled<T> {
    loop {
        while let Some(item) = asm.carry.pop() {
            if let Some(batch) = asm.push(item) {
                return Pulled::Batch(batch);
            }
        }
        if asm.input_done {
            return Pulled::Ended;
        }
        let limit = asm.config.max_items;
        match rx.poll_recv_many(cx, &mut asm.carry, limit) {
            Poll::Ready(0) => {
                asm.input_done = true;
                return Pulled::Ended;
            }
            Poll::Ready(n) => {
                asm.took(n);
                // Reversed so that `pop` yields them oldest first.
                asm.carry.reverse();
            }
            Poll::Pending => return Pulled::Pending,
        }
    }
}

impl<T> fmt::Debug for BatchedMpsc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchedMpsc")
            .field("config", &self.asm.config)
            .field("buffered", &self.asm.buffered())
            .field("metrics", &self.asm.metrics)
            .finish_non_exhaustive()
    }
}
