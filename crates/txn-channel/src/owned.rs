//! [`OwnedDelivery`]: one item in flight, owned by whoever holds it — a
//! spawned task, a worker pool — and ended there, in any order with the
//! channel's other deliveries.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::ops::Deref;
use std::time::Duration;

use async_patterns_core::__private::loom::Arc;
use async_patterns_core::Transaction;
use tokio::time::Instant;

use crate::error::DeliveryError;
use crate::shared::Home;
use crate::table::{End, Meta, Ticket};

/// One item delivered by [`Receiver::begin_owned`](crate::Receiver::begin_owned),
/// not yet ended: `'static` and `Send` (for a `Send` item), to be moved to
/// another task.
///
/// Derefs to the item. End it with [`commit`](Self::commit) to take the item
/// out of the channel, [`rollback`](Self::rollback) or
/// [`retry_after`](Self::retry_after) to have it delivered again, or
/// [`fail`](Self::fail) to give up on it (a dead letter). Dropping it — on
/// an early return, a `?`, a panic unwinding, or with the task that held it
/// — rolls back. Each end fails with [`DeliveryError::LeaseExpired`] if the
/// delivery outlived its [lease](crate::ChannelBuilder::lease): the item
/// was given back meanwhile (keep it alive with [`extend`](Self::extend)).
///
/// It implements core's [`Transaction`], so a handler written against that
/// trait runs on it (and on txn-jetstream's deliveries) unchanged.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{ChannelBuilder, OwnedDelivery};
///
/// # #[tokio::main]
/// # async fn main() {
/// let (tx, mut rx) = ChannelBuilder::new().unordered().build().unwrap();
/// for n in 1..=3_u32 {
///     tx.send(n).await.unwrap();
/// }
/// drop(tx);
///
/// let mut tasks = Vec::new();
/// while let Some(delivery) = rx.begin_owned().await {
///     tasks.push(tokio::spawn(async move {
///         let n = *delivery;
///         if n == 2 && delivery.attempt() == 1 {
///             panic!("crashed on 2"); // rolled back: 2 comes again
///         }
///         delivery.commit().unwrap()
///     }));
/// }
/// let mut done = Vec::new();
/// for task in tasks {
///     if let Ok(n) = task.await {
///         done.push(n);
///     }
/// }
/// done.sort();
/// assert_eq!(done, [1, 2, 3]);
/// # }
/// ```
#[must_use = "dropping a delivery rolls it back: the item will be delivered again"]
pub struct OwnedDelivery<T> {
    /// Its consumer's [`Home`]: the channel, and the cell that counts the
    /// delivery's commit if it is light (see
    /// [`Shared::commit_light`](crate::shared::Shared::commit_light)). Held
    /// rather than the channel itself, so that taking and ending deliveries
    /// touches a count of the consumer's own, not one every consumer shares.
    home: Arc<Home<T>>,
    /// `None` once ended.
    item: Option<T>,
    meta: Meta,
    ticket: Ticket,
}

impl<T> OwnedDelivery<T> {
    pub(crate) fn new(home: Arc<Home<T>>, item: T, meta: Meta, ticket: Ticket) -> Self {
        OwnedDelivery {
            home,
            item: Some(item),
            meta,
            ticket,
        }
    }

