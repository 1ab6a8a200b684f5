//! [`TransactionalChannel`] and its builder: capacity, the attempt limit and
//! the dead-letter destination, validated into a
//! [`ConfigError`](async_patterns_core::ConfigError).

use std::fmt;

use async_patterns_core::ConfigError;
use futures_core::Stream;

use crate::chan::{Chan, MAX_CAPACITY, RxHandle};
use crate::dead_letter::{DeadLetter, DeadLetterChannel, DeadLetterSink};
use crate::loom::Arc;
use crate::receiver::TransactionalReceiver;
use crate::sender::Sender;

/// The capacity a [`TransactionalChannelBuilder`] uses unless told otherwise.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{DEFAULT_CAPACITY, TransactionalChannel};
///
/// let (tx, _rx) = TransactionalChannel::builder().build().unwrap();
/// for i in 0..DEFAULT_CAPACITY {
///     tx.try_send(i).unwrap();
/// }
/// assert!(tx.try_send(0).unwrap_err().is_full());
/// ```
pub const DEFAULT_CAPACITY: usize = 1024;

/// Creates transactional channels: [`new`](Self::new) for the common case,
/// [`builder`](Self::builder) to limit attempts and dead-letter poison items.
///
/// This type is never instantiated; it only names the constructors, as in
/// the seed recipe (`TransactionalChannel::new(100)`).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::TransactionalChannel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = TransactionalChannel::new(100);
/// tx.send("hello").await.unwrap();
/// assert_eq!(rx.begin().await.unwrap().commit(), "hello");
/// # }
/// ```
#[derive(Debug)]
pub enum TransactionalChannel {}

impl TransactionalChannel {
    /// A channel that holds up to `capacity` uncommitted items, with no
    /// attempt limit.
    ///
    /// `capacity` counts every item sent and not yet committed — queued,
    /// being processed, or rolled back — so it bounds the channel's memory
    /// exactly and senders wait while the consumer retries.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{TransactionalChannel, TrySendError};
    ///
    /// let (tx, _rx) = TransactionalChannel::new(2);
    /// tx.try_send(1).unwrap();
    /// tx.try_send(2).unwrap();
    /// assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    /// ```
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (or above `usize::MAX / 2`); the
    /// [`builder`](Self::builder) reports the same as a
    /// [`ConfigError`](async_patterns_core::ConfigError) instead.
    #[allow(
        clippy::new_ret_no_self,
        reason = "the seed recipe's constructor returns the two halves"
    )]
    pub fn new<T>(capacity: usize) -> (Sender<T>, TransactionalReceiver<T>) {
        match Self::builder().capacity(capacity).build() {
            Ok(pair) => pair,
            Err(e) => panic!("TransactionalChannel::new: {e}"),
        }
    }

    /// A builder for a channel (or a receiver over a stream) with an attempt
    /// limit and a dead-letter destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// let (dead_tx, _dead_rx) = TransactionalChannel::new::<DeadLetter<u64>>(16);
    /// let (tx, rx) = TransactionalChannel::builder()
    ///     .capacity(256)
    ///     .max_attempts(5)
    ///     .dead_letter(dead_tx)
    ///     .build()
    ///     .unwrap();
    /// # let _: (async_patterns_txn_channel::Sender<u64>, _) = (tx, rx);
    ///
    /// let err = TransactionalChannel::builder::<u64>().capacity(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `capacity`: got 0, expected between 1 and 9223372036854775807");
    /// ```
    pub fn builder<T>() -> TransactionalChannelBuilder<T> {
        TransactionalChannelBuilder {
            capacity: DEFAULT_CAPACITY,
            max_attempts: None,
            dead_letter: None,
        }
    }
}

/// Configures a transactional channel; from [`TransactionalChannel::builder`].
///
/// | setting | default | accepted |
/// |---|---|---|
/// | [`capacity`](Self::capacity) | [`DEFAULT_CAPACITY`] (1024) | 1 to `usize::MAX / 2` |
/// | [`max_attempts`](Self::max_attempts) | unlimited | at least 1, with a dead-letter destination |
/// | [`dead_letter`](Self::dead_letter) / [`on_dead_letter`](Self::on_dead_letter) | none | — |
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::TransactionalChannel;
///
/// let err = TransactionalChannel::builder::<u8>().max_attempts(3).build().unwrap_err();
/// assert_eq!(err.field(), "dead_letter");
/// ```
pub struct TransactionalChannelBuilder<T> {
    capacity: usize,
    max_attempts: Option<u32>,
    dead_letter: Option<DeadLetterSink<T>>,
}

