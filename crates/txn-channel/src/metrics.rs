//! [`ChannelMetrics`]: a snapshot of a channel's counters and gauges, the
//! same from every sender and consumer of the channel.

use crate::shared::{Shared, SoloCounts};

/// What a channel has done and holds, as of one instant: counters since it
/// was created (they never go down) and gauges of now. From
/// [`Sender::metrics`](crate::Sender::metrics) or
/// [`Receiver::metrics`](crate::Receiver::metrics).
///
/// Every item sent is, at any instant, queued, in flight, or gone —
/// committed, dead-lettered or dropped — so
/// `sent == queued + in_flight + committed + dead_lettered + dropped`
/// (for a receiver over a stream, `sent` counts the items pulled from it).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{ChannelMetrics, channel};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(8);
/// for i in 0..3 {
///     tx.send(i).await.unwrap();
/// }
/// rx.begin().await.unwrap().commit();
/// let held = rx.begin_owned().await.unwrap();
///
/// let m: ChannelMetrics = tx.metrics();
/// assert_eq!((m.sent, m.delivered, m.committed), (3, 2, 1));
/// assert_eq!((m.in_flight, m.queued), (1, 1));
/// drop(held);
/// assert_eq!(tx.metrics().in_flight, 0);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelMetrics {
    /// Counter: values accepted by the channel (for a receiver over a
    /// stream, items pulled from it).
    pub sent: u64,
    /// Counter: deliveries — items handed to a consumer, redeliveries
    /// included (a batch of `n` counts `n`).
    pub delivered: u64,
    /// Counter: items committed.
    pub committed: u64,
    /// Counter: deliveries beyond an item's first.
    pub redelivered: u64,
    /// Counter: deliveries whose lease ran out before they ended.
    pub expired: u64,
    /// Counter: items given up on — handed to the dead-letter destination,
    /// or dropped by [`fail`](crate::OwnedDelivery::fail) when there is none.
    pub dead_lettered: u64,
    /// Counter: items dropped because the last consumer was dropped while
    /// they were queued, or gave them back after it was.
    pub dropped: u64,
    /// Gauge: items delivered and not yet ended.
    pub in_flight: usize,
    /// Gauge: items waiting to be delivered (delayed ones, and ones about
    /// to be dead-lettered, included).
    pub queued: usize,
}

impl ChannelMetrics {
    pub(crate) fn of<T>(shared: &Shared<T>) -> Self {
        let st = shared.lock();
        let counts = st.table.counts();
        let solo = &shared.solo;
        let get = |c| SoloCounts::get(c) as u64;
        let (delivered, committed) = (get(&solo.delivered), get(&solo.committed));
        // The only consumer's own buffer: deliveries not ended are in
        // flight, items there not in a delivery are queued.
        let held = delivered.saturating_sub(committed + get(&solo.released));
        let buffered = get(&solo.taken).saturating_sub(committed + get(&solo.removed));
        let held = usize::try_from(held).unwrap_or(usize::MAX);
        let buffered = usize::try_from(buffered).unwrap_or(usize::MAX);
        // Every item sent is in the table, in the own buffer, or gone; the
        // own buffer's commits cancel out, so this is exact under the lock
        // (the own buffer's `taken` and `removed` change only under it).
        let sent = (st.table.len() as u64 + get(&solo.taken)).saturating_sub(get(&solo.removed))
            + counts.committed
            + counts.dead_lettered
            + counts.dropped;
        // Items consumers took ahead count as in flight in the table, but
        // are queued until handed out; their deliveries are counted there.
        let (ahead, ahead_delivered, ahead_redelivered) = st.ahead_totals();
        ChannelMetrics {
            sent,
            delivered: counts.delivered + delivered + ahead_delivered,
            committed: counts.committed + committed,
            redelivered: counts.redelivered + get(&solo.redelivered) + ahead_redelivered,
            expired: counts.expired,
            dead_lettered: counts.dead_lettered,
            dropped: counts.dropped,
            in_flight: st.table.in_flight() - ahead + held,
            queued: st.table.len() - st.table.in_flight() + ahead + buffered.saturating_sub(held),
        }
    }
}
