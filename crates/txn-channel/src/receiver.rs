//! [`TransactionalReceiver`]: the receiving half. It keeps the items it has
//! taken from the channel (or stream) in order until they are committed or
//! dead-lettered, counts how often each was delivered, and waits out
//! `retry_after` delays.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use crate::chan::RxHandle;
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::delivery::{BatchDelivery, Delivery};

/// The receiving half of a [`TransactionalChannel`](crate::TransactionalChannel),
/// or a transactional view of any [`Stream`] ([`from_stream`](Self::from_stream)).
///
/// An item leaves it only when it is committed — through
/// [`Delivery::commit`], [`BatchDelivery::commit_all`] or
/// [`commit_first`](BatchDelivery::commit_first), or the seed-recipe
/// [`commit`](Self::commit) — or when it is handed to the dead-letter
/// destination after [`max_attempts`](crate::TransactionalChannelBuilder::max_attempts)
/// failed deliveries. Until then every delivery returns the oldest
/// uncommitted item again, so items are delivered at least once and in the
/// order they were sent.
///
/// Two ways to consume, which can be mixed:
///
/// - the guard API: [`begin`](Self::begin) returns a [`Delivery`] that must
///   be committed, and rolls back if it is dropped — on an early return, a
///   panic, or when the future holding it is cancelled;
///   [`begin_batch`](Self::begin_batch) does the same for up to `max` items;
/// - the seed recipe's peek-and-commit: [`recv`](Self::recv) peeks at the
///   current item and [`commit`](Self::commit) removes it; calling `recv`
///   again without committing delivers the same item again.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::TransactionalChannel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = TransactionalChannel::new(16);
/// for job in ["a", "b"] {
///     tx.send(job).await.unwrap();
/// }
/// drop(tx);
///
/// let mut log = Vec::new();
/// let mut failed_once = false;
/// while let Some(delivery) = rx.begin().await {
///     log.push((*delivery, delivery.attempt()));
///     if *delivery == "a" && !failed_once {
///         failed_once = true;
///         continue; // dropped: rolled back, "a" comes again
///     }
///     delivery.commit();
/// }
/// assert_eq!(log, [("a", 1), ("a", 2), ("b", 1)]);
/// # }
/// ```
pub struct TransactionalReceiver<T> {
    source: Source<T>,
    /// Items taken from the source and not yet committed, oldest first.
    buf: VecDeque<T>,
    /// How often each of the first `attempts.len()` items of `buf` was
    /// delivered; items beyond were never delivered. Deliveries always take
    /// the front of `buf`, so the counts never increase along the queue.
    attempts: VecDeque<u32>,
    /// The front item was handed out by `recv` and not committed yet.
    held: bool,
    /// The front item is not to be delivered before this instant.
    not_before: Option<Instant>,
    /// The timer for `not_before`, kept to be reset instead of reallocated.
    sleep: Option<Pin<Box<Sleep>>>,
    max_attempts: Option<u32>,
    dead_letter: Option<DeadLetterSink<T>>,
}

enum Source<T> {
    Channel(RxHandle<T>),
    /// `None` once the stream has ended or the receiver was closed.
    Stream(Option<Pin<Box<dyn Stream<Item = T> + Send>>>),
}

impl<T> TransactionalReceiver<T> {
    pub(crate) fn new_channel(
        rx: RxHandle<T>,
        max_attempts: Option<u32>,
        dead_letter: Option<DeadLetterSink<T>>,
    ) -> Self {
        Self::with_source(Source::Channel(rx), max_attempts, dead_letter)
    }

    pub(crate) fn new_stream(
        stream: Pin<Box<dyn Stream<Item = T> + Send>>,
        max_attempts: Option<u32>,
        dead_letter: Option<DeadLetterSink<T>>,
    ) -> Self {
        Self::with_source(Source::Stream(Some(stream)), max_attempts, dead_letter)
    }

    fn with_source(
        source: Source<T>,
        max_attempts: Option<u32>,
        dead_letter: Option<DeadLetterSink<T>>,
    ) -> Self {
        TransactionalReceiver {
            source,
            buf: VecDeque::new(),
            attempts: VecDeque::new(),
            held: false,
            not_before: None,
            sleep: None,
            max_attempts,
            dead_letter,
        }
    }

