//! What the two halves of the channel share, built so that many senders on
//! many threads do not queue behind one another.
//!
//! # The design
//!
//! - **Lanes.** Each [`Sender`](super::Sender) value stages its items on
//!   one of a few lanes (a `Vec` behind its own lock, alone on its cache
//!   lines); clones are spread over the lanes round-robin. A send takes
//!   only its lane's lock, which nobody else wants except the receiver once
//!   per collection, so senders on different threads do not contend and the
//!   lane stays in the sender's cache. A lane records when its first staged
//!   item arrived, and sets its bit in the `dirty` mask when it goes from
//!   empty to non-empty, so that the receiver visits only lanes with items.
//! - **Room in chunks.** `queued` counts the room taken: items in the
//!   channel (staged, or taken by the receiver and not handed out yet) plus
//!   *credits* — room a lane reserved ahead. A lane without credits takes a
//!   chunk of them with one `fetch_add` (giving back what went over the
//!   capacity), so a sender touches the shared counter once per chunk, not
//!   per item. The chunk is small enough (`1 + (capacity - max_items) /
//!   lanes`, at most 32) that the credits all lanes may hold unused never
//!   keep the channel from filling a batch: when senders wait for room, the
//!   receiver holds or can see a full batch. The receiver gives room back a
//!   whole batch at a time.
//! - **The receiver assembles.** It swaps each dirty lane's `Vec` for an
//!   empty one (O(1) under the lane lock) and runs the items through the
//!   same batching rules as the adapters. Batches are cut by count, weight,
//!   age, flush and close exactly as before; only the order *between*
//!   senders is no longer the order in which they took one global lock.
//! - **Waking the receiver.** Before it sleeps, the receiver publishes a
//!   per-lane threshold: the items (and weight) one lane must hold for a
//!   batch to be possibly due — 1 when it holds no item (to arm its timer),
//!   else its missing items divided among the lanes that have senders,
//!   rounded up. By the pigeonhole principle, once the lanes together hold
//!   what it misses, one of them holds its share: the sender that stages
//!   that lane's share reads the threshold under the lane lock and wakes
//!   the receiver (swapping the threshold to [`AWAKE`], so that only one
//!   sender does) — about one wake-up per batch, not per item. After
//!   publishing, the receiver looks at every lane that got items since it
//!   last took them: one already at its share means a batch may be due, and
//!   it takes the items again instead of sleeping. A lane gaining its first
//!   sender, or losing its last one while holding items, wakes the
//!   receiver to recompute the shares.
//! - **Waiting senders.** A sender that finds no room waits in a FIFO list
//!   (only then is a lock shared by senders taken); room for `n` items wakes
//!   at most `n` of them.
//!
//! All orderings on the counters and flags that take part in the wake-up
//! protocols are `SeqCst`: each protocol is a store-then-load pair on two
//! variables on each side (the receiver stores its threshold and loads the
//! counters; a sender updates a counter and loads the threshold), which
//! needs a single total order to rule out both sides missing each other.
//! Loom models `SeqCst` accesses as acquire/release only (see its README)
//! but supports `SeqCst` fences, so under `--cfg async_patterns_loom` each
//! such pair also has a fence between its store and its load ([`sc_fence`]):
//! the models in `tests/loom_channel.rs` then check the protocols with the
//! total order the `SeqCst` accesses give in a normal build.

use std::fmt;
use std::task::Waker;

use async_patterns_core::__private::loom::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering::SeqCst,
};
use async_patterns_core::__private::{CachePadded, WakeList, lock};
use tokio::time::Instant;

use super::waiters::Waiters;
use crate::batch::Pool;
use crate::flush::FlushSignal;
use crate::{BatchConfig, BatchMetrics};

/// Between the store and the load of a store-then-load protocol step. In
/// a normal build the `SeqCst` accesses on both sides already take part in
/// one total order and this is nothing; loom treats `SeqCst` accesses as
/// acquire/release, so its models get the fence that gives them that
/// order.
#[inline(always)]
fn sc_fence() {
    #[cfg(async_patterns_loom)]
    async_patterns_core::__private::loom::fence(SeqCst);
}

/// The most room a lane reserves at a time.
const MAX_CHUNK: usize = 32;

