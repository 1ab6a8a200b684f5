//! [`Sender`]: the sending half, tokio-like — `send().await`, `try_send`,
//! `send_blocking`, `reserve` — with every error handing the value back.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_patterns_core::__private::loom::Arc;
use async_patterns_core::{RuntimeContext, WouldDeadlock};

use crate::metrics::ChannelMetrics;
use crate::shared::{Shared, WaitSlot};
use crate::{SendBlockingError, SendError, TrySendError};

/// Runs `future` to completion on the calling thread, parking it between
/// polls. Only called where [`RuntimeContext`] says the thread may block.
#[cfg(not(async_patterns_loom))]
use async_patterns_core::park_on as block_on;
#[cfg(async_patterns_loom)]
use loom::future::block_on;

/// The sending half of a channel, from [`channel`](crate::channel) or
/// [`ChannelBuilder::build`](crate::ChannelBuilder::build).
///
/// Cheap to clone; the channel ends for its consumers (after they have
/// delivered everything) when the last `Sender` is dropped. A value takes
/// one slot of the channel's capacity from the moment it is sent until it
/// is committed or dead-lettered, so senders wait while consumers hold,
/// retry or roll back `capacity` items. Senders that wait are served in the
/// order they started waiting.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = channel(8);
/// let tx2 = tx.clone();
/// tx.send("a").await.unwrap();
/// tx2.try_send("b").unwrap();
/// drop((tx, tx2));
///
/// let mut got = Vec::new();
/// while let Some(delivery) = rx.begin().await {
///     got.push(delivery.commit());
/// }
/// assert_eq!(got, ["a", "b"]);
/// # }
/// ```
pub struct Sender<T> {
    chan: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    pub(crate) fn new(chan: Arc<Shared<T>>) -> Self {
        Sender { chan }
    }

    pub(crate) fn shared(&self) -> &Shared<T> {
        &self.chan
    }