impl<T> TransactionalChannelBuilder<T> {
    /// How many items may be in the channel and not yet committed — queued,
    /// being processed, or rolled back. Senders wait (or `try_send` fails)
    /// while it is reached. Not used by
    /// [`build_from_stream`](Self::build_from_stream): a stream is only
    /// pulled when an item is needed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// let (tx, _rx) = TransactionalChannel::builder().capacity(1).build().unwrap();
    /// tx.try_send(1).unwrap();
    /// assert!(tx.try_send(2).unwrap_err().is_full());
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many times an item may be delivered without being committed.
    /// When an item's last allowed delivery ends without a commit, the next
    /// delivery hands the item to the dead-letter destination, with its
    /// attempt count, and moves on to the next item.
    ///
    /// Needs a destination ([`dead_letter`](Self::dead_letter) or
    /// [`on_dead_letter`](Self::on_dead_letter)): an item is never dropped
    /// silently.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// let built = TransactionalChannel::builder::<u8>()
    ///     .max_attempts(3)
    ///     .on_dead_letter(|_: DeadLetter<u8>| {})
    ///     .build();
    /// assert!(built.is_ok());
    ///
    /// let err = TransactionalChannel::builder::<u8>()
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

    /// Sends items that used up their attempts to `tx`, as
    /// [`DeadLetter`]s. Replaces any earlier destination.
    ///
    /// The receiver waits for room in the dead-letter channel (cancel-safely)
    /// before it delivers the next item. If the dead-letter channel is
    /// closed, an exhausted item is delivered again — with
    /// [`attempt`](crate::Delivery::attempt) above the limit — rather than
    /// dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = TransactionalChannel::new::<DeadLetter<&str>>(4);
    /// let (tx, mut rx) = TransactionalChannel::builder()
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
        self.dead_letter = Some(DeadLetterSink::Channel(DeadLetterChannel::new(tx)));
        self
    }

    /// Hands items that used up their attempts to `callback`, on the
    /// receiver's task, before the next item is delivered. Replaces any
    /// earlier destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = tokio::sync::mpsc::unbounded_channel();
    /// let (tx, mut rx) = TransactionalChannel::builder()
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
        self.dead_letter = Some(DeadLetterSink::Callback(Box::new(callback)));
        self
    }

    /// Creates the channel.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting if `capacity` is 0 or above
    /// `usize::MAX / 2`, if `max_attempts` is 0, or if `max_attempts` is set
    /// without a dead-letter destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// let (tx, rx) = TransactionalChannel::builder().capacity(8).build().unwrap();
    /// tx.try_send(1_u8).unwrap();
    /// # drop(rx);
    ///
    /// let err = TransactionalChannel::builder::<u8>().capacity(0).build().unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// ```
    pub fn build(self) -> Result<(Sender<T>, TransactionalReceiver<T>), ConfigError> {
        let capacity = ConfigError::in_range("capacity", self.capacity, 1, MAX_CAPACITY)?;
        let (max_attempts, dead_letter) = self.validate_policy()?;
        let chan = Arc::new(Chan::new(capacity));
        let rx = RxHandle(Arc::clone(&chan));
        Ok((
            Sender::new(chan),
            TransactionalReceiver::new_channel(rx, max_attempts, dead_letter),
        ))
    }

    /// Creates a transactional receiver over `stream`, with this builder's
    /// attempt limit and dead-letter destination (`capacity` does not
    /// apply).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `max_attempts` is 0, or set without a
    /// dead-letter destination.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = TransactionalChannel::new(4);
    /// let mut rx = TransactionalChannel::builder()
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
    /// assert_eq!((dead.into_inner(), 2), (2, 2));
    /// # }
    /// ```
    pub fn build_from_stream<S>(self, stream: S) -> Result<TransactionalReceiver<T>, ConfigError>
    where
        S: Stream<Item = T> + Send + 'static,
    {
        let (max_attempts, dead_letter) = self.validate_policy()?;
        Ok(TransactionalReceiver::new_stream(
            Box::pin(stream),
            max_attempts,
            dead_letter,
        ))
    }

    #[allow(clippy::type_complexity)]
    fn validate_policy(self) -> Result<(Option<u32>, Option<DeadLetterSink<T>>), ConfigError> {
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
        Ok((self.max_attempts, self.dead_letter))
    }
}

impl<T> fmt::Debug for TransactionalChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalChannelBuilder")
            .field("capacity", &self.capacity)
            .field("max_attempts", &self.max_attempts)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}