/// `wake_items` / `wake_weight` while the receiver is awake: no sender
/// needs to wake it.
pub(super) const AWAKE: usize = usize::MAX;

/// One sender lane: items staged by the senders that use it, oldest first.
pub(super) struct Lane<T> {
    pub(super) items: Vec<T>,
    /// The items' weights, with a weigher only.
    pub(super) weights: Vec<usize>,
    /// When the first of `items` arrived.
    pub(super) since: Option<Instant>,
    /// Their weights, each capped at `max_weight`, summed (with a weigher).
    pub(super) weight: usize,
    /// Room this lane reserved and has not used yet.
    pub(super) credits: usize,
    /// Senders staging on this lane.
    pub(super) senders: usize,
    /// The receiver was closed or dropped: nothing more is staged here.
    pub(super) closed: bool,
    /// Items staged here, ever (summed into [`BatchMetrics::sent`]).
    pub(super) sent: u64,
    /// Sends through this lane refused because the channel was closed.
    pub(super) refused: u64,
    /// `try_send`s through this lane refused because the channel was full.
    pub(super) rejected: u64,
}

impl<T> Lane<T> {
    fn new() -> Self {
        Lane {
            items: Vec::new(),
            weights: Vec::new(),
            since: None,
            weight: 0,
            credits: 0,
            senders: 0,
            closed: false,
            sent: 0,
            refused: 0,
            rejected: 0,
        }
    }
}

