//! [`ReusableReceiver`], its [`ReusableStream`]s and their [`Lease`]s: the
//! public handles on the shared state of [`crate::state`], where the
//! hand-over from one stream to the next happens.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::{FusedStream, Stream};
use tokio::sync::mpsc::Receiver;

use crate::error::AckError;
use crate::loom::{Arc, Ordering, lock};
use crate::metrics::{LeaseMetrics, ReceiverMetrics};
use crate::replay::{ReplayBuffer, ReplayConfig};
use crate::state::{Fill, LeaseCell, Shared, State};

/// Owns an mpsc [`Receiver`] and hands out `'static` streams over it, one
/// attempt at a time, so that a consumer which takes its stream by value (a
/// tonic client-streaming call) can be retried with the same receiver.
///
/// - [`new`](Self::new) — *plain mode*, at most once: an item yielded to an
///   attempt that fails is gone; [`metrics`](Self::metrics) counts such items
///   as [`lost`](ReceiverMetrics::lost) unless the consumer confirmed them.
/// - [`with_replay`](Self::with_replay) — *replay mode*, at least once:
///   items yielded to an attempt are kept until acknowledged and replayed,
///   in order, to the next attempt.
///
/// Each [`stream`](Self::stream) starts a new *lease* and revokes the
/// previous one: the old stream ends (returns `None`) the next time it is
/// polled, and is woken so that it notices. No item is ever yielded by two
/// live leases, and a stream dropped late — after the next attempt started
/// — can neither take items nor delay anything.
///
/// A stream takes items a chunk at a time — up to 64 (fewer for items
/// larger than 64 bytes, so that a chunk stays within about 4 KiB), in
/// replay mode never more than the replay buffer has room for — out of the
/// channel with one `poll_recv_many` under the shared lock, and yields them
/// one by one without the lock: a store, a load and a compiler fence per
/// item (see the crate's source, `state.rs`, for the hand-over protocol).
/// That makes it as cheap per item as a hand-written `recv_many` loop. The
/// price is paid when a lease ends while its stream still holds unclaimed
/// items of its chunk: on Linux, one `membarrier(2)` system call, which
/// interrupts each CPU running a thread of the process for a moment (about
/// 0.2 µs in all on a 2-core machine); elsewhere, a fence.
/// Items taken and not yet yielded — by a stream revoked or dropped
/// mid-chunk — come back here, in order, for the next stream (or
/// [`into_inner`](Self::into_inner)); the channel meanwhile has room for
/// as many more sends.
///
/// # Dropping
///
/// Every item taken out of the channel is yielded or handed back; a stream
/// ends only when nothing is held anywhere (or its lease is revoked, or
/// [`WhenFull::EndStream`](crate::WhenFull::EndStream) ends it with the buffer full). What a
/// `ReusableReceiver` holds at a given moment — items yielded and not
/// acknowledged (replay mode), an item set aside by the weight bound, items
/// taken from the channel in a batch and not yet yielded — is handed back
/// by:
///
/// - [`take_unacked`](Self::take_unacked): the unacknowledged items; the
///   receiver goes on (what the retry driver returns when it gives up);
/// - [`into_unacked`](Self::into_unacked): everything not acknowledged,
///   the channel's queue included, closing the channel;
/// - [`into_inner`](Self::into_inner): everything held, and the receiver
///   with what is still queued in it.
///
/// Dropping the `ReusableReceiver` instead is never silent. Its state is
/// shared with its streams and leases, so a stream whose lease is in force
/// keeps working (a stream can be made and given away in one expression).
/// As soon as nothing can deliver the held items any more — at the drop if
/// no lease is in force, otherwise when that lease ends (revoked, or ended
/// by the retry driver) — the channel is closed, so that senders fail
/// instead of waiting for room, and everything held or still queued is
/// dropped and counted in [`ReceiverMetrics::dropped`], which
/// [`Lease::receiver_metrics`] shows after the drop. If the last stream and
/// lease go while that lease is still in force, what is held goes with
/// them. Dropping a stream or a lease never drops an item.
///
/// # Examples
///
/// A consumer that fails after two items, retried with the same receiver:
///
/// ```
/// use async_patterns_reusable_receiver::ReusableReceiver;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(8);
/// for i in 0..5 {
///     tx.send(i).await.unwrap();
/// }
/// drop(tx);
///
/// let mut reusable = ReusableReceiver::new(rx);
/// let first: Vec<i32> = reusable.stream().take(2).collect().await; // then "fails"
/// let rest: Vec<i32> = reusable.stream().collect().await;
/// assert_eq!((first, rest), (vec![0, 1], vec![2, 3, 4]));
/// # }
/// ```
pub struct ReusableReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// One attempt's stream over a [`ReusableReceiver`]: `'static`, `Send` (for
/// `T: Send`) and `Unpin`, so it can be given by value to a tonic call.
///
/// It yields items while its lease is in force and ends — returns `None`,
/// then keeps returning `None` — when the channel is closed and drained, when
/// its lease is revoked (a newer stream was made, or the attempt ended), or,
/// in replay mode with [`WhenFull::EndStream`](crate::WhenFull::EndStream), when the replay buffer is
/// full. Dropping it, at any time, loses nothing that it has not yielded.
///
/// # Cancel safety
///
/// `poll_next` (and so `StreamExt::next`) is cancel safe: an item leaves the
/// shared state only in the poll that returns it, so a `next()` future
/// dropped in a `select!` takes nothing with it.
///
/// # Panics
///
/// In replay mode a poll runs `T::clone` (and the weigher, for an item
/// that comes from the channel); if either panics, the panic propagates out
/// of the poll and the item stays next in line, for this stream's next poll
/// or the next lease.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::ReusableReceiver;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(8);
/// tx.send("a").await.unwrap();
/// tx.send("b").await.unwrap();
/// let mut reusable = ReusableReceiver::new(rx);
///
/// let mut old = reusable.stream();
/// assert_eq!(old.next().await, Some("a"));
/// let mut new = reusable.stream(); // revokes `old`
/// assert_eq!(old.next().await, None);
/// assert_eq!(new.next().await, Some("b"));
/// # }
/// ```
pub struct ReusableStream<T> {
    shared: Arc<Shared<T>>,
    cell: Arc<LeaseCell<T>>,
    generation: u64,
    /// The next index of the chunk to claim, and the chunk's length: while
    /// `next < len`, items are claimed without the lock.
    next: usize,
    len: usize,
    /// A fill is under way: set while the lock is held for one, so that if
    /// it panics (a `clone`, a weigher) the drop knows the chunk may hold
    /// items this stream does not know of.
    filling: bool,
    done: bool,
}

