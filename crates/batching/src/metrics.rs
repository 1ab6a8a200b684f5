//! [`BatchMetrics`]: a cheap snapshot of what a batcher did — batches and
//! items by flush reason, items handed back or dropped, and summaries of
//! batch sizes and ages. The counters are plain integers updated where a
//! batch closes; a snapshot is a copy.

use std::time::Duration;

use crate::FlushReason;
use crate::batch::Sealed;

/// Counts per [`FlushReason`].
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{FlushReason, ReasonCounts};
///
/// let counts = ReasonCounts::default();
/// assert_eq!(counts.get(FlushReason::Full), 0);
/// assert_eq!(counts.total(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReasonCounts {
    /// Closed at `max_items`.
    pub full: u64,
    /// Closed by weight (including single oversized items).
    pub weight: u64,
    /// Closed at `max_delay`.
    pub deadline: u64,
    /// Closed by a [`Flusher`](crate::Flusher).
    pub flush: u64,
    /// Closed because the input ended.
    pub closed: u64,
}

impl ReasonCounts {
    /// The count for `reason`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::new(2, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter(0..5).batched(config);
    /// while batches.next().await.is_some() {}
    /// let metrics = batches.metrics();
    /// assert_eq!(metrics.batches.get(FlushReason::Full), 2);
    /// assert_eq!(metrics.items.get(FlushReason::Closed), 1);
    /// # }
    /// ```
    pub fn get(&self, reason: FlushReason) -> u64 {
        match reason {
            FlushReason::Full => self.full,
            FlushReason::Weight => self.weight,
            FlushReason::Deadline => self.deadline,
            FlushReason::Flush => self.flush,
            FlushReason::Closed => self.closed,
        }
    }

    /// The sum over every reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::new(2, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter(0..5).batched(config);
    /// while batches.next().await.is_some() {}
    /// assert_eq!(batches.metrics().batches.total(), 3);
    /// assert_eq!(batches.metrics().items.total(), 5);
    /// # }
    /// ```
    pub fn total(&self) -> u64 {
        FlushReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    fn add(&mut self, reason: FlushReason, n: u64) {
        let slot = match reason {
            FlushReason::Full => &mut self.full,
            FlushReason::Weight => &mut self.weight,
            FlushReason::Deadline => &mut self.deadline,
            FlushReason::Flush => &mut self.flush,
            FlushReason::Closed => &mut self.closed,
        };
        *slot += n;
    }
}

/// Smallest, largest and total of a series of figures; the mean is
/// `total / count`.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, BatchExt};
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = BatchConfig::new(4, Duration::from_secs(1)).unwrap();
/// let mut batches = futures::stream::iter(0..10).batched(config);
/// while batches.next().await.is_some() {}
/// let sizes = batches.metrics().batch_size;
/// assert_eq!((sizes.count, sizes.min, sizes.max, sizes.total), (3, 2, 4, 10));
/// assert_eq!(sizes.mean(), 10.0 / 3.0);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Spread<V> {
    /// How many figures.
    pub count: u64,
    /// The smallest (zero when `count` is 0).
    pub min: V,
    /// The largest (zero when `count` is 0).
    pub max: V,
    /// The sum.
    pub total: V,
}

impl Spread<u64> {
    /// The mean, or 0 with no figures.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::Spread;
    ///
    /// assert_eq!(Spread::<u64>::default().mean(), 0.0);
    /// ```
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total as f64 / self.count as f64
        }
    }

    fn record(&mut self, value: u64) {
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.total += value;
        self.count += 1;
    }
}

impl Spread<Duration> {
    /// The mean, or zero with no figures.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::Spread;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Spread::<Duration>::default().mean(), Duration::ZERO);
    /// ```
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.count) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total / n,
            Err(_) => Duration::from_secs_f64(self.total.as_secs_f64() / self.count as f64),
        }
    }

    fn record(&mut self, value: Duration) {
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.total = self.total.saturating_add(value);
        self.count += 1;
    }
}

/// A snapshot of what a batcher did, from `metrics()` on an adapter, on
/// either half of the channel, or in the final
/// [`Summary`](async_patterns_core::outcome::Summary) of `outcome()`.
///
/// The names are the workspace's (see `docs/conventions.md`): counters
/// (`u64`) count since the batcher was made and never go down; `queued` is a
/// gauge. Every item the batcher took in (`sent`) is, at any moment, in
/// exactly one of `delivered` (in a batch handed out), handed back by
/// `into_remainder`, `dropped` (with the batcher) or `queued` (still
/// inside). `handed_back` also counts the channel's refused sends, which
/// were never `sent`; without those, `sent == delivered + handed_back +
/// dropped + queued`.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = BatchConfig::new(3, Duration::from_secs(1)).unwrap();
/// let input = futures::stream::iter(0..5).chain(futures::stream::pending());
/// let mut batches = input.batched(config);
/// let outcome = batches.outcome();
/// assert_eq!(batches.next().await.unwrap().reason(), FlushReason::Full);
/// let _ = futures::poll!(batches.next()); // pulls 3 and 4, not due yet
/// assert_eq!(batches.metrics().queued, 2);
/// let (buffered, _input) = batches.into_remainder();
/// assert_eq!(buffered, [3, 4]);
///
/// let metrics = outcome.await.unwrap().value;
/// assert_eq!((metrics.sent, metrics.delivered, metrics.handed_back), (5, 3, 2));
/// assert_eq!((metrics.dropped, metrics.queued), (0, 0));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BatchMetrics {
    /// Items the batcher took in: sends that succeeded on the channel,
    /// items pulled from the input by an adapter.
    pub sent: u64,
    /// Items handed out in batches (the sum of [`items`](Self::items)).
    pub delivered: u64,
    /// Items returned to the caller instead of in a batch: by
    /// `into_remainder`, and, on the channel, in the error of a send refused
    /// because the receiver was closed or dropped (those were never `sent`).
    pub handed_back: u64,
    /// Items that were inside when the adapter or the receiver was dropped,
    /// and were dropped with it — never silently: counted here.
    pub dropped: u64,
    /// Sends refused because the channel was full: `try_send` returning
    /// [`TrySendError::Full`](crate::TrySendError::Full), the item handed
    /// back in the error. Always 0 for the stream adapters.
    pub rejected: u64,
    /// Items inside the batcher now, waiting to be delivered (a gauge).
    pub queued: u64,
    /// Batches handed out, by the reason they closed.
    pub batches: ReasonCounts,
    /// Items in those batches, by the reason their batch closed.
    pub items: ReasonCounts,
    /// Items heavier than `max_weight` on their own, each sent in a batch of
    /// its own (also counted under `weight`).
    pub oversized: u64,
    /// Items per batch.
    pub batch_size: Spread<u64>,
    /// How old each batch's first item was when the batch closed.
    pub batch_age: Spread<Duration>,
}

impl BatchMetrics {
    /// Counts a batch handed out.
    pub(crate) fn record_batch<T>(&mut self, batch: &Sealed<T>) {
        let len = batch.items.len() as u64;
        self.delivered += len;
        self.batches.add(batch.reason, 1);
        self.items.add(batch.reason, len);
        self.batch_size.record(len);
        self.batch_age.record(batch.age);
    }
}
