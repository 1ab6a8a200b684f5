//! The state a [`ReusableReceiver`](crate::ReusableReceiver) shares with its
//! streams and leases, and the hand-over of items to a stream a chunk at a
//! time.
//!
//! One mutex guards the channel, the items taken out of it, the replay
//! buffer and the lease in force. A stream takes items out of that state a
//! chunk at a time (up to [`chunk_len`] items), under the lock, into the
//! cell of its lease, and yields them from there without the lock: to claim
//! item `i` it stores the count `i + 1`, passes the light side of an
//! asymmetric barrier ([`Barrier`]) and loads the cell's `revoked` flag.
//! Ending the lease — a new stream, a revocation, the retry driver — sets
//! `revoked` under the lock, passes the heavy side of the barrier and loads
//! the count: the items below it are the ones the stream yielded, the rest
//! of the chunk goes back to the shared state, ahead of everything else,
//! for the next lease. The barrier pair guarantees that the stream sees the
//! flag or the ender sees the stream's count; when the stream sees the flag
//! it settles the one item in doubt under the lock, with the count the
//! ender recorded. So a revoked stream never takes an item, every count is
//! exact, nobody waits for a stale stream however late it is polled or
//! dropped — and a stream's item costs a store, a load and a compiler fence.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc::Receiver;

use crate::barrier::Barrier;
use crate::error::AckError;
use crate::loom::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell};
use crate::metrics::{LeaseMetrics, ReceiverMetrics};
use crate::replay::{Next, ReplayBuffer, WhenFull};

/// The most items a stream takes out of the shared state at a time, and the
/// most it takes out of the channel at a time (`poll_recv_many`'s limit):
/// one lock per chunk, and the senders' permits returned once per batch.
/// 64 items, fewer for large ones, so that a lease's chunk stays within
/// about 4 KiB (and at least 4 items).
pub(crate) const fn chunk_len<T>() -> usize {
    const MAX: usize = 64;
    const MIN: usize = 4;
    const BYTES: usize = 4096;
    let size = if std::mem::size_of::<T>() == 0 {
        1
    } else {
        std::mem::size_of::<T>()
    };
    let n = BYTES / size;
    if n > MAX {
        MAX
    } else if n < MIN {
        MIN
    } else {
        n
    }
}

pub(crate) struct Shared<T> {
    pub(crate) state: Mutex<State<T>>,
}

/// The counters of [`ReceiverMetrics`], for everything folded so far (the
/// lease in force adds what its stream claimed since).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub(crate) leases: u64,
    pub(crate) delivered: u64,
    pub(crate) redelivered: u64,
    pub(crate) acked: u64,
    pub(crate) lost: u64,
    pub(crate) dropped: u64,
    pub(crate) handed_back: u64,
}

pub(crate) struct State<T> {
    /// `None` only after [`ReusableReceiver::into_inner`](crate::ReusableReceiver::into_inner).
    pub(crate) source: Option<Source<T>>,
    /// `Some` in replay mode.
    pub(crate) replay: Option<ReplayBuffer<T>>,
    /// The lease in force, if any.
    current: Option<Current<T>>,
    next_generation: u64,
    /// The waker of the current lease's stream, when it last waited: woken
    /// when the lease is revoked, or when an acknowledgement makes room.
    waker: Option<Waker>,
    pub(crate) totals: Totals,
    /// The [`ReusableReceiver`](crate::ReusableReceiver) was dropped: no new
    /// lease can start, so once no lease is in force nothing can deliver the
    /// held items any more.
    pub(crate) orphaned: bool,
}

/// The channel, and the items taken out of it and not handed to a stream.
pub(crate) struct Source<T> {
    pub(crate) rx: Receiver<T>,
    /// Taken out of the channel (by a replay-mode pull, or handed back by a
    /// stream that did not yield them), in order: they come next.
    pub(crate) staged: VecDeque<T>,
    /// `poll_recv_many`'s buffer, empty between polls.
    scratch: Vec<T>,
}

