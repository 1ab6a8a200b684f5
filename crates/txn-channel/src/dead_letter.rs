//! [`DeadLetter`]: an item the channel gave up on — delivered as often as
//! allowed, failed by its consumer, out of lease or panicked on its last
//! attempt — with why and when, and where it goes: a channel or a callback,
//! instead of blocking the queue forever.

use std::fmt;

use async_patterns_core::__private::loom::Mutex;
use async_patterns_core::DeadLetterReason;
use tokio::time::Instant;

use crate::sender::Sender;
use crate::table::Meta;

/// An item taken out of a channel because the channel gave up on it, with
/// the facts: its [`reason`](Self::reason), how many
/// [`attempts`](Self::attempts) it had, and when it was
/// [first](Self::first_delivered) and [last](Self::last_delivered)
/// delivered.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, DeadLetterReason, channel};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (dead_tx, mut dead_rx) = channel::<DeadLetter<&str>>(8);
/// let (tx, mut rx) = ChannelBuilder::new()
///     .capacity(8)
///     .max_attempts(2)
///     .dead_letter(dead_tx)
///     .build()?;
/// tx.send("poison").await?;
/// tx.send("fine").await?;
///
/// rx.begin().await.unwrap().rollback(); // attempt 1 fails
/// rx.begin().await.unwrap().rollback(); // attempt 2 fails: that was the last
/// let next = rx.begin().await.unwrap(); // "poison" left for the dead letters
/// assert_eq!(*next, "fine");
/// next.commit();
///
/// let dead = dead_rx.begin().await.unwrap().commit();
/// assert_eq!(dead.attempts(), 2);
/// assert_eq!(dead.reason(), &DeadLetterReason::MaxAttempts);
/// assert!(dead.first_delivered() <= dead.last_delivered());
/// assert_eq!(dead.into_inner(), "poison");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<T> {
    item: T,
    attempts: u32,
    reason: DeadLetterReason,
    first_delivered: Instant,
    last_delivered: Instant,
}

impl<T> DeadLetter<T> {
    pub(crate) fn new(item: T, meta: Meta, reason: DeadLetterReason) -> Self {
        // Deliveries record their times whenever there is a destination; an
        // item never delivered (none is: a dead item was delivered at least
        // once) would get "now".
        let (first, last) = match meta.times {
            Some(times) => (times.first, times.last),
            None => {
                let now = Instant::now();
                (now, now)
            }
        };
        DeadLetter {
            item,
            attempts: meta.attempts,
            reason,
            first_delivered: first,
            last_delivered: last,
        }
    }

    /// The item and the meta it came with, to be kept when the
    /// dead-letter channel refuses it.
    pub(crate) fn into_entry(self) -> (T, Meta) {
        let meta = Meta {
            attempts: self.attempts,
            times: Some(crate::table::Times {
                first: self.first_delivered,
                last: self.last_delivered,
            }),
            ..Meta::default()
        };
        (self.item, meta)
    }

    /// The item.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = ChannelBuilder::new()
    ///     .max_attempts(1)
    ///     .on_dead_letter(|d: DeadLetter<u8>| assert_eq!(*d.item(), 4))
    ///     .build_from_stream(futures::stream::iter([4_u8]))
    ///     .unwrap();
    /// rx.begin().await.unwrap().rollback();
    /// assert!(rx.begin().await.is_none()); // 4 went to the callback
    /// # }
    /// ```
    pub fn item(&self) -> &T {
        &self.item
    }

