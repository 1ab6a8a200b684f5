//! Streams that end with a return value: a producer's summary, error or
//! cursor, handed to whoever holds the [`Outcome`] — or, if the stream is
//! dropped first, an explicit [`Dropped`], never a hang.
//!
//! Three tools, from the most to the least general:
//!
//! - [`channel`]: the building block, a one-shot slot for the outcome whose
//!   [`OutcomeSender`] reports [`Dropped`] if it is dropped unsent. Adapters
//!   own the sender and complete it when their stream ends.
//! - [`stream`]: write the stream as an async block that sends items through
//!   a [`Yielder`] and returns the outcome.
//! - [`summarize`]: wrap an existing stream and fold its items into a
//!   [`Summary`], delivered when the stream ends or is dropped (with
//!   `finished: false`).
//!
//! The pair form — a stream plus a separate [`Outcome`] — lets the stream be
//! given away by value (to a `'static` consumer such as a gRPC client call)
//! while its owner keeps the handle to learn how it ended.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};

/// The stream that carried an [`Outcome`] was dropped before it ended, so no
/// outcome was produced.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::{self, Dropped};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (sender, outcome) = outcome::channel::<u32>();
/// drop(sender);
/// assert_eq!(outcome.await, Err(Dropped));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the stream was dropped before it ended")
    }
}

impl std::error::Error for Dropped {}

/// Creates the slot for one outcome: the [`OutcomeSender`] goes with the
/// stream, the [`Outcome`] with whoever wants to know how it ended.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (sender, outcome) = outcome::channel();
/// sender.send("cursor-42").unwrap();
/// assert_eq!(outcome.await, Ok("cursor-42"));
/// # }
/// ```
pub fn channel<R>() -> (OutcomeSender<R>, Outcome<R>) {
    let (tx, rx) = oneshot::channel();
    (OutcomeSender { tx }, Outcome { rx })
}

/// The sending half of [`channel`]: completes the [`Outcome`] once. Dropping
/// it unsent completes the outcome with [`Dropped`].
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome;
///
/// let (sender, outcome) = outcome::channel::<u8>();
/// drop(outcome);
/// // Nobody listens any more: the value comes back.
/// assert_eq!(sender.send(3), Err(3));
/// ```
pub struct OutcomeSender<R> {
    tx: oneshot::Sender<R>,
}

impl<R> OutcomeSender<R> {
    /// Completes the outcome with `value`, or hands `value` back if the
    /// [`Outcome`] was dropped.
    ///
    /// # Errors
    ///
    /// `Err(value)` when nobody holds the [`Outcome`] any more.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::outcome;
    ///
    /// let (sender, mut outcome) = outcome::channel();
    /// assert_eq!(sender.send(1), Ok(()));
    /// assert_eq!(outcome.try_take(), Some(Ok(1)));
    /// ```
    pub fn send(self, value: R) -> Result<(), R> {
        self.tx.send(value)
    }

    /// Whether the [`Outcome`] was dropped, so that computing the value is
    /// pointless.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::outcome;
    ///
    /// let (sender, outcome) = outcome::channel::<()>();
    /// assert!(!sender.is_closed());
    /// drop(outcome);
    /// assert!(sender.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<R> fmt::Debug for OutcomeSender<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// How a stream ended: resolves to `Ok(value)` when the stream produced its
/// outcome, or `Err(Dropped)` when it was dropped first. Never hangs: the
/// outcome is settled at the latest when the stream is dropped.
///
/// Awaiting it is cancel-safe; [`try_take`](Self::try_take) asks without
/// waiting.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::{self, Dropped};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut items, outcome) = outcome::stream(|tx| async move {
///     tx.send(1).await.unwrap();
///     tx.send(2).await.unwrap();
///     "done"
/// });
/// assert_eq!(items.next().await, Some(1));
/// drop(items); // before the end
/// assert_eq!(outcome.await, Err(Dropped));
/// # }
/// ```
pub struct Outcome<R> {
    rx: oneshot::Receiver<R>,
}

impl<R> Outcome<R> {
    /// The outcome if the stream has settled it, without waiting: `None`
    /// while the stream is still running.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::outcome::{self, Dropped};
    ///
    /// let (sender, mut outcome) = outcome::channel::<u32>();
    /// assert_eq!(outcome.try_take(), None);
    /// drop(sender);
    /// assert_eq!(outcome.try_take(), Some(Err(Dropped)));
    /// ```
    pub fn try_take(&mut self) -> Option<Result<R, Dropped>> {
        match self.rx.try_recv() {
            Ok(value) => Some(Ok(value)),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(Dropped)),
        }
    }
}

