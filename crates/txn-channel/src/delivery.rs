//! [`Delivery`] and [`BatchDelivery`]: the guards of one transaction that
//! borrow their consumer, so only one is open per consumer at a time. An
//! item leaves the channel only when a commit takes it; every other end —
//! and dropping a guard, by an early return, a panic, or cancellation —
//! gives it back.

use std::fmt;
use std::future::{Future, ready};
use std::iter::FusedIterator;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::time::Duration;

use async_patterns_core::Transaction;

use crate::error::DeliveryError;
use crate::receiver::Parts;

/// One item delivered by [`Receiver::begin`](crate::Receiver::begin), not yet committed.
///
/// Derefs to the item. End it with [`commit`](Self::commit) to take the item
/// out of the channel, or with [`rollback`](Self::rollback) or
/// [`retry_after`](Self::retry_after) to have it delivered again. Dropping
/// it rolls back.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(4);
/// tx.send(String::from("job")).await.unwrap();
///
/// // A panic while the delivery is held rolls it back.
/// let delivery = rx.begin().await.unwrap();
/// let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
///     let _held = delivery;
///     panic!("processing failed");
/// }));
/// assert!(crashed.is_err());
///
/// let again = rx.begin().await.unwrap();
/// assert_eq!((again.as_str(), again.attempt()), ("job", 2));
/// # }
/// ```
#[must_use = "dropping a delivery rolls it back: the item will be delivered again"]
pub struct Delivery<'a, T> {
    rx: Parts<'a, T>,
}

impl<'a, T> Delivery<'a, T> {
    pub(crate) fn new(rx: Parts<'a, T>) -> Self {
        Delivery { rx }
    }

    /// Ends the delivery with `end`; its drop (a rollback) does not run.
    #[inline]
    fn end<R>(self, end: impl FnOnce(&mut Parts<'a, T>) -> R) -> R {
        let mut this = ManuallyDrop::new(self);
        end(&mut this.rx)
    }

    /// How many times this item has been delivered, this time included: 1
    /// on its first delivery.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter(["a"]));
    /// assert_eq!(rx.begin().await.unwrap().attempt(), 1);
    /// assert_eq!(rx.begin().await.unwrap().attempt(), 2);
    /// # }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.rx.attempt(0)
    }

    /// Takes the item out of the channel, freeing its slot: it will not be
    /// delivered again.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter([7]));
    /// assert_eq!(rx.begin().await.unwrap().commit(), 7);
    /// assert!(rx.begin().await.is_none());
    /// # }
    /// ```
    #[inline]
    pub fn commit(self) -> T {
        self.end(|rx| rx.commit_front())
    }

    /// Gives the item back, to be delivered again: at once, or after the
    /// delay the channel's [retry policy](crate::ChannelBuilder::retry_policy)
    /// gives this attempt. If that was its last allowed attempt, the next
    /// delivery hands it to the dead letters instead. The same as dropping
    /// the delivery, said out loud.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter([1, 2]));
    /// rx.begin().await.unwrap().rollback();
    /// assert_eq!(*rx.begin().await.unwrap(), 1);
    /// # }
    /// ```
    pub fn rollback(self) {
        self.end(|rx| rx.rollback(1, None, false));
    }

    /// Gives the item back to be delivered again no sooner than `delay`
    /// from now, whatever the retry policy says. In strict order the queue
    /// waits for it instead of passing it by; in per-key order its key
    /// waits; unordered, other items pass it.
    ///
    /// The wait happens on tokio's clock, so tests under
    /// `tokio::time::pause()` do not really wait. If this was the item's
    /// last allowed attempt, it goes to the dead-letter destination at once
    /// instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter(["flaky"]));
    /// let start = Instant::now();
    /// rx.begin().await.unwrap().retry_after(Duration::from_secs(5));
    /// let again = rx.begin().await.unwrap();
    /// assert!(start.elapsed() >= Duration::from_secs(5));
    /// assert_eq!(again.attempt(), 2);
    /// # }
    /// ```
    pub fn retry_after(self, delay: Duration) {
        self.end(|rx| rx.rollback(1, Some(delay), false));
    }

