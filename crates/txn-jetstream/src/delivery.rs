//! [`Delivery`] and [`BatchDelivery`]: a message taken from the consumer
//! and held — its lease kept alive — until the handler ends it; dropped
//! unended, it is rolled back.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_patterns_core::{DeadLetterReason, Transaction};
use bytes::Bytes;
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::error::{BatchError, DeliveryError};
use crate::metrics::Counters;
use crate::shared::{End, Parts, Shared};

/// One delivery of one message, owned (`'static + Send` when the item is):
/// hand it to a spawned task, end it there. It dereferences to the decoded
/// item ([`Bytes`] unless the receiver was built with a
/// [`decode`](crate::ReceiverBuilder::decode) hook).
///
/// End it with [`commit`](Self::commit) (the message is removed),
/// [`rollback`](Self::rollback) or [`retry_after`](Self::retry_after) (it
/// is delivered again, after a delay), or [`fail`](Self::fail) (it goes to
/// the dead-letter subject). Until then its lease — the consumer's ack wait
/// — is kept alive by the receiver's in-progress acks, so long work is not
/// redelivered behind its back. Dropped without being ended (a `?`, a
/// panic, a cancelled task), it is rolled back in the background; on its
/// last attempt, dead-lettered.
///
/// `Delivery` implements core's [`Transaction`], so a handler written
/// against that trait runs on txn-channel's deliveries and these alike.
///
/// # Examples
///
/// ```
/// use async_patterns_core::Transaction;
/// use async_patterns_txn_jetstream::Receiver;
/// use std::time::Duration;
/// # use async_patterns_testkit::nats::NatsServer;
///
/// /// Written once, against the trait: it runs on txn-channel too.
/// async fn handle<D: Transaction<Item = bytes::Bytes>>(delivery: D) -> Result<(), D::Error> {
///     match std::str::from_utf8(&delivery) {
///         Err(_) => delivery.fail("not UTF-8").await,
///         Ok(text) if text.is_empty() => delivery.retry_after(Duration::from_secs(1)).await,
///         Ok(_) => delivery.commit().await,
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = NatsServer::start()?;
/// # let context = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
/// # context.create_stream(async_nats::jetstream::stream::Config {
/// #     name: "ORDERS".into(), subjects: vec!["orders.>".into(), "dead.>".into()], ..Default::default()
/// # }).await?;
/// # context.publish("orders.1", "hello".into()).await?.await?;
/// let receiver = Receiver::builder(context)
///     .stream("ORDERS")
///     .consumer("workers")
///     .filter_subject("orders.>")
///     .dead_letter_subject("dead.orders")
///     .build()
///     .await?;
/// let delivery = receiver.begin().await?.expect("a message");
/// assert_eq!(delivery.attempt(), 1);
/// assert_eq!(delivery.subject(), "orders.1");
/// handle(delivery).await?;
/// assert_eq!(receiver.metrics().committed, 1);
/// # Ok(())
/// # }
/// ```
pub struct Delivery<T = Bytes> {
    item: T,
    inner: Option<Inner>,
}

/// The part of a delivery that talks to the server; it does the in-flight
/// bookkeeping however the delivery ends, even when the future ending it is
/// dropped half-way.
pub(crate) struct Inner {
    shared: Arc<Shared>,
    parts: Parts,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The lease is in the receiver's table; the delivery counts in flight.
    Leased,
    /// Being ended: the lease is out of the table, the delivery still counts.
    Ending,
    /// Done with: nothing left to release.
    Released,
}

impl Inner {
    pub(crate) fn new(shared: Arc<Shared>, parts: Parts) -> Inner {
        Inner {
            shared,
            parts,
            stage: Stage::Leased,
        }
    }

    pub(crate) async fn end(mut self, how: End) -> Result<(), DeliveryError> {
        let Some(lease) = self.shared.take_lease(self.parts.id) else {
            // A shutdown handed the message back and did the bookkeeping.
            self.stage = Stage::Released;
            return Err(DeliveryError::ShutDown);
        };
        self.stage = Stage::Ending;
        if Instant::now() >= lease.deadline {
            Counters::add(&self.shared.counters.expired, 1);
            self.release(None);
            return Err(DeliveryError::LeaseExpired);
        }
        let hold = match &how {
            End::Nak(delay) => Some((self.parts.info.stream_sequence, *delay)),
            _ => None,
        };
        let result = self.shared.finish(&self.parts, how, lease.deadline).await;
        self.release(hold);
        result
    }

    fn release(&mut self, hold: Option<(u64, Duration)>) {
        if self.stage == Stage::Ending {
            self.stage = Stage::Released;
            self.shared.release(self.parts.key, hold);
        }
    }