    /// Sends `value`, waiting for a free slot if the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with `value` handed back if the receiver closed the
    /// channel or was dropped (before or while this waited).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, `value` was not sent
    /// and is dropped with it. To keep the value, wait for a slot with
    /// [`reserve`](Self::reserve), which is cancel-safe, then send through
    /// the [`Permit`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{SendError, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// tx.send(1).await.unwrap();
    /// assert_eq!(rx.begin().await.unwrap().commit(), 1);
    ///
    /// rx.close();
    /// assert_eq!(tx.send(2).await, Err(SendError(2)));
    /// # }
    /// ```
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        SendFuture {
            key: self.chan.key_of(&value),
            chan: &self.chan,
            slot: WaitSlot::default(),
            value: Some(value),
        }
        .await
    }

    /// Sends `value` if a slot is free right now and no other sender is
    /// waiting for one.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if no slot is free now (a delivered item
    /// holds its slot until it is committed or dead-lettered), or
    /// [`TrySendError::Closed`] if the receiver closed the channel or was
    /// dropped; both hand `value` back.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{TrySendError, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// tx.try_send(1).unwrap();
    /// // The slot stays taken while the item is delivered but not committed.
    /// let delivery = rx.begin().await.unwrap();
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// delivery.commit();
    /// tx.try_send(2).unwrap();
    /// # }
    /// ```
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let key = self.chan.key_of(&value);
        self.chan.try_send(value, key).map_err(|(value, closed)| {
            if closed {
                TrySendError::Closed(value)
            } else {
                TrySendError::Full(value)
            }
        })
    }

    /// Sends `value` from sync code: at once if a slot is free, and
    /// otherwise by blocking the thread until one is — where blocking is
    /// safe. The one meaning of `send_blocking` in every crate of the
    /// workspace, documented on [`SendBlockingError`]:
    ///
    /// - a slot is free (and no other sender waits for one): sent at once,
    ///   on any thread, including a current-thread runtime's;
    /// - no slot: outside a runtime and on blocking-pool threads it blocks
    ///   directly, on a multi-thread worker it blocks inside
    ///   [`block_in_place`](tokio::task::block_in_place), and on the thread
    ///   of a current-thread runtime it refuses at once with
    ///   [`SendBlockingError::WouldDeadlock`]: waiting there would stop the
    ///   very tasks that could make room.
    ///
    /// # Errors
    ///
    /// [`SendBlockingError::Closed`] if the channel is closed (now, or
    /// while waiting), [`SendBlockingError::WouldDeadlock`] as above; both
    /// hand `value` back.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{SendBlockingError, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// let tx2 = tx.clone();
    /// let producer = std::thread::spawn(move || {
    ///     for i in 0..3 {
    ///         tx2.send_blocking(i).unwrap();
    ///     }
    /// });
    /// for expected in 0..3 {
    ///     assert_eq!(rx.begin().await.unwrap().commit(), expected);
    /// }
    /// producer.join().unwrap();
    ///
    /// // Here, on the runtime's own thread, a send with room succeeds...
    /// tx.send_blocking(9).unwrap();
    /// // ...and one that would have to wait is refused instead of hanging.
    /// assert!(matches!(tx.send_blocking(10), Err(SendBlockingError::WouldDeadlock(10))));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Inside a [`LocalSet`](tokio::task::LocalSet) polled by a multi-thread
    /// worker, where tokio's `block_in_place` panics (see the limits of
    /// `RuntimeContext`).
    pub fn send_blocking(&self, value: T) -> Result<(), SendBlockingError<T>> {
        let value = match self.try_send(value) {
            Ok(()) => return Ok(()),
            Err(full) if full.is_full() => full.into_inner(),
            Err(closed) => return Err(SendBlockingError::Closed(closed.into_inner())),
        };
        let mut value = Some(value);
        let sent = RuntimeContext::run_blocking(|| {
            let value = value.take().expect("the closure runs once");
            block_on(self.send(value))
        });
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(SendError(value))) => Err(SendBlockingError::Closed(value)),
            Err(WouldDeadlock) => Err(SendBlockingError::WouldDeadlock(
                value.expect("refused before the closure ran"),
            )),
        }
    }

    /// Waits for a free slot and holds it in a [`Permit`], through which one
    /// value can then be sent without waiting.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped, no slot is held and a slot
    /// granted meanwhile passes to the next waiting sender. Only the place
    /// in the queue of waiting senders is lost.
    ///
    /// # Errors
    ///
    /// [`SendError`]`(())` if the receiver closed the channel or was dropped
    /// (before or while this waited).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{SendError, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(1);
    /// let permit = tx.reserve().await.unwrap();
    /// assert!(tx.try_send(0).is_err()); // the permit holds the only slot
    /// permit.send(1).unwrap();
    /// assert_eq!(rx.begin().await.unwrap().commit(), 1);
    ///
    /// drop(rx);
    /// assert_eq!(tx.reserve().await.unwrap_err(), SendError(()));
    /// # }
    /// ```
    pub async fn reserve(&self) -> Result<Permit<'_, T>, SendError<()>> {
        ReserveFuture {
            chan: &self.chan,
            slot: WaitSlot::default(),
        }
        .await
        .map(|()| Permit { chan: &self.chan })
    }

    /// Whether the receiver closed the channel or was dropped: every send
    /// will fail from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// let (tx, mut rx) = channel::<u8>(1);
    /// assert!(!tx.is_closed());
    /// rx.close();
    /// assert!(tx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// The channel's capacity: how many items may be in it and not yet
    /// committed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// let (tx, _rx) = channel::<u8>(32);
    /// assert_eq!(tx.capacity(), 32);
    /// ```
    pub fn capacity(&self) -> usize {
        self.chan.capacity()
    }

    /// A snapshot of the channel's counters and gauges, the same as
    /// [`Receiver::metrics`](crate::Receiver::metrics).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::channel;
    ///
    /// let (tx, _rx) = channel(4);
    /// tx.try_send("a").unwrap();
    /// let m = tx.metrics();
    /// assert_eq!((m.sent, m.queued, m.in_flight), (1, 1, 0));
    /// ```
    pub fn metrics(&self) -> ChannelMetrics {
        ChannelMetrics::of(&self.chan)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Sender {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// One slot of a channel's capacity, held for one value; from
/// [`Sender::reserve`].
///
/// Dropping it unused gives the slot back.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, _rx) = channel::<u8>(1);
/// let permit = tx.reserve().await.unwrap();
/// assert!(tx.try_send(1).is_err());
/// drop(permit);
/// tx.try_send(1).unwrap();
/// # }
/// ```
#[must_use = "dropping a permit gives its slot back without sending"]
pub struct Permit<'a, T> {
    chan: &'a Shared<T>,
}

impl<T> Permit<'_, T> {
    /// Sends `value` into the held slot, without waiting.
    ///
    /// # Errors
    ///
    /// [`SendError`] with `value` handed back if the receiver closed the
    /// channel or was dropped since the slot was reserved.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{SendError, channel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = channel(2);
    /// tx.reserve().await.unwrap().send("kept").unwrap();
    ///
    /// let permit = tx.reserve().await.unwrap();
    /// rx.close();
    /// assert_eq!(permit.send("refused"), Err(SendError("refused")));
    /// assert_eq!(rx.begin().await.unwrap().commit(), "kept");
    /// # }
    /// ```
    pub fn send(self, value: T) -> Result<(), SendError<T>> {
        let chan = self.chan;
        // The slot now belongs to the value (or is released by `send_reserved`).
        std::mem::forget(self);
        let key = chan.key_of(&value);
        chan.send_reserved(value, key).map_err(SendError)
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        self.chan.release(1);
    }
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

/// [`Sender::send`]: waits in line for a slot, then sends under the same lock.
struct SendFuture<'a, T> {
    chan: &'a Shared<T>,
    slot: WaitSlot,
    value: Option<T>,
    key: u64,
}

// The value is moved, never pinned.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this
            .chan
            .poll_send(cx, &mut this.slot, &mut this.value, this.key)
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(_closed)) => Poll::Ready(Err(SendError(
                this.value.take().expect("polled after completion"),
            ))),
        }
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        if self.slot.is_waiting() {
            self.chan.cancel_wait(&mut self.slot);
        }
    }
}

/// [`Sender::reserve`]: waits in line for a slot.
struct ReserveFuture<'a, T> {
    chan: &'a Shared<T>,
    slot: WaitSlot,
}

impl<T> Future for ReserveFuture<'_, T> {
    type Output = Result<(), SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.chan
            .poll_reserve(cx, &mut this.slot)
            .map(|r| r.map_err(|_closed| SendError(())))
    }
}

impl<T> Drop for ReserveFuture<'_, T> {
    fn drop(&mut self) {
        if self.slot.is_waiting() {
            self.chan.cancel_wait(&mut self.slot);
        }
    }
}
