//! [`channel`]: a bounded channel built for batching. Each sender stages its
//! items on a lane of its own; the receiver takes the lanes' items in bulk,
//! cuts them into batches by the same rules as the adapters and hands the
//! batches out whole. There is no per-item queue node, no per-item wake-up
//! and no lock that all senders share: see [`shared`] for the design.

mod shared;
mod waiters;

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use async_patterns_core::__private::loom::Arc;
use async_patterns_core::outcome::{self, Outcome, OutcomeSender, Summary};
use futures_core::{FusedStream, Stream};
use tokio::task::coop;
use tokio::time::Instant;

use crate::assemble::Open;
use crate::batch::{Batch, Sealed};
use crate::deadline::{Deadline, expiry};
use crate::{
    BatchConfig, BatchMetrics, FlushReason, Flusher, SendError, TryRecvError, TrySendError,
};
use shared::{Shared, Staged};

/// Creates a batching channel that holds up to `capacity` items and hands
/// them out in batches of up to `capacity` items, each closed at the latest
/// 10 ms after its first item: the shorthand for
/// [`ChannelBuilder::new()`](crate::ChannelBuilder::new)`.capacity(capacity).max_items(capacity)`.
/// Use the [`ChannelBuilder`](crate::ChannelBuilder) for other limits — a
/// smaller `max_items`, another delay, a weight limit.
///
/// Senders stage items and the receiver takes whole [`Batch`]es, closed by
/// count, age, flush or the end of the input. It is the fast path when you
/// own both ends, with one producer or many: a send takes its lane's lock,
/// which no other sender waits for, and reserves room with one atomic add
/// on a shared counter — once for up to 32 items when the capacity leaves
/// room beyond a batch, as the builder's default does, else once per item;
/// there is no per-item queue node, permit or wake-up.
///
/// # Panics
///
/// If `capacity` is 0, as `tokio::sync::mpsc::channel` does.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::FlushReason;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, mut rx) = async_patterns_batching::channel(100);
///
/// let producer = tokio::spawn(async move {
///     for i in 0..250u32 {
///         tx.send(i).await?;
///     }
///     Ok::<_, async_patterns_batching::SendError<u32>>(())
/// });
/// let mut sizes = Vec::new();
/// while let Some(batch) = rx.recv().await {
///     sizes.push((batch.len(), batch.reason()));
/// }
/// producer.await??;
/// assert_eq!(
///     sizes,
///     [(100, FlushReason::Full), (100, FlushReason::Full), (50, FlushReason::Closed)]
/// );
/// # Ok(())
/// # }
/// ```
///
/// A capacity of 0 panics:
///
/// ```should_panic
/// let (_tx, _rx) = async_patterns_batching::channel::<u8>(0);
/// ```
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "batching channel capacity must be at least 1");
    crate::ChannelBuilder::new()
        .capacity(capacity)
        .max_items(capacity)
        .build()
        .expect("a capacity of at least 1 is valid")
}

/// The channel of a validated configuration.
pub(crate) fn with_config<T>(config: BatchConfig<T>, capacity: usize) -> (Sender<T>, Receiver<T>) {
    let timed = expiry(Instant::now(), config.max_delay).is_some();
    let shared = Arc::new(Shared::new(config, capacity));
    let rx = Receiver {
        shared: shared.clone(),
        open: Open::new(),
        ready: VecDeque::new(),
        chunks: Vec::new(),
        spare: Vec::new(),
        metrics: BatchMetrics::default(),
        deadline: Deadline::new(),
        flush: false,
        closed: false,
        asleep: false,
        timed,
        done: false,
        outcome: None,
    };
    let tx = Sender {
        shared,
        lane: 0,
        sends: AtomicU32::new(0),
    };
    (tx, rx)
}

/// A send charges tokio's cooperative budget once per this many sends.
const COOP_EVERY: u32 = 32;

/// A lane buffer up to this many items is kept for reuse, whatever the
/// batch size.
const SPARE_CAPACITY: usize = 1024;

/// The items of one lane, taken in one collection.
struct Chunk<T> {
    items: Vec<T>,
    weights: Vec<usize>,
    /// When the first of them arrived.
    since: Instant,
}

