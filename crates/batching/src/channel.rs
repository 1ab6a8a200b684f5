//! [`channel`]: a bounded channel built for batching. Senders append into
//! the batch being built, under one short lock; the receiver takes whole
//! batches at once. There is no per-item queue node, no per-item wake-up
//! and no per-item permit: the receiver is woken when a batch opens (to arm
//! its deadline) and when one closes.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use async_patterns_core::outcome::{self, Outcome, OutcomeSender, Summary};
use futures_core::{FusedStream, Stream};
use tokio::task::coop;
use tokio::time::Instant;

use crate::assemble::Open;
use crate::batch::{Batch, Pool, Sealed};
use crate::deadline::Deadline;
use crate::flush::FlushSignal;
use async_patterns_core::__private::WakeList;
use async_patterns_core::__private::lock;
use async_patterns_core::__private::loom::{Arc, Mutex, MutexGuard};

use crate::{
    BatchConfig, BatchMetrics, FlushReason, Flusher, SendError, TryRecvError, TrySendError,
};

/// Creates a batching channel that holds up to `capacity` items and hands
/// them out in batches of up to `capacity` items, each closed at the latest
/// 10 ms after its first item: the shorthand for
/// [`ChannelBuilder::new()`](crate::ChannelBuilder::new)`.capacity(capacity).max_items(capacity)`.
/// Use the [`ChannelBuilder`](crate::ChannelBuilder) for other limits — a
/// smaller `max_items`, another delay, a weight limit.
///
/// Senders append into the batch being built and the receiver takes whole
/// [`Batch`]es, closed by count, age, flush or the end of the input. It is
/// the fast path when you own both ends: there is no per-item queue node,
/// permit or wake-up.
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
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            open: Open::new(),
            sealed: VecDeque::new(),
            queued: 0,
            senders: 1,
            rx_closed: false,
            rx_waker: None,
            rx_timer: None,
            waiters: Waiters::default(),
            metrics: BatchMetrics::default(),
        }),
        sends: std::sync::atomic::AtomicU32::new(0),
        pool: Arc::new(Pool::new(config.max_items)),
        flush: Arc::new(FlushSignal::default()),
        config,
        capacity,
    });
    let rx = Receiver {
        shared: shared.clone(),
        deadline: Deadline::new(),
        done: false,
        outcome: None,
    };
    (Sender { shared }, rx)
}

pub(crate) struct Shared<T> {
    state: Mutex<State<T>>,
    /// Sends so far, counted loosely: the cooperative budget is charged on
    /// every [`COOP_EVERY`]-th.
    sends: std::sync::atomic::AtomicU32,
    pool: Arc<Pool<T>>,
    flush: Arc<FlushSignal>,
    pub(crate) config: BatchConfig<T>,
    capacity: usize,
}

struct State<T> {
    open: Open<T>,
    /// Closed batches not yet received, oldest first.
    sealed: VecDeque<Sealed<T>>,
    /// Items in `open` and `sealed`: what the capacity bounds.
    queued: usize,
    senders: usize,
    rx_closed: bool,
    rx_waker: Option<Waker>,
    /// When the parked receiver's timer fires, if one is running: a batch
    /// that opens with a later deadline needs no wake-up, the receiver will
    /// look at it then.
    rx_timer: Option<Instant>,
    waiters: Waiters,
    metrics: BatchMetrics,
}

impl<T> State<T> {
    /// No more items will come in: every sender is gone or the receiver
    /// closed the channel.
    fn input_closed(&self) -> bool {
        self.rx_closed || self.senders == 0
    }

    /// Appends one item; returns the receiver's waker if it must be woken —
    /// a batch closed, or one opened with a deadline that no running timer
    /// of the receiver covers.
    #[inline]
    fn push(&mut self, shared: &Shared<T>, item: T, weight: usize) -> Option<Waker> {
        let opened = self.open.is_empty();
        let sealed = &mut self.sealed;
        let mut closed = false;
        self.open.push(
            item,
            weight,
            &shared.config,
            &shared.pool,
            &mut self.metrics,
            |batch| {
                sealed.push_back(batch);
                closed = true;
            },
        );
        self.queued += 1;
        self.metrics.sent += 1;
        let wake = closed
            || (opened
                && match (self.open.expiry(&shared.config), self.rx_timer) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(expiry), Some(fires)) => fires > expiry,
                });
        if wake { self.rx_waker.take() } else { None }
    }

    /// Takes every item out, oldest first.
    fn take_all(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.queued);
        for sealed in self.sealed.drain(..) {
            out.extend(sealed.items);
        }
        out.append(&mut self.open.items);
        self.open.oldest = None;
        self.open.weight = 0;
        self.queued = 0;
        out
    }
}