    /// Gives up on the item now, whatever attempts it has left: the next
    /// delivery hands it to the dead letters with
    /// [`DeadLetterReason::Failed(reason)`](async_patterns_core::DeadLetterReason::Failed).
    /// Without a dead-letter destination it is dropped, and counted in
    /// [`ChannelMetrics::dead_lettered`](crate::ChannelMetrics::dead_lettered).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, DeadLetterReason, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (dead_tx, mut dead_rx) = channel::<DeadLetter<&str>>(4);
    /// let (tx, mut rx) = ChannelBuilder::new().dead_letter(dead_tx).build().unwrap();
    /// tx.send("{oops").await.unwrap();
    /// tx.send("{}").await.unwrap();
    /// drop(tx);
    /// rx.begin().await.unwrap().fail("not json");
    /// assert_eq!(rx.begin().await.unwrap().commit(), "{}");
    /// let dead = dead_rx.begin().await.unwrap().commit();
    /// assert_eq!((dead.into_inner(), 1), ("{oops", 1));
    /// # }
    /// ```
    pub fn fail(self, reason: impl Into<String>) {
        let reason = reason.into();
        self.end(|rx| rx.fail(reason));
    }
}

impl<T> Drop for Delivery<'_, T> {
    /// Not ended: a rollback (a panic's, if unwinding).
    fn drop(&mut self) {
        self.rx.rollback(1, None, std::thread::panicking());
    }
}

impl<T> Deref for Delivery<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.rx.front()
    }
}

/// The handler's view of a borrowing delivery: its ends never fail (a
/// borrowing delivery has no lease), and `commit` drops the item.
///
/// # Examples
///
/// ```
/// use async_patterns_core::Transaction;
/// use async_patterns_txn_channel::channel;
///
/// async fn handle<D: Transaction<Item = u32>>(delivery: D) -> Result<(), D::Error> {
///     if delivery.attempt() < 2 {
///         return delivery.rollback().await;
///     }
///     delivery.commit().await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(4);
/// tx.send(1).await.unwrap();
/// drop(tx);
/// while let Some(delivery) = rx.begin().await {
///     handle(delivery).await.unwrap();
/// }
/// assert_eq!((rx.metrics().delivered, rx.metrics().committed), (2, 1));
/// # }
/// ```
impl<T: Send> Transaction for Delivery<'_, T> {
    type Item = T;
    type Error = DeliveryError;

    fn attempt(&self) -> u32 {
        Delivery::attempt(self)
    }

    fn commit(self) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        drop(Delivery::commit(self));
        ready(Ok(()))
    }

    fn rollback(self) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        Delivery::rollback(self);
        ready(Ok(()))
    }

    fn retry_after(
        self,
        delay: Duration,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        Delivery::retry_after(self, delay);
        ready(Ok(()))
    }

    fn fail(
        self,
        reason: impl Into<String>,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        Delivery::fail(self, reason);
        ready(Ok(()))
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("item", &**self)
            .field("attempt", &self.attempt())
            .finish()
    }
}

/// Up to `max` items delivered together by
/// [`Receiver::begin_batch`](crate::Receiver::begin_batch), not yet committed.
///
/// Derefs to a slice of the items, oldest first. End it with
/// [`commit_all`](Self::commit_all), [`commit_first`](Self::commit_first),
/// [`rollback`](Self::rollback) or [`retry_after`](Self::retry_after).
/// Dropping it rolls back every item.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(64);
/// for i in 0..10 {
///     tx.send(i).await.unwrap();
/// }
/// drop(tx);
///
/// let mut total = 0;
/// while let Some(batch) = rx.begin_batch(4).await {
///     total += batch.iter().sum::<i32>(); // "process" the batch
///     batch.commit_all();
/// }
/// assert_eq!(total, 45);
/// # }
/// ```
#[must_use = "dropping a batch rolls it back: its items will be delivered again"]
pub struct BatchDelivery<'a, T> {
    /// `None` once ended.
    rx: Option<Parts<'a, T>>,
    len: usize,
}

impl<'a, T> BatchDelivery<'a, T> {
    pub(crate) fn new(rx: Parts<'a, T>, len: usize) -> Self {
        BatchDelivery { rx: Some(rx), len }
    }