/// The sending half of a batching [`channel`]: cloneable; the channel's
/// input ends when every clone is dropped, and the receiver then gets the
/// partial batch at once with [`FlushReason::Closed`].
///
/// # Order
///
/// Items sent through one `Sender` — by one task, or by several tasks
/// sharing it by reference — are received in the order their sends
/// completed. Each clone stages its items on a lane of its own (clones
/// share the few lanes there are round-robin), so that senders on
/// different threads do not wait for each other; the receiver takes the
/// lanes oldest first, so items of different clones are received roughly
/// in the order they were sent, but not exactly: a task that sends through
/// two clones may see its second item received before its first.
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
/// let tx2 = tx.clone();
/// tx.send(1).await.unwrap();
/// tx2.send(2).await.unwrap();
/// drop((tx, tx2));
/// // No minute-long wait for the tail.
/// let batch = rx.recv().await.unwrap();
/// assert_eq!((&*batch, batch.reason()), (&[1, 2][..], FlushReason::Closed));
/// # }
/// ```
pub struct Sender<T> {
    pub(crate) shared: Arc<Shared<T>>,
    /// The lane this sender stages on.
    lane: usize,
    /// Sends so far, for the cooperative budget.
    sends: AtomicU32,
}

impl<T> Sender<T> {
    /// Sends `item` into the batch being built, waiting while the channel
    /// holds [`capacity`](Self::capacity) items.
    ///
    /// A send that does not wait takes part in tokio's cooperative
    /// scheduling at a rate that fits its cost — one unit of the task's
    /// budget every 32 sends — so a producer that never has to wait still
    /// yields to its runtime regularly.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the item if the receiver was closed or dropped
    /// (counted in [`handed_back`](BatchMetrics::handed_back)).
    ///
    /// # Panics
    ///
    /// If the weigher set with
    /// [`max_weight`](crate::ChannelBuilder::max_weight) panics; the channel
    /// is left as it was.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe in tokio's sense: if the future is dropped
    /// before it completes, the item was not sent, and it is dropped with the
    /// future; nothing else changes (the future's place among the waiting
    /// senders is given up). To keep unsent items through cancellation, use
    /// [`send_many`](Self::send_many), which leaves them in the caller's
    /// `Vec`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = async_patterns_batching::channel(16);
    /// assert!(tx.send(1).await.is_ok());
    /// drop(rx);
    /// assert_eq!(tx.send(2).await.unwrap_err().into_inner(), 2);
    /// # }
    /// ```
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let weight = self.shared.config.weigh(&item);
        let mut item = Some(item);
        let mut guard = WaiterGuard {
            shared: &self.shared,
            id: None,
        };
        poll_fn(|cx| self.poll_send(cx, &mut item, weight, &mut guard.id)).await
    }

    /// Sends `item` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] with the item if there is no room: the
    /// channel holds [`capacity`](Self::capacity) items, less the room other
    /// senders reserved and have not used yet (see
    /// [`ChannelBuilder::capacity`](crate::ChannelBuilder::capacity); counted
    /// in [`rejected`](BatchMetrics::rejected)), [`TrySendError::Closed`] if the
    /// receiver was closed or dropped (counted in
    /// [`handed_back`](BatchMetrics::handed_back)).
    ///
    /// # Panics
    ///
    /// If the weigher set with
    /// [`max_weight`](crate::ChannelBuilder::max_weight) panics; the channel
    /// is left as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{ChannelBuilder, TrySendError};
    ///
    /// let (tx, mut rx) = ChannelBuilder::new().max_items(2).capacity(2).build().unwrap();
    /// tx.try_send('a').unwrap();
    /// tx.try_send('b').unwrap();
    /// assert_eq!(tx.try_send('c'), Err(TrySendError::Full('c')));
    /// assert_eq!(&*rx.try_recv().unwrap(), ['a', 'b']);
    /// assert_eq!(tx.try_send('c'), Ok(()));
    /// drop(rx);
    /// assert_eq!(tx.try_send('d'), Err(TrySendError::Closed('d')));
    /// ```
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let weight = self.shared.config.weigh(&item);
        let mut item = Some(item);
        match self.stage_one(&mut item, weight, 0) {
            Staged::Done => Ok(()),
            Staged::Full => {
                self.shared.refuse(self.lane, 1, false);
                Err(TrySendError::Full(item.take().expect("not staged")))
            }
            Staged::Closed => {
                self.shared.refuse(self.lane, 1, true);
                Err(TrySendError::Closed(item.take().expect("not staged")))
            }
        }
    }

    /// Sends the items of `items` in order, as many at a time as there is
    /// room for, waiting for room as needed; on success `items` is empty
    /// (its capacity is kept, for the caller to reuse).
    ///
    /// # Errors
    ///
    /// [`SendError`] with the items not sent, moved out of `items`, if the
    /// receiver was closed or dropped.
    ///
    /// # Panics
    ///
    /// If the weigher set with
    /// [`max_weight`](crate::ChannelBuilder::max_weight) panics; the items
    /// not sent yet are still in `items`.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if the future is dropped, the items not
    /// sent yet are still in `items`, in order, and the ones sent are gone
    /// from it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().max_items(4).capacity(8).build().unwrap();
    /// let mut items: Vec<u32> = (0..10).collect();
    /// // Room for 8 only: give up after a while, nothing lost.
    /// let timed_out = tokio::time::timeout(Duration::from_secs(1), tx.send_many(&mut items)).await;
    /// assert!(timed_out.is_err());
    /// assert_eq!(items, [8, 9]);
    /// assert_eq!(&*rx.recv().await.unwrap(), [0, 1, 2, 3]);
    /// tx.send_many(&mut items).await.unwrap();
    /// assert!(items.is_empty());
    /// # }
    /// ```
    pub async fn send_many(&self, items: &mut Vec<T>) -> Result<(), SendError<Vec<T>>> {
        let mut guard = WaiterGuard {
            shared: &self.shared,
            id: None,
        };
        poll_fn(|cx| self.poll_send_many(cx, items, &mut guard.id)).await
    }

    /// Whether the receiver was closed or dropped, so that sends fail.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = async_patterns_batching::channel::<u8>(16);
    /// assert!(!tx.is_closed());
    /// drop(rx);
    /// assert!(tx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// How many items are in the channel now — sent and not received yet —
    /// at most [`capacity`](Self::capacity). A snapshot: other senders and
    /// the receiver may change it at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = async_patterns_batching::channel(16);
    /// tx.try_send(1).unwrap();
    /// tx.try_send(2).unwrap();
    /// assert_eq!(tx.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the channel holds no item now (a snapshot, like
    /// [`len`](Self::len)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = async_patterns_batching::channel(16);
    /// assert!(tx.is_empty());
    /// tx.try_send(1).unwrap();
    /// assert!(!tx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items the channel holds before `send` waits (see
    /// [`ChannelBuilder::capacity`](crate::ChannelBuilder::capacity)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = async_patterns_batching::channel::<u8>(16);
    /// assert_eq!(tx.capacity(), 16);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// A handle that closes the current batch on demand.
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
    /// tx.send("end of transaction").await.unwrap();
    /// tx.flusher().flush();
    /// assert_eq!(rx.recv().await.unwrap().reason(), FlushReason::Flush);
    /// # }
    /// ```
    pub fn flusher(&self) -> Flusher {
        Flusher::new(self.shared.flush.clone())
    }

    /// A snapshot of the channel's metrics (the same as the receiver's).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = async_patterns_batching::channel::<u8>(16);
    /// tx.try_send(1).unwrap();
    /// drop(rx);
    /// assert!(tx.try_send(2).is_err());
    /// let metrics = tx.metrics();
    /// assert_eq!((metrics.sent, metrics.dropped, metrics.handed_back), (1, 1, 1));
    /// ```
    pub fn metrics(&self) -> BatchMetrics {
        self.shared.metrics(None)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            lane: self.shared.add_sender(),
            sends: AtomicU32::new(0),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.remove_sender(self.lane);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.len())
            .field("capacity", &self.shared.capacity)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// The receiving half of a batching [`channel`]: takes whole batches.