/// The senders waiting for room. Each waiting `send` owns a slot (its id)
/// until it completes or is dropped, so a future polled many times never
/// takes more than one slot, and dropped futures leave nothing behind.
/// Room is announced to every waiter at once: a batch frees many items'
/// worth of room, and a waiter that finds none registers again.
#[derive(Default)]
struct Waiters {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Slots holding a waker.
    waiting: usize,
}

enum Slot {
    Vacant,
    Waiting(Option<Waker>),
}

/// A send charges tokio's cooperative budget once per this many sends.
const COOP_EVERY: u32 = 32;

impl Waiters {
    fn register(&mut self, id: &mut Option<usize>, waker: &Waker) {
        let index = *id.get_or_insert_with(|| match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot::Vacant);
                self.slots.len() - 1
            }
        });
        match &mut self.slots[index] {
            Slot::Waiting(Some(current)) if current.will_wake(waker) => {}
            Slot::Waiting(Some(current)) => *current = waker.clone(),
            slot => {
                *slot = Slot::Waiting(Some(waker.clone()));
                self.waiting += 1;
            }
        }
    }

    #[inline]
    fn remove(&mut self, id: &mut Option<usize>) {
        if let Some(index) = id.take() {
            if let Slot::Waiting(Some(_)) = self.slots[index] {
                self.waiting -= 1;
            }
            self.slots[index] = Slot::Vacant;
            self.free.push(index);
        }
    }

    /// Moves wakers into `out` until it is full; true if more are left.
    fn take_some(&mut self, out: &mut WakeList) -> bool {
        for slot in &mut self.slots {
            if self.waiting == 0 || out.is_full() {
                break;
            }
            if let Slot::Waiting(waker @ Some(_)) = slot {
                out.push(waker.take().expect("matched Some"));
                self.waiting -= 1;
            }
        }
        self.waiting > 0
    }
}

