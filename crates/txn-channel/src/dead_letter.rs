//! [`DeadLetter`]: an item that failed as many times as the channel allows,
//! and where it goes — a channel or a callback — instead of blocking the
//! queue forever.

use std::fmt;
use std::task::{Context, Poll};

use crate::chan::WaitSlot;
use crate::sender::Sender;

/// An item taken out of a channel because it was delivered
/// [`max_attempts`](crate::TransactionalChannelBuilder::max_attempts) times
/// without being committed, with the number of those attempts.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (dead_tx, mut dead_rx) = TransactionalChannel::new::<DeadLetter<&str>>(8);
/// let (tx, mut rx) = TransactionalChannel::builder()
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
/// assert_eq!(dead.into_inner(), "poison");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<T> {
    item: T,
    attempts: u32,
}

impl<T> DeadLetter<T> {
    pub(crate) fn new(item: T, attempts: u32) -> Self {
        DeadLetter { item, attempts }
    }

    pub(crate) fn into_parts(self) -> (T, u32) {
        (self.item, self.attempts)
    }

    /// The item.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = TransactionalChannel::builder()
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
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dead = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&dead);
    /// let mut rx = TransactionalChannel::builder()
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

    /// The item, by value.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = TransactionalChannel::new(1);
    /// let mut rx = TransactionalChannel::builder()
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
pub(crate) enum DeadLetterSink<T> {
    Channel(DeadLetterChannel<T>),
    Callback(Box<dyn FnMut(DeadLetter<T>) + Send>),
}

impl<T> fmt::Debug for DeadLetterSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterSink::Channel(_) => f.write_str("Channel"),
            DeadLetterSink::Callback(_) => f.write_str("Callback"),
        }
    }
}

/// A dead-letter channel and this receiver's place in line for one of its
/// slots. The place lives here, not in a future, so that a `begin` cancelled
/// while the dead-letter channel is full keeps it.
pub(crate) struct DeadLetterChannel<T> {
    tx: Sender<DeadLetter<T>>,
    slot: WaitSlot,
}

impl<T> DeadLetterChannel<T> {
    pub(crate) fn new(tx: Sender<DeadLetter<T>>) -> Self {
        DeadLetterChannel {
            tx,
            slot: WaitSlot::default(),
        }
    }

    /// Waits for a slot; `Ready(false)` if the dead-letter channel is closed.
    pub(crate) fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.tx
            .chan()
            .poll_reserve(cx, &mut self.slot)
            .map(|r| r.is_ok())
    }

    /// Sends into the slot [`poll_reserve`](Self::poll_reserve) got, or hands
    /// the letter back if the channel closed since.
    pub(crate) fn send_reserved(&self, letter: DeadLetter<T>) -> Result<(), DeadLetter<T>> {
        self.tx.chan().send_reserved(letter)
    }
}

impl<T> Drop for DeadLetterChannel<T> {
    fn drop(&mut self) {
        if self.slot.is_waiting() {
            self.tx.chan().cancel_wait(&mut self.slot);
        }
    }
}
