//! [`Receiver`]: one consumer of a channel. Clones are more consumers of the
//! same channel, sharing its work.
//!
//! A consumer delivers in one of two ways:
//!
//! - **Its own buffer** (strict order, and it is the channel's only
//!   consumer): it moves everything queued into a buffer of its own under one
//!   lock, and delivers from there — a delivery is a look at the front, a
//!   commit a pop and one atomic subtraction. A rollback leaves the item at
//!   the front. This is the whole 0.1 receiver, and the sequential fast
//!   path. Cloning the receiver first puts the buffer back at the head of
//!   the channel's queue, in order, so no item waits in one consumer while
//!   another looks for work.
//! - **The table** (every other case: per-key or unordered order, several
//!   consumers, owned deliveries): each delivery takes its items from the
//!   channel's [`Table`](crate::table::Table) under the lock, and each end
//!   gives them back to it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::collections::vec_deque::Drain;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use async_patterns_core::__private::loom::{Arc, MutexGuard};
use async_patterns_core::__private::{WakeList, lock};
use async_patterns_core::{DeadLetterReason, TryRecvError};
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use crate::dead_letter::{DeadLetter, Sink};
use crate::delivery::{BatchDelivery, Delivery};
use crate::metrics::ChannelMetrics;
use crate::own_buffer::OwnBuffer;
use crate::owned::OwnedDelivery;
use crate::shared::{AheadCell, Config, Home, Shared, SoloCounts, State, WaitSlot};
use crate::table::{Clock, End, Entry, Meta, OrderKind, Ticket};

/// The receiving half of a channel — one consumer of it — or a
/// transactional view of any [`Stream`] ([`from_stream`](Self::from_stream)).
///
/// An item leaves the channel only when it is committed, or when it is
/// handed to the dead-letter destination (after
/// [`max_attempts`](crate::ChannelBuilder::max_attempts) failed deliveries,
/// or [`fail`](Delivery::fail)). Until then every end other than a commit —
/// a rollback, `retry_after`, a dropped delivery, a panic — gives the item
/// back to be delivered again.
///
/// Three ways to consume, which can be mixed:
///
/// - the guard API: [`begin`](Self::begin) returns a [`Delivery`] that
///   borrows the receiver and must be committed, and rolls back if dropped
///   — on an early return, a panic, or when the future holding it is
///   cancelled; [`begin_batch`](Self::begin_batch) does the same for up to
///   `max` items;
/// - owned deliveries: [`begin_owned`](Self::begin_owned) returns an
///   [`OwnedDelivery`] (`'static + Send`) to hand to a spawned task, so one
///   consumer can have many items in flight at once (up to
///   [`max_in_flight`](crate::ChannelBuilder::max_in_flight));
/// - the seed recipe's peek-and-commit: [`recv`](Self::recv) peeks at the
///   current item and [`commit`](Self::commit) removes it.
///
/// **Sharing the work.** The receiver is [`Clone`]: each clone is another
/// consumer of the same channel, and the channel's
/// [order](crate::ChannelBuilder::order_by_key) decides what they may take
/// at the same time. The channel ends for all of them (every call returns
/// `None`) when it is closed or every sender is gone, nothing is queued and
/// nothing is in flight. Dropping a consumer loses nothing: what it holds
/// goes back to the others; dropping the last one closes the channel and
/// drops what is left (counted in [`ChannelMetrics::dropped`]).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(16);
/// for job in ["a", "b"] {
///     tx.send(job).await.unwrap();
/// }
/// drop(tx);
///
/// let mut log = Vec::new();
/// let mut failed_once = false;
/// while let Some(delivery) = rx.begin().await {
///     log.push((*delivery, delivery.attempt()));
///     if *delivery == "a" && !failed_once {
///         failed_once = true;
///         continue; // dropped: rolled back, "a" comes again
///     }
///     delivery.commit();
/// }
/// assert_eq!(log, [("a", 1), ("a", 2), ("b", 1)]);
/// # }
/// ```
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The channel's settings, copied: read on every delivery.
    config: Config,
    sink: Option<Arc<Sink<T>>>,
    /// This consumer's slot in the channel's list of consumers.
    id: usize,
    /// In a cell only so that `clone(&self)` can give the own buffer back;
    /// every `&mut self` method reaches it with `get_mut`, for free. (So the
    /// receiver is `Send` but not `Sync`: share the channel by cloning.)
    local: RefCell<Local<T>>,
}

/// What one consumer holds.
pub(crate) struct Local<T> {
    /// Strict order, only consumer: its own buffer.
    own: OwnBuffer<T>,
    /// The items of its borrowing delivery now, taken from the table.
    taken: Taken<T>,
    /// `recv` handed out the front item and it is not committed yet.
    held: bool,
    /// Own buffer: what is special about the front item, if anything.
    front: Front,
    /// It is the channel's only consumer, and strict order: checked once,
    /// it stays true until this consumer clones itself (nobody else can
    /// make a consumer then).
    alone: bool,
    /// The timer for the front's delay and the table's deadlines, kept to be
    /// reset instead of reallocated.
    sleep: Option<Pin<Box<Sleep>>>,
    /// This consumer's place in line for a slot of the dead-letter channel,
    /// and whether it holds one.
    dead_letter_wait: WaitSlot,
    dead_letter_slot: bool,
    /// Registered in the channel's list of waiting consumers (or woken and
    /// not yet looking): a cancelled wait must pass the wake-up on.
    registered: bool,
    /// Jitter for the retry policy on the own buffer's rollbacks.
    rng: u64,
    /// Items taken ahead for owned deliveries (see
    /// [`Shared::takes_ahead`]); made on first use.
    ahead: Option<AheadCell<T>>,
    /// What its owned deliveries hold; made on first use.
    home: Option<Arc<Home<T>>>,
}

/// The own buffer's front item: delivered as usual, not before an instant,
/// or failed (to be dead-lettered). One field, so that the fast path checks
/// one thing.
#[derive(Debug, Default)]
enum Front {
    #[default]
    Plain,
    NotBefore(Instant),
    Failed(String),
}

