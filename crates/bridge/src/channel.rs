//! The hand-off channel: [`SyncSender`] for sync (or async) producers in any
//! context, [`Receiver`] for one async consumer, an [`Overflow`] policy chosen
//! at construction, and the [`ChannelBuilder`] that validates it all.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_patterns_core::{BlockingStrategy, ConfigError, RuntimeContext};
use futures_core::Stream;

use crate::error::{SendTimeoutError, TryRecvError};
use crate::loom::AtomicWaker;
use crate::loom::sync::Arc;
use crate::loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::loom::thread;
use crate::ring::{MAX_CAPACITY, Pop, PushError, Ring, TxWait, Wakes};
use crate::waiters::{WaiterId, Waiters, Wake};
use crate::{SendBlockingError, SendError, TrySendError};

/// What a send does when the channel is full.
///
/// Lossy policies are for producers that must never wait and can afford to
/// lose items — logging, metrics, progress updates. Every item they discard
/// is counted in [`SyncSender::dropped`].
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::{ChannelBuilder, Overflow};
///
/// let (tx, mut rx) = ChannelBuilder::new(2)
///     .overflow(Overflow::DropOldest)
///     .build::<u32>()?;
/// for i in 0..5 {
///     tx.try_send(i)?; // never `Full`
/// }
/// assert_eq!(tx.dropped(), 3);
/// assert_eq!(rx.try_recv(), Ok(3));
/// assert_eq!(rx.try_recv(), Ok(4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Refuse the new item: `try_send` returns
    /// [`Full`](TrySendError::Full) with it, and the waiting sends wait.
    #[default]
    Reject,
    /// Discard the new item and count it; sends never fail for lack of room.
    DropNewest,
    /// Discard the oldest buffered item to make room, and count it; sends
    /// never fail for lack of room. (In the instant the oldest item is being
    /// written or received, there is nothing to discard, and the new item is
    /// discarded and counted instead.)
    DropOldest,
}

/// Creates a bounded channel of `capacity` items with the
/// [`Reject`](Overflow::Reject) policy: a [`SyncSender`] for producers in any
/// context and a [`Receiver`] for one async consumer.
///
/// The capacity is allocated up front. Use [`ChannelBuilder`] for another
/// overflow policy or to get a [`ConfigError`] instead of a panic.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel::<String>(64);
/// std::thread::spawn(move || {
///     tx.send_blocking("from a plain thread".to_string()).unwrap();
/// });
/// assert_eq!(rx.recv().await.as_deref(), Some("from a plain thread"));
/// assert_eq!(rx.recv().await, None); // the sender is gone
/// # }
/// ```
///
/// # Panics
///
/// If `capacity` is 0 or above 16,777,216 (2^24).
pub fn channel<T>(capacity: usize) -> (SyncSender<T>, Receiver<T>) {
    ChannelBuilder::new(capacity)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Configures a channel: its capacity and its [`Overflow`] policy.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::{ChannelBuilder, Overflow};
///
/// let (tx, rx) = ChannelBuilder::new(1024)
///     .overflow(Overflow::DropNewest)
///     .build::<String>()?;
/// assert_eq!(tx.capacity(), 1024);
///
/// let err = ChannelBuilder::new(0).build::<String>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `capacity`: got 0, expected 1..=16777216");
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    capacity: usize,
    overflow: Overflow,
}