///
/// # Nothing is lost
///
/// Every item whose send succeeded is received exactly once, in a batch,
/// in the order of the sends of each [`Sender`] (see its "Order"). [`recv`](Self::recv) is
/// cancel safe: a batch leaves the channel only in the call that returns
/// it. After [`close`](Self::close), or when every sender is gone, the
/// remaining items keep coming, the partial batch at once with
/// [`FlushReason::Closed`]. [`into_remainder`](Self::into_remainder) takes
/// everything still queued; dropping the receiver drops it, counted in
/// [`BatchMetrics::dropped`].
///
/// # Examples
///
/// ```
/// use async_patterns_batching::ChannelBuilder;
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = ChannelBuilder::new().max_items(3).max_delay(Duration::from_millis(5)).build().unwrap();
/// tokio::spawn(async move {
///     for i in 0..7 {
///         tx.send(i).await.unwrap();
///     }
/// });
/// // It is a `Stream` of batches too.
/// let batches: Vec<Vec<i32>> = rx.map(|b| b.into_vec()).collect().await;
/// assert_eq!(batches, [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
/// # }
/// ```
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The batch being built from the items taken off the lanes.
    open: Open<T>,
    /// Closed batches not handed out yet, oldest first.
    ready: VecDeque<Sealed<T>>,
    /// Scratch: the lanes' items taken in one collection.
    chunks: Vec<Chunk<T>>,
    /// Empty lane buffers, swapped in for the full ones.
    spare: Vec<(Vec<T>, Vec<usize>)>,
    /// The receiver's own counters; the lanes keep the senders'.
    metrics: BatchMetrics,
    deadline: Deadline,
    /// A flush request taken and not acted on yet.
    flush: bool,
    /// `close` was called.
    closed: bool,
    /// A wake-up threshold is published: senders may wake this receiver.
    asleep: bool,
    /// `max_delay` can be represented: a batch's first item arms a timer.
    timed: bool,
    done: bool,
    outcome: Option<OutcomeSender<Summary<BatchMetrics>>>,
}