impl<R> Future for Outcome<R> {
    type Output = Result<R, Dropped>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map_err(|_| Dropped)
    }
}

impl<R> fmt::Debug for Outcome<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome").finish_non_exhaustive()
    }
}

/// The error of [`Yielder::send`]: the stream is gone, so the item comes
/// back.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::StreamClosed;
///
/// let err = StreamClosed(5);
/// assert_eq!(err.into_inner(), 5);
/// assert_eq!(StreamClosed(5).to_string(), "the stream was dropped");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StreamClosed<T>(pub T);

impl<T> StreamClosed<T> {
    /// The item that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::outcome::StreamClosed;
    ///
    /// assert_eq!(StreamClosed("x").into_inner(), "x");
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for StreamClosed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamClosed").finish_non_exhaustive()
    }
}

impl<T> fmt::Display for StreamClosed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the stream was dropped")
    }
}

impl<T> std::error::Error for StreamClosed<T> {}

/// Sends the items of a stream made by [`stream`]. `send` waits until the
/// consumer has taken the previous item, so a producer never runs ahead of
/// its consumer by more than one item.
///
/// It can be cloned or moved into other tasks; the stream ends when the
/// producer's future has returned and every item sent is consumed.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (items, outcome) = outcome::stream(|tx| async move {
///     let helper = tokio::spawn({
///         let tx = tx.clone();
///         async move { tx.send("from a task").await.unwrap() }
///     });
///     helper.await.unwrap();
///     1
/// });
/// assert_eq!(items.collect::<Vec<_>>().await, ["from a task"]);
/// assert_eq!(outcome.await, Ok(1));
/// # }
/// ```
pub struct Yielder<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for Yielder<T> {
    fn clone(&self) -> Self {
        Yielder {
            tx: self.tx.clone(),
        }
    }
}

impl<T> Yielder<T> {
    /// Hands `item` to the stream's consumer, waiting while the previous one
    /// has not been taken.
    ///
    /// # Errors
    ///
    /// [`StreamClosed`] with the item if the stream was dropped (possible
    /// only for a `Yielder` moved out of the producer's future).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, `item` was not sent and
    /// is dropped with it; the stream sees nothing of it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::outcome;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (items, _outcome) = outcome::stream(|tx| async move {
    ///     for i in 0..3 {
    ///         tx.send(i).await.unwrap();
    ///     }
    /// });
    /// assert_eq!(items.collect::<Vec<_>>().await, [0, 1, 2]);
    /// # }
    /// ```
    pub async fn send(&self, item: T) -> Result<(), StreamClosed<T>> {
        self.tx.send(item).await.map_err(|e| StreamClosed(e.0))
    }
}

impl<T> fmt::Debug for Yielder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yielder")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// A stream whose items are sent by an async producer and whose end value
/// is delivered to an [`Outcome`]: write the stream as an async block that
/// returns its outcome.
///
/// The producer runs inside the stream's `poll_next` — no task is spawned —
/// so it makes progress only while the stream is polled, and dropping the
/// stream drops the producer (the outcome then reports [`Dropped`]).
///
/// `poll_next` is cancel-safe: an item is handed out only by a `poll_next`
/// that returns it.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (pages, outcome) = outcome::stream(|tx| async move {
///     let mut cursor = 0;
///     while cursor < 30 {
///         tx.send(cursor..cursor + 10).await.unwrap();
///         cursor += 10;
///     }
///     cursor // where to resume next time
/// });
/// assert_eq!(pages.count().await, 3);
/// assert_eq!(outcome.await, Ok(30));
/// # }
/// ```
pub fn stream<T, R, F, Fut>(producer: F) -> (ProducerStream<T, R, Fut>, Outcome<R>)
where
    F: FnOnce(Yielder<T>) -> Fut,
    Fut: Future<Output = R>,
{
    let (tx, rx) = mpsc::channel(1);
    let (sender, outcome) = channel();
    let stream = ProducerStream {
        producer: Some(Box::pin(producer(Yielder { tx }))),
        items: rx,
        sender: Some(sender),
    };
    (stream, outcome)
}

