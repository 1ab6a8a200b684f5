//! [`channel`] and [`ChannelBuilder`]: capacity, order, limits, lease, retry
//! policy and the dead-letter destination, validated into a
//! [`ConfigError`].

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use async_patterns_core::__private::loom::{Arc, Mutex};
use async_patterns_core::{ConfigError, RetryPolicy};
use futures_core::Stream;

use crate::dead_letter::{DeadLetter, Sink};
use crate::receiver::Receiver;
use crate::sender::Sender;
use crate::shared::{KeyFn, MAX_CAPACITY, Shared};
use crate::table::{OrderKind, Rules, Table};

/// The capacity a [`ChannelBuilder`] uses unless told otherwise.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{ChannelBuilder, DEFAULT_CAPACITY};
///
/// let (tx, _rx) = ChannelBuilder::new().build().unwrap();
/// for i in 0..DEFAULT_CAPACITY {
///     tx.try_send(i).unwrap();
/// }
/// assert!(tx.try_send(0).unwrap_err().is_full());
/// ```
pub const DEFAULT_CAPACITY: usize = 1024;

/// A channel that holds up to `capacity` uncommitted items, in strict
/// order, with no attempt limit: the shorthand for
/// `ChannelBuilder::new().capacity(capacity).build()`.
///
/// `capacity` counts every item sent and not yet committed — queued, being
/// processed, or given back — so it bounds the channel's memory exactly and
/// senders wait while consumers retry.
///
/// # Panics
///
/// If `capacity` is 0 (or above 2<sup>30</sup>), as
/// `tokio::sync::mpsc::channel` does; the [`ChannelBuilder`] reports the
/// same as a [`ConfigError`] instead.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{TrySendError, channel};
///
/// let (tx, _rx) = channel(2);
/// tx.try_send(1).unwrap();
/// tx.try_send(2).unwrap();
/// assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
/// ```
///
/// ```should_panic
/// let _ = async_patterns_txn_channel::channel::<u8>(0); // panics
/// ```
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    match ChannelBuilder::new().capacity(capacity).build() {
        Ok(pair) => pair,
        Err(e) => panic!("txn-channel: {e}"),
    }
}

/// The order a channel's consumers deliver items in.
enum Order<T> {
    Strict,
    PerKey(KeyFn<T>),
    Unordered,
}

/// Configures a transactional channel (or a receiver over a stream).
///
/// | setting | default | accepted |
/// |---|---|---|
/// | [`capacity`](Self::capacity) | [`DEFAULT_CAPACITY`] (1024) | 1 to 2<sup>30</sup> |
/// | order: [`strict_order`](Self::strict_order), [`order_by_key`](Self::order_by_key), [`unordered`](Self::unordered) | strict | — |
/// | [`max_in_flight`](Self::max_in_flight) | unlimited (strict order: 1) | at least 1; 1 in strict order |
/// | [`lease`](Self::lease) | none: a delivery is yours until it ends | more than zero |
/// | [`retry_policy`](Self::retry_policy) | none: a rollback is delivered again at once | any [`RetryPolicy`] |
/// | [`max_attempts`](Self::max_attempts) | unlimited | at least 1, with a dead-letter destination |
/// | [`dead_letter`](Self::dead_letter) / [`on_dead_letter`](Self::on_dead_letter) | none | — |
///
/// **Which order when.** Strict (the default) delivers one item at a time,
/// in the order sent, to whichever consumer asks: a pipeline stage whose
/// items depend on each other. Per key delivers items of the same key one
/// at a time and in order, and different keys in parallel (SQS FIFO message
/// groups, Kafka partitions): events per account, per device. Unordered
/// delivers as many items as [`max_in_flight`](Self::max_in_flight) allows
/// to as many consumers as ask: independent jobs.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
/// use async_patterns_core::RetryPolicy;
/// use std::time::Duration;
///
/// #[derive(Clone)]
/// struct Event {
///     account: u64,
/// }
///
/// let (tx, rx) = ChannelBuilder::<Event>::new()
///     .capacity(4096)
///     .order_by_key(|event| event.account)
///     .max_in_flight(64)
///     .lease(Duration::from_secs(30))
///     .retry_policy(RetryPolicy::default())
///     .max_attempts(5)
///     .on_dead_letter(|letter: DeadLetter<Event>| eprintln!("gave up: {}", letter.reason()))
///     .build()?;
/// # drop((tx, rx));
///
/// let err = ChannelBuilder::<u8>::new().max_attempts(3).build().unwrap_err();
/// assert_eq!(err.field(), "dead_letter");
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
pub struct ChannelBuilder<T> {
    capacity: usize,
    order: Order<T>,
    max_in_flight: Option<usize>,
    lease: Option<Duration>,
    copy: Option<fn(&T) -> T>,
    retry: Option<RetryPolicy>,
    max_attempts: Option<u32>,
    dead_letter: Option<Sink<T>>,
}