/// Items a borrowing delivery took from the table, with their meta and
/// tickets, oldest first.
struct Taken<T> {
    items: VecDeque<T>,
    metas: VecDeque<Meta>,
    tickets: VecDeque<Ticket>,
}

impl<T> Local<T> {
    fn new(seed: u64) -> Self {
        Local {
            own: OwnBuffer::default(),
            taken: Taken {
                items: VecDeque::new(),
                metas: VecDeque::new(),
                tickets: VecDeque::new(),
            },
            held: false,
            front: Front::Plain,
            alone: false,
            sleep: None,
            dead_letter_wait: WaitSlot::default(),
            dead_letter_slot: false,
            registered: false,
            rng: seed,
            ahead: None,
            home: None,
        }
    }
}

/// Where [`Receiver::poll_take`] puts what it takes.
enum Dest<'a, T> {
    /// Into the consumer's `taken` (a borrowing delivery).
    Local,
    /// One item, for an owned delivery.
    Owned(&'a mut Option<(T, Meta, Ticket)>),
}

impl<T> Receiver<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>, sink: Option<Arc<Sink<T>>>) -> Self {
        Receiver {
            config: shared.config(),
            shared,
            sink,
            id: 0,
            local: RefCell::new(Local::new(seed())),
        }
    }

    fn local(&mut self) -> &mut Local<T> {
        self.local.get_mut()
    }

    /// A receiver over any stream: the same transactions, attempt counting
    /// and consumers as over a channel, with the builder's defaults (strict
    /// order, no attempt limit).
    ///
    /// Items are pulled from the stream only when a delivery needs one
    /// (`begin_batch(max)` pulls up to `max` that are ready at once); pulled
    /// items stay in the receiver until committed. The stream is boxed, and
    /// must be `Send` so that the receiver can move between tasks. For an
    /// attempt limit, an order or a lease, use
    /// [`ChannelBuilder::build_from_stream`](crate::ChannelBuilder::build_from_stream).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter(1..=3));
    /// let first = rx.begin().await.unwrap();
    /// assert_eq!(*first, 1);
    /// drop(first); // rolled back
    /// let mut got = Vec::new();
    /// while let Some(batch) = rx.begin_batch(10).await {
    ///     got.extend(batch.commit_all());
    /// }
    /// assert_eq!(got, [1, 2, 3]);
    /// # }
    /// ```
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        crate::ChannelBuilder::new()
            .build_from_stream(stream)
            .expect("the default settings are valid")
    }

    /// Peeks at the next item, waiting for one if there is none: the seed
    /// recipe's `recv`. Returns the same item on every call until
    /// [`commit`](Self::commit) removes it (with one consumer in strict
    /// order; otherwise each call gives the peeked item back and delivers
    /// the next one the order allows); each call counts as one more
    /// delivery toward
    /// [`max_attempts`](crate::ChannelBuilder::max_attempts).
    ///
    /// Returns `None` once the channel has ended: closed (every sender
    /// dropped, or [`close`](Self::close) called), nothing queued, nothing
    /// in flight.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if the future is dropped before it
    /// completes (a losing `select!` branch), nothing was delivered and
    /// nothing is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut receiver) = channel(100);
    /// tx.send(10).await.unwrap();
    /// drop(tx);
    ///
    /// let mut tries = 0;
    /// loop {
    ///     let Some(value) = receiver.recv().await else { break };
    ///     tries += 1;
    ///     let success = *value == 10 && tries == 2; // the first try fails
    ///     if success {
    ///         receiver.commit();
    ///     }
    ///     // no commit: the next call to recv returns the same value
    /// }
    /// assert_eq!(tries, 2);
    /// assert_eq!(receiver.commit(), None); // nothing left to commit
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<&T> {
        self.drop_held();
        if !Waiting::new(self, 1).await {
            return None;
        }
        self.mark_delivered(1);
        let local = self.local();
        local.held = true;
        local
            .taken
            .items
            .front()
            .or_else(|| local.own.items().front())
    }

    /// Removes the item the last [`recv`](Self::recv) returned and hands it
    /// over: the seed recipe's `commit`. Returns `None` if no item is held —
    /// `recv` was not called since the last commit, or it returned `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(4);
    /// tx.send('x').await.unwrap();
    /// assert_eq!(rx.commit(), None); // nothing peeked yet
    /// assert_eq!(rx.recv().await, Some(&'x'));
    /// assert_eq!(rx.commit(), Some('x'));
    /// assert_eq!(rx.commit(), None);
    /// # }
    /// ```
    pub fn commit(&mut self) -> Option<T> {
        if !std::mem::take(&mut self.local().held) {
            return None;
        }
        Some(self.commit_front())
    }

    /// Starts a transaction on the next item, waiting for one if there is
    /// none.
    ///
    /// The returned [`Delivery`] borrows the receiver, derefs to the item
    /// and tells its [`attempt`](Delivery::attempt); it ends with
    /// [`commit`](Delivery::commit), [`rollback`](Delivery::rollback),
    /// [`retry_after`](Delivery::retry_after) or [`fail`](Delivery::fail),
    /// and dropping it — also by a panic unwinding or by cancellation of the
    /// future that holds it — rolls back. Before delivering, items given up
    /// on are handed to the dead-letter destination, and in strict order a
    /// delay on the next item is waited out.
    ///
    /// Returns `None` once the channel has ended: closed, nothing queued,
    /// nothing in flight.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if the future is dropped before it
    /// completes, nothing was delivered and nothing is lost; a pending
    /// delay and a wait for room in the dead-letter channel carry over to
    /// the next call.
    ///
    /// # Panics
    ///
    /// If a delay is pending and the call is not inside a tokio runtime
    /// with the time driver enabled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(4);
    /// tx.send(42).await.unwrap();
    /// drop(tx);
    ///
    /// let delivery = rx.begin().await.unwrap();
    /// assert_eq!((*delivery, delivery.attempt()), (42, 1));
    /// delivery.rollback();
    ///
    /// let delivery = rx.begin().await.unwrap();
    /// assert_eq!(delivery.attempt(), 2);
    /// assert_eq!(delivery.commit(), 42);
    /// assert!(rx.begin().await.is_none()); // closed and empty
    /// # }
    /// ```
    pub async fn begin(&mut self) -> Option<Delivery<'_, T>> {
        self.drop_held();
        if !Waiting::new(self, 1).await {
            return None;
        }
        self.mark_delivered(1);
        Some(Delivery::new(self.parts()))
    }

    /// Starts a transaction on up to `max` items, waiting for at least one.
    ///
    /// The batch holds as many of the next `max` items as are available at
    /// once, without waiting for more (in per-key order, at most one per
    /// key; never more than [`max_in_flight`](crate::ChannelBuilder::max_in_flight)
    /// allows). It derefs to a slice and ends with
    /// [`commit_all`](BatchDelivery::commit_all),
    /// [`commit_first(k)`](BatchDelivery::commit_first) (the rest come back,
    /// in order), [`rollback`](BatchDelivery::rollback) or
    /// [`retry_after`](BatchDelivery::retry_after); dropping it rolls back.
    /// Each item of the batch counts one delivery.
    ///
    /// Returns `None` once the channel has ended.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`begin`](Self::begin).
    ///
    /// # Panics
    ///
    /// If `max` is 0, and as [`begin`](Self::begin).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(8);
    /// for i in 1..=5 {
    ///     tx.send(i).await.unwrap();
    /// }
    /// drop(tx);
    ///
    /// let batch = rx.begin_batch(3).await.unwrap();
    /// assert_eq!(&*batch, [1, 2, 3]);
    /// let done: Vec<_> = batch.commit_first(2).collect(); // 3 comes back
    /// assert_eq!(done, [1, 2]);
    ///
    /// let batch = rx.begin_batch(8).await.unwrap();
    /// assert_eq!(&*batch, [3, 4, 5]);
    /// assert_eq!(batch.attempt(0), Some(2));
    /// assert_eq!(batch.commit_all().len(), 3);
    /// assert!(rx.begin_batch(8).await.is_none());
    /// # }
    /// ```
    pub async fn begin_batch(&mut self, max: usize) -> Option<BatchDelivery<'_, T>> {
        assert!(max > 0, "begin_batch: `max` must be at least 1");
        self.drop_held();
        if !Waiting::new(self, max).await {
            return None;
        }
        let local = self.local();
        let items = if local.taken.items.is_empty() {
            local.own.items_mut()
        } else {
            &mut local.taken.items
        };
        let len = max.min(items.len());
        items.make_contiguous();
        self.mark_delivered(len);
        Some(BatchDelivery::new(self.parts(), len))
    }

    /// Starts a transaction on the next item, as [`begin`](Self::begin), and
    /// returns it as an [`OwnedDelivery`]: `'static` and `Send`, to be
    /// handed to a spawned task and ended there, in any order with other
    /// deliveries. The consumer can begin the next one at once; the
    /// channel's order and [`max_in_flight`](crate::ChannelBuilder::max_in_flight)
    /// decide how many are in flight together (in strict order, one: the
    /// next `begin_owned` waits until this one ends).
    ///
    /// With a [`lease`](crate::ChannelBuilder::lease), the delivery must end
    /// (or [`extend`](OwnedDelivery::extend)) within it, or the item goes
    /// back to the queue and ending it fails with
    /// [`DeliveryError::LeaseExpired`](crate::DeliveryError::LeaseExpired).
    ///
    /// Returns `None` once the channel has ended.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`begin`](Self::begin).
    ///
    /// # Panics
    ///
    /// As [`begin`](Self::begin).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, mut rx) = ChannelBuilder::new().unordered().max_in_flight(8).build()?;
    /// for job in 0..100_u64 {
    ///     tx.send(job).await?;
    /// }
    /// drop(tx);
    ///
    /// let mut workers = tokio::task::JoinSet::new();
    /// while let Some(delivery) = rx.begin_owned().await {
    ///     workers.spawn(async move {
    ///         let job = *delivery;
    ///         delivery.commit().map(|_| job) // up to 8 jobs at once
    ///     });
    /// }
    /// let mut total = 0;
    /// while let Some(done) = workers.join_next().await {
    ///     total += done??;
    /// }
    /// assert_eq!(total, 4950);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn begin_owned(&mut self) -> Option<OwnedDelivery<T>> {
        self.drop_held();
        self.give_back_buffer();
        let (item, meta, ticket) = WaitingOwned { rx: self }.await?;
        Some(OwnedDelivery::new(self.home(), item, meta, ticket))
    }

    /// Closes the channel's intake: senders get their values back from now
    /// on (and waiting senders are woken to get theirs), while every item
    /// already sent is still delivered until committed or dead-lettered.
    /// For a receiver over a stream, stops pulling from the stream. Closes
    /// it for every consumer.
    ///
    /// This is the graceful shutdown: close, then keep calling
    /// [`begin`](Self::begin) until it returns `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{SendError, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(4);
    /// tx.send(1).await.unwrap();
    /// rx.close();
    /// assert_eq!(tx.send(2).await, Err(SendError(2)));
    /// assert_eq!(rx.begin().await.unwrap().commit(), 1);
    /// assert!(rx.begin().await.is_none());
    /// # }
    /// ```
    pub fn close(&self) {
        drop(lock(&self.shared.stream).take());
        self.shared.close();
    }

    /// Whether the channel's intake is closed: [`close`](Self::close) was
    /// called (on any consumer). Sends fail from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// let (tx, rx) = channel::<u8>(1);
    /// assert!(!rx.is_closed());
    /// rx.close();
    /// assert!(rx.is_closed() && tx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// A snapshot of the channel's counters and gauges (the same for every
    /// consumer and sender of the channel).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(4);
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// rx.begin().await.unwrap().rollback();
    /// let delivery = rx.begin().await.unwrap();
    /// drop(delivery);
    ///
    /// let m = rx.metrics();
    /// assert_eq!((m.sent, m.delivered, m.redelivered, m.committed), (2, 2, 1, 0));
    /// assert_eq!((m.in_flight, m.queued), (0, 2));
    /// # }
    /// ```
    pub fn metrics(&self) -> ChannelMetrics {
        ChannelMetrics::of(&self.shared)
    }

    /// Takes the next item without waiting and commits it at once — for
    /// draining a channel where redelivery does not matter (a shutdown
    /// that logs what was left).
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing can be delivered now,
    /// [`TryRecvError::Disconnected`] if the channel has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{TryRecvError, channel};
    ///
    /// let (tx, mut rx) = channel(4);
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// drop(tx);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    /// ```
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.drop_held();
        let mut cx = Context::from_waker(Waker::noop());
        let polled = Waiting::new(self, 1).poll_once(&mut cx);
        match polled {
            Poll::Ready(true) => {
                self.mark_delivered(1);
                Ok(self.commit_front())
            }
            Poll::Ready(false) => Err(TryRecvError::Disconnected),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    // ----- waiting for work ----------------------------------------------------

    /// Readies the front of the own buffer or of `taken` for a borrowing
    /// delivery of up to `want` items. `Ready(false)` once the channel has
    /// ended.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<bool> {
        if self.local().alone || self.check_alone() {
            self.poll_own_buffer(cx, want)
        } else {
            if !self.local().own.is_empty() {
                // It was the only consumer and is not anymore: the buffer
                // goes back first, so that the others can take from it.
                self.give_back_buffer();
            }
            // So do items taken ahead for owned deliveries: a borrowing
            // delivery may wait, and nothing may wait behind it.
            self.give_back_ahead();
            self.poll_take(cx, want, Dest::Local)
        }
    }

    /// Whether this consumer may use its own buffer: strict order, and the
    /// only consumer. Remembered, so that the next deliveries skip the check.
    fn check_alone(&mut self) -> bool {
        let alone = self.config.order == OrderKind::Strict && self.shared.consumers() == 1;
        self.local().alone = alone;
        alone
    }

    /// Strict order, only consumer: delivers from its own buffer, filling
    /// it from the channel under one lock when empty.
    fn poll_own_buffer(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<bool> {
        // One unit of tokio's cooperative budget per delivery, as tokio's own
        // channels spend, so a consumer that never runs dry still yields.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            let local = self.local.get_mut();
            if !local.own.is_empty() {
                if (!matches!(local.front, Front::Plain) || self.config.max_attempts.is_some())
                    && !ready!(self.poll_special_front(cx))
                {
                    continue; // the front left for the dead letters
                }
                if want > self.local().own.len() {
                    self.top_up(want);
                }
                coop.made_progress();
                return Poll::Ready(true);
            }
            // The buffer is empty: fill it (and give back the slots its
            // commits owe, so that they are not owed for long).
            self.shared.flush_owed();
            let mut st = self.shared.lock();
            st.consumers.arrive(self.id);
            // Leases of owned deliveries run out, delays come due.
            st.table.settle(&mut Clock::default());
            if st.table.has_dead() {
                drop(st);
                ready!(self.poll_dead_letters(cx));
                continue;
            }
            let local = self.local.get_mut();
            if let Some(not_before) = st.table.drain_strict(&mut local.own) {
                if let Some(at) = not_before {
                    local.front = Front::NotBefore(at);
                }
                // Under the lock: `metrics` derives `sent` from it.
                SoloCounts::add(&self.shared.solo.taken, local.own.len());
                let mut wakers = WakeList::new();
                if std::mem::take(&mut local.registered) {
                    st.consumers.stop(self.id, &mut wakers);
                }
                drop(st);
                wakers.wake_all();
                continue;
            }
            if st.stream_open() {
                drop(st);
                // Ready: an item came (or the stream ended); look again.
                ready!(self.poll_stream(cx));
                continue;
            }
            if let Some(polled) = idle(&self.shared, st, local, self.id, cx).outcome(&coop) {
                return polled;
            }
        }
    }

    /// Takes up to `want` items from the table into `dest`, waiting for one
    /// if there is none. `Ready(false)` once the channel has ended.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
        mut dest: Dest<'_, T>,
    ) -> Poll<bool> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        if let Dest::Owned(out) = &mut dest
            && let Some(got) = self.start_ahead()
        {
            // Taken ahead: handed out without the channel's lock.
            **out = Some(got);
            coop.made_progress();
            return Poll::Ready(true);
        }
        let stamp = self.config.stamp;
        let takes_ahead = self.shared.takes_ahead();
        // The first look moves in only this consumer's own light commits
        // (see `Shared::lock_to_take`); a look that finds nothing to take
        // moves in everyone's before it steals or waits.
        let mut own_only = takes_ahead && matches!(dest, Dest::Owned(_));
        loop {
            let mut clock = Clock::default();
            let mut st = match &self.local.get_mut().ahead {
                Some(cell) if own_only => self.shared.lock_to_take(cell),
                _ => self.shared.lock(),
            };
            st.consumers.arrive(self.id);
            st.table.settle(&mut clock);
            if st.table.has_dead() {
                drop(st);
                ready!(self.poll_dead_letters(cx));
                continue;
            }
            let local = self.local.get_mut();
            if st.table.can_take() {
                match &mut dest {
                    Dest::Local => {
                        let taken = &mut local.taken;
                        st.table
                            .take(want, false, &mut clock, |item, meta, ticket| {
                                taken.items.push_back(item);
                                taken.metas.push_back(meta);
                                taken.tickets.push_back(ticket);
                            });
                    }
                    Dest::Owned(out) if takes_ahead => {
                        let cell = local
                            .ahead
                            .get_or_insert_with(|| st.ahead_of(self.id))
                            .clone();
                        let mut ahead = lock(&cell);
                        let share = st.ahead_share(self.shared.consumers());
                        st.table
                            .reserve(share, |entry| ahead.items.push_back(entry));
                        **out = ahead.start(stamp);
                    }
                    Dest::Owned(out) => {
                        st.table.take(1, true, &mut clock, |item, meta, ticket| {
                            **out = Some((item, meta, ticket));
                        });
                    }
                }
                let mut wakers = WakeList::new();
                if std::mem::take(&mut local.registered) {
                    st.consumers.stop(self.id, &mut wakers);
                }
                // More to take: the next waiting consumer may take it.
                self.shared.wake_one(&mut st, &mut wakers);
                drop(st);
                wakers.wake_all();
                coop.made_progress();
                return Poll::Ready(true);
            }
            if std::mem::take(&mut own_only) && local.ahead.is_some() {
                drop(st);
                continue; // look again with every consumer's commits
            }
            if takes_ahead && matches!(dest, Dest::Owned(_)) && st.give_back_ahead(self.id) {
                // Per key, what it holds waits behind its own deliveries
                // that are out (chains): back to the table, where it waits
                // with its keys busy, rather than held here while this
                // consumer steals or waits.
                let mut wakers = WakeList::new();
                self.shared.wake_one(&mut st, &mut wakers);
                drop(st);
                wakers.wake_all();
                continue;
            }
            if takes_ahead && matches!(dest, Dest::Local) && st.steal_ahead_back(self.id) {
                // Nothing in the table, but another consumer holds items it
                // took ahead: half of them back to the table, to take here.
                continue;
            }
            if takes_ahead && let Dest::Owned(out) = &mut dest {
                // Nothing in the table: half of what another consumer took
                // ahead, rather than wait while it holds items.
                let cell = local
                    .ahead
                    .get_or_insert_with(|| st.ahead_of(self.id))
                    .clone();
                let mut ahead = lock(&cell);
                if st.steal_ahead(self.id, &mut ahead) {
                    **out = ahead.start(stamp);
                    drop(ahead);
                    let mut wakers = WakeList::new();
                    if std::mem::take(&mut local.registered) {
                        st.consumers.stop(self.id, &mut wakers);
                    }
                    drop(st);
                    wakers.wake_all();
                    coop.made_progress();
                    return Poll::Ready(true);
                }
            }
            if st.stream_open() {
                drop(st);
                ready!(self.poll_stream(cx));
                continue;
            }
            if let Some(polled) = idle(&self.shared, st, local, self.id, cx).outcome(&coop) {
                return polled;
            }
        }
    }

    /// Pulls one item from the stream into the table. `Ready(true)` if one
    /// came, `Ready(false)` if the stream ended (or was closed).
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut stream = lock(&self.shared.stream);
        let polled = match stream.as_mut() {
            Some(s) => s.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(item)) => {
                drop(stream);
                self.shared.push_pulled(item);
                Poll::Ready(true)
            }
            Poll::Ready(None) => {
                let ended = stream.take();
                drop(stream);
                drop(ended);
                let mut st = self.shared.lock();
                st.end_stream();
                let mut wakers = WakeList::new();
                self.shared.wake_consumers(&mut st, &mut wakers);
                drop(st);
                wakers.wake_all();
                Poll::Ready(false)
            }
        }
    }

    /// Own buffer, for a batch: adds what is queued (or ready in the
    /// stream), without waiting, toward `want` items.
    fn top_up(&mut self, want: usize) {
        let shared = &self.shared;
        let local = self.local.get_mut();
        let before = local.own.len();
        let mut st = shared.lock();
        st.table.append_fresh(local.own.items_mut());
        // Under the lock: `metrics` derives `sent` from it.
        SoloCounts::add(&shared.solo.taken, local.own.len() - before);
        let stream_open = st.stream_open();
        drop(st);
        if stream_open {
            // A no-op waker: the caller returns ready either way, and the
            // next wait polls the stream with the task's own waker.
            let mut cx = Context::from_waker(Waker::noop());
            let mut stream = lock(&shared.stream);
            while local.own.len() < want {
                let Some(s) = stream.as_mut() else { break };
                match s.as_mut().poll_next(&mut cx) {
                    Poll::Ready(Some(item)) => {
                        local.own.items_mut().push_back(item);
                        shared.count_pulled(1);
                    }
                    Poll::Ready(None) => {
                        *stream = None;
                        shared.lock().end_stream();
                    }
                    Poll::Pending => break,
                }
            }
        }
    }

    // ----- dead letters ----------------------------------------------------------

    /// Own buffer, a front item that needs more than a look: dead-letters
    /// it if it failed or is out of attempts (unless the destination is
    /// closed), waits out its delay, and marks it plain. `Ready(true)`: the
    /// front may be delivered; `Ready(false)`: it left, look again.
    fn poll_special_front(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let max = self.config.max_attempts;
        let closed = self.shared.dead_letters_closed();
        let local = self.local.get_mut();
        let exhausted = max.is_some_and(|max| local.own.attempts(0) >= max) && !closed;
        if matches!(local.front, Front::Failed(_)) || exhausted {
            if ready!(self.poll_dead_letter_front(cx)) {
                return Poll::Ready(false);
            }
            // The destination is closed: deliver it again.
            self.local().front = Front::Plain;
            return Poll::Ready(true);
        }
        let local = self.local.get_mut();
        if let Front::NotBefore(deadline) = local.front {
            ready!(poll_sleep(&mut local.sleep, cx, deadline));
        }
        local.front = Front::Plain;
        Poll::Ready(true)
    }

    /// Own buffer: hands the front item to the dead-letter destination.
    /// `Ready(false)` if the destination is closed: the item is then
    /// delivered again rather than lost.
    fn poll_dead_letter_front(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !ready!(self.poll_dead_letter_room(cx)) {
            self.shared.set_dead_letters_closed();
            return Poll::Ready(false);
        }
        let local = self.local.get_mut();
        let entry = local.own.pop_front_entry();
        let reason = match std::mem::take(&mut local.front) {
            Front::Failed(reason) => DeadLetterReason::Failed(reason),
            _ if entry.meta.panicked => DeadLetterReason::Panicked,
            _ => DeadLetterReason::MaxAttempts,
        };
        match self.send_dead_letter(entry, reason, true) {
            Ok(()) => Poll::Ready(true),
            Err(entry) => {
                // Closed since the slot was reserved: keep the item.
                self.shared.set_dead_letters_closed();
                let local = self.local.get_mut();
                local.own.push_front_entry(entry);
                Poll::Ready(false)
            }
        }
    }

    /// Hands every item the table holds for the dead letters to the
    /// destination (in the table's order), waiting for room as needed.
    fn poll_dead_letters(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !ready!(self.poll_dead_letter_room(cx)) {
                // The destination is closed: give the dead items back to be
                // delivered again.
                self.shared.set_dead_letters_closed();
                let mut st = self.shared.lock();
                while let Some((entry, _)) = st.table.take_dead() {
                    st.table.undead(entry);
                }
                return Poll::Ready(());
            }
            let Some((entry, reason)) = self.shared.lock().table.take_dead() else {
                return Poll::Ready(());
            };
            if let Err(entry) = self.send_dead_letter(entry, reason, false) {
                self.shared.set_dead_letters_closed();
                self.shared.lock().table.undead(entry);
                return Poll::Ready(());
            }
        }
    }

    /// Waits for a slot in the dead-letter channel (if that is the
    /// destination). `Ready(false)` if it is closed.
    fn poll_dead_letter_room(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(Sink::Channel(tx)) = self.sink.as_deref() else {
            return Poll::Ready(true);
        };
        let local = self.local.get_mut();
        if local.dead_letter_slot {
            return Poll::Ready(true);
        }
        match ready!(tx.shared().poll_reserve(cx, &mut local.dead_letter_wait)) {
            Ok(()) => {
                local.dead_letter_slot = true;
                Poll::Ready(true)
            }
            Err(_closed) => Poll::Ready(false),
        }
    }

    /// Hands `entry` to the destination (into the slot
    /// [`poll_dead_letter_room`](Self::poll_dead_letter_room) reserved),
    /// counts it, and frees its slot of this channel. `Err` gives it back
    /// if the dead-letter channel closed meanwhile.
    fn send_dead_letter(
        &mut self,
        entry: Entry<T>,
        reason: DeadLetterReason,
        from_own_buffer: bool,
    ) -> Result<(), Entry<T>> {
        // Counted under one lock: `metrics` derives `sent` from both.
        let count = |shared: &Shared<T>| {
            let mut st = shared.lock();
            st.table.count_dead_lettered();
            if from_own_buffer {
                SoloCounts::add(&shared.solo.removed, 1);
            }
        };
        let letter = DeadLetter::new(entry.item, entry.meta, reason);
        match self.sink.as_deref() {
            None => {
                // No destination (an explicit `fail`): given up on,
                // counted, dropped.
                count(&self.shared);
                self.shared.release(1);
                drop(letter);
            }
            Some(Sink::Channel(tx)) => {
                let local = self.local.get_mut();
                local.dead_letter_slot = false;
                let key = tx.shared().key_of(&letter);
                if let Err(letter) = tx.shared().send_reserved(letter, key) {
                    let (item, meta) = letter.into_entry();
                    return Err(Entry { item, meta });
                }
                count(&self.shared);
                self.shared.release(1);
            }
            Some(Sink::Callback(callback)) => {
                // The channel is consistent before the callback runs, in
                // case it panics.
                count(&self.shared);
                self.shared.release(1);
                (lock(callback))(letter);
            }
        }
        Ok(())
    }

    // ----- used by the deliveries ----------------------------------------------

    /// Counts one more delivery of each of the first `n` items about to be
    /// handed out (the table counted those it handed out itself).
    #[inline]
    fn mark_delivered(&mut self, n: usize) {
        let stamp = self.config.stamp;
        let local = self.local.get_mut();
        debug_assert!(
            !local.held,
            "begin, begin_batch and recv give a held item back first"
        );
        if !local.taken.items.is_empty() {
            return;
        }
        let before = local.own.deliver(n, stamp);
        SoloCounts::add(&self.shared.solo.delivered, n);
        if before > 0 {
            SoloCounts::add(&self.shared.solo.redelivered, before);
        }
    }

    /// The consumer's parts a delivery works on.
    pub(crate) fn parts(&mut self) -> Parts<'_, T> {
        Parts {
            shared: &self.shared,
            local: self.local.get_mut(),
        }
    }

    fn commit_front(&mut self) -> T {
        self.parts().commit_front()
    }

    /// Gives back an item `recv` handed out and nobody committed.
    #[inline]
    fn drop_held(&mut self) {
        let local = self.local();
        if local.held {
            local.held = false;
            self.parts().rollback(1, None, false);
        }
    }

    /// Puts the own buffer back at the head of the channel's queue, in
    /// order (it stops being the only consumer, or is dropped, or begins an
    /// owned delivery, which the table must see).
    fn give_back_buffer(&mut self) {
        let shared = &self.shared;
        let local = self.local.get_mut();
        give_back_buffer(shared, local);
    }

    /// This consumer's [`Home`], made on first use.
    fn home(&mut self) -> Arc<Home<T>> {
        if let Some(home) = &self.local.get_mut().home {
            return Arc::clone(home);
        }
        let cell = match &self.local.get_mut().ahead {
            Some(cell) => Arc::clone(cell),
            None => self.shared.lock().ahead_of(self.id),
        };
        let home = Arc::new(Home {
            shared: Arc::clone(&self.shared),
            cell: Arc::clone(&cell),
        });
        let local = self.local.get_mut();
        local.ahead = Some(cell);
        local.home = Some(Arc::clone(&home));
        home
    }

    /// Hands out the next item this consumer took ahead, if any.
    #[inline]
    fn start_ahead(&mut self) -> Option<(T, Meta, Ticket)> {
        let stamp = self.config.stamp;
        let cell = self.local.get_mut().ahead.as_ref()?;
        lock(cell).start(stamp)
    }

    /// Gives the items this consumer took ahead back to the head of the
    /// channel's queue, for any consumer to take.
    fn give_back_ahead(&mut self) {
        let Some(cell) = self.local.get_mut().ahead.as_ref() else {
            return;
        };
        if lock(cell).items.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        let mut wakers = WakeList::new();
        if st.give_back_ahead(self.id) {
            self.shared.wake_one(&mut st, &mut wakers);
        }
        drop(st);
        wakers.wake_all();
    }

    /// Stops waiting, passing on a wake-up this consumer got and did not
    /// use (its wait was cancelled).
    #[inline]
    fn cancel_wait(&mut self) {
        let local = self.local.get_mut();
        if std::mem::take(&mut local.registered) {
            let mut wakers = WakeList::new();
            self.shared.lock().consumers.stop(self.id, &mut wakers);
            wakers.wake_all();
        }
    }
}

