//! The hand-off channel: [`Sender`] for sync (or async) producers in any
//! context, [`Receiver`] for one async consumer, an [`Overflow`] policy chosen
//! at construction, the [`ChannelBuilder`] that validates it all, and the
//! [`ChannelMetrics`] both ends report.

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_patterns_core::{BlockingStrategy, ConfigError, RuntimeContext};
use futures_core::Stream;

use crate::loom::{Arc, AtomicUsize, AtomicWaker, CachePadded, Ordering, thread};
// The counters and the look's state are statistics and hints, not part of
// any hand-over: `std`'s atomics even under loom, so that the models explore
// the protocol rather than every interleaving of a counter.
use crate::ring::{MAX_CAPACITY, Pop, PushError, Ring, TxWait, Wakes};
use crate::waiters::{WaiterId, Waiters, Wake};
use crate::{SendBlockingError, SendError, SendTimeoutError, TryRecvError, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

/// The capacity of a channel built without [`ChannelBuilder::capacity`].
const DEFAULT_CAPACITY: usize = 1024;

/// What a send does when the channel is full.
///
/// Lossy policies are for producers that must never wait and can afford to
/// lose items — logging, metrics, progress updates. Every item they discard
/// is counted in [`ChannelMetrics::dropped`].
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::{ChannelBuilder, Overflow};
///
/// let (tx, mut rx) = ChannelBuilder::<u32>::new()
///     .capacity(2)
///     .overflow(Overflow::DropOldest)
///     .build()?;
/// for i in 0..5 {
///     tx.try_send(i)?; // never `Full`
/// }
/// assert_eq!(tx.metrics().dropped, 3);
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
/// [`Reject`](Overflow::Reject) policy: a [`Sender`] for producers in any
/// context, sync or async, and a [`Receiver`] for one async consumer.
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
/// If `capacity` is 0 (as `tokio::sync::mpsc::channel` does) or above
/// 16,777,216 (2^24), with the [`ConfigError`]'s message.
///
/// ```should_panic
/// let _ = async_patterns_bridge::channel::<u8>(0); // invalid `capacity`: got 0
/// ```
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    ChannelBuilder::new()
        .capacity(capacity)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Configures a [`channel`]: its capacity and its [`Overflow`] policy.
///
/// | setting | default | accepted |
/// |---|---|---|
/// | [`capacity`](Self::capacity) | 1024 | 1 to 16,777,216 (2^24) |
/// | [`overflow`](Self::overflow) | [`Overflow::Reject`] | any |
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::{ChannelBuilder, Overflow};
///
/// let (tx, rx) = ChannelBuilder::<String>::new()
///     .capacity(512)
///     .overflow(Overflow::DropNewest)
///     .build()?;
/// assert_eq!(tx.capacity(), 512);
///
/// let err = ChannelBuilder::<String>::new().capacity(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `capacity`: got 0, expected 1..=16777216");
/// # Ok::<(), async_patterns_bridge::ConfigError>(())
/// ```
pub struct ChannelBuilder<T> {
    capacity: usize,
    overflow: Overflow,
    /// The item type; `fn() -> T` keeps the builder `Send + Sync` for any `T`.
    items: PhantomData<fn() -> T>,
}

impl<T> ChannelBuilder<T> {
    /// A builder with the defaults: capacity 1024, [`Overflow::Reject`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{ChannelBuilder, Overflow};
    ///
    /// let (tx, _rx) = ChannelBuilder::<u8>::new().build()?;
    /// assert_eq!(tx.capacity(), 1024);
    /// assert_eq!(tx.overflow(), Overflow::Reject);
    /// # Ok::<(), async_patterns_bridge::ConfigError>(())
    /// ```
    pub fn new() -> Self {
        ChannelBuilder {
            capacity: DEFAULT_CAPACITY,
            overflow: Overflow::Reject,
            items: PhantomData,
        }
    }

    /// How many items the channel holds (validated by
    /// [`build`](Self::build): 1 to 2^24). The slots are allocated up front.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ChannelBuilder;
    ///
    /// let (tx, _rx) = ChannelBuilder::<u8>::new().capacity(8).build()?;
    /// assert_eq!(tx.capacity(), 8);
    /// # Ok::<(), async_patterns_bridge::ConfigError>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets what a send does when the channel is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{ChannelBuilder, Overflow};
    ///
    /// let (tx, _rx) = ChannelBuilder::new().capacity(1).overflow(Overflow::DropNewest).build()?;
    /// tx.try_send(1)?;
    /// tx.try_send(2)?; // discarded, counted
    /// assert_eq!(tx.metrics().dropped, 1);
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
    /// assert!(ChannelBuilder::<u64>::new().capacity(16).build().is_ok());
    /// let err = ChannelBuilder::<u64>::new().capacity(usize::MAX).build().unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// ```
    pub fn build(self) -> Result<(Sender<T>, Receiver<T>), ConfigError> {
        let capacity = check_capacity(self.capacity)?;
        let shared = Arc::new(Shared {
            ring: Ring::new(capacity, self.overflow == Overflow::DropOldest),
            rx_waker: AtomicWaker::new(),
            send_waiters: Waiters::new(),
            senders: AtomicUsize::new(1),
            delivered: CachePadded::new(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            discarded_new: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            handed_back: AtomicU64::new(0),
            overflow: self.overflow,
            looking: AtomicBool::new(false),
            look_ns: AtomicU32::new(MAX_LOOK_NS),
        });
        Ok((
            Sender {
                shared: shared.clone(),
            },
            Receiver {
                shared,
                budget_credit: 0,
                delivered: 0,
                streak: false,
            },
        ))
    }
}

impl<T> Default for ChannelBuilder<T> {
    /// The same as [`ChannelBuilder::new`].
    fn default() -> Self {
        ChannelBuilder::new()
    }
}

impl<T> Clone for ChannelBuilder<T> {
    fn clone(&self) -> Self {
        ChannelBuilder {
            capacity: self.capacity,
            overflow: self.overflow,
            items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish()
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

/// A snapshot of a [`channel`]'s counters, from
/// [`Sender::metrics`] or [`Receiver::metrics`].
///
/// Counters count since the channel was created; `queued` is the value now.
/// Each field is read on its own, so a snapshot taken while items move may
/// be off by the items moving in that instant; once the channel is quiet,
/// every value given to a send is in exactly one place:
/// `sent == delivered + dropped + queued`, and every value a send refused
/// is in `handed_back`.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::{channel, ChannelMetrics};
///
/// let (tx, mut rx) = channel::<u32>(2);
/// tx.try_send(1).unwrap();
/// tx.try_send(2).unwrap();
/// assert!(tx.try_send(3).is_err()); // full: refused, handed back
/// assert_eq!(rx.try_recv(), Ok(1));
///
/// let m = rx.metrics();
/// assert_eq!((m.sent, m.delivered, m.queued), (2, 1, 1));
/// assert_eq!((m.rejected, m.handed_back, m.dropped), (1, 1, 0));
/// assert_eq!(m.sent, m.delivered + m.dropped + m.queued as u64);
/// assert_ne!(m, ChannelMetrics::default());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelMetrics {
    /// Values the channel accepted: every send that returned `Ok`, including
    /// those a lossy [`Overflow`] policy then discarded. A send counts from
    /// the moment it claims its slot; in the one race where the receiver is
    /// dropped while a send is still writing, that send gets its value back
    /// (`Closed`, counted in `handed_back`) and this counter steps back by one.
    pub sent: u64,
    /// Values handed to the receiver ([`recv`](Receiver::recv),
    /// [`try_recv`](Receiver::try_recv), [`recv_many`](Receiver::recv_many),
    /// the stream).
    pub delivered: u64,
    /// Values discarded: by a lossy [`Overflow`] policy, or still buffered
    /// when the receiver was dropped. Never silently: always counted here.
    pub dropped: u64,
    /// Sends refused because the channel was full under
    /// [`Overflow::Reject`]: `try_send`'s `Full`, and the `Timeout` and
    /// `WouldDeadlock` of the waiting sends.
    pub rejected: u64,
    /// Values returned to their sender in an error: every refused send,
    /// full or closed.
    pub handed_back: u64,
    /// Values in the channel now, waiting to be received.
    pub queued: usize,
}

struct Shared<T> {
    ring: Ring<T>,
    /// The receiver's waker, woken by the sender whose write finds the slot
    /// marked `RX_WAITING`, and when the last sender leaves.
    rx_waker: AtomicWaker,
    send_waiters: Waiters,
    senders: AtomicUsize,
    /// Written by the receiver alone (a store, not a read-modify-write), on
    /// a line of its own so that senders never contend with it.
    delivered: CachePadded<AtomicU64>,
    dropped: AtomicU64,
    /// Values a send accepted (`Ok`) and discarded before they entered the
    /// ring: the `DropNewest` policy's, and `DropOldest`'s fallback.
    discarded_new: AtomicU64,
    rejected: AtomicU64,
    handed_back: AtomicU64,
    overflow: Overflow,
    /// Whether a blocked sender is in its budgeted look (see [`look`]).
    looking: AtomicBool,
    /// The budget of the next look, in nanoseconds.
    look_ns: AtomicU32,
}

/// How a thread waits for the other end of the channel.
///
/// Under backpressure — a producer faster than the hand-over, a small
/// channel — putting a thread to sleep and waking it again costs far more
/// than moving an item (tens of microseconds on an idle virtual machine,
/// against tens of nanoseconds), and when both ends sleep in turn, every
/// `capacity` items pay two of them. So each end looks for the other a
/// while before it sleeps:
///
/// - A sender that finds the channel full looks again a few times with
///   exponentially longer spin hints in between (1 + 2 + … + 64, a few
///   microseconds), then — one sender at a time — keeps looking, spinning
///   between looks, for up to the *look budget*, and only then parks.
///   The budget covers the time a sleeping receiver takes to wake up and
///   start draining, so that the two ends then run side by side instead of
///   in turn. It adapts: it halves after a look that found no room (the
///   receiver is busy elsewhere or the machine is overloaded, and looking
///   only burns CPU) and doubles after one that did, between
///   [`MIN_LOOK_NS`] and [`MAX_LOOK_NS`].
/// - A receiver that has just taken an item and finds the channel empty
///   looks again for up to [`RX_LOOK_NS`] before it registers its waker and
///   returns `Pending`: a producer that is running delivers its next item
///   well within that time.
///
/// Looking pays only when the two ends can run at the same time: on a
/// process limited to one CPU (by affinity or a cgroup quota, as
/// [`available_parallelism`](std::thread::available_parallelism) reports)
/// the budgeted look is off, since the receiver could not run while the
/// sender spins. Loom models skip all looking: it only changes timing, and
/// loom has no clock.
mod look {
    /// Whether the ends look for each other at all: not under loom.
    pub(super) const ENABLED: bool = !cfg!(async_patterns_loom);
    /// Spins of a blocked sender before its budgeted look.
    pub(super) const SPIN_STEPS: u32 = 7;
    /// The longest budgeted look of a blocked sender, in nanoseconds.
    pub(super) const MAX_LOOK_NS: u32 = 100_000;
    /// The shortest budgeted look it adapts down to.
    pub(super) const MIN_LOOK_NS: u32 = 2_000;
    /// Spin hints between two looks of a sender's budgeted look (about a
    /// microsecond).
    pub(super) const LOOK_SPINS: u32 = 32;
    /// How long a receiver on a streak looks for the next item.
    pub(super) const RX_LOOK_NS: u64 = 2_000;

    /// Whether the process may run two threads at once, so that a sender's
    /// budgeted look can see a receiver make room. Asked once.
    pub(super) fn parallel() -> bool {
        static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *PARALLEL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
    }
}

use look::{LOOK_SPINS, MAX_LOOK_NS, MIN_LOOK_NS, RX_LOOK_NS, SPIN_STEPS};

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

    /// Counts a value that a lossy policy accepted and discarded before it
    /// entered the ring.
    fn discard_new(&self, value: T) {
        self.discarded_new.fetch_add(1, Ordering::Relaxed);
        // Count first: a panicking destructor must not hide the loss.
        self.dropped.fetch_add(1, Ordering::Relaxed);
        drop(value);
    }

    #[cold]
    fn overflow(&self, mut value: T) -> Result<(), PushError<T>> {
        match self.overflow {
            Overflow::Reject => Err(PushError::Full(value)),
            Overflow::DropNewest => {
                self.discard_new(value);
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
                        self.discard_new(value);
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

    /// Counts a send that handed its value back; `full` if it was refused
    /// for lack of room.
    #[cold]
    fn refused(&self, full: bool) {
        if full {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        self.handed_back.fetch_add(1, Ordering::Relaxed);
    }

    /// Pushes `value`, parking the thread while the channel is full, until
    /// `deadline` if there is one. The caller has checked that this thread
    /// may block.
    fn push_waiting(&self, mut value: T, deadline: Option<Instant>) -> Result<(), WaitError<T>> {
        let me = thread::current();
        loop {
            value = match self.push_spinning(value, deadline) {
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

    /// Pushes `value`, looking for room again for a while before reporting
    /// `Full` (see [`look`]), never past `deadline`.
    fn push_spinning(&self, mut value: T, deadline: Option<Instant>) -> Result<(), PushError<T>> {
        if !look::ENABLED {
            return self.push(value);
        }
        for step in 0..SPIN_STEPS {
            value = match self.push(value) {
                Err(PushError::Full(v)) => v,
                done => return done,
            };
            for _ in 0..1u32 << step {
                std::hint::spin_loop();
            }
        }
        if !look::parallel() || self.looking.swap(true, Ordering::Acquire) {
            // Another sender is looking already: one is enough, and it
            // makes room for the others as soon as it finds some.
            return self.push(value);
        }
        let budget = self.look_ns.load(Ordering::Relaxed);
        let start = Instant::now();
        let budgeted = start + Duration::from_nanos(budget.into());
        // A deadline that cuts the look short says nothing about the
        // receiver: only a look that ran its whole budget may shrink it.
        let until = deadline.map_or(budgeted, |deadline| deadline.min(budgeted));
        let result = loop {
            value = match self.push(value) {
                Err(PushError::Full(v)) => v,
                done => break done,
            };
            if Instant::now() >= until {
                break Err(PushError::Full(value));
            }
            // Spin rather than yield: yielding would let a receiver on this
            // very core run in between, so the look would seem to pay off
            // while it only adds a context switch per item. A receiver that
            // cannot run while this thread spins makes the look fail, and
            // the budget shrinks.
            for _ in 0..LOOK_SPINS {
                std::hint::spin_loop();
            }
        };
        self.looking.store(false, Ordering::Release);
        let next = match result {
            Err(PushError::Full(_)) if until < budgeted => budget,
            Err(PushError::Full(_)) => (budget / 2).max(MIN_LOOK_NS),
            _ => budget.saturating_mul(2).min(MAX_LOOK_NS),
        };
        self.look_ns.store(next, Ordering::Relaxed);
        result
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
                Err(PushError::Closed(v)) => {
                    self.refused(false);
                    return Poll::Ready(Err(SendError(v)));
                }
                Err(PushError::Full(v)) => *value = Some(v),
            }
            *waiter = Some(self.send_waiters.reregister(*waiter, cx.waker()));
            if let TxWait::Marked = self.ring.mark_tx_waiting() {
                return Poll::Pending;
            }
        }
    }

    fn metrics(&self) -> ChannelMetrics {
        ChannelMetrics {
            sent: self.ring.accepted() + self.discarded_new.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            handed_back: self.handed_back.load(Ordering::Relaxed),
            queued: self.ring.len(),
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
/// A sync send that waits does not park at once: parking and waking a thread
/// costs far more than moving an item, so it spins a few microseconds and
/// then — one waiting sender per channel at a time — keeps looking for room
/// for up to 100 µs (less after looks that found nothing), before it parks. This keeps a small channel under
/// backpressure flowing at the speed of the two ends instead of the speed of
/// wake-ups, at the cost of that sender's CPU time while it looks.
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
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Sends `value` if there is room, without ever blocking — safe in every
    /// context, including a sync callback on a current-thread runtime. This
    /// is the seed recipe's `try_send`.
    ///
    /// With [`Overflow::DropNewest`] a full channel discards `value` and with
    /// [`Overflow::DropOldest`] it discards the oldest item; both count the
    /// discarded item in [`ChannelMetrics::dropped`] and return `Ok(())`.
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
            PushError::Full(v) => {
                self.shared.refused(true);
                TrySendError::Full(v)
            }
            PushError::Closed(v) => {
                self.shared.refused(false);
                TrySendError::Closed(v)
            }
        })
    }

    /// Sends `value` from sync code, waiting for room if the channel is full
    /// — with the meaning `send_blocking` has in every crate of the
    /// workspace, defined once on [`SendBlockingError`]: it sends at once
    /// whenever there is room, in any context, and when it would have to
    /// wait it waits where waiting is safe:
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
    /// # Errors
    ///
    /// [`Closed`](SendBlockingError::Closed) if the receiver is closed or
    /// dropped, [`WouldDeadlock`](SendBlockingError::WouldDeadlock) if the
    /// channel is full on a thread that drives a current-thread runtime;
    /// each hands `value` back.
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
            Err(PushError::Closed(v)) => {
                self.shared.refused(false);
                return Err(SendBlockingError::Closed(v));
            }
            Err(PushError::Full(v)) => v,
        };
        let wait = |value| {
            self.shared.push_waiting(value, None).map_err(|e| match e {
                WaitError::Closed(v) | WaitError::Timeout(v) => SendBlockingError::Closed(v),
            })
        };
        let result = match RuntimeContext::current().blocking_strategy() {
            BlockingStrategy::Direct => wait(value),
            BlockingStrategy::BlockInPlace => tokio::task::block_in_place(|| wait(value)),
            _ => Err(SendBlockingError::WouldDeadlock(value)),
        };
        if let Err(e) = &result {
            self.shared
                .refused(matches!(e, SendBlockingError::WouldDeadlock(_)));
        }
        result
    }

    /// Like [`send_blocking`](Self::send_blocking), giving up after
    /// `timeout` if the channel stays full.
    ///
    /// # Errors
    ///
    /// [`Timeout`](SendTimeoutError::Timeout) if the channel stayed full,
    /// [`Closed`](SendTimeoutError::Closed) if the receiver is closed or
    /// dropped, [`WouldDeadlock`](SendTimeoutError::WouldDeadlock) as for
    /// `send_blocking`; each hands `value` back.
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
            Err(PushError::Closed(v)) => {
                self.shared.refused(false);
                return Err(SendTimeoutError::Closed(v));
            }
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
        let result = match RuntimeContext::current().blocking_strategy() {
            BlockingStrategy::Direct => wait(value),
            BlockingStrategy::BlockInPlace => tokio::task::block_in_place(|| wait(value)),
            _ => Err(SendTimeoutError::WouldDeadlock(value)),
        };
        if let Err(e) = &result {
            self.shared
                .refused(!matches!(e, SendTimeoutError::Closed(_)));
        }
        result
    }

    /// Sends `value` from async code, waiting asynchronously while the
    /// channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with `value` if the receiver is closed or dropped.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropped before it completes (say, the
    /// losing branch of `select!`), the future drops `value` unsent — the
    /// channel never held it, and it is counted nowhere. Either the value was
    /// sent and the future completed, or it was not.
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

    /// A snapshot of the channel's counters — the same as
    /// [`Receiver::metrics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::channel;
    ///
    /// let (tx, rx) = channel::<u32>(4);
    /// tx.try_send(1).unwrap();
    /// tx.try_send(2).unwrap();
    /// drop(rx); // the two buffered items are dropped with it, and counted
    /// let m = tx.metrics();
    /// assert_eq!((m.sent, m.delivered, m.dropped, m.queued), (2, 0, 2, 0));
    /// ```
    pub fn metrics(&self) -> ChannelMetrics {
        self.shared.metrics()
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

    /// Pushes `value`, parking while the channel is full, on a thread the
    /// caller has checked may block. Not counted in the metrics: the
    /// service's queue reports none.
    pub(crate) fn push_waiting(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), WaitError<T>> {
        self.shared.push_waiting(value, deadline)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ring.close();
            self.shared.rx_waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("ring", &self.shared.ring)
            .field("overflow", &self.shared.overflow)
            .finish_non_exhaustive()
    }
}

/// The future of [`Sender::send`].
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
/// [`recv`](Self::recv), [`recv_many`](Self::recv_many) and the [`Stream`]
/// implementation are cancel safe: an item is taken from the channel only by
/// the poll that returns it, so a `recv()` dropped inside `select!` loses
/// nothing. Dropping the receiver closes the channel and drops the buffered
/// items, counting them in [`ChannelMetrics::dropped`]; senders still
/// writing get their value back as `Closed`.
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
    /// Items received so far; published to `Shared::delivered`.
    delivered: u64,
    /// Whether the last poll returned an item: the producer is likely
    /// running, so an empty channel is worth a short look (see [`look`]).
    streak: bool,
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
    /// Cooperates with tokio's task budget, like tokio's own channels, so a
    /// busy consumer still lets other tasks run.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: an item leaves the channel only in the
    /// poll that returns it, so if `recv` is the losing branch of a
    /// `select!`, no item was taken and the next `recv` gets it.
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
    /// for hand-written futures and streams. `Ready(None)` once the channel
    /// is closed and empty; `Pending` registers `cx`'s waker (the last
    /// registered waker is woken when an item arrives or the channel closes).
    ///
    /// # Cancel safety
    ///
    /// A `Pending` poll takes nothing, so stopping to poll loses nothing;
    /// a `Ready(Some(item))` has taken `item` out of the channel.
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

    /// Counts `n` more items handed out and publishes the count.
    #[inline]
    fn delivered(&mut self, n: u64) {
        self.delivered += n;
        self.shared
            .delivered
            .store(self.delivered, Ordering::Relaxed);
    }

    #[inline]
    fn poll_pop(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Set once this poll has looked for an item a while (see [`look`]).
        let mut look_until = None;
        loop {
            match self.shared.ring.pop() {
                Pop::Item { value, wakes } => {
                    self.shared.notify(wakes);
                    self.delivered(1);
                    self.streak = true;
                    return Poll::Ready(Some(value));
                }
                Pop::Closed => return Poll::Ready(None),
                Pop::Empty { .. } if look::ENABLED && self.streak => {
                    let now = Instant::now();
                    let until =
                        *look_until.get_or_insert_with(|| now + Duration::from_nanos(RX_LOOK_NS));
                    if now >= until {
                        self.streak = false;
                    }
                    for _ in 0..8 {
                        std::hint::spin_loop();
                    }
                }
                Pop::Empty { pos, stamp } => {
                    self.streak = false;
                    let shared = &*self.shared;
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
    /// closed and empty. tokio's signature.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: items leave the channel only in the poll
    /// that completes the call, so a `recv_many` dropped before it completes
    /// has added nothing to `buffer` and taken nothing from the channel.
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
        self.delivered(added as u64 - 1);
        added
    }

    /// Takes the next item if one is buffered, without waiting.
    ///
    /// # Errors
    ///
    /// [`Empty`](TryRecvError::Empty) if nothing is buffered now,
    /// [`Disconnected`](TryRecvError::Disconnected) if nothing ever will be
    /// (closed and drained).
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
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    /// ```
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.shared.ring.pop() {
            Pop::Item { value, wakes } => {
                self.shared.notify(wakes);
                self.delivered(1);
                Ok(value)
            }
            Pop::Empty { .. } => Err(TryRecvError::Empty),
            Pop::Closed => Err(TryRecvError::Disconnected),
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

    /// A snapshot of the channel's counters — the same as
    /// [`Sender::metrics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{ChannelBuilder, Overflow};
    ///
    /// let (tx, mut rx) = ChannelBuilder::new().capacity(1).overflow(Overflow::DropNewest).build()?;
    /// tx.try_send('a')?;
    /// tx.try_send('b')?; // accepted, then discarded by the policy
    /// assert_eq!(rx.try_recv(), Ok('a'));
    /// let m = rx.metrics();
    /// assert_eq!((m.sent, m.delivered, m.dropped), (2, 1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> ChannelMetrics {
        self.shared.metrics()
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