impl<T> Default for ChannelBuilder<T> {
    /// The same as [`ChannelBuilder::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// let (tx, rx) = ChannelBuilder::<u8>::default().build().unwrap();
    /// # drop((tx, rx));
    /// ```
    fn default() -> Self {
        ChannelBuilder::new()
    }
}

impl<T> ChannelBuilder<T> {
    /// A builder with every setting at its default (see the table above).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().capacity(16).build().unwrap();
    /// tx.send("hello").await.unwrap();
    /// assert_eq!(rx.begin().await.unwrap().commit(), "hello");
    /// # }
    /// ```
    pub fn new() -> Self {
        ChannelBuilder {
            capacity: DEFAULT_CAPACITY,
            order: Order::Strict,
            max_in_flight: None,
            lease: None,
            copy: None,
            retry: None,
            max_attempts: None,
            dead_letter: None,
        }
    }

    /// How many items may be in the channel and not yet committed — queued,
    /// in flight, or given back. Senders wait (or `try_send` fails) while it
    /// is reached. Not used by
    /// [`build_from_stream`](Self::build_from_stream): a stream is only
    /// pulled when an item is needed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// let (tx, _rx) = ChannelBuilder::new().capacity(1).build().unwrap();
    /// tx.try_send(1).unwrap();
    /// assert!(tx.try_send(2).unwrap_err().is_full());
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Strict order, the default: one delivery in flight at a time (of one
    /// item, or one batch), items in the order they were sent, to whichever
    /// consumer asks. A given-back item comes first again; a delayed one
    /// (`retry_after`, the retry policy) holds the whole queue until it is
    /// due — that is what strict means. With one consumer this is the
    /// fastest mode: the consumer takes everything queued into a buffer of
    /// its own under one lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().strict_order().build().unwrap();
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// let first = rx.begin_owned().await.unwrap();
    /// let mut other = rx.clone();
    /// // Nothing else is delivered while 1 is in flight.
    /// assert!(other.try_recv().is_err());
    /// first.rollback().unwrap();
    /// assert_eq!(*other.begin().await.unwrap(), 1);
    /// # }
    /// ```
    pub fn strict_order(mut self) -> Self {
        self.order = Order::Strict;
        self
    }

    /// Per-key order: items for which `key` returns the same value are
    /// never in flight together and are delivered in the order they were
    /// sent; items of different keys are delivered in parallel, to as many
    /// consumers (or owned deliveries) as ask, up to
    /// [`max_in_flight`](Self::max_in_flight). A delayed item holds only its
    /// key. Keys take turns: after a key's item ends, its next item queues
    /// behind the keys already waiting — except for items a consumer took
    /// ahead for its owned deliveries (no lease, no `max_in_flight`): it
    /// takes a key's queued items together and hands out each as soon as the
    /// one before it ended, while the other consumers take the other keys.
    ///
    /// `key` runs on the sending side, once per item, outside the
    /// channel's lock. Keys are compared by a 64-bit hash: two keys with
    /// the same hash are ordered together, which never breaks the order of
    /// either.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new()
    ///     .order_by_key(|(account, _): &(char, u32)| *account)
    ///     .build()
    ///     .unwrap();
    /// for event in [('a', 1), ('a', 2), ('b', 1)] {
    ///     tx.send(event).await.unwrap();
    /// }
    /// let a1 = rx.begin_owned().await.unwrap();
    /// let b1 = rx.begin_owned().await.unwrap(); // 'a' is busy: 'b' passes
    /// assert_eq!((*a1, *b1), (('a', 1), ('b', 1)));
    /// a1.commit().unwrap();
    /// assert_eq!(*rx.begin_owned().await.unwrap(), ('a', 2));
    /// # }
    /// ```
    pub fn order_by_key<K, F>(mut self, key: F) -> Self
    where
        K: Hash,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.order = Order::PerKey(Box::new(move |item| {
            let mut hasher = DefaultHasher::new();
            key(item).hash(&mut hasher);
            hasher.finish()
        }));
        self
    }