/// See [`Receiver::give_back_buffer`]; also folds the own buffer's counters
/// into the table's.
fn give_back_buffer<T>(shared: &Shared<T>, local: &mut Local<T>) {
    let solo = &shared.solo;
    if local.own.is_empty()
        && SoloCounts::get(&solo.taken) == 0
        && SoloCounts::get(&solo.delivered) == 0
    {
        return;
    }
    let mut st = shared.lock();
    if !local.own.is_empty() {
        local.held = false;
        let (not_before, failed) = match std::mem::take(&mut local.front) {
            Front::Plain => (None, None),
            Front::NotBefore(at) => (Some(at), None),
            Front::Failed(reason) => (None, Some(reason)),
        };
        st.table.restore_strict(&mut local.own, not_before, failed);
    }
    let counts = st.table.counts_mut();
    counts.delivered += SoloCounts::get(&solo.delivered) as u64;
    counts.redelivered += SoloCounts::get(&solo.redelivered) as u64;
    counts.committed += SoloCounts::get(&solo.committed) as u64;
    solo.clear();
}

/// What a delivery borrows from its consumer.
pub(crate) struct Parts<'a, T> {
    shared: &'a Arc<Shared<T>>,
    local: &'a mut Local<T>,
}

impl<'a, T> Parts<'a, T> {
    fn holds_taken(&self) -> bool {
        !self.local.taken.items.is_empty()
    }