/// A handle on one lease: acknowledges what its stream yielded, reports its
/// counts, revokes it. Get it from [`ReusableStream::lease`] before giving
/// the stream away, or from [`ReusableReceiver::lease`].
///
/// Acknowledgements are cumulative and count from the start of the lease:
/// `ack(n)` says "the first `n` items this stream yielded are confirmed".
/// In replay mode confirmed items leave the replay buffer; in plain mode
/// they only count, so that [`ReceiverMetrics::lost`] is exact.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, rx) = tokio::sync::mpsc::channel(8);
/// for i in 0..4 {
///     tx.send(i).await?;
/// }
/// drop(tx);
/// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
///
/// let mut stream = reusable.stream();
/// let lease = stream.lease();
/// assert_eq!(stream.next().await, Some(0));
/// assert_eq!(stream.next().await, Some(1));
/// assert_eq!(lease.ack(1)?, 1); // the server confirmed item 0
/// drop(stream); // the call failed
///
/// // The next attempt replays item 1, then goes on.
/// assert_eq!(reusable.stream().collect::<Vec<_>>().await, [1, 2, 3]);
/// # Ok(())
/// # }
/// ```
pub struct Lease<T> {
    shared: Arc<Shared<T>>,
    cell: Arc<LeaseCell<T>>,
}