    /// No order: any item may be delivered while others are in flight, up to
    /// [`max_in_flight`](Self::max_in_flight); a given-back item is
    /// delivered again as soon as possible, and a delayed one lets the
    /// others pass.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().unordered().build().unwrap();
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// let one = rx.begin_owned().await.unwrap();
    /// let two = rx.begin_owned().await.unwrap(); // both in flight
    /// assert_eq!(two.commit(), Ok(2));
    /// assert_eq!(one.commit(), Ok(1));
    /// # }
    /// ```
    pub fn unordered(mut self) -> Self {
        self.order = Order::Unordered;
        self
    }

    /// How many items may be in flight (delivered and not ended) at once,
    /// over every consumer: a consumer asking for more waits until one
    /// ends. In strict order it is 1 by definition, and setting anything
    /// else is an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().unordered().max_in_flight(1).build().unwrap();
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// let first = rx.begin_owned().await.unwrap();
    /// assert!(rx.try_recv().is_err()); // the one slot is taken
    /// first.commit().unwrap();
    /// assert_eq!(rx.try_recv(), Ok(2));
    ///
    /// let err = ChannelBuilder::<u8>::new().max_in_flight(4).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `max_in_flight`: got 4, expected 1 in strict order (choose order_by_key or unordered for more)");
    /// # }
    /// ```
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// Spaces the redeliveries of given-back items: a rollback (or a
    /// dropped delivery, a panic, an expired lease) waits the policy's
    /// delay for that attempt — `initial_delay` after the first, growing by
    /// `multiplier` up to `max_delay`, jittered — so that a flapping
    /// dependency does not burn every attempt in microseconds. An explicit
    /// `retry_after(d)` wins. Only the policy's delays are used: when to
    /// give up is the channel's [`max_attempts`](Self::max_attempts).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::{Jitter, RetryPolicy};
    /// use async_patterns_txn_channel::ChannelBuilder;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let policy = RetryPolicy::builder()
    ///     .initial_delay(Duration::from_secs(1))
    ///     .jitter(Jitter::None)
    ///     .build()
    ///     .unwrap();
    /// let (tx, mut rx) = ChannelBuilder::new().retry_policy(policy).build().unwrap();
    /// tx.send("flaky").await.unwrap();
    /// let start = Instant::now();
    /// rx.begin().await.unwrap().rollback(); // attempt 1 failed: 1 s
    /// rx.begin().await.unwrap().rollback(); // attempt 2 failed: 2 s
    /// let third = rx.begin().await.unwrap();
    /// assert_eq!(third.attempt(), 3);
    /// assert_eq!(start.elapsed(), Duration::from_secs(3));
    /// # }
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// How many times an item may be delivered without being committed.
    /// When an item's last allowed delivery ends without a commit, it goes
    /// to the dead-letter destination (with its attempts, the reason and its
    /// delivery times) before anything else is delivered.
    ///
    /// Needs a destination ([`dead_letter`](Self::dead_letter) or
    /// [`on_dead_letter`](Self::on_dead_letter)): an item is never dropped
    /// silently.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
    ///
    /// let built = ChannelBuilder::<u8>::new()
    ///     .max_attempts(3)
    ///     .on_dead_letter(|_: DeadLetter<u8>| {})
    ///     .build();
    /// assert!(built.is_ok());
    ///
    /// let err = ChannelBuilder::<u8>::new()
    ///     .max_attempts(0)
    ///     .on_dead_letter(|_| {})
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `max_attempts`: got 0, expected at least 1");
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sends items the channel gives up on to `tx`, as [`DeadLetter`]s.
    /// Replaces any earlier destination.
    ///
    /// A consumer waits for room in the dead-letter channel (cancel-safely)
    /// before it delivers the next item. If the dead-letter channel is
    /// closed, an exhausted item is delivered again — with
    /// [`attempt`](crate::Delivery::attempt) above the limit — rather than
    /// dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = channel::<DeadLetter<&str>>(4);
    /// let (tx, mut rx) = ChannelBuilder::new()
    ///     .max_attempts(1)
    ///     .dead_letter(dead_tx)
    ///     .build()
    ///     .unwrap();
    /// tx.send("poison").await.unwrap();
    /// drop(tx);
    /// rx.begin().await.unwrap().rollback();
    /// assert!(rx.begin().await.is_none());
    /// assert_eq!(dead_rx.begin().await.unwrap().item(), &"poison");
    /// # }
    /// ```
    pub fn dead_letter(mut self, tx: Sender<DeadLetter<T>>) -> Self {
        self.dead_letter = Some(Sink::Channel(tx));
        self
    }