    /// How many times this item has been delivered, this time included: 1
    /// on its first delivery.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// tx.send(()).await.unwrap();
    /// assert_eq!(rx.begin_owned().await.unwrap().attempt(), 1); // dropped
    /// assert_eq!(rx.begin_owned().await.unwrap().attempt(), 2);
    /// # }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.meta.attempts
    }

    /// Takes the item out of the channel, freeing its slot, and hands it
    /// over.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] if the lease ran out first: the item
    /// is not committed (it was given back, to be delivered again).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// tx.send(7).await.unwrap();
    /// drop(tx);
    /// let delivery = rx.begin_owned().await.unwrap();
    /// let job = tokio::spawn(async move { delivery.commit() });
    /// assert_eq!(job.await.unwrap(), Ok(7));
    /// assert!(rx.begin_owned().await.is_none());
    /// # }
    /// ```
    pub fn commit(mut self) -> Result<T, DeliveryError> {
        let item = self.item.take().expect("not ended yet");
        if let Ticket::Light(meta) = &self.ticket
            && self.home.shared.commit_light(&self.home.cell, meta)
        {
            return Ok(item);
        }
        self.home
            .shared
            .end(self.ticket, End::Commit)
            .map(|_| item)
            .map_err(|_| DeliveryError::LeaseExpired)
    }

    /// Gives the item back, to be delivered again (to any consumer) after
    /// the delay the channel's [retry policy](crate::ChannelBuilder::retry_policy)
    /// gives this attempt — at once without one. If this was its last
    /// allowed attempt, it goes to the dead letters instead. The same as
    /// dropping the delivery, said out loud.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] if the lease ran out first (the item
    /// was given back then).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// tx.send("again").await.unwrap();
    /// rx.begin_owned().await.unwrap().rollback().unwrap();
    /// assert_eq!(rx.begin_owned().await.unwrap().attempt(), 2);
    /// # }
    /// ```
    pub fn rollback(mut self) -> Result<(), DeliveryError> {
        self.end_with(None)
    }

    /// Gives the item back, to be delivered again no sooner than `delay`
    /// from now (on tokio's clock), whatever the retry policy says. In
    /// per-key order its key waits with it; in unordered order other items
    /// pass it; in strict order the whole queue waits. If this was its last
    /// allowed attempt, it goes to the dead letters at once instead.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] if the lease ran out first.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().unordered().build().unwrap();
    /// tx.send("busy").await.unwrap();
    /// tx.send("fine").await.unwrap();
    /// let start = Instant::now();
    /// let first = rx.begin_owned().await.unwrap();
    /// first.retry_after(Duration::from_secs(5)).unwrap();
    /// // Unordered: "fine" passes the delayed item.
    /// assert_eq!(rx.begin_owned().await.unwrap().commit(), Ok("fine"));
    /// let again = rx.begin_owned().await.unwrap();
    /// assert_eq!((*again, again.attempt()), ("busy", 2));
    /// assert!(start.elapsed() >= Duration::from_secs(5));
    /// # }
    /// ```
    pub fn retry_after(mut self, delay: Duration) -> Result<(), DeliveryError> {
        self.end_with(Some(delay))
    }

    /// Gives up on the item now, whatever attempts it has left: it goes to
    /// the dead letters with [`DeadLetterReason::Failed(reason)`](async_patterns_core::DeadLetterReason::Failed).
    /// Without a dead-letter destination it is dropped, and counted in
    /// [`ChannelMetrics::dead_lettered`](crate::ChannelMetrics::dead_lettered).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] if the lease ran out first.
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
    /// drop(tx);
    /// rx.begin_owned().await.unwrap().fail("not json").unwrap();
    /// assert!(rx.begin_owned().await.is_none());
    /// let dead = dead_rx.begin().await.unwrap().commit();
    /// assert_eq!(dead.reason(), &DeadLetterReason::Failed("not json".into()));
    /// assert_eq!(dead.attempts(), 1);
    /// # }
    /// ```
    pub fn fail(mut self, reason: impl Into<String>) -> Result<(), DeliveryError> {
        let item = self.item.take().expect("not ended yet");
        self.home
            .shared
            .end_owned(
                &self.home.cell,
                self.ticket,
                End::Fail {
                    item: Some(item),
                    reason: reason.into(),
                },
            )
            .map(drop)
            .map_err(|_| DeliveryError::LeaseExpired)
    }

    /// Keeps the delivery yours for `by` from now: its lease now ends then,
    /// if that is later than it ended before. Call it while working on a
    /// long item. Without a [lease](crate::ChannelBuilder::lease) a
    /// delivery is yours until it ends, and this does nothing.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] if the lease has already run out:
    /// the item was given back, and this delivery can only be dropped (or
    /// ended, which fails the same way).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::ChannelBuilder;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().lease(Duration::from_secs(10)).build().unwrap();
    /// tx.send("long job").await.unwrap();
    /// let delivery = rx.begin_owned().await.unwrap();
    /// for _ in 0..5 {
    ///     tokio::time::sleep(Duration::from_secs(8)).await; // a step of the work
    ///     delivery.extend(Duration::from_secs(10)).unwrap();
    /// }
    /// assert_eq!(delivery.commit(), Ok("long job")); // 40 s in, still ours
    /// # }
    /// ```
    pub fn extend(&self, by: Duration) -> Result<(), DeliveryError> {
        self.home
            .shared
            .extend(self.ticket, by)
            .map_err(|_| DeliveryError::LeaseExpired)
    }

    /// When the lease ends, on tokio's clock: `None` without a
    /// [lease](crate::ChannelBuilder::lease), or once it has run out and
    /// someone noticed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{ChannelBuilder, channel};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, mut rx) = ChannelBuilder::new().lease(Duration::from_secs(30)).build().unwrap();
    /// tx.send(1).await.unwrap();
    /// let delivery = rx.begin_owned().await.unwrap();
    /// assert_eq!(delivery.lease_deadline(), Some(Instant::now() + Duration::from_secs(30)));
    ///
    /// let (tx, mut rx) = channel(1);
    /// tx.send(1).await.unwrap();
    /// assert_eq!(rx.begin_owned().await.unwrap().lease_deadline(), None);
    /// # }
    /// ```
    pub fn lease_deadline(&self) -> Option<Instant> {
        self.home.shared.lock().table.deadline(self.ticket)
    }

    fn end_with(&mut self, delay: Option<Duration>) -> Result<(), DeliveryError> {
        let item = self.item.take().expect("not ended yet");
        self.home
            .shared
            .end_owned(
                &self.home.cell,
                self.ticket,
                End::Rollback {
                    item: Some(item),
                    delay,
                    panicked: false,
                },
            )
            .map(drop)
            .map_err(|_| DeliveryError::LeaseExpired)
    }
}

