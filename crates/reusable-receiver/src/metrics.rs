//! The snapshots of what a [`ReusableReceiver`](crate::ReusableReceiver) and
//! its leases did: [`ReceiverMetrics`] and [`LeaseMetrics`], plain structs
//! with the workspace's field names (`delivered`, `redelivered`, `acked`,
//! `dropped`, `handed_back`, …). Counters count since creation and never go
//! down; gauges are the value now.

/// Totals over every lease of a [`ReusableReceiver`](crate::ReusableReceiver),
/// from [`ReusableReceiver::metrics`](crate::ReusableReceiver::metrics) or,
/// also after the receiver was dropped,
/// [`Lease::receiver_metrics`](crate::Lease::receiver_metrics).
///
/// Every item sent into the channel is, at any time, exactly one of: still
/// queued or taken and not yet yielded ([`queued`](Self::queued)), delivered
/// and awaiting acknowledgement ([`unacked`](Self::unacked), replay mode),
/// acknowledged ([`acked`](Self::acked)), delivered to a lease that ended
/// without confirming it ([`lost`](Self::lost), plain mode), handed back
/// ([`handed_back`](Self::handed_back)) or dropped ([`dropped`](Self::dropped)).
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::ReusableReceiver;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(4);
/// tx.send(1).await.unwrap();
/// tx.send(2).await.unwrap();
/// let mut reusable = ReusableReceiver::new(rx);
/// reusable.stream().next().await; // delivered, never confirmed...
/// reusable.revoke();              // ...and the attempt is over
/// let metrics = reusable.metrics();
/// assert_eq!((metrics.leases, metrics.delivered, metrics.lost), (1, 1, 1));
/// assert_eq!(metrics.queued, 1); // item 2
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverMetrics {
    /// Counter: leases started (streams made).
    pub leases: u64,
    /// Counter: items yielded to a lease's stream, redeliveries included.
    pub delivered: u64,
    /// Counter: deliveries beyond an item's first — replays of an
    /// unacknowledged item to a later lease (replay mode).
    pub redelivered: u64,
    /// Counter: items acknowledged through a lease.
    pub acked: u64,
    /// Counter, plain mode: items delivered to a lease that ended without
    /// acknowledging them. They are gone from the channel; whether the
    /// consumer processed them is unknown. Always 0 in replay mode, where
    /// such items are kept and replayed.
    pub lost: u64,
    /// Counter: items discarded because nothing could deliver them any
    /// more — held (unacknowledged, set aside, taken in a batch) or still
    /// queued in the channel once the
    /// [`ReusableReceiver`](crate::ReusableReceiver) was dropped and no
    /// lease was in force. See
    /// [Dropping](crate::ReusableReceiver#dropping).
    pub dropped: u64,
    /// Counter: items returned to the caller by
    /// [`take_unacked`](crate::ReusableReceiver::take_unacked),
    /// [`into_unacked`](crate::ReusableReceiver::into_unacked) or
    /// [`into_inner`](crate::ReusableReceiver::into_inner) (and so in a
    /// [`RetryError`](crate::RetryError)).
    pub handed_back: u64,
    /// Gauge, replay mode: items delivered and not acknowledged, held for
    /// replay (0 in plain mode).
    pub unacked: u64,
    /// Gauge: items waiting to be delivered — taken out of the channel and
    /// not yet yielded (in a batch, or set aside by the weight bound), and
    /// those still in the channel.
    pub queued: u64,
}

/// The counts of one lease, from [`Lease::metrics`](crate::Lease::metrics),
/// [`Lease::revoke`](crate::Lease::revoke),
/// [`ReusableReceiver::revoke`](crate::ReusableReceiver::revoke) and
/// [`Attempt::metrics`](crate::Attempt::metrics): live while the lease is
/// in force, final once it ended.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::ReusableReceiver;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(4);
/// tx.send(7).await.unwrap();
/// let mut reusable = ReusableReceiver::new(rx);
/// let mut stream = reusable.stream();
/// stream.next().await;
/// let metrics = stream.lease().revoke();
/// assert_eq!((metrics.delivered, metrics.acked, metrics.unacked), (1, 0, 1));
/// assert!(!metrics.released); // `stream` is still alive
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseMetrics {
    /// The lease's generation: 1 for the first stream, one more for each.
    pub generation: u64,
    /// Counter: items the lease's stream yielded, redeliveries included.
    pub delivered: u64,
    /// Counter: of those, how many had been delivered to an earlier lease
    /// (replay mode).
    pub redelivered: u64,
    /// Counter: of those, how many were acknowledged.
    pub acked: u64,
    /// Gauge: delivered and not acknowledged — replayed to the next lease in
    /// replay mode, counted as [`lost`](ReceiverMetrics::lost) in plain mode
    /// once the lease ends.
    pub unacked: u64,
    /// Whether the stream had been dropped when these counts were taken.
    pub released: bool,
}