    /// Hands items the channel gives up on to `callback`, on the task of
    /// the consumer that finds them, one call at a time, before that
    /// consumer delivers its next item. Replaces any earlier destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = tokio::sync::mpsc::unbounded_channel();
    /// let (tx, mut rx) = ChannelBuilder::new()
    ///     .max_attempts(2)
    ///     .on_dead_letter(move |d: DeadLetter<u32>| {
    ///         let _ = dead_tx.send((d.attempts(), d.into_inner()));
    ///     })
    ///     .build()
    ///     .unwrap();
    /// tx.send(13).await.unwrap();
    /// drop(tx);
    /// while let Some(delivery) = rx.begin().await {
    ///     delivery.rollback();
    /// }
    /// assert_eq!(dead_rx.recv().await, Some((2, 13)));
    /// # }
    /// ```
    pub fn on_dead_letter<F>(mut self, callback: F) -> Self
    where
        F: FnMut(DeadLetter<T>) + Send + 'static,
    {
        self.dead_letter = Some(Sink::Callback(Mutex::new(Box::new(callback))));
        self
    }

    /// Creates the channel: its sender and its first consumer (clone the
    /// [`Receiver`] for more).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting if `capacity` is 0 or above
    /// 2<sup>30</sup>, `max_in_flight` is 0 (or not 1 in strict order),
    /// the lease is zero, `max_attempts` is 0, or `max_attempts` is set
    /// without a dead-letter destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    ///
    /// let (tx, rx) = ChannelBuilder::new().capacity(8).build().unwrap();
    /// tx.try_send(1_u8).unwrap();
    /// # drop(rx);
    ///
    /// let err = ChannelBuilder::<u8>::new().capacity(0).build().unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// ```
    pub fn build(self) -> Result<(Sender<T>, Receiver<T>), ConfigError> {
        let capacity = ConfigError::in_range("capacity", self.capacity, 1, MAX_CAPACITY)?;
        let (shared, sink) = self.into_parts(capacity, None)?;
        Ok((
            Sender::new(Arc::clone(&shared)),
            Receiver::new(shared, sink),
        ))
    }

    /// Creates a receiver over `stream`, with this builder's order, limits,
    /// lease, retry policy, attempt limit and dead-letter destination
    /// (`capacity` does not apply: the stream is pulled only when a
    /// delivery needs an item).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), `capacity` aside.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = channel(4);
    /// let mut rx = ChannelBuilder::new()
    ///     .max_attempts(2)
    ///     .dead_letter(dead_tx)
    ///     .build_from_stream(futures::stream::iter([1, 2, 3]))
    ///     .unwrap();
    /// let mut done = Vec::new();
    /// while let Some(delivery) = rx.begin().await {
    ///     if *delivery == 2 {
    ///         continue; // 2 always fails
    ///     }
    ///     done.push(delivery.commit());
    /// }
    /// assert_eq!(done, [1, 3]);
    /// let dead: DeadLetter<i32> = dead_rx.begin().await.unwrap().commit();
    /// assert_eq!((dead.attempts(), dead.into_inner()), (2, 2));
    /// # }
    /// ```
    pub fn build_from_stream<S>(self, stream: S) -> Result<Receiver<T>, ConfigError>
    where
        S: Stream<Item = T> + Send + 'static,
    {
        let (shared, sink) = self.into_parts(MAX_CAPACITY, Some(Box::pin(stream)))?;
        Ok(Receiver::new(shared, sink))
    }