impl ChannelBuilder {
    /// A builder for a channel of `capacity` items (validated by
    /// [`build`](Self::build)) with the [`Reject`](Overflow::Reject) policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ChannelBuilder;
    ///
    /// let (tx, _rx) = ChannelBuilder::new(8).build::<u8>()?;
    /// assert_eq!(tx.capacity(), 8);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn new(capacity: usize) -> Self {
        ChannelBuilder {
            capacity,
            overflow: Overflow::Reject,
        }
    }

    /// Sets what a send does when the channel is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{ChannelBuilder, Overflow};
    ///
    /// let (tx, _rx) = ChannelBuilder::new(1).overflow(Overflow::DropNewest).build()?;
    /// tx.try_send(1)?;
    /// tx.try_send(2)?; // discarded, counted
    /// assert_eq!(tx.dropped(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Validates the settings and creates the channel.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `capacity` if it is 0 or above 2^24.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ChannelBuilder;
    ///
    /// assert!(ChannelBuilder::new(16).build::<u64>().is_ok());
    /// let err = ChannelBuilder::new(usize::MAX).build::<u64>().unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// ```
    pub fn build<T>(self) -> Result<(SyncSender<T>, Receiver<T>), ConfigError> {
        let capacity = check_capacity(self.capacity)?;
        let shared = Arc::new(Shared {
            ring: Ring::new(capacity, self.overflow == Overflow::DropOldest),
            rx_waker: AtomicWaker::new(),
            send_waiters: Waiters::new(),
            senders: AtomicUsize::new(1),
            dropped: AtomicU64::new(0),
            overflow: self.overflow,
        });
        Ok((
            SyncSender {
                shared: shared.clone(),
            },
            Receiver {
                shared,
                budget_credit: 0,
            },
        ))
    }
}

pub(crate) fn check_capacity(capacity: usize) -> Result<usize, ConfigError> {
    if (1..=MAX_CAPACITY).contains(&capacity) {
        Ok(capacity)
    } else {
        Err(ConfigError::new(
            "capacity",
            capacity,
            format!("1..={MAX_CAPACITY}"),
        ))
    }
}

struct Shared<T> {
    ring: Ring<T>,
    /// The receiver's waker, woken by the sender whose write finds the slot
    /// marked `RX_WAITING`, and when the last sender leaves.
    rx_waker: AtomicWaker,
    send_waiters: Waiters,
    senders: AtomicUsize,
    dropped: AtomicU64,
    overflow: Overflow,
}

/// How many times a blocked sender looks for room before it parks; the spin
/// hints between looks double each time (1 + 2 + … + 64). Loom models skip
/// the spin: it only changes timing.
const SPIN_STEPS: u32 = if cfg!(async_patterns_loom) { 0 } else { 7 };

/// Why a waiting send gave up; the value comes back.
pub(crate) enum WaitError<T> {
    Closed(T),
    Timeout(T),
}

impl<T> Shared<T> {
    /// Stores `value` according to the overflow policy; `Full` only with
    /// `Reject`.
    #[inline]
    fn push(&self, value: T) -> Result<(), PushError<T>> {
        match self.ring.push(value) {
            Ok(wakes) => {
                self.notify(wakes);
                Ok(())
            }
            Err(PushError::Full(value)) => self.overflow(value),
            Err(closed) => Err(closed),
        }
    }

    /// Wakes whoever asked to be woken when a slot changed state.
    #[inline]
    fn notify(&self, wakes: Wakes) {
        if wakes.any() {
            self.notify_slow(wakes);
        }
    }

    #[cold]
    fn notify_slow(&self, wakes: Wakes) {
        if wakes.receiver() {
            self.rx_waker.wake();
        }
        if wakes.senders() {
            self.send_waiters.wake_all();
        }
    }