impl<T> Shared<T> {
    /// Wakes every waiting sender, unlocking `state` to do it.
    fn wake_senders<'a>(&'a self, mut state: MutexGuard<'a, State<T>>) {
        if state.waiters.waiting == 0 {
            return;
        }
        let mut wakers = WakeList::new();
        loop {
            let more = state.waiters.take_some(&mut wakers);
            drop(state);
            wakers.wake_all();
            if !more {
                return;
            }
            state = lock(&self.state);
        }
    }

    /// Charges the task's cooperative budget on every [`COOP_EVERY`]-th
    /// send: one unit of tokio's budget stands for far more work than
    /// appending an item, and charging each send would make a producer yield
    /// to its scheduler every 128 items.
    #[inline]
    fn poll_budget(&self, cx: &mut Context<'_>) -> Poll<Option<coop::RestoreOnPending>> {
        use std::sync::atomic::Ordering::Relaxed;
        // A plain load and store, not a read-modify-write: under contention
        // an increment may be lost, which only makes a charge a little later.
        let n = self.sends.load(Relaxed);
        self.sends.store(n.wrapping_add(1), Relaxed);
        if n.is_multiple_of(COOP_EVERY) {
            coop::poll_proceed(cx).map(Some)
        } else {
            Poll::Ready(None)
        }
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        item: &mut Option<T>,
        weight: usize,
        waiter: &mut Option<usize>,
    ) -> Poll<Result<(), SendError<T>>> {
        let coop = ready!(self.poll_budget(cx));
        let mut state = lock(&self.state);
        if state.rx_closed {
            state.waiters.remove(waiter);
            state.metrics.handed_back += 1;
            drop(state);
            if let Some(coop) = &coop {
                coop.made_progress();
            }
            let item = item.take().expect("polled after completion");
            return Poll::Ready(Err(SendError(item)));
        }
        if state.queued >= self.capacity {
            state.waiters.register(waiter, cx.waker());
            return Poll::Pending;
        }
        state.waiters.remove(waiter);
        let item = item.take().expect("polled after completion");
        let wake = state.push(self, item, weight);
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        if let Some(coop) = &coop {
            coop.made_progress();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_send_many(
        &self,
        cx: &mut Context<'_>,
        items: &mut Vec<T>,
        waiter: &mut Option<usize>,
    ) -> Poll<Result<(), SendError<Vec<T>>>> {
        /// With a weigher, items are weighed before the lock, this many at
        /// a time.
        const WEIGH_CHUNK: usize = 64;
        loop {
            if items.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let coop = ready!(coop::poll_proceed(cx));
            let weighs = self.config.weighs();
            let mut weights = [1usize; WEIGH_CHUNK];
            let chunk = if weighs {
                let chunk = items.len().min(WEIGH_CHUNK);
                for (w, item) in weights.iter_mut().zip(&items[..chunk]) {
                    *w = self.config.weigh(item);
                }
                chunk
            } else {
                items.len()
            };
            let mut state = lock(&self.state);
            if state.rx_closed {
                state.waiters.remove(waiter);
                state.metrics.handed_back += items.len() as u64;
                drop(state);
                coop.made_progress();
                return Poll::Ready(Err(SendError(std::mem::take(items))));
            }
            let n = chunk.min(self.capacity.saturating_sub(state.queued));
            if n == 0 {
                state.waiters.register(waiter, cx.waker());
                return Poll::Pending;
            }
            state.waiters.remove(waiter);
            let mut wake = None;
            for (i, item) in items.drain(..n).enumerate() {
                let weight = if weighs { weights[i] } else { 1 };
                wake = state.push(self, item, weight).or(wake);
            }
            drop(state);
            if let Some(waker) = wake {
                waker.wake();
            }
            coop.made_progress();
        }
    }
}

/// Removes a waiting sender's slot if its future is dropped while waiting.
struct WaiterGuard<'a, T> {
    shared: &'a Shared<T>,
    id: Option<usize>,
}

impl<T> Drop for WaiterGuard<'_, T> {
    fn drop(&mut self) {
        if self.id.is_some() {
            lock(&self.shared.state).waiters.remove(&mut self.id);
        }
    }
}

impl<T> Shared<T> {
    fn len(&self) -> usize {
        lock(&self.state).queued
    }

    fn metrics(&self) -> BatchMetrics {
        let state = lock(&self.state);
        let mut metrics = state.metrics;
        metrics.queued = state.queued as u64;
        metrics
    }
}

/// The sending half of a batching [`channel`]: cloneable; the channel's
/// input ends when every clone is dropped, and the receiver then gets the
/// partial batch at once with [`FlushReason::Closed`].
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
}