    fn parts(&self) -> &Parts<'a, T> {
        self.rx.as_ref().expect("not ended yet")
    }

    /// How many times the item at `index` of the batch has been delivered,
    /// this time included; `None` if `index` is out of the batch. Earlier
    /// items have been delivered at least as often as later ones.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter([1, 2, 3]));
    /// rx.begin().await.unwrap().rollback(); // 1 delivered once
    /// let batch = rx.begin_batch(3).await.unwrap();
    /// assert_eq!(&*batch, [1, 2, 3]);
    /// assert_eq!(batch.attempt(0), Some(2));
    /// assert_eq!(batch.attempt(2), Some(1));
    /// assert_eq!(batch.attempt(3), None);
    /// # }
    /// ```
    pub fn attempt(&self, index: usize) -> Option<u32> {
        (index < self.len).then(|| self.parts().attempt(index))
    }

    /// Takes every item of the batch out of the channel and returns them in
    /// order.
    ///
    /// The items are committed at once: dropping the returned iterator
    /// drops the items it has not yielded.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter(["a", "b"]));
    /// let batch = rx.begin_batch(10).await.unwrap();
    /// assert_eq!(batch.commit_all().collect::<Vec<_>>(), ["a", "b"]);
    /// assert!(rx.begin_batch(10).await.is_none());
    /// # }
    /// ```
    pub fn commit_all(self) -> Committed<'a, T> {
        let len = self.len;
        self.commit_first(len)
    }

    /// Takes the first `k` items of the batch out of the channel and returns
    /// them in order; the others come back, in order, to be delivered again.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter([1, 2, 3]));
    /// let batch = rx.begin_batch(3).await.unwrap();
    /// // Items 1 and 2 were processed; 3 failed.
    /// assert_eq!(batch.commit_first(2).collect::<Vec<_>>(), [1, 2]);
    /// let again = rx.begin().await.unwrap();
    /// assert_eq!((*again, again.attempt()), (3, 2));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If `k` is larger than the batch, [`len`](slice::len): the batch is
    /// then rolled back as it unwinds, and nothing is lost.
    pub fn commit_first(mut self, k: usize) -> Committed<'a, T> {
        assert!(
            k <= self.len,
            "commit_first: k = {k} is more than the {} items of the batch",
            self.len
        );
        // The parts leave the guard, whose drop then does nothing.
        let rx = self.rx.take().expect("not ended yet");
        Committed {
            drain: rx.commit_first(k, self.len),
        }
    }

    /// Gives every item back: the next delivery returns them again, in
    /// order. The same as dropping the batch, said out loud.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter([1, 2]));
    /// rx.begin_batch(2).await.unwrap().rollback();
    /// let batch = rx.begin_batch(2).await.unwrap();
    /// assert_eq!((&*batch, batch.attempt(1)), (&[1, 2][..], Some(2)));
    /// # }
    /// ```
    pub fn rollback(mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.rollback(self.len, None, false);
        }
    }

    /// Gives every item back, to be delivered again no sooner than `delay`
    /// from now; see [`Delivery::retry_after`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::Receiver;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut rx = Receiver::from_stream(futures::stream::iter([1, 2]));
    /// let start = Instant::now();
    /// rx.begin_batch(2).await.unwrap().retry_after(Duration::from_millis(250));
    /// let batch = rx.begin_batch(2).await.unwrap();
    /// assert!(start.elapsed() >= Duration::from_millis(250));
    /// assert_eq!(batch.len(), 2);
    /// # }
    /// ```
    pub fn retry_after(mut self, delay: Duration) {
        if let Some(mut rx) = self.rx.take() {
            rx.rollback(self.len, Some(delay), false);
        }
    }
}

impl<T> Drop for BatchDelivery<'_, T> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.rollback(self.len, None, std::thread::panicking());
        }
    }
}

impl<T> Deref for BatchDelivery<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.parts().batch(self.len)
    }
}

impl<T: fmt::Debug> fmt::Debug for BatchDelivery<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchDelivery")
            .field("items", &&**self)
            .field("first_attempt", &self.attempt(0))
            .finish()
    }
}

/// The items a batch commit took out of the channel, in order; from
/// [`BatchDelivery::commit_all`] and [`BatchDelivery::commit_first`].
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::Receiver;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut rx = Receiver::from_stream(futures::stream::iter([1, 2, 3]));
/// let committed = rx.begin_batch(3).await.unwrap().commit_all();
/// assert_eq!(committed.len(), 3);
/// assert_eq!(committed.rev().collect::<Vec<_>>(), [3, 2, 1]);
/// # }
/// ```
pub struct Committed<'a, T> {
    drain: std::collections::vec_deque::Drain<'a, T>,
}

impl<T> Iterator for Committed<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.drain.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.drain.size_hint()
    }
}

impl<T> DoubleEndedIterator for Committed<'_, T> {
    fn next_back(&mut self) -> Option<T> {
        self.drain.next_back()
    }
}

impl<T> ExactSizeIterator for Committed<'_, T> {}

impl<T> FusedIterator for Committed<'_, T> {}

impl<T> fmt::Debug for Committed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("remaining", &self.drain.len())
            .finish()
    }
}
