//! The batch-building policy every batcher shares — [`Open`], the batch
//! being filled, closes by count, weight and age — and [`Assembler`], the
//! state of the stream adapters around it: the timer, the flush signal, the
//! metrics and the outcome.

use std::task::{Context, Poll};

use async_patterns_core::outcome::{self, Outcome, OutcomeSender, Summary};
use tokio::time::Instant;

use crate::batch::{Batch, Pool, Sealed};
use crate::deadline::{Deadline, expiry};
use crate::flush::FlushSignal;
use crate::{BatchConfig, BatchMetrics, FlushReason, Flusher};
use async_patterns_core::__private::loom::Arc;

/// The batch being filled.
pub(crate) struct Open<T> {
    /// Grows as items arrive; a buffer from the pool when one is spare.
    pub(crate) items: Vec<T>,
    pub(crate) weight: usize,
    /// When the first item arrived; `None` while empty.
    pub(crate) oldest: Option<Instant>,
}

impl<T> Open<T> {
    pub(crate) fn new() -> Self {
        Open {
            items: Vec::new(),
            weight: 0,
            oldest: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When this batch must close, if it has an item and `max_delay` is
    /// representable.
    pub(crate) fn expiry(&self, config: &BatchConfig<T>) -> Option<Instant> {
        self.oldest.and_then(|t| expiry(t, config.max_delay))
    }

    /// Notes that items of total weight `weight` were appended to `items`
    /// directly (the bulk path), the batch having been empty if `was_empty`.
    pub(crate) fn appended(&mut self, was_empty: bool, weight: usize) {
        if was_empty {
            self.oldest = Some(Instant::now());
        }
        self.weight = self.weight.saturating_add(weight);
    }

    /// Gives the batch a buffer before its first item: a spare one from the
    /// pool if there is one (taken this late so that buffers the consumer
    /// dropped meanwhile are reused), else an unallocated one that grows as
    /// items arrive — never `max_items` reserved up front.
    pub(crate) fn provision(&mut self, pool: &Pool<T>) {
        if self.items.capacity() == 0 {
            self.items = pool.take();
        }
    }

    /// Closes the batch, which must not be empty.
    pub(crate) fn seal(&mut self, reason: FlushReason) -> Sealed<T> {
        debug_assert!(!self.is_empty(), "sealing an empty batch");
        let oldest = self.oldest.take().unwrap_or_else(Instant::now);
        Sealed {
            items: std::mem::take(&mut self.items),
            reason,
            weight: std::mem::take(&mut self.weight),
            oldest,
            age: Instant::now().saturating_duration_since(oldest),
        }
    }

    /// Adds `item`, of weight `weight`, closing batches as the limits say;
    /// each closed batch — none, one, or two when an oversized item follows
    /// a partial batch — goes to `emit`, oldest first.
    ///
    /// `arrived` is when the item entered the batcher, if it is known to be
    /// earlier than now (the channel stages items before its receiver
    /// takes them); a batch's `oldest` is never later than its first item's.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        item: T,
        weight: usize,
        arrived: Option<Instant>,
        config: &BatchConfig<T>,
        pool: &Pool<T>,
        metrics: &mut BatchMetrics,
        mut emit: impl FnMut(Sealed<T>),
    ) {
        if let Some(limit) = config.max_weight {
            let over = self.weight.saturating_add(weight) > limit;
            if over && !self.is_empty() {
                emit(self.seal(FlushReason::Weight));
            }
            if weight > limit {
                // Too heavy for any batch: it goes out alone.
                metrics.oversized += 1;
                self.provision(pool);
                self.oldest = Some(arrived.unwrap_or_else(Instant::now));
                self.items.push(item);
                self.weight = weight;
                emit(self.seal(FlushReason::Weight));
                return;
            }
        }
        if self.is_empty() {
            self.provision(pool);
            self.oldest = Some(arrived.unwrap_or_else(Instant::now));
        } else if let (Some(arrived), Some(oldest)) = (arrived, self.oldest)
            && arrived < oldest
        {
            self.oldest = Some(arrived);
        }
        self.items.push(item);
        self.weight = self.weight.saturating_add(weight);
        if self.items.len() >= config.max_items {
            emit(self.seal(FlushReason::Full));
        } else if config.max_weight.is_some_and(|limit| self.weight >= limit) {
            emit(self.seal(FlushReason::Weight));
        }
    }

    /// Appends up to `room` items of weight 1 each from `items` (the bulk
    /// path, without a weigher), the first of which arrived at `arrived`;
    /// returns how many it took.
    #[inline]
    pub(crate) fn append(
        &mut self,
        items: &mut std::vec::Drain<'_, T>,
        room: usize,
        arrived: Instant,
        pool: &Pool<T>,
    ) -> usize {
        let before = self.items.len();
        if before == 0 {
            self.provision(pool);
            self.oldest = Some(arrived);
        } else if self.oldest.is_some_and(|oldest| arrived < oldest) {
            self.oldest = Some(arrived);
        }
        self.items.extend(items.by_ref().take(room));
        let taken = self.items.len() - before;
        self.weight = self.weight.saturating_add(taken);
        taken
    }
}

/// What the input gave a stream adapter on one attempt.
pub(crate) enum Pulled<T> {
    /// Enough items to close a batch.
    Batch(Batch<T>),
    /// Nothing more for now; the task will be woken.
    Pending,
    /// The input ended.
    Ended,
}

/// The state of a stream adapter apart from its input.
pub(crate) struct Assembler<T> {
    pub(crate) config: BatchConfig<T>,
    pub(crate) open: Open<T>,
    /// The oversized batch that closed right after the batch handed out.
    ready: Option<Sealed<T>>,
    /// Items received ahead, in reverse order (the weighed bulk path).
    pub(crate) carry: Vec<T>,
    pub(crate) pool: Arc<Pool<T>>,
    pub(crate) metrics: BatchMetrics,
    deadline: Deadline,
    flush: Arc<FlushSignal>,
    flush_pending: bool,
    pub(crate) input_done: bool,
    ended: bool,
    outcome: Option<OutcomeSender<Summary<BatchMetrics>>>,
}

impl<T> Assembler<T> {
    pub(crate) fn new(config: BatchConfig<T>) -> Self {
        let pool = Arc::new(Pool::new(config.max_items));
        Assembler {
            config,
            open: Open::new(),
            ready: None,
            carry: Vec::new(),
            pool,
            metrics: BatchMetrics::default(),
            deadline: Deadline::new(),
            flush: Arc::new(FlushSignal::default()),
            flush_pending: false,
            input_done: false,
            ended: false,
            outcome: None,
        }
    }