    pub(crate) fn front(&self) -> &T {
        let local = &*self.local;
        local
            .taken
            .items
            .front()
            .or_else(|| local.own.items().front())
            .expect("a delivery holds the front item")
    }

    pub(crate) fn attempt(&self, index: usize) -> u32 {
        if self.holds_taken() {
            self.local.taken.metas.get(index).map_or(0, |m| m.attempts)
        } else {
            self.local.own.attempts(index)
        }
    }

    pub(crate) fn batch(&self, len: usize) -> &[T] {
        // `begin_batch` made the deque contiguous, and the batch borrows the
        // consumer mutably, so it still is.
        let items = if self.holds_taken() {
            &self.local.taken.items
        } else {
            self.local.own.items()
        };
        &items.as_slices().0[..len]
    }

    #[inline]
    pub(crate) fn commit_front(&mut self) -> T {
        let local = &mut *self.local;
        if let Some(ticket) = local.taken.tickets.pop_front() {
            local.taken.metas.pop_front();
            let item = local.taken.items.pop_front().expect("in the delivery");
            let ended = self.shared.end(ticket, End::Commit);
            debug_assert!(ended.is_ok(), "a borrowing delivery has no lease");
            return item;
        }
        let item = local.own.pop_front();
        // The slot first: a locked instruction waits for the stores before
        // it, so the bookkeeping goes after.
        self.shared.release_lazy(1);
        if !matches!(local.front, Front::Plain) {
            local.front = Front::Plain;
        }
        SoloCounts::add(&self.shared.solo.committed, 1);
        item
    }