impl<T> Drop for OwnedDelivery<T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            // Expired already: the item was given back then; nothing to do.
            let _ = self.home.shared.end_owned(
                &self.home.cell,
                self.ticket,
                End::Rollback {
                    item: Some(item),
                    delay: None,
                    panicked: std::thread::panicking(),
                },
            );
        }
    }
}

impl<T> Deref for OwnedDelivery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.item.as_ref().expect("not ended yet")
    }
}

impl<T: fmt::Debug> fmt::Debug for OwnedDelivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedDelivery")
            .field("item", &self.item)
            .field("attempt", &self.meta.attempts)
            .finish_non_exhaustive()
    }
}

/// The handler's view: the same ends, as futures that are ready at once
/// (nothing in-process to wait for), with the item dropped on commit.
///
/// # Examples
///
/// ```
/// use async_patterns_core::Transaction;
/// use async_patterns_txn_channel::channel;
///
/// async fn handle<D: Transaction<Item = u32>>(delivery: D) -> Result<(), D::Error> {
///     if *delivery % 2 == 0 {
///         delivery.commit().await
///     } else {
///         delivery.fail("odd").await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(4);
/// tx.send(2).await.unwrap();
/// let delivery = rx.begin_owned().await.unwrap();
/// tokio::spawn(handle(delivery)).await.unwrap().unwrap();
/// assert_eq!(rx.metrics().committed, 1);
/// # }
/// ```
impl<T: Send> Transaction for OwnedDelivery<T> {
    type Item = T;
    type Error = DeliveryError;

    fn attempt(&self) -> u32 {
        OwnedDelivery::attempt(self)
    }

    fn commit(self) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        let done: Ready<_> = ready(OwnedDelivery::commit(self).map(drop));
        done
    }

    fn rollback(self) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        ready(OwnedDelivery::rollback(self))
    }

    fn retry_after(
        self,
        delay: Duration,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        ready(OwnedDelivery::retry_after(self, delay))
    }

    fn fail(
        self,
        reason: impl Into<String>,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        ready(OwnedDelivery::fail(self, reason))
    }
}