    #[allow(clippy::type_complexity)]
    fn into_parts(
        self,
        capacity: usize,
        stream: Option<crate::shared::BoxStream<T>>,
    ) -> Result<(Arc<Shared<T>>, Option<Arc<Sink<T>>>), ConfigError> {
        if let Some(attempts) = self.max_attempts {
            ConfigError::at_least("max_attempts", attempts, 1)?;
            if self.dead_letter.is_none() {
                return Err(ConfigError::new(
                    "dead_letter",
                    "none",
                    "a dead-letter channel or callback when `max_attempts` is set",
                ));
            }
        }
        if let Some(lease) = self.lease {
            ConfigError::at_least("lease", lease, Duration::from_nanos(1))?;
        }
        let (order, key) = match self.order {
            Order::Strict => (OrderKind::Strict, None),
            Order::PerKey(key) => (OrderKind::PerKey, Some(key)),
            Order::Unordered => (OrderKind::Unordered, None),
        };
        let max_in_flight = match (order, self.max_in_flight) {
            (_, Some(0)) => return Err(ConfigError::at_least("max_in_flight", 0, 1).unwrap_err()),
            (OrderKind::Strict, Some(n)) if n != 1 => {
                return Err(ConfigError::new(
                    "max_in_flight",
                    n.to_string(),
                    "1 in strict order (choose order_by_key or unordered for more)",
                ));
            }
            (_, Some(n)) => n,
            (_, None) => usize::MAX,
        };
        let rules = Rules {
            order,
            max_in_flight,
            max_attempts: self.max_attempts,
            lease: self.lease,
            copy: self.copy,
            retry: self.retry,
            stamp: self.dead_letter.is_some(),
        };
        let shared = Arc::new(Shared::new(capacity, Table::new(rules), key, stream));
        Ok((shared, self.dead_letter.map(Arc::new)))
    }
}

impl<T: Clone> ChannelBuilder<T> {
    /// Gives every [owned delivery](crate::Receiver::begin_owned) a lease
    /// (a visibility timeout): a delivery not ended within `lease` of its
    /// start goes back to the queue — its attempt counted, to be delivered
    /// again (after the retry policy's delay), or dead-lettered with
    /// [`LeaseExpired`](async_patterns_core::DeadLetterReason::LeaseExpired)
    /// if that was its last attempt — and ending it afterwards fails with
    /// [`DeliveryError::LeaseExpired`](crate::DeliveryError::LeaseExpired).
    /// A holder working on a long item keeps it with
    /// [`extend`](crate::OwnedDelivery::extend).
    ///
    /// So that the item can go back even if its holder never lets go (a
    /// task stuck forever), the channel keeps a copy of each leased item
    /// while it is in flight: hence `T: Clone`. Put large items behind an
    /// `Arc`. Borrowing deliveries ([`begin`](crate::Receiver::begin),
    /// [`recv`](crate::Receiver::recv)) have no lease: their ends cannot
    /// fail, and their consumer is the one task that can end them.
    ///
    /// An expiry takes effect when its holder ends the delivery, or when a
    /// consumer waiting for an item reaches the deadline, whichever is
    /// first; [`ChannelMetrics::expired`](crate::ChannelMetrics::expired)
    /// counts it then.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().lease(Duration::from_secs(30)).build().unwrap();
    /// tx.send("job").await.unwrap();
    /// let stuck = rx.begin_owned().await.unwrap();
    /// tokio::spawn(async move {
    ///     let _held = stuck;
    ///     std::future::pending::<()>().await; // never ends
    /// });
    /// // 30 s later the item is delivered again, to whoever waits.
    /// let again = rx.begin_owned().await.unwrap();
    /// assert_eq!((*again, again.attempt()), ("job", 2));
    /// assert_eq!(rx.metrics().expired, 1);
    ///
    /// let err = ChannelBuilder::<u8>::new().lease(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "lease");
    /// # }
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self.copy = Some(T::clone);
        self
    }
}

impl<T> fmt::Debug for ChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("capacity", &self.capacity)
            .field(
                "order",
                &match self.order {
                    Order::Strict => "strict",
                    Order::PerKey(_) => "per key",
                    Order::Unordered => "unordered",
                },
            )
            .field("max_in_flight", &self.max_in_flight)
            .field("lease", &self.lease)
            .field("retry_policy", &self.retry)
            .field("max_attempts", &self.max_attempts)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}