    #[cold]
    fn overflow(&self, mut value: T) -> Result<(), PushError<T>> {
        match self.overflow {
            Overflow::Reject => Err(PushError::Full(value)),
            Overflow::DropNewest => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                drop(value);
                Ok(())
            }
            Overflow::DropOldest => loop {
                match self.ring.pop() {
                    Pop::Item {
                        value: oldest,
                        wakes,
                    } => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        self.notify(wakes);
                        drop(oldest);
                    }
                    Pop::Empty { .. } => {
                        // The oldest slot is in the middle of being written or
                        // read: there is nothing to discard at this instant
                        // and a lossy send never waits, so the new item goes.
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        drop(value);
                        return Ok(());
                    }
                    Pop::Closed => return Err(PushError::Closed(value)),
                }
                match self.ring.push(value) {
                    Ok(wakes) => {
                        self.notify(wakes);
                        return Ok(());
                    }
                    Err(PushError::Full(v)) => value = v,
                    Err(closed) => return Err(closed),
                }
            },
        }
    }

    /// Pushes `value`, parking the thread while the channel is full, until
    /// `deadline` if there is one. The caller has checked that this thread
    /// may block.
    fn push_waiting(&self, mut value: T, deadline: Option<Instant>) -> Result<(), WaitError<T>> {
        let me = thread::current();
        loop {
            value = match self.push_spinning(value) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(v)) => return Err(WaitError::Closed(v)),
                Err(PushError::Full(v)) => v,
            };
            let timeout = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(WaitError::Timeout(value)),
                },
            };
            let id = self.send_waiters.register(Wake::Thread(me.clone()));
            match self.ring.mark_tx_waiting() {
                TxWait::Marked => match timeout {
                    None => thread::park(),
                    Some(left) => thread::park_timeout(left),
                },
                TxWait::Retry | TxWait::Closed => {}
            }
            self.send_waiters.remove(id);
        }
    }

    /// Pushes `value`, looking for room again a few times — with
    /// exponentially longer spin hints in between, about a microsecond in all
    /// — before reporting `Full`. A receiver that is running frees a slot
    /// within that time, and parking costs a syscall on both sides; one that
    /// is not running costs the sender this bounded spin, then it parks.
    fn push_spinning(&self, mut value: T) -> Result<(), PushError<T>> {
        for step in 0..SPIN_STEPS {
            value = match self.push(value) {
                Err(PushError::Full(v)) => v,
                done => return done,
            };
            for _ in 0..1u32 << step {
                std::hint::spin_loop();
            }
        }
        self.push(value)
    }

    fn poll_push(
        &self,
        cx: &mut Context<'_>,
        value: &mut Option<T>,
        waiter: &mut Option<WaiterId>,
    ) -> Poll<Result<(), SendError<T>>> {
        loop {
            let v = value.take().expect("`Send` polled after completion");
            match self.push(v) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(PushError::Closed(v)) => return Poll::Ready(Err(SendError(v))),
                Err(PushError::Full(v)) => *value = Some(v),
            }
            *waiter = Some(self.send_waiters.reregister(*waiter, cx.waker()));
            if let TxWait::Marked = self.ring.mark_tx_waiting() {
                return Poll::Pending;
            }
        }
    }
}