impl<T> ReusableReceiver<T> {
    /// Wraps `rx` in plain mode (at most once): items yielded to a stream
    /// belong to that attempt, whatever becomes of it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    /// let reusable = ReusableReceiver::new(rx);
    /// assert!(!reusable.is_replay());
    /// ```
    pub fn new(rx: Receiver<T>) -> Self {
        ReusableReceiver {
            shared: Shared::new(rx, None),
        }
    }

    /// Wraps `rx` in replay mode (at least once): items yielded to a stream
    /// are kept, within the bounds of `config`, until a [`Lease`]
    /// acknowledges them; the next stream yields the unacknowledged ones
    /// first, in order, then new ones. An item is yielded more than once
    /// only if an attempt yielded it and did not confirm it.
    ///
    /// The stream yields clones; the buffer keeps the originals. Wrap large
    /// payloads in `bytes::Bytes` or `Arc` to make the clone cheap.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(8);
    /// tx.send("a").await?;
    /// tx.send("b").await?;
    /// drop(tx);
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    ///
    /// // An attempt takes both items and fails without confirming them...
    /// assert_eq!(reusable.stream().collect::<Vec<_>>().await, ["a", "b"]);
    /// // ...so the next one gets them again.
    /// let mut stream = reusable.stream();
    /// let lease = stream.lease();
    /// assert_eq!((&mut stream).collect::<Vec<_>>().await, ["a", "b"]);
    /// lease.ack_all()?;
    /// assert_eq!(reusable.metrics().unacked, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_replay(rx: Receiver<T>, config: ReplayConfig<T>) -> Self
    where
        T: Clone,
    {
        ReusableReceiver {
            shared: Shared::new(rx, Some(ReplayBuffer::new(config, T::clone))),
        }
    }

    /// Starts a new lease and returns its stream; the previous lease, if
    /// any, is revoked — its stream ends and is woken to notice, and in
    /// replay mode its unconfirmed items are replayed by this stream.
    ///
    /// The receiver is available again at once: nothing waits for the old
    /// stream to be dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let first = reusable.stream();
    /// let second = reusable.stream();
    /// assert!(!first.lease().is_current());
    /// assert_eq!(second.generation(), first.generation() + 1);
    /// ```
    pub fn stream(&mut self) -> ReusableStream<T> {
        let (cell, waker, to_drop) = lock(&self.shared.state).new_lease();
        // Unlocked: a waker and an item's `Drop` are user code.
        drop(to_drop);
        if let Some(waker) = waker {
            waker.wake();
        }
        ReusableStream {
            shared: Arc::clone(&self.shared),
            generation: cell.generation,
            cell,
            next: 0,
            len: 0,
            filling: false,
            done: false,
        }
    }

    /// The lease in force, if a stream was made and not revoked since.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// assert!(reusable.lease().is_none());
    /// let stream = reusable.stream();
    /// assert_eq!(reusable.lease().unwrap().generation(), stream.generation());
    /// ```
    pub fn lease(&self) -> Option<Lease<T>> {
        let cell = Arc::clone(lock(&self.shared.state).current_cell()?);
        Some(Lease {
            shared: Arc::clone(&self.shared),
            cell,
        })
    }

    /// Revokes the lease in force, if any, and returns its final counts:
    /// its stream ends, its unconfirmed items are replayed to the next
    /// stream (replay mode) or counted as [`lost`](ReceiverMetrics::lost).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(1);
    /// tx.send(1).await.unwrap();
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let mut stream = reusable.stream();
    /// assert_eq!(reusable.revoke().map(|m| m.generation), Some(1));
    /// assert_eq!(stream.next().await, None); // the item stays in the channel
    /// assert_eq!(reusable.revoke(), None);
    /// # }
    /// ```
    pub fn revoke(&mut self) -> Option<LeaseMetrics> {
        let (metrics, waker, to_drop) = lock(&self.shared.state).retire();
        drop(to_drop);
        if let Some(waker) = waker {
            waker.wake();
        }
        metrics
    }