    pub(crate) fn flusher(&self) -> Flusher {
        Flusher::new(self.flush.clone())
    }

    pub(crate) fn outcome(&mut self) -> Outcome<Summary<BatchMetrics>> {
        let (sender, outcome) = outcome::channel();
        if self.ended {
            let _ = sender.send(Summary {
                value: self.metrics(),
                finished: true,
            });
        } else {
            self.outcome = Some(sender);
        }
        outcome
    }

    pub(crate) fn recycle(&self, buf: Vec<T>) {
        self.pool.put(buf);
    }

    pub(crate) fn buffered(&self) -> usize {
        self.ready.as_ref().map_or(0, |r| r.items.len()) + self.open.len() + self.carry.len()
    }

    /// Counts `n` items taken from the input.
    #[inline]
    pub(crate) fn took(&mut self, n: usize) {
        self.metrics.sent += n as u64;
    }

    /// The metrics now, with the `queued` gauge filled in.
    pub(crate) fn metrics(&self) -> BatchMetrics {
        let mut metrics = self.metrics;
        metrics.queued = self.buffered() as u64;
        metrics
    }

    /// Hands `sealed` out, counting it.
    pub(crate) fn emit(&mut self, sealed: Sealed<T>) -> Batch<T> {
        self.metrics.record_batch(&sealed);
        Batch::new(sealed, Some(self.pool.clone()))
    }

    pub(crate) fn seal(&mut self, reason: FlushReason) -> Batch<T> {
        let sealed = self.open.seal(reason);
        self.emit(sealed)
    }

    /// The start of every `poll_next`: a batch already closed, the end, or
    /// `None` to go and pull from the input.
    pub(crate) fn poll_start(&mut self) -> Option<Option<Batch<T>>> {
        if let Some(sealed) = self.ready.take() {
            return Some(Some(self.emit(sealed)));
        }
        if self.ended {
            return Some(None);
        }
        if self.flush.take() {
            self.flush_pending = true;
        }
        None
    }

    /// Adds one item pulled from the input.
    #[inline]
    pub(crate) fn push(&mut self, item: T) -> Option<Batch<T>> {
        let weight = self.config.weigh(&item);
        let mut first = None;
        let ready = &mut self.ready;
        self.open.push(
            item,
            weight,
            None,
            &self.config,
            &self.pool,
            &mut self.metrics,
            |sealed| match first {
                None => first = Some(sealed),
                Some(_) => *ready = Some(sealed),
            },
        );
        first.map(|sealed| self.emit(sealed))
    }

    /// The input ended: the tail goes out with `Closed`, then the stream
    /// ends and reports its metrics.
    pub(crate) fn poll_ended(&mut self) -> Poll<Option<Batch<T>>> {
        if !self.open.is_empty() {
            return Poll::Ready(Some(self.seal(FlushReason::Closed)));
        }
        self.ended = true;
        if let Some(sender) = self.outcome.take() {
            let _ = sender.send(Summary {
                value: self.metrics(),
                finished: true,
            });
        }
        Poll::Ready(None)
    }

    /// The input has nothing ready: close the batch if a flush or its
    /// deadline says so. `None` means look at the input again first (a
    /// flush arrived meanwhile).
    pub(crate) fn poll_idle(&mut self, cx: &mut Context<'_>) -> Option<Poll<Option<Batch<T>>>> {
        if std::mem::take(&mut self.flush_pending) && !self.open.is_empty() {
            return Some(Poll::Ready(Some(self.seal(FlushReason::Flush))));
        }
        if let Some(at) = self.open.expiry(&self.config)
            && self.deadline.poll_until(at, cx).is_ready()
        {
            return Some(Poll::Ready(Some(self.seal(FlushReason::Deadline))));
        }
        self.flush.register(cx.waker());
        if self.flush.take() {
            self.flush_pending = true;
            return None;
        }
        Some(Poll::Pending)
    }

    /// Everything buffered, oldest first, counted as handed back.
    pub(crate) fn take_remainder(&mut self) -> Vec<T> {
        let mut out = self.ready.take().map(|r| r.items).unwrap_or_default();
        if out.is_empty() {
            out = std::mem::take(&mut self.open.items);
        } else {
            out.append(&mut self.open.items);
        }
        self.open.oldest = None;
        self.open.weight = 0;
        out.extend(self.carry.drain(..).rev());
        self.metrics.handed_back += out.len() as u64;
        out
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.ended
    }
}

// Items are moved around, never pinned: no `Pin<&mut T>` is ever made.
impl<T> Unpin for Assembler<T> {}

impl<T> Drop for Assembler<T> {
    fn drop(&mut self) {
        if let Some(sender) = self.outcome.take() {
            self.metrics.dropped += self.buffered() as u64;
            let _ = sender.send(Summary {
                value: self.metrics,
                finished: false,
            });
        }
    }
}