    /// Commits the first `k` of the `len` items of a batch and gives the
    /// others back; returns the committed ones.
    pub(crate) fn commit_first(self, k: usize, len: usize) -> Drain<'a, T> {
        let local = self.local;
        if !local.taken.items.is_empty() {
            // Give back the rest (keeping the first `k` in place), then
            // commit the first `k`, under one lock.
            let mut ends = Vec::with_capacity(len);
            for _ in k..len {
                let item = local.taken.items.remove(k).expect("in the batch");
                local.taken.metas.remove(k);
                let ticket = local.taken.tickets.remove(k).expect("in the batch");
                ends.push((
                    ticket,
                    End::Rollback {
                        item: Some(item),
                        delay: None,
                        panicked: false,
                    },
                ));
            }
            ends.extend(local.taken.tickets.drain(..k).map(|t| (t, End::Commit)));
            local.taken.metas.drain(..k);
            self.shared.end_all(ends);
            return local.taken.items.drain(..k);
        }
        local.front = Front::Plain;
        SoloCounts::add(&self.shared.solo.committed, k);
        SoloCounts::add(&self.shared.solo.released, len - k);
        self.shared.release_lazy(k);
        local.own.drain_front(k)
    }

    /// Gives the first `n` items back: after `delay` if given, else after
    /// the retry policy's delay. `panicked`: the holder is unwinding.
    pub(crate) fn rollback(&mut self, n: usize, delay: Option<Duration>, panicked: bool) {
        let local = &mut *self.local;
        if !local.taken.items.is_empty() {
            let mut ends = Vec::with_capacity(n);
            for _ in 0..n {
                let item = local.taken.items.pop_front().expect("in the delivery");
                local.taken.metas.pop_front();
                let ticket = local.taken.tickets.pop_front().expect("in the delivery");
                ends.push((
                    ticket,
                    End::Rollback {
                        item: Some(item),
                        delay,
                        panicked,
                    },
                ));
            }
            self.shared.end_all(ends);
            return;
        }
        // Own buffer: the items stay at the front; only the wait changes.
        SoloCounts::add(&self.shared.solo.released, n);
        if panicked {
            local.own.set_panicked(n);
        }
        let delay = match delay {
            Some(delay) => Some(delay),
            None => self
                .shared
                .retry_delay(local.own.attempts(0), &mut local.rng),
        };
        local.front = match delay {
            Some(d) if !d.is_zero() => Front::NotBefore(Instant::now() + d),
            _ => Front::Plain,
        };
    }

    /// Gives up on the front item: it goes to the dead letters with `reason`.
    pub(crate) fn fail(&mut self, reason: String) {
        let local = &mut *self.local;
        if let Some(ticket) = local.taken.tickets.pop_front() {
            let item = local.taken.items.pop_front().expect("in the delivery");
            local.taken.metas.pop_front();
            let _ = self.shared.end(
                ticket,
                End::Fail {
                    item: Some(item),
                    reason,
                },
            );
            return;
        }
        SoloCounts::add(&self.shared.solo.released, 1);
        local.front = Front::Failed(reason);
    }
}