    /// Whether this receiver replays unacknowledged items
    /// ([`with_replay`](Self::with_replay)).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// assert!(reusable.is_replay());
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn is_replay(&self) -> bool {
        lock(&self.shared.state).replay.is_some()
    }

    /// Revokes the lease in force and hands back every unacknowledged item
    /// — yielded to some lease and not acknowledged — oldest first (none in
    /// plain mode, where such items went with their lease): what to send
    /// elsewhere, or to log, when giving up. The receiver goes on: items
    /// taken from the channel and not yet yielded (set aside or staged) stay
    /// for the next stream, ahead of the channel. Counted in
    /// [`handed_back`](ReceiverMetrics::handed_back).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('x').await?;
    /// tx.send('y').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let mut stream = reusable.stream();
    /// stream.next().await;
    /// assert_eq!(reusable.take_unacked(), ['x']);
    /// assert_eq!(stream.next().await, None); // revoked
    /// assert_eq!(reusable.stream().next().await, Some('y'));
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_unacked(&mut self) -> Vec<T> {
        let (items, waker, to_drop) = {
            let mut state = lock(&self.shared.state);
            let (_, waker, to_drop) = state.retire();
            (state.take_unacked(), waker, to_drop)
        };
        drop(to_drop);
        if let Some(waker) = waker {
            waker.wake();
        }
        items
    }

    /// Ends the receiver and hands back every item sent and not
    /// acknowledged, oldest first: the unacknowledged ones (replay mode),
    /// then those taken from the channel and not yet yielded (set aside or
    /// staged), then what is still queued in the channel, which is closed
    /// first — senders fail from now on and keep their values. Every stream
    /// still alive ends. Counted in [`handed_back`](ReceiverMetrics::handed_back).
    ///
    /// This is what to call instead of dropping a receiver that may still
    /// hold items (see [Dropping](ReusableReceiver#dropping)). To keep the
    /// channel open, use [`into_inner`](Self::into_inner).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(8);
    /// for i in 0..4 {
    ///     tx.send(i).await?;
    /// }
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let mut stream = reusable.stream();
    /// let lease = stream.lease();
    /// stream.next().await;
    /// stream.next().await;
    /// lease.ack(1)?; // 0 is done; 1 was yielded, never confirmed
    /// assert_eq!(reusable.into_unacked(), [1, 2, 3]);
    /// assert!(tx.send(4).await.is_err(), "the channel is closed");
    /// assert_eq!(stream.next().await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_unacked(self) -> Vec<T> {
        let (items, waker, to_drop) = {
            let mut state = lock(&self.shared.state);
            let (_, waker, to_drop) = state.retire();
            let items = state.take_everything(true);
            state.totals.handed_back += items.len() as u64;
            (items, waker, to_drop)
        };
        drop(to_drop);
        if let Some(waker) = waker {
            waker.wake();
        }
        items
    }

    /// A snapshot of the receiver's counters and gauges; see
    /// [`ReceiverMetrics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send(1).await?;
    /// tx.send(2).await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// reusable.stream().next().await;
    /// let metrics = reusable.metrics();
    /// assert_eq!((metrics.leases, metrics.delivered, metrics.unacked), (1, 1, 1));
    /// assert_eq!(metrics.queued, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics(&self) -> ReceiverMetrics {
        lock(&self.shared.state).metrics()
    }

    /// Closes the channel: senders fail from now on, items already sent are
    /// still yielded, then streams end. The stream of the lease in force is
    /// woken, so that a stream waiting for an item ends.
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
    /// let mut reusable = ReusableReceiver::new(rx);
    /// reusable.close();
    /// assert!(tx.send(2).await.is_err());
    /// assert_eq!(reusable.stream().collect::<Vec<_>>().await, [1]);
    /// assert!(reusable.is_drained());
    /// # }
    /// ```
    pub fn close(&mut self) {
        let waker = {
            let mut state = lock(&self.shared.state);
            if let Some(source) = state.source.as_mut() {
                source.rx.close();
            }
            state.take_waker()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the channel is closed: every sender was dropped, or
    /// [`close`](Self::close) was called. Items already sent may still be
    /// waiting to be yielded; [`is_drained`](Self::is_drained) says when
    /// nothing is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (tx, rx) = tokio::sync::mpsc::channel(1);
    /// tx.try_send(1).unwrap();
    /// let mut reusable = ReusableReceiver::new(rx);
    /// assert!(!reusable.is_closed());
    /// reusable.close();
    /// assert!(reusable.is_closed());
    /// assert!(!reusable.is_drained());
    /// ```
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state)
            .source
            .as_ref()
            .is_none_or(|s| s.rx.is_closed())
    }

    /// Whether everything is done: the channel is closed (every sender
    /// dropped, or [`close`](Self::close)) and empty, nothing taken from it
    /// is waiting to be yielded, and no item awaits acknowledgement. A retry
    /// loop that uploads until the channel ends stops here.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let reusable = ReusableReceiver::new(rx);
    /// assert!(!reusable.is_drained());
    /// drop(tx);
    /// assert!(reusable.is_drained());
    /// ```
    pub fn is_drained(&self) -> bool {
        lock(&self.shared.state).is_drained()
    }

    /// Takes the receiver back, with the items already out of the channel —
    /// the unacknowledged ones (replay mode), then those taken and not yet
    /// yielded (set aside or staged) — oldest first: they come before
    /// anything still in the channel, which stays open. Every stream still
    /// alive ends. The returned items are counted in
    /// [`handed_back`](ReceiverMetrics::handed_back).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send(1).await?;
    /// tx.send(2).await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let mut stream = reusable.stream();
    /// assert_eq!(stream.next().await, Some(1));
    /// let (mut rx, taken) = reusable.into_inner();
    /// assert_eq!(taken, [1, 2]); // 1 unacknowledged, 2 taken with it
    /// tx.send(3).await?;
    /// assert_eq!(rx.recv().await, Some(3));
    /// assert_eq!(stream.next().await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> (Receiver<T>, Vec<T>) {
        let (source, taken, waker, to_drop) = {
            let mut state = lock(&self.shared.state);
            let (_, waker, to_drop) = state.retire();
            let taken = state.take_everything(false);
            state.totals.handed_back += taken.len() as u64;
            let source = state.source.take().expect(
                "only `into_inner` takes the source, and it consumes the `ReusableReceiver`",
            );
            (source, taken, waker, to_drop)
        };
        drop(to_drop);
        if let Some(waker) = waker {
            waker.wake();
        }
        (source.rx, taken)
    }
}