    fn attempt(&self) -> u32 {
        self.parts.info.attempt()
    }

    /// How an unended delivery ends when dropped: rolled back, or on its last
    /// attempt dead-lettered (as a panic's victim, if it is one).
    fn implicit_end(&self) -> End {
        if self.attempt() >= self.shared.settings.max_attempts {
            End::DeadLetter(if std::thread::panicking() {
                DeadLetterReason::Panicked
            } else {
                DeadLetterReason::MaxAttempts
            })
        } else {
            End::Nak(self.shared.retry_delay(self.attempt()))
        }
    }

    /// How a rollback (with this delay) ends: on the last attempt, as a dead
    /// letter.
    fn rollback_end(&self, delay: Duration) -> End {
        if self.attempt() >= self.shared.settings.max_attempts {
            End::DeadLetter(DeadLetterReason::MaxAttempts)
        } else {
            End::Nak(delay)
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        match self.stage {
            Stage::Released => {}
            Stage::Ending => self.release(None),
            Stage::Leased => {
                // Abandoned (no runtime to roll it back on): its lease runs
                // out and the server delivers it again.
                if self.shared.take_lease(self.parts.id).is_some() {
                    Counters::add(&self.shared.counters.expired, 1);
                    self.stage = Stage::Ending;
                    self.release(None);
                }
            }
        }
    }
}

impl<T> Delivery<T> {
    pub(crate) fn new(item: T, inner: Inner) -> Delivery<T> {
        Delivery {
            item,
            inner: Some(inner),
        }
    }

    fn inner(&self) -> &Inner {
        self.inner.as_ref().expect("a live delivery")
    }

    fn take(&mut self) -> Inner {
        self.inner.take().expect("a live delivery")
    }

    /// How many times the message has been delivered, this delivery included
    /// (1 the first time): JetStream's delivered count, which counts
    /// redeliveries by any consumer process and after a lease ran out.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) {
    /// if delivery.attempt() > 1 {
    ///     // Seen before: make the side effect idempotent.
    /// }
    /// # }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.inner().attempt()
    }

    /// The message's sequence number in its stream (the same on every
    /// attempt: a key for idempotence).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) {
    /// println!("processing #{}", delivery.stream_sequence());
    /// # }
    /// ```
    pub fn stream_sequence(&self) -> u64 {
        self.inner().parts.info.stream_sequence
    }

    /// The subject the message was published on.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) {
    /// let region = delivery.subject().rsplit('.').next();
    /// # }
    /// ```
    pub fn subject(&self) -> &str {
        self.inner().parts.subject.as_str()
    }