/// The sending half of a [`channel`]: `Clone + Send + Sync`, usable from any
/// thread and any context — plain threads, `spawn_blocking` threads, sync
/// callbacks inside async tasks, `Drop` impls — and from async code.
///
/// | method | when the channel is full |
/// |---|---|
/// | [`try_send`](Self::try_send) | returns [`Full`](TrySendError::Full) at once |
/// | [`send_blocking`](Self::send_blocking) | waits for room where the thread may block; [`WouldDeadlock`](SendBlockingError::WouldDeadlock) at once where it may not |
/// | [`send_timeout`](Self::send_timeout) | as `send_blocking`, up to a timeout |
/// | [`send`](Self::send)`.await` | waits asynchronously |
///
/// With a lossy [`Overflow`] policy no method ever waits or reports `Full`.
/// When every sender is dropped, the receiver gets the buffered items and then
/// `None`.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::channel;
///
/// # #[tokio::main]
/// # async fn main() {
/// let (tx, mut rx) = channel::<u32>(16);
/// let handles: Vec<_> = (0..4)
///     .map(|i| {
///         let tx = tx.clone();
///         std::thread::spawn(move || tx.send_blocking(i).unwrap())
///     })
///     .collect();
/// drop(tx);
/// let mut got = Vec::new();
/// while let Some(i) = rx.recv().await {
///     got.push(i);
/// }
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// # for h in handles { h.join().unwrap(); }
/// # }
/// ```
pub struct SyncSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> SyncSender<T> {
    /// Sends `value` if there is room, without ever blocking — safe in every
    /// context, including a sync callback on a current-thread runtime. This
    /// is the seed recipe's `try_send`.
    ///
    /// With [`Overflow::DropNewest`] a full channel discards `value` and with
    /// [`Overflow::DropOldest`] it discards the oldest item; both count the
    /// discarded item in [`dropped`](Self::dropped) and return `Ok(())`.
    ///
    /// # Errors
    ///
    /// [`Full`](TrySendError::Full) (with [`Overflow::Reject`]) or
    /// [`Closed`](TrySendError::Closed), handing `value` back.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{channel, TrySendError};
    ///
    /// let (tx, mut rx) = channel::<u32>(1);
    /// assert_eq!(tx.try_send(1), Ok(()));
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// rx.close();
    /// assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    /// ```
    #[inline]
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.shared.push(value).map_err(|e| match e {
            PushError::Full(v) => TrySendError::Full(v),
            PushError::Closed(v) => TrySendError::Closed(v),
        })
    }

    /// Sends `value`, waiting for room if the channel is full — in the way
    /// the calling thread's [`RuntimeContext`] allows:
    ///
    /// - outside any runtime and on a blocking-pool thread, it parks the
    ///   thread;
    /// - on a multi-thread runtime's worker, it parks inside
    ///   [`block_in_place`](tokio::task::block_in_place), so the worker's
    ///   other tasks (the receiver among them) keep running;
    /// - on a thread that drives a current-thread runtime, where the receiver
    ///   could never run while this thread waits, it returns
    ///   [`WouldDeadlock`](SendBlockingError::WouldDeadlock) at once.
    ///
    /// When there is room it sends at once in every context; the context is
    /// only consulted when it would have to wait.
    ///
    /// # Errors
    ///
    /// [`Closed`](SendBlockingError::Closed) or
    /// [`WouldDeadlock`](SendBlockingError::WouldDeadlock), handing `value`
    /// back.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{channel, SendBlockingError};
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (tx, mut rx) = channel::<u32>(1);
    /// let producer = std::thread::spawn(move || {
    ///     for i in 0..3 {
    ///         tx.send_blocking(i).unwrap(); // parks while the channel is full
    ///     }
    /// });
    /// for i in 0..3 {
    ///     assert_eq!(rx.recv().await, Some(i));
    /// }
    /// producer.join().unwrap();
    ///
    /// let (tx, rx) = channel::<u32>(1);
    /// drop(rx);
    /// assert_eq!(tx.send_blocking(9), Err(SendBlockingError::Closed(9)));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Inside a [`LocalSet`](tokio::task::LocalSet) polled by a multi-thread
    /// worker, when the channel is full: tokio forbids `block_in_place` there
    /// and cannot tell us in advance (see [`RuntimeContext`]'s limits).
    pub fn send_blocking(&self, value: T) -> Result<(), SendBlockingError<T>> {
        let value = match self.shared.push(value) {
            Ok(()) => return Ok(()),
            Err(PushError::Closed(v)) => return Err(SendBlockingError::Closed(v)),
            Err(PushError::Full(v)) => v,
        };
        let wait = |value| {
            self.shared.push_waiting(value, None).map_err(|e| match e {
                WaitError::Closed(v) | WaitError::Timeout(v) => SendBlockingError::Closed(v),
            })
        };
        match RuntimeContext::current().blocking_strategy() {
            BlockingStrategy::Direct => wait(value),
            BlockingStrategy::BlockInPlace => tokio::task::block_in_place(|| wait(value)),
            _ => Err(SendBlockingError::WouldDeadlock(value)),
        }
    }

    /// Like [`send_blocking`](Self::send_blocking), giving up after
    /// `timeout` if the channel stays full.
    ///
    /// # Errors
    ///
    /// [`Timeout`](SendTimeoutError::Timeout),
    /// [`Closed`](SendTimeoutError::Closed) or
    /// [`WouldDeadlock`](SendTimeoutError::WouldDeadlock), handing `value`
    /// back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_bridge::{channel, SendTimeoutError};
    ///
    /// let (tx, mut rx) = channel::<u32>(1);
    /// assert_eq!(tx.send_timeout(1, Duration::from_millis(10)), Ok(()));
    /// assert_eq!(
    ///     tx.send_timeout(2, Duration::from_millis(10)),
    ///     Err(SendTimeoutError::Timeout(2))
    /// );
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    ///
    /// # Panics
    ///
    /// As [`send_blocking`](Self::send_blocking).
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        let value = match self.shared.push(value) {
            Ok(()) => return Ok(()),
            Err(PushError::Closed(v)) => return Err(SendTimeoutError::Closed(v)),
            Err(PushError::Full(v)) => v,
        };
        let deadline = Instant::now().checked_add(timeout);
        let wait = |value| {
            self.shared
                .push_waiting(value, deadline)
                .map_err(|e| match e {
                    WaitError::Closed(v) => SendTimeoutError::Closed(v),
                    WaitError::Timeout(v) => SendTimeoutError::Timeout(v),
                })
        };
        match RuntimeContext::current().blocking_strategy() {
            BlockingStrategy::Direct => wait(value),
            BlockingStrategy::BlockInPlace => tokio::task::block_in_place(|| wait(value)),
            _ => Err(SendTimeoutError::WouldDeadlock(value)),
        }
    }

    /// Sends `value` from async code, waiting asynchronously while the
    /// channel is full.
    ///
    /// Dropping the future before it completes drops `value` unsent (the
    /// channel never holds it), which makes `send` safe to race in
    /// `select!`: either the value was sent and the future completed, or it
    /// was not.
    ///
    /// # Errors
    ///
    /// [`SendError`] with `value` if the receiver is closed or dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{channel, SendError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel::<u32>(1);
    /// let producer = tokio::spawn(async move {
    ///     for i in 0..3 {
    ///         tx.send(i).await.unwrap();
    ///     }
    ///     tx
    /// });
    /// for i in 0..3 {
    ///     assert_eq!(rx.recv().await, Some(i));
    /// }
    /// let tx = producer.await.unwrap();
    /// drop(rx);
    /// assert_eq!(tx.send(3).await, Err(SendError(3)));
    /// # }
    /// ```
    pub fn send(&self, value: T) -> impl Future<Output = Result<(), SendError<T>>> + '_ {
        SendFuture {
            shared: &self.shared,
            value: Some(value),
            waiter: None,
        }
    }

    /// How many items this channel's [`Overflow`] policy discarded, plus the
    /// items still buffered when the receiver was dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::channel;
    ///
    /// let (tx, rx) = channel::<u32>(4);
    /// tx.try_send(1).unwrap();
    /// tx.try_send(2).unwrap();
    /// drop(rx); // the two buffered items are dropped with it
    /// assert_eq!(tx.dropped(), 2);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The channel's capacity: how many slots it has. A slot is free again
    /// once the receiver has finished taking its item, so in the instant an
    /// item is being taken from a full channel, a send still finds it full.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = async_patterns_bridge::channel::<()>(3);
    /// assert_eq!(tx.capacity(), 3);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// The number of buffered items, as of some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = async_patterns_bridge::channel::<u8>(3);
    /// tx.try_send(1).unwrap();
    /// assert_eq!(tx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// Whether nothing is buffered, as of some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = async_patterns_bridge::channel::<u8>(3);
    /// assert!(tx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the receiver was closed or dropped: every send fails from now
    /// on.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = async_patterns_bridge::channel::<u8>(3);
    /// assert!(!tx.is_closed());
    /// drop(rx);
    /// assert!(tx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.ring.is_closed()
    }

    /// The overflow policy the channel was built with.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{channel, Overflow};
    ///
    /// let (tx, _rx) = channel::<u8>(3);
    /// assert_eq!(tx.overflow(), Overflow::Reject);
    /// ```
    pub fn overflow(&self) -> Overflow {
        self.shared.overflow
    }
}