impl<T> Receiver<T> {
    /// Waits for the next batch; `None` once the channel is closed and
    /// every item was received.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, once a batch
    /// has to wait for its deadline.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if the future is dropped before it
    /// completes, no batch was taken, and every item is still in the
    /// channel for the next call.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{ChannelBuilder, FlushReason};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().max_delay(Duration::from_millis(20)).build().unwrap();
    /// tx.send(1).await.unwrap();
    /// let batch = rx.recv().await.unwrap();
    /// assert_eq!((batch.reason(), batch.age()), (FlushReason::Deadline, Duration::from_millis(20)));
    /// drop(tx);
    /// assert!(rx.recv().await.is_none());
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Batch<T>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next batch: the poll form of [`recv`](Self::recv), for
    /// hand-written futures and streams. `Pending` registers the task to be
    /// woken when a batch is due.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, once a batch
    /// has to wait for its deadline.
    ///
    /// # Cancel safety
    ///
    /// A poll that returns `Pending` takes nothing out of the channel, so
    /// giving up between polls loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::Poll;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = async_patterns_batching::channel(1);
    /// tx.send(5).await.unwrap();
    /// let batch = std::future::poll_fn(|cx| match rx.poll_recv(cx) {
    ///     Poll::Ready(batch) => Poll::Ready(batch),
    ///     Poll::Pending => Poll::Ready(None),
    /// })
    /// .await;
    /// assert_eq!(&*batch.unwrap(), [5]);
    /// # }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Batch<T>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let coop = ready!(coop::poll_proceed(cx));
        self.shared.register_receiver(cx.waker());
        // Whether this poll looked at the lanes with any staged item
        // waking this task.
        let mut watching = false;
        loop {
            if let Some(sealed) = self.ready.pop_front() {
                if std::mem::take(&mut self.asleep) {
                    self.shared.awake();
                }
                coop.made_progress();
                return Poll::Ready(Some(self.hand_out(sealed)));
            }
            let looked = self.look(Some(cx));
            if looked.ready {
                continue;
            }
            if looked.closed {
                // Nothing more can come, and `look` took the rest: done.
                self.asleep = false;
                self.shared.awake();
                self.finish(true);
                coop.made_progress();
                return Poll::Ready(None);
            }
            self.shared.flush.register(cx.waker());
            if self.shared.flush.take() {
                self.flush = true;
                continue;
            }
            if watching {
                // The second look, with any staged item waking this task.
                return Poll::Pending;
            }
            self.asleep = true;
            if self
                .shared
                .sleep(self.open.len(), self.open.weight, self.timed)
            {
                return Poll::Pending;
            }
            watching = true;
        }
    }

    /// Takes the next batch if one is due now: full, flushed, old enough,
    /// or the tail of a closed channel.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when no batch is due,
    /// [`TryRecvError::Disconnected`] when the channel is closed and every
    /// item was received.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{ChannelBuilder, TryRecvError};
    ///
    /// let (tx, mut rx) = ChannelBuilder::new().max_items(2).build().unwrap();
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty); // neither full nor due
    /// tx.try_send(2).unwrap();
    /// assert_eq!(&*rx.try_recv().unwrap(), [1, 2]);
    /// drop(tx);
    /// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Disconnected);
    /// ```
    pub fn try_recv(&mut self) -> Result<Batch<T>, TryRecvError> {
        if self.done {
            return Err(TryRecvError::Disconnected);
        }
        loop {
            if let Some(sealed) = self.ready.pop_front() {
                return Ok(self.hand_out(sealed));
            }
            let looked = self.look(None);
            if looked.ready {
                continue;
            }
            if looked.closed {
                self.finish(true);
                return Err(TryRecvError::Disconnected);
            }
            return Err(TryRecvError::Empty);
        }
    }

    /// Closes the channel: sends fail from now on (the items come back in
    /// the error) and waiting senders are woken, while the items already
    /// sent keep coming, the partial batch at once with
    /// [`FlushReason::Closed`].
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
    /// tx.send(1).await.unwrap();
    /// rx.close();
    /// assert!(tx.send(2).await.is_err());
    /// let tail = rx.recv().await.unwrap();
    /// assert_eq!((&*tail, tail.reason()), (&[1][..], FlushReason::Closed));
    /// assert!(rx.recv().await.is_none());
    /// # }
    /// ```
    pub fn close(&mut self) {
        self.closed = true;
        self.shared.close();
    }

    /// Whether sends fail: the receiver was [`close`](Self::close)d. (When
    /// every sender is gone no send can happen either; the stream then ends
    /// once drained.)
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, mut rx) = async_patterns_batching::channel::<u8>(16);
    /// assert!(!rx.is_closed());
    /// rx.close();
    /// assert!(rx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How many items are in the channel now, sent and not received yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, mut rx) = async_patterns_batching::channel(2);
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.len(), 1);
    /// tx.try_send(2).unwrap();
    /// rx.try_recv().unwrap(); // a full batch of 2
    /// assert_eq!(rx.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the channel holds no item now.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = async_patterns_batching::channel(16);
    /// assert!(rx.is_empty());
    /// tx.try_send(1).unwrap();
    /// assert!(!rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items the channel holds before `send` waits (see
    /// [`ChannelBuilder::capacity`](crate::ChannelBuilder::capacity)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = async_patterns_batching::channel::<u8>(16);
    /// assert_eq!(rx.capacity(), 16);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Closes the channel and takes every item still in it, oldest first
    /// for each sender, counted as [`handed_back`](BatchMetrics::handed_back).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = ChannelBuilder::new().max_items(2).build().unwrap();
    /// for i in 0..3 {
    ///     tx.send(i).await.unwrap(); // one full batch and a partial one
    /// }
    /// assert_eq!(rx.into_remainder(), [0, 1, 2]);
    /// assert!(tx.is_closed());
    /// # }
    /// ```
    pub fn into_remainder(mut self) -> Vec<T> {
        let items = self.take_everything();
        self.metrics.handed_back += items.len() as u64;
        self.shared.release(items.len());
        self.finish(false);
        items
    }

    /// A handle that closes the current batch on demand.
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
    /// tx.send(1).await.unwrap();
    /// flusher.flush();
    /// assert_eq!(rx.recv().await.unwrap().reason(), FlushReason::Flush);
    /// # }
    /// ```
    pub fn flusher(&self) -> Flusher {
        Flusher::new(self.shared.flush.clone())
    }

    /// A snapshot of the channel's metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().max_items(2).capacity(8).build().unwrap();
    /// tx.send_many(&mut vec![1, 2, 3, 4, 5]).await.unwrap();
    /// rx.recv().await;
    /// rx.recv().await;
    /// let metrics = rx.metrics();
    /// assert_eq!((metrics.sent, metrics.delivered, metrics.queued), (5, 4, 1));
    /// assert_eq!(metrics.batches.full, 2);
    /// # }
    /// ```
    pub fn metrics(&self) -> BatchMetrics {
        self.shared.metrics(Some(&self.metrics))
    }

    /// A handle that resolves to the final metrics: with `finished: true`
    /// once the channel is closed and every item was received, or
    /// `finished: false` when the receiver is dropped or taken apart first.
    /// Asking again replaces the previous handle, which then resolves to
    /// [`Dropped`](async_patterns_core::outcome::Dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = async_patterns_batching::channel(10);
    /// let outcome = rx.outcome();
    /// tx.send(1).await.unwrap();
    /// drop(rx); // with the item still in the channel
    /// let summary = outcome.await.unwrap();
    /// assert_eq!((summary.finished, summary.value.dropped), (false, 1));
    /// # }
    /// ```
    pub fn outcome(&mut self) -> Outcome<Summary<BatchMetrics>> {
        let (sender, outcome) = outcome::channel();
        if self.done {
            let _ = sender.send(Summary {
                value: self.metrics(),
                finished: true,
            });
        } else {
            self.outcome = Some(sender);
        }
        outcome
    }

    /// Gives a buffer taken with [`Batch::into_vec`] back for later batches;
    /// its items are dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = async_patterns_batching::channel(2);
    /// tx.send_many(&mut vec![1, 2]).await.unwrap();
    /// let items = rx.recv().await.unwrap().into_vec();
    /// let buffer = items.as_ptr();
    /// rx.recycle(items);
    /// tx.send_many(&mut vec![3, 4]).await.unwrap();
    /// assert_eq!(rx.recv().await.unwrap().as_ptr(), buffer);
    /// # }
    /// ```
    pub fn recycle(&self, buffer: Vec<T>) {
        self.shared.pool.put(buffer);
    }

    /// Takes the lanes' items and closes the open batch if it is due:
    /// flushed, the input closed, or its deadline passed (`cx` polls the
    /// timer; without it only the clock is read). Returns whether a batch
    /// is ready, and whether the input was closed before the lanes were
    /// emptied — then everything sent is in `open` or `ready`.
    fn look(&mut self, cx: Option<&mut Context<'_>>) -> Looked {
        // Read before the lanes are emptied: once every sender is gone or
        // the channel is closed, this collection takes the last items.
        let closed = self.input_closed();
        let flush = std::mem::take(&mut self.flush) | self.shared.flush.take();
        self.collect();
        if !self.open.is_empty() {
            let reason = if flush {
                Some(FlushReason::Flush)
            } else if closed {
                Some(FlushReason::Closed)
            } else if self.expired(cx) {
                Some(FlushReason::Deadline)
            } else {
                None
            };
            if let Some(reason) = reason {
                let sealed = self.open.seal(reason);
                self.ready.push_back(sealed);
            }
        }
        Looked {
            ready: !self.ready.is_empty(),
            closed,
        }
    }

    /// Whether the open batch, which is not empty, is past its deadline.
    fn expired(&mut self, cx: Option<&mut Context<'_>>) -> bool {
        let Some(at) = self.open.expiry(&self.shared.config) else {
            return false;
        };
        if Instant::now() >= at {
            return true;
        }
        cx.is_some_and(|cx| self.deadline.poll_until(at, cx).is_ready())
    }

    /// Takes the items of every lane that has some, oldest lane first, into
    /// the open batch, closing batches by count and weight on the way.
    fn collect(&mut self) {
        let mut chunks = std::mem::take(&mut self.chunks);
        let spare = &mut self.spare;
        self.shared.collect(
            || spare.pop().unwrap_or_default(),
            |items, weights, since| {
                chunks.push(Chunk {
                    items,
                    weights,
                    since,
                })
            },
        );
        if chunks.len() > 1 {
            chunks.sort_by_key(|chunk| chunk.since);
        }
        for chunk in chunks.drain(..) {
            self.absorb(chunk);
        }
        self.chunks = chunks;
    }

    /// Runs one lane's items through the batching rules.
    fn absorb(&mut self, chunk: Chunk<T>) {
        let Chunk {
            mut items,
            mut weights,
            since,
        } = chunk;
        let shared = &*self.shared;
        let config = &shared.config;
        let ready = &mut self.ready;
        if config.weighs() {
            for (item, weight) in items.drain(..).zip(weights.drain(..)) {
                self.open.push(
                    item,
                    weight,
                    Some(since),
                    config,
                    &shared.pool,
                    &mut self.metrics,
                    |sealed| ready.push_back(sealed),
                );
            }
        } else {
            let mut drain = items.drain(..);
            while drain.len() > 0 {
                // Never full here: a batch is closed the moment it fills.
                let room = config.max_items - self.open.len();
                self.open.append(&mut drain, room, since, &shared.pool);
                if self.open.len() >= config.max_items {
                    ready.push_back(self.open.seal(FlushReason::Full));
                }
            }
        }
        // The emptied buffers go back to a lane at the next swap, so that
        // lanes do not grow a buffer again for every collection — unless a
        // burst grew one far beyond what a lane usually holds.
        let limit = config
            .max_items
            .saturating_mul(4)
            .max(SPARE_CAPACITY)
            .min(shared.capacity);
        if self.spare.len() < shared.lane_count() && items.capacity() <= limit {
            self.spare.push((items, weights));
        }
    }

    /// Hands a closed batch out: counted, and its room given back to the
    /// senders.
    fn hand_out(&mut self, sealed: Sealed<T>) -> Batch<T> {
        self.metrics.record_batch(&sealed);
        self.shared.release(sealed.items.len());
        self.shared.publish(&self.metrics);
        Batch::new(sealed, Some(self.shared.pool.clone()))
    }

    /// Every sender is gone or the channel was closed: nothing more comes.
    fn input_closed(&self) -> bool {
        self.closed || self.shared.senders_gone()
    }

    /// Closes the channel and takes every item still in it, oldest first
    /// for each sender; the caller counts them and gives their room back.
    fn take_everything(&mut self) -> Vec<T> {
        self.closed = true;
        self.shared.close();
        // The lanes refuse new items now: this takes the last ones.
        self.collect();
        let mut out = Vec::new();
        for sealed in self.ready.drain(..) {
            if out.is_empty() {
                out = sealed.items;
            } else {
                out.extend(sealed.items);
            }
        }
        out.append(&mut self.open.items);
        self.open.oldest = None;
        self.open.weight = 0;
        out
    }

    /// Marks the end and delivers the outcome.
    fn finish(&mut self, finished: bool) {
        self.done = true;
        self.shared.publish(&self.metrics);
        if let Some(sender) = self.outcome.take() {
            let mut value = self.shared.metrics(Some(&self.metrics));
            // Everything was delivered, handed back or dropped.
            value.queued = 0;
            let _ = sender.send(Summary { value, finished });
        }
    }
}