    /// The message's headers, if it has any.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) {
    /// let trace = delivery.headers().and_then(|h| h.get("Trace-Id"));
    /// # }
    /// ```
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.inner().parts.headers.as_ref()
    }

    /// The raw payload (the item is what the decode hook made of it).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) {
    /// println!("{} bytes", delivery.payload().len());
    /// # }
    /// ```
    pub fn payload(&self) -> &Bytes {
        &self.inner().parts.payload
    }

    /// When the message was stored in the stream.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) {
    /// let age = delivery.published().elapsed().unwrap_or_default();
    /// # }
    /// ```
    pub fn published(&self) -> SystemTime {
        crate::time::from_nanos(self.inner().parts.info.published_nanos)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// How long the lease has left as this receiver counts it (zero once it
    /// ran out: ending the delivery is then an error). The receiver renews
    /// it while the handler works, unless keep-alive is off.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) -> Result<(), Box<dyn std::error::Error>> {
    /// if delivery.lease_remaining() < std::time::Duration::from_secs(1) {
    ///     delivery.extend().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_remaining(&self) -> Duration {
        let inner = self.inner();
        let state = async_patterns_core::__private::lock(&inner.shared.state);
        state
            .leases
            .get(&inner.parts.id)
            .map_or(Duration::ZERO, |lease| {
                lease.deadline.saturating_duration_since(Instant::now())
            })
    }

    /// Restarts the lease now with an in-progress ack, confirmed by the
    /// server: the message stays this delivery's for another full ack wait.
    /// (The receiver does this by itself unless built with
    /// [`keep_alive(None)`](crate::ReceiverBuilder::keep_alive); JetStream
    /// can only restart the whole ack wait, not add a chosen time.)
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] if it had run out already,
    /// [`DeliveryError::ShutDown`] if a shutdown took the message back,
    /// [`DeliveryError::Unconfirmed`] if the server did not confirm.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropped before it completes, the lease may
    /// or may not have been restarted, and the delivery is unaffected.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) -> Result<(), Box<dyn std::error::Error>> {
    /// delivery.extend().await?;
    /// // … long work …
    /// delivery.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn extend(&self) -> Result<(), DeliveryError> {
        let inner = self.inner();
        inner.shared.renew(inner.parts.id).await
    }

    /// Done: acknowledges the message and waits for the server to confirm
    /// (a double ack), so that `Ok` means it will not be delivered again.
    /// With confirmations off
    /// ([`confirm_acks(false)`](crate::ReceiverBuilder::confirm_acks)), `Ok`
    /// means the ack was handed to the connection.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::LeaseExpired`] (nothing sent: the message is
    /// delivered again), [`DeliveryError::ShutDown`], or
    /// [`DeliveryError::Unconfirmed`] when the server did not confirm within
    /// the ack timeout, retrying through reconnects (the message is then
    /// committed or delivered again — never lost).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that the outcome is unknown: dropped
    /// before it completes, the ack may or may not have reached the server;
    /// if it did not, the message is delivered again when its lease runs out.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// while let Some(delivery) = receiver.begin().await? {
    ///     println!("{:?}", &delivery[..]);
    ///     delivery.commit().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn commit(mut self) -> Result<(), DeliveryError> {
        self.take().end(End::Commit).await
    }

    /// Not done: the message is delivered again after the delay the
    /// receiver's retry policy gives this attempt (a nak with that delay). On
    /// the last attempt (`max_attempts`) it is dead-lettered instead, with
    /// [`DeadLetterReason::MaxAttempts`].
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit); when dead-lettering,
    /// [`DeliveryError::DeadLetter`] if the dead letter was not published.
    ///
    /// # Cancel safety
    ///
    /// As [`commit`](Self::commit): dropped half-way, the message comes back
    /// at the latest when its lease runs out.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) -> Result<(), Box<dyn std::error::Error>> {
    /// if delivery.is_empty() {
    ///     delivery.rollback().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rollback(mut self) -> Result<(), DeliveryError> {
        let inner = self.take();
        let how = inner.rollback_end(inner.shared.retry_delay(inner.attempt()));
        inner.end(how).await
    }

    /// Not done: deliver the message again, not before `delay` (a nak with
    /// that delay; zero means at once). On the last attempt it is
    /// dead-lettered instead, as by [`rollback`](Self::rollback).
    ///
    /// # Errors
    ///
    /// As [`rollback`](Self::rollback).
    ///
    /// # Cancel safety
    ///
    /// As [`rollback`](Self::rollback).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) -> Result<(), Box<dyn std::error::Error>> {
    /// // The dependency said "retry in 30 s".
    /// delivery.retry_after(std::time::Duration::from_secs(30)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry_after(mut self, delay: Duration) -> Result<(), DeliveryError> {
        let inner = self.take();
        let how = inner.rollback_end(delay);
        inner.end(how).await
    }

    /// Give up on the message now, whatever attempts it has left: it is
    /// published to the dead-letter subject with `reason`
    /// ([`DeadLetterReason::Failed`]) — confirmed — and only then terminated
    /// on its consumer.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::DeadLetter`] if the dead letter was not published
    /// (the original is then delivered again), or as
    /// [`commit`](Self::commit) for the termination (the dead letter is kept;
    /// if the original comes back, its second dead letter is a duplicate the
    /// server drops).
    ///
    /// # Cancel safety
    ///
    /// As [`commit`](Self::commit): dropped half-way, the message is
    /// dead-lettered, delivered again, or both — never lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(delivery: async_patterns_txn_jetstream::Delivery) -> Result<(), Box<dyn std::error::Error>> {
    /// if delivery.starts_with(b"{") {
    ///     delivery.commit().await?;
    /// } else {
    ///     delivery.fail("not JSON").await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fail(mut self, reason: impl Into<String>) -> Result<(), DeliveryError> {
        let reason = DeadLetterReason::Failed(reason.into());
        self.take().end(End::DeadLetter(reason)).await
    }
}

impl<T> Deref for Delivery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.item
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let how = inner.implicit_end();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // Failures show in the metrics; the message comes back
                    // when its lease runs out at the latest.
                    let _ = inner.end(how).await;
                });
            }
            Err(_) => drop(inner),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Delivery");
        d.field("item", &self.item);
        if let Some(inner) = &self.inner {
            d.field("subject", &inner.parts.subject)
                .field("stream_sequence", &inner.parts.info.stream_sequence)
                .field("attempt", &inner.attempt());
        }
        d.finish()
    }
}

impl<T: Send> Transaction for Delivery<T> {
    type Item = T;
    type Error = DeliveryError;