impl<T> Sender<T> {
    /// Appends `item` to the batch being built, waiting while the channel
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
        poll_fn(|cx| self.shared.poll_send(cx, &mut item, weight, &mut guard.id)).await
    }

    /// Appends `item` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] with the item if the channel holds
    /// [`capacity`](Self::capacity) items (counted in
    /// [`rejected`](BatchMetrics::rejected)), [`TrySendError::Closed`] if the
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
        let mut state = lock(&self.shared.state);
        if state.rx_closed {
            state.metrics.handed_back += 1;
            return Err(TrySendError::Closed(item));
        }
        if state.queued >= self.shared.capacity {
            state.metrics.rejected += 1;
            return Err(TrySendError::Full(item));
        }
        let wake = state.push(&self.shared, item, weight);
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        Ok(())
    }

    /// Appends the items of `items` in order, as many at a time as there is
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
        poll_fn(|cx| self.shared.poll_send_many(cx, items, &mut guard.id)).await
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
        lock(&self.shared.state).rx_closed
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

    /// How many items the channel holds before `send` waits.
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
        self.shared.metrics()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.shared.state).senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.senders -= 1;
        let waker = if state.senders == 0 {
            state.rx_waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
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
/// in the order of the sends of each sender. [`recv`](Self::recv) is
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
    deadline: Deadline,
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
        let shared = &*self.shared;
        let mut flush = shared.flush.take();
        let mut expired = None;
        loop {
            let mut state = lock(&shared.state);
            if let Some(sealed) = next_sealed(shared, &mut state, flush, expired) {
                state.queued -= sealed.items.len();
                state.metrics.record_batch(&sealed);
                shared.wake_senders(state);
                coop.made_progress();
                return Poll::Ready(Some(Batch::new(sealed, Some(shared.pool.clone()))));
            }
            if state.input_closed() {
                let metrics = state.metrics;
                drop(state);
                self.finish(metrics, true);
                coop.made_progress();
                return Poll::Ready(None);
            }
            match &state.rx_waker {
                Some(current) if current.will_wake(cx.waker()) => {}
                _ => state.rx_waker = Some(cx.waker().clone()),
            }
            let expiry = state.open.expiry(&shared.config);
            let running = self.deadline.running();
            state.rx_timer = match (expiry, running) {
                (Some(expiry), Some(running)) => Some(expiry.min(running)),
                (expiry, running) => expiry.or(running),
            };
            drop(state);
            shared.flush.register(cx.waker());
            if shared.flush.take() {
                flush = true;
                continue;
            }
            match expiry {
                Some(at) if self.deadline.poll_until(at, cx).is_ready() => {
                    expired = Some(at);
                    continue;
                }
                // Producers count on the running timer to wake this task.
                None if running.is_some() && self.deadline.poll_running(cx).is_ready() => {
                    continue;
                }
                _ => {}
            }
            return Poll::Pending;
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
        let shared = &*self.shared;
        let flush = shared.flush.take();
        let mut state = lock(&shared.state);
        if let Some(sealed) = next_sealed(shared, &mut state, flush, None) {
            state.queued -= sealed.items.len();
            state.metrics.record_batch(&sealed);
            shared.wake_senders(state);
            return Ok(Batch::new(sealed, Some(shared.pool.clone())));
        }
        if state.input_closed() {
            let metrics = state.metrics;
            drop(state);
            self.finish(metrics, true);
            return Err(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
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
        let mut state = lock(&self.shared.state);
        state.rx_closed = true;
        self.shared.wake_senders(state);
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
        lock(&self.shared.state).rx_closed
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

    /// How many items the channel holds before `send` waits.
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
        let mut state = lock(&self.shared.state);
        state.rx_closed = true;
        let items = state.take_all();
        state.metrics.handed_back += items.len() as u64;
        let metrics = state.metrics;
        self.shared.wake_senders(state);
        self.finish(metrics, false);
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
        self.shared.metrics()
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

    /// Marks the end and delivers the outcome.
    fn finish(&mut self, metrics: BatchMetrics, finished: bool) {
        self.done = true;
        if let Some(sender) = self.outcome.take() {
            let _ = sender.send(Summary {
                value: metrics,
                finished,
            });
        }
    }
}

/// Closes the open batch if it is due, and takes the oldest closed batch.
fn next_sealed<T>(
    shared: &Shared<T>,
    state: &mut State<T>,
    flush: bool,
    expired: Option<Instant>,
) -> Option<Sealed<T>> {
    if !state.open.is_empty() {
        let reason = if flush {
            Some(FlushReason::Flush)
        } else if state.input_closed() {
            Some(FlushReason::Closed)
        } else {
            state
                .open
                .expiry(&shared.config)
                .filter(|at| expired == Some(*at) || Instant::now() >= *at)
                .map(|_| FlushReason::Deadline)
        };
        if let Some(reason) = reason {
            let sealed = state.open.seal(reason);
            state.sealed.push_back(sealed);
        }
    }
    state.sealed.pop_front()
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.rx_closed = true;
        let items = state.take_all();
        state.metrics.dropped += items.len() as u64;
        let metrics = state.metrics;
        self.shared.wake_senders(state);
        if !self.done {
            self.finish(metrics, false);
        }
        // The items are dropped here, outside the lock.
        drop(items);
    }
}

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