    /// A transactional receiver over any stream: the same peek, commit,
    /// rollback and attempt counting as over a channel.
    ///
    /// Items are pulled from the stream only when a delivery needs one
    /// (`begin_batch(max)` pulls up to `max` that are ready at once); pulled
    /// items stay with the receiver until committed. The stream is boxed, and
    /// must be `Send` so that the receiver can move between tasks. To limit attempts and
    /// dead-letter poison items, use
    /// [`TransactionalChannel::builder`](crate::TransactionalChannel::builder)
    /// and [`build_from_stream`](crate::TransactionalChannelBuilder::build_from_stream).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalReceiver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut rx = TransactionalReceiver::from_stream(futures::stream::iter(1..=3));
    /// let first = rx.begin().await.unwrap();
    /// assert_eq!(*first, 1);
    /// drop(first); // rolled back
    /// let mut got = Vec::new();
    /// while let Some(batch) = rx.begin_batch(10).await {
    ///     got.extend(batch.commit_all());
    /// }
    /// assert_eq!(got, [1, 2, 3]);
    /// # }
    /// ```
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Self::new_stream(Box::pin(stream), None, None)
    }

    /// Peeks at the oldest uncommitted item, waiting for one if there is
    /// none: the seed recipe's `recv`. Returns the same item on every call
    /// until [`commit`](Self::commit) removes it; each call counts as one
    /// more delivery toward
    /// [`max_attempts`](crate::TransactionalChannelBuilder::max_attempts).
    ///
    /// Returns `None` once the channel is closed (every sender dropped, or
    /// [`close`](Self::close) called) and every item has been committed or
    /// dead-lettered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped before it completes (a losing
    /// `select!` branch), nothing was delivered and nothing is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut receiver) = TransactionalChannel::new(100);
    /// tx.send(10).await.unwrap();
    /// drop(tx);
    ///
    /// let mut tries = 0;
    /// loop {
    ///     let Some(value) = receiver.recv().await else { break };
    ///     tries += 1;
    ///     let success = *value == 10 && tries == 2; // the first try fails
    ///     if success {
    ///         receiver.commit();
    ///     }
    ///     // no commit: the next call to recv returns the same value
    /// }
    /// assert_eq!(tries, 2);
    /// assert_eq!(receiver.commit(), None); // nothing left to commit
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<&T> {
        if !poll_fn(|cx| self.poll_ready(cx, 1)).await {
            return None;
        }
        self.mark_delivered(1);
        self.held = true;
        self.buf.front()
    }

    /// Removes the item the last [`recv`](Self::recv) returned and hands it
    /// over: the seed recipe's `commit`. Returns `None` if no item is held —
    /// `recv` was not called since the last commit, or it returned `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = TransactionalChannel::new(4);
    /// tx.send('x').await.unwrap();
    /// assert_eq!(rx.commit(), None); // nothing peeked yet
    /// assert_eq!(rx.recv().await, Some(&'x'));
    /// assert_eq!(rx.commit(), Some('x'));
    /// assert_eq!(rx.commit(), None);
    /// # }
    /// ```
    pub fn commit(&mut self) -> Option<T> {
        if !std::mem::take(&mut self.held) {
            return None;
        }
        Some(self.commit_front())
    }

    /// Starts a transaction on the oldest uncommitted item, waiting for one
    /// if there is none.
    ///
    /// The returned [`Delivery`] derefs to the item and tells its
    /// [`attempt`](Delivery::attempt); it ends with
    /// [`commit`](Delivery::commit), [`rollback`](Delivery::rollback) or
    /// [`retry_after`](Delivery::retry_after), and dropping it — also by a
    /// panic unwinding or by cancellation of the future that holds it —
    /// rolls back. Before delivering, an item that has used up its
    /// [`max_attempts`](crate::TransactionalChannelBuilder::max_attempts) is
    /// handed to the dead-letter destination, and a `retry_after` delay is
    /// waited out.
    ///
    /// Returns `None` once the channel is closed and every item has been
    /// committed or dead-lettered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped before it completes, nothing
    /// was delivered and nothing is lost; a pending `retry_after` delay and
    /// a wait for room in the dead-letter channel carry over to the next
    /// call.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = TransactionalChannel::new(4);
    /// tx.send(42).await.unwrap();
    /// drop(tx);
    ///
    /// let delivery = rx.begin().await.unwrap();
    /// assert_eq!((*delivery, delivery.attempt()), (42, 1));
    /// delivery.rollback();
    ///
    /// let delivery = rx.begin().await.unwrap();
    /// assert_eq!(delivery.attempt(), 2);
    /// assert_eq!(delivery.commit(), 42);
    /// assert!(rx.begin().await.is_none()); // closed and empty
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If a `retry_after` delay is pending and the call is not inside a
    /// tokio runtime with the time driver enabled.
    pub async fn begin(&mut self) -> Option<Delivery<'_, T>> {
        if !poll_fn(|cx| self.poll_ready(cx, 1)).await {
            return None;
        }
        self.mark_delivered(1);
        Some(Delivery::new(self))
    }

    /// Starts a transaction on up to `max` of the oldest uncommitted items,
    /// waiting for at least one.
    ///
    /// The batch holds as many of the first `max` items as are available at
    /// once — those the receiver already holds and those queued in the
    /// channel (or ready in the stream) — without waiting for more. It
    /// derefs to a slice and ends with
    /// [`commit_all`](BatchDelivery::commit_all),
    /// [`commit_first(k)`](BatchDelivery::commit_first) (the rest come back,
    /// in order), [`rollback`](BatchDelivery::rollback) or
    /// [`retry_after`](BatchDelivery::retry_after); dropping it rolls back.
    /// Each item of the batch counts one delivery.
    ///
    /// Returns `None` once the channel is closed and every item has been
    /// committed or dead-lettered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`begin`](Self::begin).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = TransactionalChannel::new(8);
    /// for i in 1..=5 {
    ///     tx.send(i).await.unwrap();
    /// }
    /// drop(tx);
    ///
    /// let batch = rx.begin_batch(3).await.unwrap();
    /// assert_eq!(&*batch, [1, 2, 3]);
    /// let done: Vec<_> = batch.commit_first(2).collect(); // 3 comes back
    /// assert_eq!(done, [1, 2]);
    ///
    /// let batch = rx.begin_batch(8).await.unwrap();
    /// assert_eq!(&*batch, [3, 4, 5]);
    /// assert_eq!(batch.attempt(0), Some(2));
    /// assert_eq!(batch.commit_all().len(), 3);
    /// assert!(rx.begin_batch(8).await.is_none());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If `max` is 0, and as [`begin`](Self::begin).
    pub async fn begin_batch(&mut self, max: usize) -> Option<BatchDelivery<'_, T>> {
        assert!(max > 0, "begin_batch: `max` must be at least 1");
        if !poll_fn(|cx| self.poll_ready(cx, max)).await {
            return None;
        }
        let len = max.min(self.buf.len());
        self.buf.make_contiguous();
        self.mark_delivered(len);
        Some(BatchDelivery::new(self, len))
    }

    /// Closes the receiving side: senders get their values back from now on
    /// (and waiting senders are woken to get theirs), while every item
    /// already sent is still delivered until committed or dead-lettered.
    /// For a receiver over a stream, stops pulling from the stream.
    ///
    /// This is the graceful shutdown: close, then keep calling
    /// [`begin`](Self::begin) until it returns `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::{SendError, TransactionalChannel};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = TransactionalChannel::new(4);
    /// tx.send(1).await.unwrap();
    /// rx.close();
    /// assert_eq!(tx.send(2).await, Err(SendError(2)));
    /// assert_eq!(rx.begin().await.unwrap().commit(), 1);
    /// assert!(rx.begin().await.is_none());
    /// # }
    /// ```
    pub fn close(&mut self) {
        match &mut self.source {
            Source::Channel(rx) => rx.0.close(),
            Source::Stream(stream) => *stream = None,
        }
    }

    /// How many items the receiver has taken from the channel or stream and
    /// not yet committed or dead-lettered (items still queued in the channel
    /// are not counted).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TransactionalChannel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = TransactionalChannel::new(4);
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// assert_eq!(rx.pending(), 0);
    /// rx.begin().await.unwrap().rollback();
    /// assert_eq!(rx.pending(), 2); // both were taken from the channel at once
    /// # }
    /// ```
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    // ----- the delivery machinery ------------------------------------------

    /// Readies the front item for delivery: dead-letters exhausted items,
    /// fetches items if none is held, waits out `retry_after`, and for
    /// batches tops up with what is available. `Ready(false)` at the end.
    fn poll_ready(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<bool> {
        // One unit of tokio's cooperative budget per delivery, as tokio's own
        // channels spend, so a consumer that never runs dry still yields.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            if self.front_is_exhausted() && ready!(self.poll_dead_letter(cx)) {
                continue;
            }
            if self.buf.is_empty() {
                if ready!(self.poll_fill(cx)) {
                    continue;
                }
                coop.made_progress();
                return Poll::Ready(false);
            }
            if let Some(deadline) = self.not_before {
                ready!(self.poll_sleep(cx, deadline));
                self.not_before = None;
            }
            if want > self.buf.len() {
                self.top_up(want);
            }
            coop.made_progress();
            return Poll::Ready(true);
        }
    }

    fn front_is_exhausted(&self) -> bool {
        match (self.max_attempts, self.attempts.front()) {
            (Some(max), Some(&attempts)) => attempts >= max,
            _ => false,
        }
    }

    /// Hands the exhausted front item to the dead-letter destination.
    /// `Ready(false)` if there is none able to take it (the dead-letter
    /// channel is closed): the item is then delivered again rather than lost.
    fn poll_dead_letter(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Self {
            source,
            buf,
            attempts,
            held,
            not_before,
            dead_letter,
            ..
        } = self;
        let Some(sink) = dead_letter else {
            return Poll::Ready(false);
        };
        if let DeadLetterSink::Channel(channel) = sink
            && !ready!(channel.poll_reserve(cx))
        {
            return Poll::Ready(false);
        }
        let (Some(item), Some(count)) = (buf.pop_front(), attempts.pop_front()) else {
            unreachable!("an exhausted item is at the front");
        };
        let letter = DeadLetter::new(item, count);
        match sink {
            DeadLetterSink::Channel(channel) => {
                if let Err(letter) = channel.send_reserved(letter) {
                    // Closed since the slot was reserved: keep the item.
                    let (item, count) = letter.into_parts();
                    buf.push_front(item);
                    attempts.push_front(count);
                    return Poll::Ready(false);
                }
                finish_dead_letter(source, held, not_before);
            }
            DeadLetterSink::Callback(callback) => {
                // The receiver is consistent before the callback runs, in
                // case it panics.
                finish_dead_letter(source, held, not_before);
                callback(letter);
            }
        }
        Poll::Ready(true)
    }

    /// Takes items from the source into `buf`. `Ready(false)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match &mut self.source {
            Source::Channel(rx) => rx.0.poll_take(cx, &mut self.buf),
            Source::Stream(slot) => {
                let Some(stream) = slot else {
                    return Poll::Ready(false);
                };
                match ready!(stream.as_mut().poll_next(cx)) {
                    Some(item) => {
                        self.buf.push_back(item);
                        Poll::Ready(true)
                    }
                    None => {
                        *slot = None;
                        Poll::Ready(false)
                    }
                }
            }
        }
    }

    /// Adds what the source has ready, without waiting, toward `want` items.
    fn top_up(&mut self, want: usize) {
        match &mut self.source {
            Source::Channel(rx) => {
                rx.0.try_take(&mut self.buf);
            }
            Source::Stream(slot) => {
                // A no-op waker: the caller returns ready either way, and the
                // next wait polls the stream with the task's own waker.
                let mut cx = Context::from_waker(Waker::noop());
                while self.buf.len() < want {
                    let Some(stream) = slot else { break };
                    match stream.as_mut().poll_next(&mut cx) {
                        Poll::Ready(Some(item)) => self.buf.push_back(item),
                        Poll::Ready(None) => *slot = None,
                        Poll::Pending => break,
                    }
                }
            }
        }
    }

    fn poll_sleep(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }

    /// Counts one more delivery of each of the first `n` items.
    fn mark_delivered(&mut self, n: usize) {
        self.held = false;
        if n == 1 {
            match self.attempts.front_mut() {
                Some(count) => *count = count.saturating_add(1),
                None => self.attempts.push_back(1),
            }
            return;
        }
        for count in self.attempts.iter_mut().take(n) {
            *count = count.saturating_add(1);
        }
        for _ in self.attempts.len()..n {
            self.attempts.push_back(1);
        }
    }

    // ----- used by the deliveries --------------------------------------------

    pub(crate) fn front(&self) -> &T {
        self.buf.front().expect("a delivery holds the front item")
    }

    pub(crate) fn attempt(&self, index: usize) -> u32 {
        self.attempts.get(index).copied().unwrap_or(0)
    }

    pub(crate) fn batch(&self, len: usize) -> &[T] {
        // `begin_batch` made `buf` contiguous, and the batch borrows the
        // receiver mutably, so it still is.
        &self.buf.as_slices().0[..len]
    }

    pub(crate) fn commit_front(&mut self) -> T {
        let item = self
            .buf
            .pop_front()
            .expect("a delivery holds the front item");
        self.attempts.pop_front();
        self.not_before = None;
        self.release(1);
        item
    }

    pub(crate) fn commit_first(&mut self, k: usize) -> std::collections::vec_deque::Drain<'_, T> {
        let counted = k.min(self.attempts.len());
        self.attempts.drain(..counted);
        self.not_before = None;
        self.release(k);
        self.buf.drain(..k)
    }

    pub(crate) fn retry_after(&mut self, delay: Duration) {
        self.not_before = Some(Instant::now() + delay);
    }

    fn release(&self, n: usize) {
        if let Source::Channel(rx) = &self.source {
            rx.0.release(n);
        }
    }
}

fn finish_dead_letter<T>(source: &Source<T>, held: &mut bool, not_before: &mut Option<Instant>) {
    *held = false;
    *not_before = None;
    if let Source::Channel(rx) = source {
        rx.0.release(1);
    }
}

impl<T> fmt::Debug for TransactionalReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalReceiver")
            .field(
                "source",
                &match self.source {
                    Source::Channel(_) => "channel",
                    Source::Stream(Some(_)) => "stream",
                    Source::Stream(None) => "stream (ended)",
                },
            )
            .field("pending", &self.buf.len())
            .field("front_attempts", &self.attempts.front())
            .field("retry_at", &self.not_before)
            .field("max_attempts", &self.max_attempts)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}