impl<T> SyncSender<T> {
    /// Pushes `value`, parking while the channel is full, on a thread the
    /// caller has checked may block.
    pub(crate) fn push_waiting(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), WaitError<T>> {
        self.shared.push_waiting(value, deadline)
    }
}

impl<T> Clone for SyncSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        SyncSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for SyncSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ring.close();
            self.shared.rx_waker.wake();
        }
    }
}

impl<T> fmt::Debug for SyncSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncSender")
            .field("ring", &self.shared.ring)
            .field("overflow", &self.shared.overflow)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// The future of [`SyncSender::send`].
struct SendFuture<'a, T> {
    shared: &'a Shared<T>,
    value: Option<T>,
    waiter: Option<WaiterId>,
}

impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let coop = ready!(coop::poll_proceed(cx));
        let result = this.shared.poll_push(cx, &mut this.value, &mut this.waiter);
        if result.is_ready() {
            coop.made_progress();
            if let Some(id) = this.waiter.take() {
                this.shared.send_waiters.remove(id);
            }
        }
        result
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(id) = self.waiter.take() {
            self.shared.send_waiters.remove(id);
        }
    }
}

/// The receiving half of a [`channel`], for one async consumer.
///
/// [`recv`](Self::recv) and the [`Stream`] implementation are cancel-safe: an
/// item is taken from the channel only by the poll that returns it, so a
/// `recv()` dropped inside `select!` loses nothing. Dropping the receiver
/// closes the channel and drops the buffered items, counting them in
/// [`dropped`](Self::dropped); senders still writing get their value back as
/// `Closed`.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::channel;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = channel::<u32>(8);
/// for i in 0..3 {
///     tx.try_send(i).unwrap();
/// }
/// drop(tx);
/// assert_eq!(rx.collect::<Vec<_>>().await, [0, 1, 2]);
/// # }
/// ```
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Items still covered by the last unit of tokio's task budget taken.
    budget_credit: u32,
}