    /// How many times the item was delivered before it was given up on.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dead = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&dead);
    /// let mut rx = ChannelBuilder::new()
    ///     .max_attempts(3)
    ///     .on_dead_letter(move |d: DeadLetter<u8>| sink.lock().unwrap().push(d.attempts()))
    ///     .build_from_stream(futures::stream::iter([1_u8]))
    ///     .unwrap();
    /// while let Some(delivery) = rx.begin().await {
    ///     delivery.rollback(); // always fails
    /// }
    /// assert_eq!(*dead.lock().unwrap(), [3]);
    /// # }
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why the channel gave up on the item: its last attempt was its
    /// [`max_attempts`](crate::ChannelBuilder::max_attempts)-th
    /// ([`MaxAttempts`](DeadLetterReason::MaxAttempts)), its consumer
    /// [failed](crate::Delivery::fail) it ([`Failed`](DeadLetterReason::Failed)),
    /// or the last attempt ran out of [lease](crate::ChannelBuilder::lease)
    /// ([`LeaseExpired`](DeadLetterReason::LeaseExpired)) or ended in a
    /// panic ([`Panicked`](DeadLetterReason::Panicked)).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, DeadLetterReason};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = tokio::sync::mpsc::unbounded_channel();
    /// let mut rx = ChannelBuilder::new()
    ///     .on_dead_letter(move |d: DeadLetter<&str>| dead_tx.send(d).unwrap())
    ///     .build_from_stream(futures::stream::iter(["not json"]))
    ///     .unwrap();
    /// rx.begin().await.unwrap().fail("malformed");
    /// assert!(rx.begin().await.is_none());
    /// let dead = dead_rx.recv().await.unwrap();
    /// assert_eq!(dead.reason(), &DeadLetterReason::Failed("malformed".into()));
    /// # }
    /// ```
    pub fn reason(&self) -> &DeadLetterReason {
        &self.reason
    }

    /// When the item was first delivered, on tokio's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = tokio::sync::mpsc::unbounded_channel();
    /// let mut rx = ChannelBuilder::new()
    ///     .max_attempts(2)
    ///     .on_dead_letter(move |d: DeadLetter<u8>| dead_tx.send(d).unwrap())
    ///     .build_from_stream(futures::stream::iter([7_u8]))
    ///     .unwrap();
    /// let start = tokio::time::Instant::now();
    /// rx.begin().await.unwrap().retry_after(Duration::from_secs(60));
    /// rx.begin().await.unwrap().rollback(); // 60 s later, the last attempt
    /// assert!(rx.begin().await.is_none());
    /// let dead = dead_rx.recv().await.unwrap();
    /// assert_eq!(dead.first_delivered(), start);
    /// assert_eq!(dead.last_delivered() - dead.first_delivered(), Duration::from_secs(60));
    /// # }
    /// ```
    pub fn first_delivered(&self) -> Instant {
        self.first_delivered
    }

    /// When the item was last delivered (the attempt that ended it), on
    /// tokio's clock; see [`first_delivered`](Self::first_delivered).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = tokio::sync::mpsc::unbounded_channel();
    /// let mut rx = ChannelBuilder::new()
    ///     .max_attempts(1)
    ///     .on_dead_letter(move |d: DeadLetter<u8>| dead_tx.send(d).unwrap())
    ///     .build_from_stream(futures::stream::iter([7_u8]))
    ///     .unwrap();
    /// rx.begin().await.unwrap().rollback();
    /// assert!(rx.begin().await.is_none());
    /// let dead = dead_rx.recv().await.unwrap();
    /// assert_eq!(dead.first_delivered(), dead.last_delivered()); // one attempt
    /// # }
    /// ```
    pub fn last_delivered(&self) -> Instant {
        self.last_delivered
    }

    /// The item, by value.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = channel(1);
    /// let mut rx = ChannelBuilder::new()
    ///     .max_attempts(1)
    ///     .dead_letter(dead_tx)
    ///     .build_from_stream(futures::stream::iter([String::from("bad")]))
    ///     .unwrap();
    /// rx.begin().await.unwrap().rollback();
    /// assert!(rx.begin().await.is_none());
    /// let dead: DeadLetter<String> = dead_rx.begin().await.unwrap().commit();
    /// assert_eq!(dead.into_inner(), "bad");
    /// # }
    /// ```
    pub fn into_inner(self) -> T {
        self.item
    }
}

/// Where dead letters go.
pub(crate) enum Sink<T> {
    Channel(Sender<DeadLetter<T>>),
    /// Called on the consumer's task that found the dead item, one call at
    /// a time.
    Callback(Mutex<Box<dyn FnMut(DeadLetter<T>) + Send>>),
}

impl<T> fmt::Debug for Sink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Channel(_) => f.write_str("Channel"),
            Sink::Callback(_) => f.write_str("Callback"),
        }
    }
}