impl<T> Drop for ReusableReceiver<T> {
    fn drop(&mut self) {
        let discarded = {
            let mut state = lock(&self.shared.state);
            state.orphaned = true;
            state.discard_if_orphaned()
        };
        // Dropped unlocked: an item's `Drop` is user code.
        drop(discarded);
    }
}

impl<T> fmt::Debug for ReusableReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("ReusableReceiver")
            .field("replay", &state.replay.is_some())
            .field("lease", &state.current_generation())
            .field("metrics", &state.metrics())
            .finish_non_exhaustive()
    }
}

impl<T> ReusableStream<T> {
    /// A handle on this stream's lease, to keep when the stream is given
    /// away: acknowledge through it once the consumer confirmed items.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let stream = reusable.stream();
    /// let lease = stream.lease();
    /// drop(stream); // given to a call that dropped it
    /// assert!(lease.is_current());
    /// assert!(lease.metrics().released);
    /// ```
    pub fn lease(&self) -> Lease<T> {
        Lease {
            shared: Arc::clone(&self.shared),
            cell: Arc::clone(&self.cell),
        }
    }

    /// The generation of this stream's lease: 1 for the first stream of a
    /// [`ReusableReceiver`], one more for each.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// assert_eq!(reusable.stream().generation(), 1);
    /// assert_eq!(reusable.stream().generation(), 2);
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl<T> Stream for ReusableStream<T> {
    type Item = T;

    /// The next item while the lease is in force; `None` once the channel
    /// is closed and nothing is held, the lease was revoked, or
    /// [`WhenFull::EndStream`](crate::WhenFull::EndStream) found the buffer full.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken unless this poll returns it.
    ///
    /// # Panics
    ///
    /// When `T::clone` or the weigher panics (replay mode); the item stays
    /// next in line.
    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if this.next < this.len {
            // The fast path: a store, a compiler fence, a load; no lock.
            if let Some(item) = this.cell.claim(this.next) {
                this.next += 1;
                return Poll::Ready(Some(item));
            }
        }
        this.poll_slow(cx)
    }
}