/// Waits until a borrowing delivery can start (its items at the front of
/// the own buffer or of `taken`): `false` once the channel has ended. If
/// dropped while the consumer waits, passes on a wake-up it got (a
/// completed wait has unregistered itself).
struct Waiting<'a, T> {
    rx: &'a mut Receiver<T>,
    want: usize,
}

impl<'a, T> Waiting<'a, T> {
    fn new(rx: &'a mut Receiver<T>, want: usize) -> Self {
        Waiting { rx, want }
    }

    fn poll_once(mut self, cx: &mut Context<'_>) -> Poll<bool> {
        Pin::new(&mut self).poll(cx)
    }
}

impl<T> Future for Waiting<'_, T> {
    type Output = bool;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        this.rx.poll_ready(cx, this.want)
    }
}

impl<T> Drop for Waiting<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.rx.cancel_wait();
    }
}

/// Waits until an owned delivery can start and takes its item: `None` once
/// the channel has ended. Passes on a wake-up when dropped, as [`Waiting`].
struct WaitingOwned<'a, T> {
    rx: &'a mut Receiver<T>,
}

impl<T> Future for WaitingOwned<'_, T> {
    type Output = Option<(T, Meta, Ticket)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut got = None;
        let more = ready!(this.rx.poll_take(cx, 1, Dest::Owned(&mut got)));
        Poll::Ready(if more { got } else { None })
    }
}