/// What [`Receiver::look`] found.
struct Looked {
    ready: bool,
    closed: bool,
}

impl<T> Sender<T> {
    /// Charges the task's cooperative budget on every [`COOP_EVERY`]-th
    /// send: one unit of tokio's budget stands for far more work than
    /// staging an item, and charging each send would make a producer yield
    /// to its scheduler every 128 items.
    #[inline]
    fn poll_budget(&self, cx: &mut Context<'_>) -> Poll<Option<coop::RestoreOnPending>> {
        // A load and a store, not a read-modify-write: a sender used from
        // several tasks at once may lose a count, which only delays a
        // charge.
        let n = self.sends.load(Relaxed);
        self.sends.store(n.wrapping_add(1), Relaxed);
        if n.is_multiple_of(COOP_EVERY) {
            coop::poll_proceed(cx).map(Some)
        } else {
            Poll::Ready(None)
        }
    }

    /// Waits for room for up to `n` items after the fast path found none:
    /// reserves what it can get (at least 1), or `None` if the channel is
    /// closed.
    fn poll_room(
        &self,
        cx: &mut Context<'_>,
        n: usize,
        waiter: &mut Option<usize>,
    ) -> Poll<Option<usize>> {
        let shared = &*self.shared;
        for registered in [false, true] {
            let got = shared.try_reserve(n);
            if got > 0 {
                shared.stop_waiting(waiter, true);
                return Poll::Ready(Some(got));
            }
            if shared.is_closed() {
                shared.stop_waiting(waiter, true);
                return Poll::Ready(None);
            }
            if !registered {
                // Then look again: room freed before the receiver could see
                // this sender waiting is found by the second look.
                shared.wait_for_room(waiter, cx.waker());
            }
        }
        Poll::Pending
    }