/// How many received items one unit of tokio's task budget covers. Taking a
/// unit costs a thread-local access, a third of the cost of a receive; one
/// per few items keeps the consumer cooperative (it yields after at most
/// 128 × this many items in one poll) at a fraction of the cost.
const ITEMS_PER_BUDGET_UNIT: u32 = 8;

impl<T> Receiver<T> {
    /// Receives the next item, waiting for one if the channel is empty.
    /// `None` once the channel is closed (every sender dropped, or
    /// [`close`](Self::close) called) and empty.
    ///
    /// Cancel-safe. Cooperates with tokio's task budget, like tokio's own
    /// channels, so a busy consumer still lets other tasks run.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_bridge::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = channel::<u32>(4);
    /// tokio::select! {
    ///     _ = rx.recv() => unreachable!("nothing sent yet"),
    ///     _ = tokio::time::sleep(Duration::from_millis(5)) => {}
    /// }
    /// tx.try_send(1).unwrap(); // the cancelled recv took nothing
    /// assert_eq!(rx.recv().await, Some(1));
    /// drop(tx);
    /// assert_eq!(rx.recv().await, None);
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item: the building block of [`recv`](Self::recv)
    /// for hand-written futures and streams.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::poll_fn;
    /// use async_patterns_bridge::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel::<u32>(4);
    /// tx.try_send(5).unwrap();
    /// assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await, Some(5));
    /// # }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.budget_credit > 0 {
            let result = self.poll_pop(cx);
            if result.is_ready() {
                self.budget_credit -= 1;
            }
            return result;
        }
        let coop = ready!(coop::poll_proceed(cx));
        let result = self.poll_pop(cx);
        if result.is_ready() {
            coop.made_progress();
            self.budget_credit = ITEMS_PER_BUDGET_UNIT - 1;
        }
        result
    }

    #[inline]
    fn poll_pop(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let shared = &*self.shared;
        loop {
            match shared.ring.pop() {
                Pop::Item { value, wakes } => {
                    shared.notify(wakes);
                    return Poll::Ready(Some(value));
                }
                Pop::Closed => return Poll::Ready(None),
                Pop::Empty { pos, stamp } => {
                    shared.rx_waker.register(cx.waker());
                    if !shared.ring.mark_rx_waiting(pos, stamp) {
                        continue; // written meanwhile
                    }
                    if shared.ring.is_drained_at(pos) {
                        return Poll::Ready(None);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Receives up to `limit` items into `buffer`, waiting for at least one;
    /// returns how many it added. `0` only if `limit` is 0 or the channel is
    /// closed and empty. Cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel::<u32>(8);
    /// for i in 0..5 {
    ///     tx.try_send(i).unwrap();
    /// }
    /// let mut batch = Vec::new();
    /// assert_eq!(rx.recv_many(&mut batch, 3).await, 3);
    /// assert_eq!(rx.recv_many(&mut batch, 3).await, 2);
    /// assert_eq!(batch, [0, 1, 2, 3, 4]);
    /// drop(tx);
    /// assert_eq!(rx.recv_many(&mut batch, 3).await, 0);
    /// # }
    /// ```
    pub async fn recv_many(&mut self, buffer: &mut Vec<T>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let Some(first) = self.recv().await else {
            return 0;
        };
        buffer.reserve(limit.min(self.shared.ring.capacity()));
        buffer.push(first);
        let mut added = 1;
        while added < limit {
            match self.shared.ring.pop() {
                Pop::Item { value, wakes } => {
                    self.shared.notify(wakes);
                    buffer.push(value);
                    added += 1;
                }
                Pop::Empty { .. } | Pop::Closed => break,
            }
        }
        added
    }

    /// Takes the next item if one is buffered, without waiting.
    ///
    /// # Errors
    ///
    /// [`Empty`](TryRecvError::Empty) if nothing is buffered now,
    /// [`Closed`](TryRecvError::Closed) if nothing will ever be.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{channel, TryRecvError};
    ///
    /// let (tx, mut rx) = channel::<u32>(2);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// drop(tx);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    /// ```
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.shared.ring.pop() {
            Pop::Item { value, wakes } => {
                self.shared.notify(wakes);
                Ok(value)
            }
            Pop::Empty { .. } => Err(TryRecvError::Empty),
            Pop::Closed => Err(TryRecvError::Closed),
        }
    }

    /// Closes the channel: every send fails from now on, handing its value
    /// back, and waiting senders wake up. Items already buffered can still be
    /// received; then [`recv`](Self::recv) returns `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{channel, TrySendError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel::<u32>(4);
    /// tx.try_send(1).unwrap();
    /// rx.close();
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
    /// assert_eq!(rx.recv().await, Some(1));
    /// assert_eq!(rx.recv().await, None);
    /// # }
    /// ```
    pub fn close(&mut self) {
        self.shared.ring.close();
        self.shared.send_waiters.wake_all();
    }

    /// How many items the channel discarded; see [`SyncSender::dropped`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{ChannelBuilder, Overflow};
    ///
    /// let (tx, rx) = ChannelBuilder::new(1).overflow(Overflow::DropNewest).build()?;
    /// tx.try_send('a')?;
    /// tx.try_send('b')?;
    /// assert_eq!(rx.dropped(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The channel's capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = async_patterns_bridge::channel::<()>(3);
    /// assert_eq!(rx.capacity(), 3);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// The number of buffered items, as of some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = async_patterns_bridge::channel::<u8>(3);
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// Whether nothing is buffered, as of some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = async_patterns_bridge::channel::<u8>(3);
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether no more items will be sent: every sender is gone or
    /// [`close`](Self::close) was called. Buffered items may remain.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = async_patterns_bridge::channel::<u8>(3);
    /// assert!(!rx.is_closed());
    /// drop(tx);
    /// assert!(rx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.ring.is_closed()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let shared = &*self.shared;
        // Close first so that waiting senders wake to `Closed`, then drop
        // what is buffered, counting it.
        shared.ring.close();
        shared.send_waiters.wake_all();
        let dropped = shared.ring.close_and_drain();
        shared.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), None)
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("ring", &self.shared.ring)
            .field("overflow", &self.shared.overflow)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Tokio's cooperative budget, so that a consumer that always finds items
/// still yields to its runtime now and then. Loom models run without it.
mod coop {
    #[cfg(not(async_patterns_loom))]
    pub(super) use tokio::task::coop::poll_proceed;

    #[cfg(async_patterns_loom)]
    pub(super) fn poll_proceed(_: &mut std::task::Context<'_>) -> std::task::Poll<Progress> {
        std::task::Poll::Ready(Progress)
    }

    #[cfg(async_patterns_loom)]
    pub(super) struct Progress;

    #[cfg(async_patterns_loom)]
    impl Progress {
        pub(super) fn made_progress(&self) {}
    }
}