impl<T> Source<T> {
    pub(crate) fn new(rx: Receiver<T>) -> Self {
        Source {
            rx,
            staged: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// The next item, taking a batch of at most `limit` from the channel
    /// when none is staged; `None` once the channel is closed and drained.
    fn poll_pull(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Option<T>> {
        // `poll_recv_many` reads a limit of 0 as "closed".
        debug_assert!(limit > 0);
        if let Some(item) = self.staged.pop_front() {
            return Poll::Ready(Some(item));
        }
        match self.rx.poll_recv_many(cx, &mut self.scratch, limit) {
            Poll::Ready(0) => Poll::Ready(None),
            Poll::Ready(_) => {
                self.staged.extend(self.scratch.drain(..));
                Poll::Ready(self.staged.pop_front())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Watches the channel without taking more than one item out of it:
    /// `Ready(true)` once it is closed and drained. An item that arrives is
    /// staged.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match self.rx.poll_recv_many(cx, &mut self.scratch, 1) {
            Poll::Ready(0) => Poll::Ready(true),
            Poll::Ready(_) => {
                self.staged.extend(self.scratch.drain(..));
                Poll::Ready(false)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The channel is closed and nothing is left, staged or sent.
    pub(crate) fn is_done(&self) -> bool {
        self.staged.is_empty() && self.rx.is_closed() && self.rx.is_empty()
    }

    /// Closes the channel and takes everything in it: the staged items, then
    /// what is queued, oldest first. (An item sent later through a permit
    /// reserved before the close stays in the channel.)
    pub(crate) fn close_and_drain(&mut self) -> Vec<T> {
        self.rx.close();
        let mut all: Vec<T> = self.staged.drain(..).collect();
        while let Ok(item) = self.rx.try_recv() {
            all.push(item);
        }
        all
    }
}

/// What one lease's stream and handles share: the chunk of items handed to
/// the stream and the claim protocol's two words, whether the stream was
/// dropped, and the lease's final counts once it ended.
///
/// The chunk's slots `[claimed..len)` hold items handed to the stream and
/// not yet claimed; `[..claimed)` were moved out by the stream; `[len..)`
/// are empty. Who touches a slot:
/// - the stream fills `[len..)` under the state's lock, only when every item
///   of the chunk is claimed (a new chunk) — no one else writes slots;
/// - the stream moves slot `i` out, without the lock, after storing
///   `claimed = i + 1`, passing [`Barrier::light`] and reading `revoked`
///   false;
/// - whoever ends the lease, under the lock, stores `revoked`, passes
///   [`Barrier::heavy`], reads `claimed` as `count`, records it in
///   `final_count` and moves out `[count..len)`. By the barrier pair, if the
///   stream read `revoked` false, `count` includes its claim; if it read
///   `revoked` true, it does not touch the slot but settles it under the
///   lock: it is the stream's if `i < final_count`, else it was taken;
/// - the stream dropping itself while its lease is in force moves out
///   `[claimed..len)` under the lock, its own count.
///
/// Each slot is therefore moved out exactly once, by exactly one thread.
pub(crate) struct LeaseCell<T> {
    pub(crate) generation: u64,
    pub(crate) released: AtomicBool,
    barrier: Barrier,
    /// How many items of the chunk the stream claimed: stored by the stream
    /// only (and reset by it under the lock when it fills a chunk).
    claimed: AtomicUsize,
    /// The lease ended; stored once, under the lock.
    revoked: AtomicBool,
    /// The claim count the ender read; written and read under the lock.
    final_count: AtomicUsize,
    /// The chunk's length; written and read under the lock (and in `Drop`).
    len: AtomicUsize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    final_delivered: AtomicU64,
    final_redelivered: AtomicU64,
    final_acked: AtomicU64,
}

// SAFETY: the slots are the only field that is not `Sync` by itself. Every
// access to a slot is exclusive, as the type's docs lay out: slots are
// written under the state's lock by the lease's stream only; a slot is
// moved out either by the stream once its claim is settled as its own, or
// under the lock by whoever ended the lease, only past the count it read
// after the heavy barrier — the barrier pair keeps the two from ever taking
// the same slot. Items move between threads, hence `T: Send`; no `&T` is
// ever shared, so `T: Sync` is not needed.
unsafe impl<T: Send> Sync for LeaseCell<T> {}

impl<T> LeaseCell<T> {
    fn new(generation: u64) -> Self {
        LeaseCell {
            generation,
            released: AtomicBool::new(false),
            barrier: Barrier::get(),
            claimed: AtomicUsize::new(0),
            revoked: AtomicBool::new(false),
            final_count: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            slots: (0..chunk_len::<T>())
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            final_delivered: AtomicU64::new(0),
            final_redelivered: AtomicU64::new(0),
            final_acked: AtomicU64::new(0),
        }
    }

    /// The stream's claim of item `i` of its chunk, without the lock: the
    /// item, or `None` if the lease ended — then the stream settles item
    /// `i` under the lock ([`State::settle`]). Called only by the stream,
    /// only with `i` the count of items it claimed so far and below the
    /// length of the chunk it filled.
    #[inline(always)]
    pub(crate) fn claim(&self, i: usize) -> Option<T> {
        // Relaxed: the store and the load only have to be ordered against
        // the ender's, which the barrier pair does. The slot was written by
        // this stream itself (in program order, or before a move of the
        // stream to another thread, which synchronises).
        self.claimed.store(i + 1, Ordering::Relaxed);
        self.barrier.light();
        if self.revoked.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: the stream stored the count `i + 1` and then read `revoked`
        // false across the barrier pair, so an ender, which stores `revoked`
        // before its heavy barrier and reads the count after it, reads at
        // least `i + 1` and moves out only later slots; slot `i` was filled
        // (`i` is below the chunk's length) and not moved out before (claims
        // are in order).
        Some(unsafe { self.take(i) })
    }

    /// Moves slot `i` out.
    ///
    /// # Safety
    ///
    /// Slot `i` is filled, and the caller is the one thread entitled to
    /// move it out (see the type's docs).
    #[inline(always)]
    unsafe fn take(&self, i: usize) -> T {
        debug_assert!(i < self.slots.len());
        // SAFETY: a filled slot exists: `i` is below the number of slots.
        let slot = unsafe { self.slots.get_unchecked(i) };
        // SAFETY: the slot is filled and this thread alone may move it out,
        // per this function's contract; `with_mut`'s pointer is valid here.
        slot.with_mut(|slot| unsafe { (*slot).assume_init_read() })
    }

    /// Fills slot `i`, the chunk's length so far, and grows the chunk by
    /// one: under the state's lock, by the lease's stream, while filling a
    /// chunk.
    fn push(&self, i: usize, item: T) {
        debug_assert_eq!(i, self.len.load(Ordering::Relaxed));
        // SAFETY: slot `i` is past the chunk: empty, and touched by no one
        // else — the stream's claims stop below the length, and ending the
        // lease needs the lock, which the caller holds.
        self.slots[i].with_mut(|slot| unsafe { (*slot).write(item) });
        // The length grows after each write, so that a panic later in the
        // fill (a `clone`, a weigher) leaves the filled slots counted.
        self.len.store(i + 1, Ordering::Relaxed);
    }

    /// Fills an empty chunk with `items` (at most [`chunk_len`]), which cannot
    /// panic: under the state's lock, by the lease's stream.
    fn fill_with(&self, items: impl ExactSizeIterator<Item = T>) {
        debug_assert_eq!(self.len.load(Ordering::Relaxed), 0);
        // Every item finds a slot: none is dropped by the `zip` below.
        assert!(items.len() <= self.slots.len(), "a chunk holds them all");
        let mut len = 0;
        for (slot, item) in self.slots.iter().zip(items) {
            // SAFETY: as in `push`: the slots past the chunk are empty and
            // no one else touches them.
            slot.with_mut(|slot| unsafe { (*slot).write(item) });
            len += 1;
        }
        self.len.store(len, Ordering::Relaxed);
    }

    fn claimed(&self) -> usize {
        self.claimed.load(Ordering::Relaxed)
    }

    /// Ends the claims: under the lock, by whoever ends the lease. Returns
    /// the number of items the stream claimed, final from now on.
    fn revoke(&self) -> usize {
        self.revoked.store(true, Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        let mut count = self.claimed.load(Ordering::Relaxed);
        if count < len {
            // The stream may be claiming right now: make its count final.
            // (With every item claimed it cannot claim more without the
            // lock, so the barrier is only paid when items are left.)
            self.barrier.heavy();
            count = self.claimed.load(Ordering::Relaxed);
        }
        self.final_count.store(count, Ordering::Relaxed);
        count
    }

    /// Takes the unclaimed items out of the chunk, newest first, handing
    /// each to `sink`, and empties it; `count` is what
    /// [`revoke`](Self::revoke) returned (or, for a stream dropping itself,
    /// its own count). Under the state's lock. Returns how many there were.
    fn take_unclaimed(&self, count: usize, mut sink: impl FnMut(T)) -> usize {
        let len = self.len.load(Ordering::Relaxed);
        for i in (count..len).rev() {
            // SAFETY: `[count..len)` are filled and unclaimed, and the stream
            // will move none of them out: its lease ended (a claim past
            // `count` reads `revoked` true and is settled as not its own), or
            // it is being dropped.
            sink(unsafe { self.take(i) });
        }
        self.len.store(0, Ordering::Relaxed);
        len.saturating_sub(count)
    }

    fn final_metrics(&self) -> LeaseMetrics {
        let delivered = self.final_delivered.load(Ordering::Relaxed);
        let acked = self.final_acked.load(Ordering::Relaxed);
        LeaseMetrics {
            generation: self.generation,
            delivered,
            redelivered: self.final_redelivered.load(Ordering::Relaxed),
            acked,
            unacked: delivered - acked,
            released: self.released.load(Ordering::Acquire),
        }
    }
}

impl<T> Drop for LeaseCell<T> {
    fn drop(&mut self) {
        // Every path that ends a lease or drops a stream empties the chunk;
        // if one did not (a stream leaked with `mem::forget` keeps the cell
        // alive, so it is not that), drop what is left rather than leak it.
        let count = if self.revoked.load(Ordering::Relaxed) {
            self.final_count.load(Ordering::Relaxed)
        } else {
            self.claimed()
        };
        let len = self.len.load(Ordering::Relaxed);
        for i in count.min(len)..len {
            // SAFETY: `&mut self`: no one else can touch the slots; `[count..len)`
            // are filled and were not moved out.
            drop(unsafe { self.take(i) });
        }
    }
}

/// The lease in force; its counts move under the state's lock.
struct Current<T> {
    cell: Arc<LeaseCell<T>>,
    generation: u64,
    /// Counts of the items claimed from earlier chunks.
    delivered: u64,
    redelivered: u64,
    acked: u64,
    /// Replay mode: the buffer position of the chunk's first item, and how
    /// many items at the front of the chunk are redeliveries (replays come
    /// before new items, so they are a prefix).
    chunk_start: u64,
    chunk_redeliveries: usize,
}

impl<T> Current<T> {
    /// Delivered and redelivered, with what the stream claimed of its chunk
    /// so far.
    fn live(&self) -> (u64, u64) {
        let claimed = self.cell.claimed();
        let redelivered = claimed.min(self.chunk_redeliveries);
        (
            self.delivered + claimed as u64,
            self.redelivered + redelivered as u64,
        )
    }

    /// The counts once the chunk was folded in (the lease ended).
    fn folded_metrics(&self) -> LeaseMetrics {
        LeaseMetrics {
            generation: self.generation,
            delivered: self.delivered,
            redelivered: self.redelivered,
            acked: self.acked,
            unacked: self.delivered - self.acked,
            released: self.cell.released.load(Ordering::Acquire),
        }
    }

    fn metrics(&self) -> LeaseMetrics {
        let (delivered, redelivered) = self.live();
        LeaseMetrics {
            generation: self.generation,
            delivered,
            redelivered,
            acked: self.acked,
            unacked: delivered - self.acked,
            released: self.cell.released.load(Ordering::Acquire),
        }
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// How a fill of a chunk went.
pub(crate) enum Fill<T> {
    /// The first item of the chunk, already claimed; `len` items in all.
    Item {
        item: T,
        len: usize,
    },
    /// Items already in the chunk (left by a fill that panicked): the
    /// stream claims from `next` on.
    Resume {
        item: T,
        next: usize,
        len: usize,
    },
    /// The stream ends.
    End,
    Pending,
}

impl<T> State<T> {
    pub(crate) fn new(rx: Receiver<T>, replay: Option<ReplayBuffer<T>>) -> Self {
        State {
            source: Some(Source::new(rx)),
            replay,
            current: None,
            next_generation: 1,
            waker: None,
            totals: Totals::default(),
            orphaned: false,
        }
    }

    fn current_mut(&mut self, generation: u64) -> Option<&mut Current<T>> {
        self.current.as_mut().filter(|c| c.generation == generation)
    }

    /// Whether lease `generation` is in force.
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.generation == generation)
    }

    /// The cell of the lease in force.
    pub(crate) fn current_cell(&self) -> Option<&Arc<LeaseCell<T>>> {
        self.current.as_ref().map(|c| &c.cell)
    }

    /// Counts the `claimed` items of `current`'s chunk as delivered.
    fn fold(
        totals: &mut Totals,
        replay: &mut Option<ReplayBuffer<T>>,
        current: &mut Current<T>,
        claimed: usize,
    ) {
        let redelivered = claimed.min(current.chunk_redeliveries);
        current.delivered += claimed as u64;
        current.redelivered += redelivered as u64;
        totals.delivered += claimed as u64;
        totals.redelivered += redelivered as u64;
        if let Some(replay) = replay {
            replay.mark_delivered(current.chunk_start + claimed as u64);
        }
        current.chunk_redeliveries = 0;
    }

    /// Puts the items of `cell`'s chunk past `count`, which its stream did
    /// not yield, back where they came from: the front of the staged items,
    /// in order (plain mode) — or, in replay mode, where they are copies of
    /// buffered items, returns them to be dropped once unlocked. Returns how
    /// many there were, too.
    fn restore(
        replay: &Option<ReplayBuffer<T>>,
        source: &mut Option<Source<T>>,
        cell: &LeaseCell<T>,
        count: usize,
    ) -> (usize, Vec<T>) {
        let mut to_drop = Vec::new();
        let n = match (replay, source) {
            (None, Some(source)) => {
                cell.take_unclaimed(count, |item| source.staged.push_front(item))
            }
            // Replay mode. (Plain mode without a source cannot happen: only
            // `into_inner` takes it, after ending the lease in force.)
            _ => cell.take_unclaimed(count, |item| to_drop.push(item)),
        };
        (n, to_drop)
    }

    /// Fills a chunk for the stream of lease `generation`, whose previous
    /// chunk is all claimed, and claims its first item.
    pub(crate) fn fill(&mut self, generation: u64, cx: &mut Context<'_>) -> Fill<T> {
        let State {
            source,
            replay,
            current,
            waker,
            totals,
            ..
        } = self;
        let Some(current) = current.as_mut().filter(|c| c.generation == generation) else {
            return Fill::End; // revoked
        };
        let count = current.cell.claimed();
        let len = current.cell.len.load(Ordering::Relaxed);
        if count < len {
            // A fill panicked (a `clone` or a weigher) after handing items
            // over: they are next. The stream claims this one under the lock.
            current.cell.claimed.store(count + 1, Ordering::Relaxed);
            // SAFETY: slot `count` is filled and unclaimed, and the lock
            // keeps the lease from ending meanwhile.
            let item = unsafe { current.cell.take(count) };
            return Fill::Resume {
                item,
                next: count + 1,
                len,
            };
        }
        Self::fold(totals, replay, current, count);
        current.cell.claimed.store(0, Ordering::Relaxed);
        current.cell.len.store(0, Ordering::Relaxed);

        let Some(source) = source.as_mut() else {
            return Fill::End;
        };
        let end = match replay {
            None => Self::fill_plain(source, &current.cell, cx),
            Some(replay) => Self::fill_replay(source, replay, current, cx),
        };
        let cell = &current.cell;
        let len = cell.len.load(Ordering::Relaxed);
        if len == 0 {
            return match end {
                Poll::Ready(()) => Fill::End,
                Poll::Pending => {
                    register(waker, cx);
                    Fill::Pending
                }
            };
        }
        cell.claimed.store(1, Ordering::Relaxed);
        // SAFETY: slot 0 is filled; the count now reserves it for the
        // stream, and the lock keeps the lease from ending meanwhile.
        let item = unsafe { cell.take(0) };
        Fill::Item { item, len }
    }

    /// The stream of `cell` claimed item `i` without the lock and read
    /// `revoked`: the item, if the ender counted it as claimed, or `None`
    /// if the ender took it back. Under the lock (hence `&mut self`), which
    /// the ender held when it stored `revoked`: its count is recorded.
    pub(crate) fn settle(&mut self, cell: &LeaseCell<T>, i: usize) -> Option<T> {
        debug_assert!(cell.revoked.load(Ordering::Relaxed));
        if i < cell.final_count.load(Ordering::Relaxed) {
            // SAFETY: the ender took only `[final_count..len)`: slot `i` is
            // filled, unclaimed before, and the stream's.
            Some(unsafe { cell.take(i) })
        } else {
            None
        }
    }

    /// Plain mode: the staged items, or else a batch from the channel. Like
    /// [`fill_replay`](Self::fill_replay), returns what the stream does if
    /// the chunk stayed empty — `Ready`: end (the channel is closed and
    /// drained), `Pending`: wait — and `Pending` when it did not (the caller
    /// looks at the chunk first).
    fn fill_plain(source: &mut Source<T>, cell: &LeaseCell<T>, cx: &mut Context<'_>) -> Poll<()> {
        if !source.staged.is_empty() {
            let n = source.staged.len().min(chunk_len::<T>());
            cell.fill_with(source.staged.drain(..n));
            return Poll::Pending;
        }
        match source
            .rx
            .poll_recv_many(cx, &mut source.scratch, chunk_len::<T>())
        {
            Poll::Ready(0) => Poll::Ready(()),
            Poll::Ready(_) => {
                cell.fill_with(source.scratch.drain(..));
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Replay mode: the unacknowledged items to replay, then new ones while
    /// they fit. If the chunk stays empty: `Ready` when the stream ends,
    /// `Pending` when it waits (`Pending` too when it did not).
    fn fill_replay(
        source: &mut Source<T>,
        replay: &mut ReplayBuffer<T>,
        current: &mut Current<T>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let Current {
            cell,
            chunk_start,
            chunk_redeliveries,
            ..
        } = current;
        *chunk_start = replay.cursor_position();
        *chunk_redeliveries = 0;
        let mut len = 0;
        let capacity = chunk_len::<T>();
        while len < capacity {
            let next = match replay.next() {
                // Never more than the buffer can take: the rest stays in
                // the channel, where senders feel the backpressure.
                Next::Pull => match source.poll_pull(cx, replay.room().min(capacity)) {
                    Poll::Ready(Some(item)) => replay.admit(item),
                    // Closed and drained, nothing staged, nothing set aside
                    // (`Pull` comes only when nothing is).
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                },
                next => next,
            };
            match next {
                Next::Yield { item, redelivery } => {
                    *chunk_redeliveries += usize::from(redelivery);
                    cell.push(len, item);
                    len += 1;
                }
                Next::Pull => unreachable!("admit hands over or refuses"),
                Next::Full if len > 0 => return Poll::Pending,
                Next::Full => {
                    return match replay.when_full() {
                        WhenFull::EndStream => Poll::Ready(()),
                        // The stream may end only when nothing is held
                        // anywhere: an item set aside or staged waits for
                        // room like the rest. With nothing held, it watches
                        // the channel too, so that its end ends the stream —
                        // a consumer that acknowledges only when its stream
                        // ends (a client-streaming call) would otherwise wait
                        // for room forever.
                        WhenFull::Wait => {
                            let nothing_held = !replay.has_parked() && source.staged.is_empty();
                            if nothing_held && source.poll_end(cx) == Poll::Ready(true) {
                                Poll::Ready(())
                            } else {
                                Poll::Pending
                            }
                        }
                    };
                }
            }
        }
        Poll::Pending
    }

    /// Starts a new lease, retiring the one in force; returns its cell, the
    /// old stream's waker to wake, and items to drop, once unlocked.
    pub(crate) fn new_lease(&mut self) -> (Arc<LeaseCell<T>>, Option<Waker>, Vec<T>) {
        let (_, waker, to_drop) = self.retire();
        let generation = self.next_generation;
        self.next_generation += 1;
        let cell = Arc::new(LeaseCell::new(generation));
        let chunk_start = self
            .replay
            .as_ref()
            .map_or(0, ReplayBuffer::cursor_position);
        self.current = Some(Current {
            cell: Arc::clone(&cell),
            generation,
            delivered: 0,
            redelivered: 0,
            acked: 0,
            chunk_start,
            chunk_redeliveries: 0,
        });
        self.totals.leases += 1;
        (cell, waker, to_drop)
    }

    /// Ends the lease in force: the items its stream claimed are counted as
    /// delivered, the rest of its chunk goes back; its unconfirmed items are
    /// rewound for replay, or counted as lost. Returns its final counts, the
    /// stream's waker and items to drop, for the caller to handle unlocked.
    pub(crate) fn retire(&mut self) -> (Option<LeaseMetrics>, Option<Waker>, Vec<T>) {
        let Some(mut current) = self.current.take() else {
            return (None, None, Vec::new());
        };
        // From here on every claim of the stream fails; the count read here
        // is what it yielded.
        let count = current.cell.revoke();
        Self::fold(&mut self.totals, &mut self.replay, &mut current, count);
        let (_, to_drop) = Self::restore(&self.replay, &mut self.source, &current.cell, count);
        match &mut self.replay {
            Some(replay) => replay.rewind(),
            None => self.totals.lost += current.delivered - current.acked,
        }
        let cell = &current.cell;
        cell.final_delivered
            .store(current.delivered, Ordering::Relaxed);
        cell.final_redelivered
            .store(current.redelivered, Ordering::Relaxed);
        cell.final_acked.store(current.acked, Ordering::Relaxed);
        (Some(current.folded_metrics()), self.waker.take(), to_drop)
    }

    /// The stream of lease `generation` is being dropped: what it took and
    /// did not yield goes back (the lease stays in force, for its handles to
    /// acknowledge). Returns items to drop once unlocked.
    pub(crate) fn release(&mut self, generation: u64) -> Vec<T> {
        let State {
            source,
            replay,
            current,
            totals,
            ..
        } = self;
        let Some(current) = current.as_mut().filter(|c| c.generation == generation) else {
            return Vec::new(); // ended: its chunk went back then
        };
        let count = current.cell.claimed();
        Self::fold(totals, replay, current, count);
        let (n, to_drop) = Self::restore(replay, source, &current.cell, count);
        current.cell.claimed.store(0, Ordering::Relaxed);
        if let Some(replay) = replay {
            replay.unhand(n);
        }
        to_drop
    }

    pub(crate) fn metrics(&self) -> ReceiverMetrics {
        let t = self.totals;
        let (mut delivered, mut redelivered) = (t.delivered, t.redelivered);
        let mut in_chunk = 0;
        let mut watermark = 0;
        if let Some(current) = &self.current {
            let (d, r) = current.live();
            delivered += d - current.delivered;
            redelivered += r - current.redelivered;
            let claimed = current.cell.claimed();
            in_chunk = current.cell.len.load(Ordering::Relaxed)
                - claimed.min(current.cell.len.load(Ordering::Relaxed));
            watermark = current.chunk_start + claimed as u64;
        }
        let (unacked, queued_in_buffer, parked) = match &self.replay {
            // A replay chunk holds copies: what counts is the buffer.
            Some(replay) => {
                in_chunk = 0;
                (
                    replay.unacked(watermark),
                    replay.undelivered(watermark),
                    replay.has_parked(),
                )
            }
            None => (0, 0, false),
        };
        let queued = self
            .source
            .as_ref()
            .map_or(0, |s| s.staged.len() + s.rx.len())
            + in_chunk
            + queued_in_buffer
            + usize::from(parked);
        ReceiverMetrics {
            leases: t.leases,
            delivered,
            redelivered,
            acked: t.acked,
            lost: t.lost,
            dropped: t.dropped,
            handed_back: t.handed_back,
            unacked: unacked as u64,
            queued: queued as u64,
        }
    }

    /// Whether the channel is closed and drained and nothing taken from it
    /// is held, yielded or not.
    pub(crate) fn is_drained(&self) -> bool {
        let channel_done = self.source.as_ref().is_none_or(Source::is_done);
        let buffer_empty = self.replay.as_ref().is_none_or(ReplayBuffer::is_empty);
        let chunk_empty = self.replay.is_some()
            || self
                .current
                .as_ref()
                .is_none_or(|c| c.cell.claimed() >= c.cell.len.load(Ordering::Relaxed));
        channel_done && buffer_empty && chunk_empty
    }

    /// Takes the unacknowledged items, oldest first; the lease in force
    /// must have been retired.
    pub(crate) fn take_unacked(&mut self) -> Vec<T> {
        debug_assert!(self.current.is_none());
        let items = self
            .replay
            .as_mut()
            .map_or_else(Vec::new, ReplayBuffer::take_unacked);
        self.totals.handed_back += items.len() as u64;
        items
    }

    /// Everything held — unacknowledged, never yielded, set aside, staged —
    /// oldest first; with `drain_channel`, then what is still queued in the
    /// channel, which is closed. The lease in force must have been retired.
    /// The caller counts the items and drops or returns them once unlocked.
    pub(crate) fn take_everything(&mut self, drain_channel: bool) -> Vec<T> {
        debug_assert!(self.current.is_none());
        let mut all = Vec::new();
        if let Some(replay) = &mut self.replay {
            all.extend(replay.take_all());
            all.extend(replay.take_parked());
        }
        if let Some(source) = &mut self.source {
            if drain_channel {
                all.extend(source.close_and_drain());
            } else {
                all.extend(source.staged.drain(..));
            }
        }
        all
    }

    /// Once the [`ReusableReceiver`](crate::ReusableReceiver) is gone and no
    /// lease is in force, nothing can deliver what is held: it is taken out,
    /// to be dropped once unlocked, and counted as dropped; the channel is
    /// closed.
    pub(crate) fn discard_if_orphaned(&mut self) -> Vec<T> {
        if !self.orphaned || self.current.is_some() {
            return Vec::new();
        }
        let discarded = self.take_everything(true);
        self.totals.dropped += discarded.len() as u64;
        discarded
    }

    /// Acknowledges the first `n` items (all, for `None`) of lease
    /// `generation`; returns how many were newly acknowledged, and the
    /// stream's waker if that made room in a full replay buffer.
    pub(crate) fn ack(
        &mut self,
        generation: u64,
        n: Option<u64>,
    ) -> (Result<u64, AckError>, Option<Waker>) {
        let Some(current) = self.current_mut(generation) else {
            return (Err(AckError::Revoked { generation }), None);
        };
        let (delivered, _) = current.live();
        let n = n.unwrap_or(delivered);
        if n > delivered {
            let err = AckError::NotYielded {
                requested: n,
                yielded: delivered,
            };
            return (Err(err), None);
        }
        let Some(newly) = n.checked_sub(current.acked).filter(|k| *k > 0) else {
            return (Ok(0), None);
        };
        current.acked = n;
        self.totals.acked += newly;
        let mut waker = None;
        if let Some(replay) = &mut self.replay {
            let was_full = replay.is_full();
            // `newly <= delivered - acked`: all of it in the buffer, at its
            // front, handed to this lease.
            replay.acknowledge(newly as usize);
            if was_full {
                waker = self.waker.take();
            }
        }
        (Ok(newly), waker)
    }

    /// Wakes the waiting stream, if any (the channel was closed).
    pub(crate) fn take_waker(&mut self) -> Option<Waker> {
        self.waker.take()
    }

    /// The counts of the lease of `cell`: live while it is in force, final
    /// once it ended.
    pub(crate) fn lease_metrics(&self, cell: &LeaseCell<T>) -> LeaseMetrics {
        match &self.current {
            Some(current) if current.generation == cell.generation => current.metrics(),
            _ => cell.final_metrics(),
        }
    }

    /// The final counts of the lease of `cell`, once it ended.
    pub(crate) fn final_metrics(cell: &LeaseCell<T>) -> LeaseMetrics {
        cell.final_metrics()
    }

    pub(crate) fn current_generation(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.generation)
    }
}

impl<T> Shared<T> {
    pub(crate) fn new(rx: Receiver<T>, replay: Option<ReplayBuffer<T>>) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(State::new(rx, replay)),
        })
    }
}