    fn attempt(&self) -> u32 {
        Delivery::attempt(self)
    }

    fn commit(self) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        Delivery::commit(self)
    }

    fn rollback(self) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        Delivery::rollback(self)
    }

    fn retry_after(
        self,
        delay: Duration,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        Delivery::retry_after(self, delay)
    }

    fn fail(
        self,
        reason: impl Into<String>,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        let reason: String = reason.into();
        Delivery::fail(self, reason)
    }
}

/// Several deliveries taken at once by
/// [`Receiver::begin_batch`](crate::Receiver::begin_batch), in stream order.
/// It dereferences to a slice of [`Delivery`]s; end them together
/// ([`commit_all`](Self::commit_all), [`commit_first`](Self::commit_first),
/// [`rollback`](Self::rollback) — the acknowledgements go out
/// together and are confirmed in one round trip) or one by one
/// ([`into_deliveries`](Self::into_deliveries)). Dropped, each is rolled
/// back.
///
/// # Examples
///
/// ```
/// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
/// while let Some(batch) = receiver.begin_batch(256).await? {
///     let total: usize = batch.iter().map(|d| d.len()).sum();
///     println!("{} messages, {total} bytes", batch.len());
///     batch.commit_all().await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct BatchDelivery<T = Bytes> {
    deliveries: Vec<Delivery<T>>,
}

impl<T> BatchDelivery<T> {
    /// Groups deliveries taken one by one, to end them together.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::BatchDelivery;
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut held = Vec::new();
    /// while held.len() < 10 {
    ///     held.push(receiver.begin().await?.expect("open"));
    /// }
    /// BatchDelivery::from_deliveries(held).commit_all().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_deliveries(deliveries: Vec<Delivery<T>>) -> BatchDelivery<T> {
        BatchDelivery { deliveries }
    }

    /// Commits every delivery; the acks go out together.
    ///
    /// # Errors
    ///
    /// A [`BatchError`] naming the deliveries that did not commit, with why
    /// (each as for [`Delivery::commit`]); the others are committed.
    ///
    /// # Cancel safety
    ///
    /// As [`Delivery::commit`], for each delivery.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(batch) = receiver.begin_batch(100).await? {
    ///     batch.commit_all().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn commit_all(self) -> Result<(), BatchError> {
        let k = self.deliveries.len();
        self.commit_first(k).await
    }

    /// Commits the first `k` deliveries (all of them if there are fewer) and
    /// rolls back the rest — "processed up to here".
    ///
    /// # Errors
    ///
    /// As [`commit_all`](Self::commit_all), for both halves.
    ///
    /// # Cancel safety
    ///
    /// As [`commit_all`](Self::commit_all).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(batch) = receiver.begin_batch(100).await? {
    ///     let done = batch.iter().take_while(|d| !d.is_empty()).count();
    ///     batch.commit_first(done).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn commit_first(self, k: usize) -> Result<(), BatchError> {
        let ends = self
            .deliveries
            .into_iter()
            .enumerate()
            .map(|(i, d)| async move {
                let sequence = d.stream_sequence();
                let result = if i < k {
                    d.commit().await
                } else {
                    d.rollback().await
                };
                (sequence, result)
            });
        collect(join_all(ends).await)
    }

    /// Rolls back every delivery (each with its retry delay; on its last
    /// attempt, dead-lettered).
    ///
    /// # Errors
    ///
    /// As [`commit_all`](Self::commit_all).
    ///
    /// # Cancel safety
    ///
    /// As [`Delivery::rollback`], for each delivery.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(batch) = receiver.begin_batch(100).await? {
    ///     batch.rollback().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rollback(self) -> Result<(), BatchError> {
        self.commit_first(0).await
    }

    /// The deliveries, to end one by one.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(batch) = receiver.begin_batch(10).await? {
    ///     for delivery in batch.into_deliveries() {
    ///         tokio::spawn(async move { delivery.commit().await });
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_deliveries(self) -> Vec<Delivery<T>> {
        self.deliveries
    }
}

fn collect(results: Vec<(u64, Result<(), DeliveryError>)>) -> Result<(), BatchError> {
    let total = results.len();
    let failed: Vec<(u64, DeliveryError)> = results
        .into_iter()
        .filter_map(|(sequence, r)| r.err().map(|e| (sequence, e)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(BatchError::new(total - failed.len(), failed))
    }
}

impl<T> Deref for BatchDelivery<T> {
    type Target = [Delivery<T>];

    fn deref(&self) -> &[Delivery<T>] {
        &self.deliveries
    }
}

impl<T: fmt::Debug> fmt::Debug for BatchDelivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.deliveries).finish()
    }
}
