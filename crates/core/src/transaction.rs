//! The handler's view of a transactional delivery, shared by the in-process
//! channel (txn-channel) and the durable one (txn-jetstream), so that moving
//! a consumer from one to the other changes its constructor, not its handler.

use std::future::Future;
use std::ops::Deref;
use std::time::Duration;

/// One delivery of an item that stays queued until the consumer ends it:
/// [`commit`](Transaction::commit) removes it,
/// [`rollback`](Transaction::rollback) and
/// [`retry_after`](Transaction::retry_after) deliver it again (to this or
/// another consumer), [`fail`](Transaction::fail) gives up on it (a dead
/// letter with the reason). Dropping a delivery without ending it is a
/// rollback.
///
/// Implemented by txn-channel's `OwnedDelivery` (and its borrowing
/// `Delivery`) and by txn-jetstream's `Delivery`. Write a handler against
/// this trait and it runs on either.
///
/// # Examples
///
/// ```
/// use async_patterns_core::Transaction;
/// use std::time::Duration;
///
/// /// Parses an order; a malformed one is given up on, a busy
/// /// dependency means "again in a second".
/// async fn handle<D>(delivery: D) -> Result<(), D::Error>
/// where
///     D: Transaction<Item = String>,
/// {
///     if delivery.parse::<u64>().is_err() {
///         return delivery.fail("not a number").await;
///     }
///     if delivery.attempt() < 2 {
///         return delivery.retry_after(Duration::from_secs(1)).await;
///     }
///     delivery.commit().await
/// }
/// ```
pub trait Transaction: Deref<Target = <Self as Transaction>::Item> + Send + Sized {
    /// What was delivered.
    type Item: ?Sized;
    /// Why ending the delivery failed — e.g. its lease ran out first, so the
    /// item was no longer this consumer's to end, or the broker could not be
    /// reached.
    type Error: std::error::Error + Send + Sync + 'static;

    /// How many times the item has been delivered, this delivery included
    /// (1 the first time).
    fn attempt(&self) -> u32;

    /// Done: remove the item for good.
    fn commit(self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Not done: deliver the item again, after the delay the queue's retry
    /// policy gives this attempt (at once if it has none).
    fn rollback(self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Not done: deliver the item again, not before `delay`.
    fn retry_after(self, delay: Duration) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Give up on the item now: it goes to the dead letters with `reason`,
    /// whatever attempts it has left.
    fn fail(
        self,
        reason: impl Into<String>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