impl<T> Drop for WaitingOwned<'_, T> {
    fn drop(&mut self) {
        self.rx.cancel_wait();
    }
}

/// What a consumer's look that found nothing to take ends with.
enum Idle {
    /// The channel has ended: nothing will come.
    Ended,
    /// Values or light commits came, or a delay came due, meanwhile.
    LookAgain,
    /// Registered to be woken (and, if something in the table waits for a
    /// time, its timer set).
    Wait,
}

impl Idle {
    /// What the look returns: `None` to look again; the end (a unit of
    /// `coop`'s budget spent on it) or `Pending` otherwise.
    fn outcome(self, coop: &tokio::task::coop::RestoreOnPending) -> Option<Poll<bool>> {
        match self {
            Idle::Ended => {
                coop.made_progress();
                Some(Poll::Ready(false))
            }
            Idle::LookAgain => None,
            Idle::Wait => Some(Poll::Pending),
        }
    }
}

/// Under the lock, for consumer `id` whose look found nothing to take: if
/// the channel has ended, stops its wait and wakes the others to see it;
/// otherwise registers it to be woken, and arms what it may wait on (see
/// [`Shared::arm_for_wait`]).
fn idle<T>(
    shared: &Shared<T>,
    mut st: MutexGuard<'_, State<T>>,
    local: &mut Local<T>,
    id: usize,
    cx: &mut Context<'_>,
) -> Idle {
    if st.ended() {
        let mut wakers = WakeList::new();
        if std::mem::take(&mut local.registered) {
            st.consumers.stop(id, &mut wakers);
        }
        shared.wake_consumers(&mut st, &mut wakers);
        drop(st);
        wakers.wake_all();
        return Idle::Ended;
    }
    st.consumers.wait(id, cx.waker());
    local.registered = true;
    if shared.arm_for_wait(&mut st) {
        return Idle::LookAgain;
    }
    let deadline = st.table.next_deadline();
    drop(st);
    if let Some(deadline) = deadline
        && poll_sleep(&mut local.sleep, cx, deadline).is_ready()
    {
        return Idle::LookAgain;
    }
    Idle::Wait
}

