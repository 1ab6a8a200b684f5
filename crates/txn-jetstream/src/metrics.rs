//! The counters of a receiver and of a publisher, and their plain snapshots
//! ([`ReceiverMetrics`], [`PublisherMetrics`]) in the workspace's metric
//! names.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a [`Receiver`](crate::Receiver) (all its clones together) has done
/// since it was built: counters only go up; `in_flight` and `queued` are the
/// values now.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::ReceiverMetrics;
///
/// let m = ReceiverMetrics::default();
/// assert_eq!(m.delivered, 0);
/// assert_eq!(m.in_flight, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverMetrics {
    /// Messages handed to a handler by `begin` or `begin_batch`, redeliveries
    /// included.
    pub delivered: u64,
    /// Deliveries beyond a message's first (JetStream's delivered count above
    /// 1).
    pub redelivered: u64,
    /// Deliveries committed, confirmed by the server (or sent, when
    /// confirmations are off).
    pub committed: u64,
    /// Deliveries handed back for a later attempt: `rollback`,
    /// `retry_after`, a drop, or a shutdown.
    pub rolled_back: u64,
    /// Messages given up on and published to the dead-letter subject.
    pub dead_lettered: u64,
    /// Deliveries whose lease ran out before they were ended (the server
    /// delivers them again), and received messages whose lease had run out
    /// before any handler began them.
    pub expired: u64,
    /// Deliveries begun and not yet ended.
    pub in_flight: u64,
    /// Messages received from the server that no handler has begun yet.
    pub queued: u64,
}

/// What a [`Publisher`](crate::Publisher) has done since it was built.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::PublisherMetrics;
///
/// let m = PublisherMetrics::default();
/// assert_eq!(m.sent, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublisherMetrics {
    /// Messages sent to the server (first attempts).
    pub sent: u64,
    /// Messages the server confirmed it stored (duplicates included).
    pub confirmed: u64,
    /// Confirmations that said "duplicate": a retry of a message whose first
    /// attempt had been stored after all, or an id published twice.
    pub duplicates: u64,
    /// Messages sent again, under the same id, after a confirmation failed.
    pub retried: u64,
    /// Messages handed back in a [`PublishError`](crate::PublishError).
    pub handed_back: u64,
    /// Messages sent and not yet confirmed.
    pub in_flight: u64,
}

/// The receiver's live counters (the gauges live with the state they
/// measure).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) rolled_back: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) expired: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, in_flight: u64, queued: u64) -> ReceiverMetrics {
        ReceiverMetrics {
            delivered: self.delivered.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
            committed: self.committed.load(Relaxed),
            rolled_back: self.rolled_back.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            expired: self.expired.load(Relaxed),
            in_flight,
            queued,
        }
    }
}
