//! [`BatchExt::batched`]: batches from any [`Stream`], one `poll_next` per
//! item.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_patterns_core::outcome::{Outcome, Summary};
use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;

use crate::assemble::{Assembler, Pulled};
use crate::{Batch, BatchConfig, BatchMetrics, Flusher};

/// Adds [`batched`](BatchExt::batched) to every [`Stream`].
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
/// let config = BatchConfig::new(2, Duration::from_millis(10)).unwrap();
/// let sizes: Vec<usize> = futures::stream::iter(0..5)
///     .batched(config)
///     .map(|batch| batch.len())
///     .collect()
///     .await;
/// assert_eq!(sizes, [2, 2, 1]);
/// # }
/// ```
pub trait BatchExt: Stream + Sized {
    /// Groups the items of this stream into [`Batch`]es as `config` says.
    ///
    /// Items are pulled one `poll_next` at a time; for a
    /// `tokio::sync::mpsc::Receiver`, [`batched`](crate::batched()) drains
    /// the channel in bulk instead, and is faster.
    ///
    /// # Panics
    ///
    /// Polling the batches panics outside a tokio runtime with the time
    /// driver enabled, once a batch has to wait for its deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    /// let config = BatchConfig::new(100, Duration::from_millis(10)).unwrap();
    /// let mut batches = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).batched(config);
    /// tx.send("a").unwrap();
    /// tx.send("b").unwrap();
    /// // Not full: the batch goes out when its first item is 10 ms old.
    /// let batch = batches.next().await.unwrap();
    /// assert_eq!((&*batch, batch.reason()), (&["a", "b"][..], FlushReason::Deadline));
    /// # }
    /// ```
    fn batched(self, config: BatchConfig<Self::Item>) -> Batched<Self> {
        Batched {
            stream: self,
            asm: Assembler::new(config),
        }
    }
}

impl<S: Stream> BatchExt for S {}

pin_project! {
    /// The stream of [`Batch`]es made by [`BatchExt::batched`].
    ///
    /// # Nothing is lost
    ///
    /// Items pulled from the input live in this value, never in a future:
    /// dropping a `next()` future — a `select!` branch that lost — leaves
    /// them here, and the next poll carries on. When the input ends, the
    /// partial batch goes out with [`Closed`](crate::FlushReason::Closed).
    /// [`into_remainder`](Self::into_remainder) takes the buffered items and
    /// the input back; dropping this value drops the buffered items, and
    /// counts them in [`BatchMetrics::dropped`] of the [`outcome`]
    /// (Self::outcome).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = BatchConfig::new(10, Duration::from_secs(1)).unwrap();
    /// let input = futures::stream::iter(0..3).chain(futures::stream::pending());
    /// let mut batches = input.batched(config);
    /// // Give up after 10 ms: the batch is not due before 1 s.
    /// tokio::select! {
    ///     _ = batches.next() => unreachable!(),
    ///     _ = tokio::time::sleep(Duration::from_millis(10)) => {}
    /// }
    /// let (buffered, _input) = batches.into_remainder();
    /// assert_eq!(buffered, [0, 1, 2]);
    /// # }
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct Batched<S: Stream> {
        #[pin]
        stream: S,
        asm: Assembler<S::Item>,
    }
}

impl<S: Stream> Batched<S> {
    /// A handle that closes the current batch on demand, from any task.
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
    /// let config = BatchConfig::new(10, Duration::from_secs(60)).unwrap();
    /// let input = futures::stream::iter([1, 2]).chain(futures::stream::pending());
    /// let mut batches = input.batched(config);
    /// batches.flusher().flush();
    /// let batch = batches.next().await.unwrap();
    /// assert_eq!((&*batch, batch.reason()), (&[1, 2][..], FlushReason::Flush));
    /// # }
    /// ```
    pub fn flusher(&self) -> Flusher {
        self.asm.flusher()
    }

    /// A snapshot of the metrics so far.
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
    /// let mut batches = futures::stream::iter(0..4).batched(config);
    /// batches.next().await;
    /// assert_eq!(batches.metrics().batches.full, 1);
    /// # }
    /// ```
    pub fn metrics(&self) -> BatchMetrics {
        self.asm.metrics()
    }