/// The stream made by [`stream`].
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::{self, ProducerStream};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (items, outcome) = outcome::stream(|tx| async move {
///     tx.send("a").await.unwrap();
///     1_u32
/// });
/// let items: ProducerStream<_, _, _> = items;
/// assert_eq!(items.collect::<Vec<_>>().await, ["a"]);
/// assert_eq!(outcome.await, Ok(1));
/// # }
/// ```
pub struct ProducerStream<T, R, Fut> {
    // Boxed so that the stream is `Unpin` whatever the producer is, and can
    // be handed to consumers that need `Unpin`.
    producer: Option<Pin<Box<Fut>>>,
    items: mpsc::Receiver<T>,
    sender: Option<OutcomeSender<R>>,
}

impl<T, R, Fut> Stream for ProducerStream<T, R, Fut>
where
    Fut: Future<Output = R>,
{
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if let Poll::Ready(Some(item)) = this.items.poll_recv(cx) {
            return Poll::Ready(Some(item));
        }
        if let Some(producer) = this.producer.as_mut()
            && let Poll::Ready(value) = producer.as_mut().poll(cx)
        {
            this.producer = None;
            if let Some(sender) = this.sender.take() {
                // Nobody may be listening; the value is simply not wanted then.
                let _ = sender.send(value);
            }
        }
        // Items sent by the producer (or by a clone of its `Yielder`) before
        // it returned; the channel ends once every `Yielder` is gone.
        this.items.poll_recv(cx)
    }
}

impl<T, R, Fut> fmt::Debug for ProducerStream<T, R, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerStream")
            .field("producer_finished", &self.producer.is_none())
            .finish_non_exhaustive()
    }
}

/// What [`summarize`] delivers: the folded value, and whether the stream
/// reached its end (`false` when it was dropped before).
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::Summary;
///
/// let s = Summary { value: 3, finished: true };
/// assert!(s.finished);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Summary<A> {
    /// The fold of every item the consumer received.
    pub value: A,
    /// `true` if the stream ended, `false` if it was dropped before its end.
    pub finished: bool,
}

/// Wraps `stream` so that, when it ends or is dropped, the [`Outcome`]
/// receives the fold of every item the consumer received, and whether the
/// end was reached.
///
/// The wrapped stream must be [`Unpin`]; pin a stream that is not with
/// `Box::pin` first.
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::{self, Summary};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let words = futures::stream::iter(["a", "bb", "ccc"]);
/// let (mut words, outcome) = outcome::summarize(words, (0, 0), |(n, bytes), w: &&str| {
///     *n += 1;
///     *bytes += w.len();
/// });
/// assert_eq!(words.next().await, Some("a"));
/// assert_eq!(words.next().await, Some("bb"));
/// drop(words); // the consumer gave up early
/// assert_eq!(outcome.await, Ok(Summary { value: (2, 3), finished: false }));
/// # }
/// ```
pub fn summarize<S, A, F>(stream: S, init: A, fold: F) -> (Summarized<S, A, F>, Outcome<Summary<A>>)
where
    S: Stream,
    F: FnMut(&mut A, &S::Item),
{
    let (sender, outcome) = channel();
    let summarized = Summarized {
        stream,
        state: Some((init, sender)),
        fold,
    };
    (summarized, outcome)
}

/// The stream made by [`summarize`].
///
/// # Examples
///
/// ```
/// use async_patterns_core::outcome::{self, Summarized};
/// use futures::{StreamExt, stream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (counted, summary) = outcome::summarize(stream::iter([1, 2, 3]), 0, |n, x| *n += x);
/// let counted: Summarized<_, _, _> = counted;
/// assert_eq!(counted.count().await, 3);
/// assert_eq!(summary.await.unwrap().value, 6);
/// # }
/// ```
pub struct Summarized<S, A, F> {
    stream: S,
    // `None` once the summary was delivered.
    state: Option<(A, OutcomeSender<Summary<A>>)>,
    fold: F,
}

impl<S, A, F> Summarized<S, A, F> {
    fn deliver(&mut self, finished: bool) {
        if let Some((value, sender)) = self.state.take() {
            let _ = sender.send(Summary { value, finished });
        }
    }
}

impl<S, A, F> Stream for Summarized<S, A, F>
where
    S: Stream + Unpin,
    F: FnMut(&mut A, &S::Item),
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.stream).poll_next(cx)) {
            Some(item) => {
                if let Some((acc, _)) = this.state.as_mut() {
                    (this.fold)(acc, &item);
                }
                Poll::Ready(Some(item))
            }
            None => {
                this.deliver(true);
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

// The fold's state and closure are never pinned (no `Pin<&mut A>` or
// `Pin<&mut F>` is ever created), so only the inner stream decides.
impl<S: Unpin, A, F> Unpin for Summarized<S, A, F> {}

impl<S, A, F> Drop for Summarized<S, A, F> {
    fn drop(&mut self) {
        self.deliver(false);
    }
}

impl<S: fmt::Debug, A: fmt::Debug, F> fmt::Debug for Summarized<S, A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Summarized")
            .field("stream", &self.stream)
            .field("summary", &self.state.as_ref().map(|(a, _)| a))
            .finish_non_exhaustive()
    }
}