    /// Stages the item in `item` (taking it out only if staged), with
    /// `reserved` room already taken.
    #[inline]
    fn stage_one(&self, item: &mut Option<T>, weight: usize, reserved: usize) -> Staged {
        let shared = &*self.shared;
        shared.stage(self.lane, 1, reserved, |_, items, weights| {
            items.extend(item.take());
            if shared.config.weighs() {
                weights.push(weight);
                shared.capped(weight)
            } else {
                0
            }
        })
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        item: &mut Option<T>,
        weight: usize,
        waiter: &mut Option<usize>,
    ) -> Poll<Result<(), SendError<T>>> {
        let coop = ready!(self.poll_budget(cx));
        let mut reserved = 0;
        let result = loop {
            match self.stage_one(item, weight, reserved) {
                Staged::Done => {
                    self.shared.stop_waiting(waiter, true);
                    break Ok(());
                }
                Staged::Closed => break Err(()),
                Staged::Full => match ready!(self.poll_room(cx, 1, waiter)) {
                    Some(got) => reserved = got,
                    None => break Err(()),
                },
            }
        };
        if let Some(coop) = &coop {
            coop.made_progress();
        }
        Poll::Ready(result.map_err(|()| {
            self.shared.refuse(self.lane, 1, true);
            SendError(item.take().expect("polled after completion"))
        }))
    }