/// Sleeps until `deadline` with the consumer's timer, allocated once and
/// reset after.
fn poll_sleep(
    sleep: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    deadline: Instant,
) -> Poll<()> {
    if Instant::now() >= deadline {
        return Poll::Ready(());
    }
    let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut().poll(cx)
}

/// A seed for a consumer's jitter: distinct per consumer, and no
/// dependency for it.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

impl<T> Clone for Receiver<T> {
    /// Another consumer of the same channel. If this one was the only
    /// consumer and kept items in its own buffer, they go back to the head
    /// of the channel's queue first, in order, so that both can take them.
    fn clone(&self) -> Self {
        // `clone` takes `&self`: no `&mut self` method, and so no
        // delivery, can be running, and nothing else borrows the cell.
        let mut local = self.local.borrow_mut();
        local.alone = false;
        give_back_buffer(&self.shared, &mut local);
        drop(local);
        let id = self.shared.add_consumer();
        Receiver {
            config: self.config,
            shared: Arc::clone(&self.shared),
            sink: self.sink.clone(),
            id,
            local: RefCell::new(Local::new(seed())),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.drop_held();
        self.give_back_buffer();
        let local = self.local.get_mut();
        if let Some(Sink::Channel(tx)) = self.sink.as_deref() {
            if local.dead_letter_wait.is_waiting() {
                tx.shared().cancel_wait(&mut local.dead_letter_wait);
            }
            if std::mem::take(&mut local.dead_letter_slot) {
                tx.shared().release(1);
            }
        }
        // The last consumer's channel drops what is left, outside the lock.
        drop(self.shared.drop_consumer(self.id));
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("consumer", &self.id)
            .field("order", &self.config.order)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}