    /// A handle that resolves to the final metrics: with `finished: true`
    /// when the stream ends, or `finished: false` when it is dropped or
    /// taken apart first (then [`dropped`](BatchMetrics::dropped) or
    /// [`handed_back`](BatchMetrics::handed_back) count what was buffered).
    /// Asking again replaces the previous handle, which then resolves to
    /// [`Dropped`](async_patterns_core::outcome::Dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    /// use async_patterns_core::outcome::Summary;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::new(2, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter(0..5).batched(config);
    /// let outcome = batches.outcome();
    /// while batches.next().await.is_some() {}
    /// let Summary { value: metrics, finished } = outcome.await.unwrap();
    /// assert!(finished);
    /// assert_eq!((metrics.batches.total(), metrics.items.total()), (3, 5));
    /// # }
    /// ```
    pub fn outcome(&mut self) -> Outcome<Summary<BatchMetrics>> {
        self.asm.outcome()
    }

    /// Gives a buffer taken with [`Batch::into_vec`] back for later batches;
    /// its items are dropped.
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
    /// let mut batches = futures::stream::iter(0..8).batched(config);
    /// let mut items = batches.next().await.unwrap().into_vec();
    /// let buffer = items.as_ptr();
    /// items.clear();
    /// batches.recycle(items);
    /// // The batch after next is filled in the recycled buffer.
    /// let second = batches.next().await.unwrap();
    /// assert_eq!(second.as_ptr(), buffer);
    /// # }
    /// ```
    pub fn recycle(&self, buffer: Vec<S::Item>) {
        self.asm.recycle(buffer);
    }

    /// The input stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    ///
    /// let config = BatchConfig::new(4, std::time::Duration::from_secs(1)).unwrap();
    /// let batches = futures::stream::iter(0..8).batched(config);
    /// assert_eq!(futures::Stream::size_hint(batches.get_ref()), (8, Some(8)));
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Takes the adapter apart: the buffered items, oldest first (counted as
    /// [`handed_back`](BatchMetrics::handed_back)), and the input with
    /// whatever it has not yielded yet.
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
    /// let config = BatchConfig::new(3, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter(0..5).batched(config);
    /// assert_eq!(&*batches.next().await.unwrap(), [0, 1, 2]);
    /// let (buffered, rest) = batches.into_remainder();
    /// // A full batch goes out as soon as it fills: 3 and 4 are still in the input.
    /// assert!(buffered.is_empty());
    /// assert_eq!(rest.collect::<Vec<_>>().await, [3, 4]);
    /// # }
    /// ```
    pub fn into_remainder(self) -> (Vec<S::Item>, S) {
        let Batched { stream, mut asm } = self;
        (asm.take_remainder(), stream)
    }
}

impl<S: Stream> Stream for Batched<S> {
    type Item = Batch<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let asm = this.asm;
        if let Some(done) = asm.poll_start() {
            return Poll::Ready(done);
        }
        loop {
            match pull(asm, this.stream.as_mut(), cx) {
                Pulled::Batch(batch) => return Poll::Ready(Some(batch)),
                Pulled::Ended => return asm.poll_ended(),
                Pulled::Pending => {}
            }
            if let Some(poll) = asm.poll_idle(cx) {
                return poll;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.asm.is_terminated() {
            return (0, Some(0));
        }
        let buffered = self.asm.buffered();
        let (lower, upper) = if self.asm.input_done {
            (0, Some(0))
        } else {
            self.stream.size_hint()
        };
        let lower = usize::from(lower > 0 || buffered > 0);
        let upper = upper.and_then(|u| u.checked_add(buffered));
        (lower, upper)
    }
}

impl<S: Stream> FusedStream for Batched<S> {
    fn is_terminated(&self) -> bool {
        self.asm.is_terminated()
    }
}

fn pull<S: Stream>(
    asm: &mut Assembler<S::Item>,
    mut stream: Pin<&mut S>,
    cx: &mut Context<'_>,
) -> Pulled<S::Item> {
    if asm.input_done {
        return Pulled::Ended;
    }
    loop {
        match stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                asm.took(1);
                if let Some(batch) = asm.push(item) {
                    return Pulled::Batch(batch);
                }
            }
            Poll::Ready(None) => {
                asm.input_done = true;
                return Pulled::Ended;
            }
            Poll::Pending => return Pulled::Pending,
        }
    }
}

impl<S: Stream> fmt::Debug for Batched<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batched")
            .field("config", &self.asm.config)
            .field("buffered", &self.asm.buffered())
            .field("metrics", &self.asm.metrics)
            .finish_non_exhaustive()
    }
}