impl<T> ReusableStream<T> {
    /// Everything but a claim from the chunk: the end, a claim that met a
    /// revocation, a new chunk. Kept out of line so that `poll_next`'s fast
    /// path stays small enough to inline.
    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut state = lock(&self.shared.state);
        if self.next < self.len {
            // The claim of item `next` met the end of the lease: the ender
            // recorded whether it counted it as the stream's.
            let settled = state.settle(&self.cell, self.next);
            drop(state);
            return match settled {
                Some(item) => {
                    self.next += 1;
                    // Nothing more from this chunk: the next poll finds the
                    // lease ended.
                    self.len = self.next;
                    Poll::Ready(Some(item))
                }
                None => self.end(),
            };
        }
        self.filling = true;
        let fill = state.fill(self.generation, cx);
        self.filling = false;
        drop(state);
        match fill {
            Fill::Item { item, len } => {
                (self.next, self.len) = (1, len);
                Poll::Ready(Some(item))
            }
            Fill::Resume { item, next, len } => {
                (self.next, self.len) = (next, len);
                Poll::Ready(Some(item))
            }
            Fill::End => self.end(),
            Fill::Pending => Poll::Pending,
        }
    }

    fn end(&mut self) -> Poll<Option<T>> {
        (self.done, self.next, self.len) = (true, 0, 0);
        Poll::Ready(None)
    }
}

impl<T> FusedStream for ReusableStream<T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> Drop for ReusableStream<T> {
    fn drop(&mut self) {
        self.cell.released.store(true, Ordering::Release);
        if self.done || (self.next >= self.len && !self.filling) {
            // Nothing is left in its chunk: what it claimed is counted when
            // the lease ends (or the next chunk is filled), without the lock.
            return;
        }
        // What it took and did not yield goes back, under the lock (its
        // lease stays in force, for its handles to acknowledge).
        let to_drop = lock(&self.shared.state).release(self.generation);
        drop(to_drop);
    }
}