    fn poll_send_many(
        &self,
        cx: &mut Context<'_>,
        items: &mut Vec<T>,
        waiter: &mut Option<usize>,
    ) -> Poll<Result<(), SendError<Vec<T>>>> {
        /// With a weigher, items are weighed before anything is reserved,
        /// this many at a time.
        const WEIGH_CHUNK: usize = 64;
        let shared = &*self.shared;
        let weighs = shared.config.weighs();
        let coop = ready!(coop::poll_proceed(cx));
        loop {
            if items.is_empty() {
                shared.stop_waiting(waiter, true);
                coop.made_progress();
                return Poll::Ready(Ok(()));
            }
            let mut weights = [0usize; WEIGH_CHUNK];
            let want = if weighs {
                let n = items.len().min(WEIGH_CHUNK);
                for (w, item) in weights.iter_mut().zip(&items[..n]) {
                    *w = shared.config.weigh(item);
                }
                n
            } else {
                items.len()
            };
            // Room reserved while waiting is used at once, in this poll:
            // nothing between the reservation and the staging can return
            // or panic.
            let mut reserved = 0;
            loop {
                let staged =
                    shared.stage(self.lane, want, reserved, |n, lane_items, lane_weights| {
                        lane_items.extend(items.drain(..n));
                        if weighs {
                            lane_weights.extend_from_slice(&weights[..n]);
                            weights[..n]
                                .iter()
                                .fold(0usize, |sum, &w| sum.saturating_add(shared.capped(w)))
                        } else {
                            0
                        }
                    });
                match staged {
                    Staged::Done => break,
                    Staged::Closed => return Poll::Ready(Err(self.refuse_all(items))),
                    Staged::Full => match self.poll_room(cx, want, waiter) {
                        Poll::Ready(Some(got)) => reserved = got,
                        Poll::Ready(None) => return Poll::Ready(Err(self.refuse_all(items))),
                        Poll::Pending => {
                            // Staged items count as progress for the budget.
                            coop.made_progress();
                            return Poll::Pending;
                        }
                    },
                }
            }
            coop.made_progress();
        }
    }

    /// The items of a `send_many` the closed channel refused.
    fn refuse_all(&self, items: &mut Vec<T>) -> SendError<Vec<T>> {
        self.shared.refuse(self.lane, items.len(), true);
        SendError(std::mem::take(items))
    }
}

/// Gives up a waiting sender's place if its future is dropped while
/// waiting, passing on a turn it was woken for and did not use.
struct WaiterGuard<'a, T> {
    shared: &'a Shared<T>,
    id: Option<usize>,
}

impl<T> Drop for WaiterGuard<'_, T> {
    fn drop(&mut self) {
        self.shared.stop_waiting(&mut self.id, false);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = self.take_everything();
        self.metrics.dropped += items.len() as u64;
        self.shared.release(items.len());
        if self.done {
            self.shared.publish(&self.metrics);
        } else {
            self.finish(false);
        }
        // The items are dropped here, outside every lock.
        drop(items);
    }
}

// Items are moved around, never pinned: no `Pin<&mut T>` is ever made.
impl<T> Unpin for Receiver<T> {}

impl<T> Stream for Receiver<T> {
    type Item = Batch<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch<T>>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<T> FusedStream for Receiver<T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .field("capacity", &self.shared.capacity)
            .field("closed", &self.is_closed())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