/// How many lanes a channel has: enough that the senders running at the
/// same time (at most one per thread) rarely share one; at most 64, the
/// width of the dirty mask.
fn lane_count() -> usize {
    if cfg!(async_patterns_loom) {
        return 2;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads.saturating_mul(4).next_power_of_two().clamp(4, 64)
}

/// The thresholds the sleeping receiver publishes; read on every send,
/// written about twice per receiver poll.
struct WakeAt {
    items: AtomicUsize,
    weight: AtomicUsize,
}

pub(crate) struct Shared<T> {
    /// Room taken: items in the channel and lanes' credits (see the module
    /// docs), plus, for an instant, reservations that went over the
    /// capacity and are given back.
    queued: CachePadded<AtomicUsize>,
    wake: CachePadded<WakeAt>,
    /// Bit `i`: lane `i` went from empty to non-empty since the receiver
    /// last took its items.
    dirty: CachePadded<AtomicU64>,
    lanes: Box<[CachePadded<Mutex<Lane<T>>>]>,
    /// The lane of the next clone.
    next_lane: AtomicUsize,
    /// Lanes with at least one sender.
    active_lanes: AtomicUsize,
    senders: AtomicUsize,
    closed: AtomicBool,
    rx_waker: Mutex<Option<Waker>>,
    /// Senders in `waiters`' queue, readable without its lock.
    waiting: AtomicUsize,
    waiters: Mutex<Waiters>,
    /// The receiver's own counters, published after each batch, for
    /// [`Sender::metrics`](super::Sender::metrics).
    stats: Mutex<BatchMetrics>,
    pub(super) pool: Arc<Pool<T>>,
    pub(super) flush: Arc<FlushSignal>,
    pub(crate) config: BatchConfig<T>,
    pub(super) capacity: usize,
    /// How much room a lane reserves at a time.
    chunk: usize,
}

/// What [`Shared::stage`] did.
pub(super) enum Staged {
    /// Staged some items: as many as the lane had room for, at least 1.
    Done,
    /// No room: nothing staged.
    Full,
    /// The channel is closed: nothing staged.
    Closed,
}

impl<T> Shared<T> {
    pub(super) fn new(config: BatchConfig<T>, capacity: usize) -> Self {
        let lanes: Box<[_]> = (0..lane_count())
            .map(|_| CachePadded::new(Mutex::new(Lane::new())))
            .collect();
        // The first sender stages on lane 0.
        lock(&lanes[0]).senders = 1;
        let chunk = (1 + (capacity - config.max_items) / lanes.len()).min(MAX_CHUNK);
        Shared {
            queued: CachePadded::new(AtomicUsize::new(0)),
            wake: CachePadded::new(WakeAt {
                items: AtomicUsize::new(AWAKE),
                weight: AtomicUsize::new(AWAKE),
            }),
            dirty: CachePadded::new(AtomicU64::new(0)),
            lanes,
            next_lane: AtomicUsize::new(1),
            active_lanes: AtomicUsize::new(1),
            senders: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            rx_waker: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters::default()),
            stats: Mutex::new(BatchMetrics::default()),
            pool: Arc::new(Pool::new(config.max_items)),
            flush: Arc::new(FlushSignal::default()),
            config,
            capacity,
            chunk,
        }
    }

    // ------------------------------------------------------------------
    // Senders: lanes, room, staging.

    /// A new sender: its lane. The receiver recomputes the lanes' shares
    /// when a lane gets its first sender.
    pub(super) fn add_sender(&self) -> usize {
        self.senders.fetch_add(1, SeqCst);
        let lane = self.next_lane.fetch_add(1, SeqCst) % self.lanes.len();
        let first = {
            let mut staged = lock(&self.lanes[lane]);
            staged.senders += 1;
            staged.senders == 1
        };
        if first {
            self.active_lanes.fetch_add(1, SeqCst);
            sc_fence();
            self.wake_receiver();
        }
        lane
    }

    /// A sender of lane `lane` is gone. The last one of a lane gives its
    /// credits back, and wakes the receiver if the lane holds items (no
    /// sender will add to them); the last one of all wakes it to close the
    /// tail.
    pub(super) fn remove_sender(&self, lane: usize) {
        let (last_of_lane, orphans, credits) = {
            let mut staged = lock(&self.lanes[lane]);
            staged.senders -= 1;
            if staged.senders == 0 {
                (
                    true,
                    !staged.items.is_empty(),
                    std::mem::take(&mut staged.credits),
                )
            } else {
                (false, false, 0)
            }
        };
        self.release(credits);
        if last_of_lane {
            self.active_lanes.fetch_sub(1, SeqCst);
        }
        let last = self.senders.fetch_sub(1, SeqCst) == 1;
        if last || orphans {
            sc_fence();
            self.wake_receiver();
        }
    }

    /// How many lanes there are.
    pub(super) fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Every sender is gone.
    pub(super) fn senders_gone(&self) -> bool {
        self.senders.load(SeqCst) == 0
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Reserves room for up to `n` items: how many it got (0 when the
    /// channel is full).
    #[inline]
    pub(super) fn try_reserve(&self, n: usize) -> usize {
        let before = self.queued.fetch_add(n, SeqCst);
        match before.checked_add(n) {
            Some(after) if after <= self.capacity => n,
            _ => {
                let got = self.capacity.saturating_sub(before).min(n);
                let excess = n - got;
                let now = self.queued.fetch_sub(excess, SeqCst) - excess;
                // For a moment the count was too high: a sender that looked
                // then may be waiting for room that is there. (Only then:
                // waking on every refused reservation would have a waiting
                // sender wake itself forever on a full channel.)
                if now < self.capacity {
                    self.wake_senders(excess.min(self.capacity - now));
                }
                got
            }
        }
    }

    /// Gives back the room of `n` items and wakes up to `n` waiting
    /// senders.
    pub(super) fn release(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, SeqCst);
            self.wake_senders(n);
        }
    }

    /// A sender waits for room: registered (`id` allocated on first use)
    /// to be woken when room is freed or the channel closes. It must look
    /// again after this, before it sleeps.
    pub(super) fn wait_for_room(&self, id: &mut Option<usize>, waker: &Waker) {
        let mut waiters = lock(&self.waiters);
        waiters.register(id, waker);
        self.waiting.store(waiters.waiting(), SeqCst);
        drop(waiters);
        sc_fence();
    }

    /// A sender stops waiting: it got room (`used`) or gave up. A sender
    /// woken for room that gives up passes its turn on.
    #[inline]
    pub(super) fn stop_waiting(&self, id: &mut Option<usize>, used: bool) {
        if id.is_some() {
            self.stop_waiting_slow(id, used);
        }
    }

    #[cold]
    fn stop_waiting_slow(&self, id: &mut Option<usize>, used: bool) {
        let mut waiters = lock(&self.waiters);
        let notified = waiters.remove(id);
        self.waiting.store(waiters.waiting(), SeqCst);
        drop(waiters);
        if notified && !used {
            self.wake_senders(1);
        }
    }

    /// Wakes up to `n` waiting senders, oldest first.
    pub(super) fn wake_senders(&self, n: usize) {
        // After the caller freed room (or closed the channel); a sender
        // registers, then looks at the room: one of the two sees the other.
        sc_fence();
        if n == 0 || self.waiting.load(SeqCst) == 0 {
            return;
        }
        let mut left = n;
        let mut wakers = WakeList::new();
        loop {
            let mut waiters = lock(&self.waiters);
            left -= waiters.notify(left, &mut wakers);
            let waiting = waiters.waiting();
            self.waiting.store(waiting, SeqCst);
            drop(waiters);
            wakers.wake_all();
            if left == 0 || waiting == 0 {
                return;
            }
        }
    }

    /// The weight an item counts for in a lane's threshold: its own,
    /// capped at `max_weight`, so that the sum cannot overflow while still
    /// reaching `max_weight` whenever the uncapped sum would.
    #[inline]
    pub(super) fn capped(&self, weight: usize) -> usize {
        weight.min(self.config.max_weight.unwrap_or(0))
    }

    /// Stages up to `want` items on lane `lane`, with `reserved` room the
    /// caller already took (credited to the lane first) and the lane's
    /// credits, taking a chunk of room if they are short. `push(n, items,
    /// weights)` moves `n` items into the lane and returns their capped
    /// weight. Wakes the receiver if the lane reached its share.
    #[inline]
    pub(super) fn stage(
        &self,
        lane: usize,
        want: usize,
        reserved: usize,
        push: impl FnOnce(usize, &mut Vec<T>, &mut Vec<usize>) -> usize,
    ) -> Staged {
        let mut guard = lock(&self.lanes[lane]);
        let staged = &mut *guard;
        if staged.closed {
            drop(guard);
            self.release(reserved);
            return Staged::Closed;
        }
        staged.credits += reserved;
        if staged.credits < want {
            let short = want - staged.credits;
            staged.credits += self.try_reserve(short.max(self.chunk));
        }
        let n = want.min(staged.credits);
        if n == 0 {
            return Staged::Full;
        }
        staged.credits -= n;
        let was_empty = staged.items.is_empty();
        let weight = push(n, &mut staged.items, &mut staged.weights);
        staged.weight = staged.weight.saturating_add(weight);
        staged.sent += n as u64;
        if was_empty {
            staged.since = Some(Instant::now());
            self.dirty.fetch_or(1 << lane, SeqCst);
            sc_fence();
        }
        // Read under the lane lock: the receiver looks at this lane after
        // publishing its shares (see `sleep`).
        // `wake_weight` counts only while the receiver sleeps: it publishes
        // it before `wake_items`.
        let at = self.wake.items.load(SeqCst);
        let due = at != AWAKE
            && (staged.items.len() >= at
                || (self.config.weighs() && staged.weight >= self.wake.weight.load(SeqCst)));
        drop(guard);
        if due {
            self.wake_receiver();
        }
        Staged::Done
    }

    /// Counts sends refused on lane `lane`: `n` because the channel was
    /// closed (`closed`), or one `try_send` because it was full.
    pub(super) fn refuse(&self, lane: usize, n: usize, closed: bool) {
        let mut staged = lock(&self.lanes[lane]);
        if closed {
            staged.refused += n as u64;
        } else {
            staged.rejected += n as u64;
        }
    }

    /// Wakes the receiver unless it is awake or another sender did.
    pub(super) fn wake_receiver(&self) {
        if self.wake.items.swap(AWAKE, SeqCst) != AWAKE {
            let waker = lock(&self.rx_waker).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    // ------------------------------------------------------------------
    // The receiver.

    /// Remembers the receiver's waker for the senders.
    pub(super) fn register_receiver(&self, waker: &Waker) {
        let mut slot = lock(&self.rx_waker);
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Stores `wake_items`. A swap rather than a store: senders swap it
    /// too, and read-modify-writes fall in one order with each other (a
    /// `SeqCst` store does too, but loom orders plain stores against
    /// read-modify-writes only partially; on x86 a `SeqCst` store is an
    /// exchange anyway).
    #[inline]
    fn set_wake_items(&self, at: usize) {
        self.wake.items.swap(at, SeqCst);
    }

    /// The receiver is awake and needs no wake-up.
    pub(super) fn awake(&self) {
        self.set_wake_items(AWAKE);
    }

    /// The receiver, which holds a partial batch of `held` items and weight
    /// `held_weight` and has just taken every lane's items, is about to
    /// sleep: publishes each lane's share of what it misses (1 item if it
    /// holds none and `arm_timer`: the first item arms its timer), then
    /// checks that nothing slipped past it. Returns false if something did
    /// — a lane already holds its share, a lane got its first sender, or
    /// every sender went away: then it must look again before it sleeps.
    pub(super) fn sleep(&self, held: usize, held_weight: usize, arm_timer: bool) -> bool {
        let active = self.active_lanes.load(SeqCst).max(1);
        let weight_share = self.config.max_weight.map(|max_weight| {
            let share = max_weight
                .saturating_sub(held_weight)
                .max(1)
                .div_ceil(active);
            self.wake.weight.store(share, SeqCst);
            share
        });
        let item_share = if held == 0 && arm_timer {
            1
        } else {
            self.config
                .max_items
                .saturating_sub(held)
                .max(1)
                .div_ceil(active)
        };
        self.set_wake_items(item_share);
        sc_fence();
        if self.senders_gone() || self.active_lanes.load(SeqCst) > active {
            return false;
        }
        // A sender stages, then reads the share under its lane lock; the
        // receiver publishes the share, then reads the lane under its lock:
        // one of the two sees the other. A lane that was empty when the
        // receiver took the items sets its dirty bit before reading the
        // share, so the receiver sees the bit or the sender the share.
        let mut dirty = self.dirty.load(SeqCst);
        while dirty != 0 {
            let lane = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            let staged = lock(&self.lanes[lane]);
            let due = staged.items.len() >= item_share
                || weight_share.is_some_and(|share| staged.weight >= share);
            if due {
                return false;
            }
        }
        true
    }

    /// Takes the staged items of every lane that may have some, each lane's
    /// as `(items, weights, since)`, replacing its buffers with `spare`'s.
    pub(super) fn collect(
        &self,
        mut spare: impl FnMut() -> (Vec<T>, Vec<usize>),
        mut take: impl FnMut(Vec<T>, Vec<usize>, Instant),
    ) {
        let mut dirty = self.dirty.swap(0, SeqCst);
        while dirty != 0 {
            let lane = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            let mut staged = lock(&self.lanes[lane]);
            if staged.items.is_empty() {
                continue;
            }
            let (items, weights) = spare();
            let items = std::mem::replace(&mut staged.items, items);
            let weights = std::mem::replace(&mut staged.weights, weights);
            let since = staged.since.take().unwrap_or_else(Instant::now);
            staged.weight = 0;
            drop(staged);
            take(items, weights, since);
        }
    }

    /// Closes the channel: every lane refuses new items from now on, and
    /// waiting senders are woken to get theirs back.
    pub(super) fn close(&self) {
        self.closed.store(true, SeqCst);
        let mut credits = 0;
        for lane in self.lanes.iter() {
            let mut staged = lock(lane);
            staged.closed = true;
            credits += std::mem::take(&mut staged.credits);
        }
        self.release(credits);
        self.wake_senders(usize::MAX);
    }

    /// Publishes the receiver's counters.
    pub(super) fn publish(&self, receiver: &BatchMetrics) {
        *lock(&self.stats) = *receiver;
    }

    /// The items in the channel now (a snapshot).
    pub(super) fn len(&self) -> usize {
        let credits: usize = self.lanes.iter().map(|lane| lock(lane).credits).sum();
        self.queued
            .load(SeqCst)
            .saturating_sub(credits)
            .min(self.capacity)
    }

    /// The metrics: the receiver's counters (`receiver`, or the last ones
    /// it published), the lanes' summed, and the `queued` gauge.
    pub(super) fn metrics(&self, receiver: Option<&BatchMetrics>) -> BatchMetrics {
        let mut metrics = match receiver {
            Some(receiver) => *receiver,
            None => *lock(&self.stats),
        };
        for lane in self.lanes.iter() {
            let lane = lock(lane);
            metrics.sent += lane.sent;
            metrics.handed_back += lane.refused;
            metrics.rejected += lane.rejected;
        }
        metrics.queued = self.len() as u64;
        metrics
    }
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("queued", &self.len())
            .field("capacity", &self.capacity)
            .field("lanes", &self.lanes.len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