impl<T> fmt::Debug for ReusableStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReusableStream")
            .field("generation", &self.generation)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> Lease<T> {
    /// The lease's generation (that of its stream).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let stream = reusable.stream();
    /// assert_eq!(stream.lease().generation(), stream.generation());
    /// ```
    pub fn generation(&self) -> u64 {
        self.cell.generation
    }

    /// Whether the lease is still in force (not revoked).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let lease = reusable.stream().lease();
    /// assert!(lease.is_current());
    /// reusable.revoke();
    /// assert!(!lease.is_current());
    /// ```
    pub fn is_current(&self) -> bool {
        lock(&self.shared.state).is_current(self.cell.generation)
    }

    /// Confirms the first `n` items this lease's stream yielded (cumulative:
    /// a smaller `n` than before changes nothing). Returns how many items
    /// were newly acknowledged. In replay mode they leave the buffer, which
    /// may let a waiting stream pull again.
    ///
    /// # Errors
    ///
    /// [`AckError::Revoked`] if the lease is no longer in force;
    /// [`AckError::NotYielded`] if `n` exceeds what the stream yielded.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{AckError, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let mut stream = reusable.stream();
    /// let lease = stream.lease();
    /// stream.next().await;
    /// stream.next().await;
    /// assert_eq!(lease.ack(1), Ok(1));
    /// assert_eq!(lease.ack(2), Ok(1));
    /// assert_eq!(lease.ack(1), Ok(0));
    /// assert_eq!(lease.ack(3), Err(AckError::NotYielded { requested: 3, yielded: 2 }));
    /// # }
    /// ```
    pub fn ack(&self, n: u64) -> Result<u64, AckError> {
        self.acknowledge(Some(n))
    }

    /// Confirms everything this lease's stream yielded so far — the call
    /// returned OK. Returns how many items were newly acknowledged.
    ///
    /// # Errors
    ///
    /// [`AckError::Revoked`] if the lease is no longer in force.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send(1).await?;
    /// drop(tx);
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let mut stream = reusable.stream();
    /// let lease = stream.lease();
    /// while stream.next().await.is_some() {}
    /// assert_eq!(lease.ack_all()?, 1);
    /// assert!(reusable.is_drained());
    /// # Ok(())
    /// # }
    /// ```
    pub fn ack_all(&self) -> Result<u64, AckError> {
        self.acknowledge(None)
    }

    fn acknowledge(&self, n: Option<u64>) -> Result<u64, AckError> {
        let (result, waker) = lock(&self.shared.state).ack(self.cell.generation, n);
        if let Some(waker) = waker {
            waker.wake();
        }
        result
    }

    /// The lease's counts: live while it is in force, final once it ended.
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
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let mut stream = reusable.stream();
    /// let lease = stream.lease();
    /// stream.next().await;
    /// reusable.stream(); // revokes `lease`
    /// reusable.stream();
    /// let metrics = lease.metrics();
    /// assert_eq!((metrics.delivered, metrics.released), (1, false));
    /// drop(stream); // late
    /// assert!(lease.metrics().released);
    /// # }
    /// ```
    pub fn metrics(&self) -> LeaseMetrics {
        lock(&self.shared.state).lease_metrics(&self.cell)
    }

    /// The totals of the receiver this lease belongs to — also once the
    /// [`ReusableReceiver`] itself was dropped, to see what its drop
    /// discarded.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.try_send(1).unwrap();
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let lease = reusable.stream().lease();
    /// lease.revoke();
    /// drop(reusable); // nothing can take the queued item any more
    /// assert_eq!(lease.receiver_metrics().dropped, 1);
    /// assert!(tx.is_closed());
    /// ```
    pub fn receiver_metrics(&self) -> ReceiverMetrics {
        lock(&self.shared.state).metrics()
    }

    /// Revokes this lease if it is still in force — its stream ends and is
    /// woken — and returns its final counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReusableReceiver;
    ///
    /// let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let lease = reusable.stream().lease();
    /// assert_eq!(lease.revoke().generation, 1);
    /// assert!(!lease.is_current());
    /// assert!(reusable.lease().is_none());
    /// ```
    pub fn revoke(&self) -> LeaseMetrics {
        self.end(false)
    }

    /// Ends the lease (first acknowledging everything, if `ack_all`) and
    /// returns its final counts.
    pub(crate) fn end(&self, ack_all: bool) -> LeaseMetrics {
        let (metrics, waker, to_drop) = {
            let mut state = lock(&self.shared.state);
            if state.is_current(self.cell.generation) {
                // The acknowledgement cannot fail (the lease is in force and
                // `None` means "all"); if it takes the waiting stream's waker,
                // that waker must still be woken for the revocation.
                let (_, acked_waker) = if ack_all {
                    state.ack(self.cell.generation, None)
                } else {
                    (Ok(0), None)
                };
                let (metrics, waker, mut to_drop) = state.retire();
                to_drop.extend(state.discard_if_orphaned());
                (metrics, waker.or(acked_waker), to_drop)
            } else {
                (None, None, Vec::new())
            }
        };
        drop(to_drop);
        if let Some(waker) = waker {
            waker.wake();
        }
        metrics.unwrap_or_else(|| State::final_metrics(&self.cell))
    }
}

impl<T> Clone for Lease<T> {
    fn clone(&self) -> Self {
        Lease {
            shared: Arc::clone(&self.shared),
            cell: Arc::clone(&self.cell),
        }
    }
}

impl<T> fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("generation", &self.cell.generation)
            .finish_non_exhaustive()
    }
}
