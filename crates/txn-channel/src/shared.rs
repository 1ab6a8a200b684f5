//! The state shared by the senders, the consumers and the deliveries of one
//! channel: the [`Table`] of items under the channel's one lock, the count
//! of capacity slots in use, the FIFO of senders waiting for a slot, and the
//! consumers waiting for an item.
//!
//! **Capacity.** A slot is taken when a value is sent (or reserved) and given
//! back only when the item is committed or dead-lettered, so `capacity`
//! bounds every item that has not left the channel — queued, in flight, or
//! given back — not only those still queued. Slots are given back without
//! the lock: `used` is an atomic, and its top bit, [`WAITING`], says whether
//! senders wait. Both the release (`fetch_sub`) and a sender that starts to
//! wait (`fetch_or`) are read-modify-writes of that one atomic, so one of
//! them always sees the other: either the release sees the flag and hands
//! the slot to the oldest waiter, or the sender sees the free slot and takes
//! it.
//!
//! **Consumers.** Every [`Receiver`](crate::Receiver) clone has a slot in
//! [`Consumers`]. A consumer that finds nothing to take registers its waker
//! in the FIFO of waiting consumers under the lock; whatever makes an item
//! takeable (a send, an end, a delay running out) wakes the first waiting
//! consumer — only one, and only if no woken consumer is still on its way,
//! since that one will look and, if more is takeable, wake the next. A
//! consumer woken and then cancelled passes the wake-up on. When the channel
//! has ended (intake closed, nothing left, nothing in flight) every waiting
//! consumer is woken to see it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;

use async_patterns_core::__private::loom::{
    AtomicBool, AtomicUsize, Mutex, MutexGuard,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use async_patterns_core::__private::{CachePadded, WakeList, lock};

use async_patterns_core::RetryPolicy;

use crate::table::{Clock, End, Ended, Expired, OrderKind, Table, Ticket, retry_delay};

/// Set in [`Shared::used`] while at least one sender waits for a slot.
const WAITING: usize = 1 << (usize::BITS - 1);

/// The largest capacity a channel can have: the bits below [`WAITING`].
pub(crate) const MAX_CAPACITY: usize = WAITING - 1;

/// Hashes an item's key (per-key order).
pub(crate) type KeyFn<T> = Box<dyn Fn(&T) -> u64 + Send + Sync>;

/// The settings consumers read without the lock (each keeps a copy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) order: OrderKind,
    pub(crate) max_attempts: Option<u32>,
    /// Record delivery times: there is a dead-letter destination.
    pub(crate) stamp: bool,
}

/// The stream a receiver over a stream pulls from.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

pub(crate) struct Shared<T> {
    state: Mutex<State<T>>,
    /// Slots in use, plus [`WAITING`]. Senders add under the lock; commits
    /// subtract without it.
    used: CachePadded<AtomicUsize>,
    capacity: usize,
    key: Option<KeyFn<T>>,
    config: Config,
    /// For the own buffer's rollbacks (the table has its own copy).
    retry: Option<RetryPolicy>,
    /// The dead-letter channel was found closed: exhausted items are
    /// delivered again instead.
    dead_closed: AtomicBool,
    /// The stream of a receiver over a stream, polled by whichever consumer
    /// needs an item (outside the state lock); `None` once it ended.
    pub(crate) stream: Mutex<Option<BoxStream<T>>>,
    /// The counters of the only consumer's own buffer, published without
    /// the lock; see [`SoloCounts`].
    pub(crate) solo: CachePadded<SoloCounts>,
}

/// A counter of [`SoloCounts`].
pub(crate) type Counter = std::sync::atomic::AtomicUsize;

/// What the only consumer did in its own buffer since it last added it to
/// the table's counts: written by that consumer alone (plain stores), read
/// by `metrics()`, and zeroed under the lock when the consumer adds them to
/// the table (it gives its buffer back, or stops being the only one).
///
/// The counters are `std`'s atomics even under loom: they only report
/// (nothing synchronizes through them, and their one writer is the only
/// consumer), so modelling their stores would only multiply the
/// interleavings loom explores.
#[derive(Debug, Default)]
pub(crate) struct SoloCounts {
    /// Live consumers (not a counter of the own buffer: it sits here
    /// because the only consumer reads it on every delivery, to know it may
    /// keep items in its own buffer, and writes this line anyway).
    pub(crate) consumers: AtomicUsize,
    pub(crate) delivered: Counter,
    pub(crate) redelivered: Counter,
    pub(crate) committed: Counter,
    /// Deliveries ended other than by a commit.
    pub(crate) released: Counter,
    /// Items that came into the buffer.
    pub(crate) taken: Counter,
    /// Items that left it other than by a commit (dead-lettered).
    pub(crate) removed: Counter,
}

pub(crate) struct State<T> {
    pub(crate) table: Table<T>,
    senders: usize,
    /// No value is accepted anymore (closed, or the last consumer is gone).
    closed: bool,
    /// A stream feeds the channel and has not ended.
    stream_open: bool,
    /// Senders waiting for a slot, oldest first; empty exactly when
    /// [`WAITING`] is clear.
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// Waiters are granted slots in id order: a live waiter whose id is at
    /// most this one holds a slot.
    last_granted: u64,
    pub(crate) consumers: Consumers,
}

struct Waiter {
    id: u64,
    waker: Waker,
}

/// The channel is closed: the receiving side closed it or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// A sender's place among the waiters, kept by whatever waits for a slot (a
/// send future, a reservation, a consumer's dead-letter path). Its owner
/// must call [`Shared::cancel_wait`] if it stops waiting before the slot
/// comes.
#[derive(Debug, Default)]
pub(crate) struct WaitSlot(Option<u64>);

impl WaitSlot {
    pub(crate) fn is_waiting(&self) -> bool {
        self.0.is_some()
    }
}

impl<T> Shared<T> {
    /// A channel with one sender (or none, fed by a stream) and one consumer.
    pub(crate) fn new(
        capacity: usize,
        table: Table<T>,
        key: Option<KeyFn<T>>,
        stream: Option<BoxStream<T>>,
    ) -> Self {
        let rules = table.rules();
        let config = Config {
            order: rules.order,
            max_attempts: rules.max_attempts,
            stamp: rules.stamp,
        };
        let retry = rules.retry.clone();
        let fed_by_stream = stream.is_some();
        debug_assert!((1..=MAX_CAPACITY).contains(&capacity));
        let mut consumers = Consumers::default();
        consumers.add();
        Shared {
            state: Mutex::new(State {
                table,
                senders: usize::from(!fed_by_stream),
                closed: false,
                stream_open: fed_by_stream,
                waiters: VecDeque::new(),
                next_waiter: 1,
                last_granted: 0,
                consumers,
            }),
            used: CachePadded::new(AtomicUsize::new(0)),
            capacity,
            key,
            config,
            retry,
            dead_closed: AtomicBool::new(false),
            stream: Mutex::new(stream),
            solo: CachePadded::new(SoloCounts {
                consumers: AtomicUsize::new(1),
                ..SoloCounts::default()
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The settings consumers read on every delivery (they copy them).
    pub(crate) fn config(&self) -> Config {
        self.config
    }

    /// The retry policy's delay after attempt `attempts` failed, if there
    /// is a policy.
    pub(crate) fn retry_delay(&self, attempts: u32, rng: &mut u64) -> Option<std::time::Duration> {
        self.retry
            .as_ref()
            .map(|policy| retry_delay(policy, attempts, rng))
    }

    pub(crate) fn dead_letters_closed(&self) -> bool {
        self.dead_closed.load(Relaxed)
    }

    /// The dead-letter channel is closed: from now on exhausted items are
    /// delivered again rather than lost.
    pub(crate) fn set_dead_letters_closed(&self) {
        self.dead_closed.store(true, Relaxed);
    }

    /// The hashed key of `item` (0 unless the order is per key).
    pub(crate) fn key_of(&self, item: &T) -> u64 {
        self.key.as_ref().map_or(0, |key| key(item))
    }

    // ----- senders -------------------------------------------------------

    pub(crate) fn add_sender(&self) {
        self.lock().senders += 1;
    }

    pub(crate) fn drop_sender(&self) {
        let mut st = self.lock();
        st.senders -= 1;
        let mut wakers = WakeList::new();
        if st.senders == 0 {
            st.wake_consumers(&mut wakers);
        }
        drop(st);
        wakers.wake_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// An item pulled from the stream of a receiver over a stream: it takes
    /// a slot (the capacity of such a receiver is unbounded: the stream is
    /// pulled only when an item is needed) and is queued.
    pub(crate) fn push_pulled(&self, item: T) {
        let key = self.key_of(&item);
        let mut st = self.lock();
        self.used.fetch_add(1, AcqRel);
        st.table.push(item, key);
    }

    /// The own buffer of a receiver over a stream took `n` items straight
    /// from the stream: they take slots and count as taken (so as sent).
    pub(crate) fn count_pulled(&self, n: usize) {
        let _st = self.lock();
        self.used.fetch_add(n, AcqRel);
        SoloCounts::add(&self.solo.taken, n);
    }

    /// Sends `value` if a slot is free and no earlier sender waits for one.
    pub(crate) fn try_send(&self, value: T, key: u64) -> Result<(), (T, bool)> {
        let mut st = self.lock();
        if st.closed {
            return Err((value, true));
        }
        if !self.try_take_slot(&st) {
            return Err((value, false));
        }
        let waker = st.push(value, key);
        drop(st);
        wake(waker);
        Ok(())
    }

    /// Polls for a slot and, once one is held, sends `value` under the same
    /// lock. `value` is taken only when it is sent.
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        slot: &mut WaitSlot,
        value: &mut Option<T>,
        key: u64,
    ) -> Poll<Result<(), Closed>> {
        let mut st = self.lock();
        let polled = self.poll_slot_locked(&mut st, cx, slot);
        let waker = match polled {
            Poll::Ready(Ok(())) => match value.take() {
                Some(value) => st.push(value, key),
                None => None,
            },
            _ => None,
        };
        drop(st);
        wake(waker);
        polled
    }

    /// Polls for a slot; on `Ready(Ok)` the caller holds one and must either
    /// [`send_reserved`](Self::send_reserved) or [`release`](Self::release) it.
    pub(crate) fn poll_reserve(
        &self,
        cx: &mut Context<'_>,
        slot: &mut WaitSlot,
    ) -> Poll<Result<(), Closed>> {
        let mut st = self.lock();
        self.poll_slot_locked(&mut st, cx, slot)
    }

    /// Sends `value` into a slot the caller holds. If the channel closed
    /// meanwhile, gives the slot back and hands `value` back.
    pub(crate) fn send_reserved(&self, value: T, key: u64) -> Result<(), T> {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.release(1);
            return Err(value);
        }
        let waker = st.push(value, key);
        drop(st);
        wake(waker);
        Ok(())
    }

    /// Stops waiting: removes the waiter, or passes on the slot it was
    /// granted but will not use.
    pub(crate) fn cancel_wait(&self, slot: &mut WaitSlot) {
        let Some(id) = slot.0.take() else {
            return;
        };
        let mut st = self.lock();
        if id <= st.last_granted {
            drop(st);
            self.release(1);
            return;
        }
        if let Some(at) = st.waiters.iter().position(|w| w.id == id) {
            st.waiters.remove(at);
            if st.waiters.is_empty() {
                self.used.fetch_and(!WAITING, AcqRel);
            }
        }
    }

    /// Under the lock: takes a slot if one is free and nobody waits.
    fn try_take_slot(&self, st: &State<T>) -> bool {
        if !st.waiters.is_empty() {
            return false;
        }
        // Other senders are excluded by the lock and releases only ever
        // free slots, so a free slot seen here stays free until taken.
        if self.used.load(Acquire) < self.capacity {
            self.used.fetch_add(1, AcqRel);
            true
        } else {
            false
        }
    }

    fn poll_slot_locked(
        &self,
        st: &mut State<T>,
        cx: &mut Context<'_>,
        slot: &mut WaitSlot,
    ) -> Poll<Result<(), Closed>> {
        if let Some(id) = slot.0 {
            if id <= st.last_granted {
                slot.0 = None;
                if st.closed {
                    // Nobody waits on a closed channel: give the slot back
                    // without looking for a waiter to grant it to.
                    self.used.fetch_sub(1, AcqRel);
                    return Poll::Ready(Err(Closed));
                }
                return Poll::Ready(Ok(()));
            }
            if st.closed {
                // `close` emptied the waiters without granting this one.
                slot.0 = None;
                return Poll::Ready(Err(Closed));
            }
            if let Some(w) = st.waiters.iter_mut().find(|w| w.id == id)
                && !w.waker.will_wake(cx.waker())
            {
                w.waker = cx.waker().clone();
            }
            return Poll::Pending;
        }
        if st.closed {
            return Poll::Ready(Err(Closed));
        }
        if self.try_take_slot(st) {
            return Poll::Ready(Ok(()));
        }
        if st.waiters.is_empty() {
            let before = self.used.fetch_or(WAITING, AcqRel);
            if before & !WAITING < self.capacity {
                // A slot was freed after `try_take_slot` looked and before
                // the flag was up, so its release did not look for waiters:
                // take the slot now.
                self.used.fetch_add(1, AcqRel);
                self.used.fetch_and(!WAITING, AcqRel);
                return Poll::Ready(Ok(()));
            }
        }
        let id = st.next_waiter;
        st.next_waiter += 1;
        st.waiters.push_back(Waiter {
            id,
            waker: cx.waker().clone(),
        });
        slot.0 = Some(id);
        Poll::Pending
    }

    // ----- slots ---------------------------------------------------------

    /// Gives back `n` slots (items committed, dead-lettered or dropped, a
    /// reservation dropped) and hands them to waiting senders, oldest first.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.used.fetch_sub(n, AcqRel);
        debug_assert!(before & !WAITING >= n, "released more slots than used");
        if before & WAITING == 0 {
            return;
        }
        let mut wakers = WakeList::new();
        loop {
            let mut st = self.lock();
            let more = self.grant_locked(&mut st, &mut wakers);
            drop(st);
            wakers.wake_all();
            if !more {
                return;
            }
        }
    }

    /// Grants free slots to waiters in FIFO order. Returns `true` if the wake
    /// list filled up while more could be granted.
    fn grant_locked(&self, st: &mut State<T>, wakers: &mut WakeList) -> bool {
        while let Some(front) = st.waiters.front() {
            if wakers.is_full() {
                return true;
            }
            if self.used.load(Acquire) & !WAITING >= self.capacity {
                return false;
            }
            self.used.fetch_add(1, AcqRel);
            st.last_granted = front.id;
            let waiter = st.waiters.pop_front().expect("front exists");
            wakers.push(waiter.waker);
        }
        self.used.fetch_and(!WAITING, AcqRel);
        false
    }

    // ----- consumers -------------------------------------------------------

    /// How many consumers are alive. The only consumer may trust a `1` for
    /// as long as it holds `&mut` on itself: only it could make another.
    #[inline]
    pub(crate) fn consumers(&self) -> usize {
        self.solo.consumers.load(Acquire)
    }

    /// A new consumer (a receiver clone); returns its slot.
    pub(crate) fn add_consumer(&self) -> usize {
        let mut st = self.lock();
        self.solo.consumers.fetch_add(1, Release);
        st.consumers.add()
    }

    /// A consumer is gone. The last one closes the channel and takes out
    /// what is queued, returned so that the caller drops it outside the
    /// lock (an item's `Drop` may use the channel).
    pub(crate) fn drop_consumer(&self, id: usize) -> Vec<T> {
        let mut st = self.lock();
        let mut wakers = WakeList::new();
        st.consumers.remove(id, &mut wakers);
        let last = self.solo.consumers.fetch_sub(1, AcqRel) == 1;
        let mut dropped = Vec::new();
        let mut senders = VecDeque::new();
        if last {
            senders = st.close();
            dropped = st.table.clear();
        } else {
            // Its wake-up, if it had one, goes to another consumer.
            st.wake_one(&mut wakers);
        }
        drop(st);
        if !senders.is_empty() {
            self.used.fetch_and(!WAITING, AcqRel);
        }
        self.release(dropped.len());
        for waiter in senders {
            waiter.waker.wake();
        }
        wakers.wake_all();
        dropped
    }

    /// Refuses new values and wakes every waiting sender; queued items stay
    /// receivable.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        let senders = st.close();
        let mut wakers = WakeList::new();
        st.wake_consumers(&mut wakers);
        drop(st);
        if !senders.is_empty() {
            self.used.fetch_and(!WAITING, AcqRel);
        }
        for waiter in senders {
            waiter.waker.wake();
        }
        wakers.wake_all();
    }

    /// Ends the delivery `ticket` (see [`Table::end`]), gives back the slot
    /// of a committed item, and wakes a consumer if something became
    /// takeable. An item given back when no consumer is left is dropped
    /// (and counted), outside the lock.
    pub(crate) fn end(&self, ticket: Ticket, how: End<T>) -> Result<Ended, Expired> {
        let mut clock = Clock::default();
        let mut st = self.lock();
        let mut ended = st.table.end(ticket, how, &mut clock);
        let mut wakers = WakeList::new();
        let mut dropped = Vec::new();
        if self.solo.consumers.load(Acquire) == 0 {
            // Nobody can take it again (and a dead item has nobody to
            // dead-letter it): dropped, counted.
            dropped = st.table.clear();
            if matches!(ended, Ok(Ended::Requeued | Ended::Dead)) {
                ended = Ok(Ended::Dropped);
            }
        } else {
            st.wake_consumers(&mut wakers);
        }
        drop(st);
        if ended == Ok(Ended::Committed) {
            self.release(1);
        }
        self.release(dropped.len());
        wakers.wake_all();
        drop(dropped);
        ended
    }

    /// Ends several deliveries under one lock (a batch): commits free their
    /// slots.
    pub(crate) fn end_all(&self, ends: Vec<(Ticket, End<T>)>) {
        let mut clock = Clock::default();
        let mut st = self.lock();
        let mut committed = 0;
        for (ticket, how) in ends {
            if st.table.end(ticket, how, &mut clock) == Ok(Ended::Committed) {
                committed += 1;
            }
        }
        let mut wakers = WakeList::new();
        let mut dropped = Vec::new();
        if self.solo.consumers.load(Acquire) == 0 {
            dropped = st.table.clear();
        } else {
            st.wake_consumers(&mut wakers);
        }
        drop(st);
        self.release(committed + dropped.len());
        wakers.wake_all();
        drop(dropped);
    }

    /// Pushes the lease of `ticket` further; see [`Table::extend`].
    pub(crate) fn extend(&self, ticket: Ticket, by: std::time::Duration) -> Result<(), Expired> {
        let mut clock = Clock::default();
        let mut st = self.lock();
        let extended = st.table.extend(ticket, by, &mut clock);
        let mut wakers = WakeList::new();
        if extended.is_err() {
            // Finding it expired gave the item back: someone may take it.
            st.wake_consumers(&mut wakers);
        }
        drop(st);
        wakers.wake_all();
        extended
    }
}

impl<T> State<T> {
    /// Queues a sent value and picks a consumer to wake.
    #[inline]
    fn push(&mut self, value: T, key: u64) -> Option<Waker> {
        self.table.push(value, key);
        if self.consumers.queue.is_empty() || self.consumers.notified > 0 {
            return None; // nobody waits, or a woken one is on its way
        }
        if self.table.can_take() {
            self.consumers.pop_waker()
        } else {
            None
        }
    }

    /// Closes the intake; returns the senders that waited, to be woken
    /// outside the lock (their sends fail).
    fn close(&mut self) -> VecDeque<Waiter> {
        self.closed = true;
        self.stream_open = false;
        std::mem::take(&mut self.waiters)
    }

    /// Closes the intake of a receiver over a stream (the stream ended or
    /// the receiver was closed).
    pub(crate) fn end_stream(&mut self) {
        self.stream_open = false;
    }

    /// Whether values may still arrive: an open channel with senders, or a
    /// stream that has not ended.
    pub(crate) fn intake_open(&self) -> bool {
        !self.closed && (self.senders > 0 || self.stream_open)
    }

    pub(crate) fn stream_open(&self) -> bool {
        self.stream_open && !self.closed
    }

    /// The channel has ended: nothing can arrive and nothing is left (the
    /// only consumer's own buffer aside: it does not wait while it has
    /// items there).
    pub(crate) fn ended(&self) -> bool {
        !self.intake_open() && self.table.is_empty()
    }

    /// Wakes one waiting consumer if there is work for one, or all of them
    /// if the channel has ended.
    pub(crate) fn wake_consumers(&mut self, wakers: &mut WakeList) {
        if self.ended() {
            self.consumers.wake_all(wakers);
        } else {
            self.wake_one(wakers);
        }
    }

    /// Wakes the first waiting consumer if something is takeable (or may
    /// be: a stream to poll) and no woken consumer is on its way.
    pub(crate) fn wake_one(&mut self, wakers: &mut WakeList) {
        let work = self.table.can_take() || self.stream_open() || self.ended();
        if work && self.consumers.notified == 0 {
            self.consumers.notify_one(wakers);
        }
    }
}

/// The consumers' slots and the FIFO of those waiting for an item.
#[derive(Debug, Default)]
pub(crate) struct Consumers {
    slots: Vec<ConsumerSlot>,
    free: Vec<usize>,
    queue: VecDeque<usize>,
    /// Consumers woken and not yet polled.
    notified: usize,
}

#[derive(Debug, Default)]
struct ConsumerSlot {
    waker: Option<Waker>,
    waiting: bool,
    notified: bool,
}

impl Consumers {
    fn add(&mut self) -> usize {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(ConsumerSlot::default());
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, id: usize, wakers: &mut WakeList) {
        self.stop(id, wakers);
        self.slots[id] = ConsumerSlot::default();
        self.free.push(id);
    }

    /// Consumer `id` is looking (polled): a wake-up it got is used up.
    pub(crate) fn arrive(&mut self, id: usize) {
        let slot = &mut self.slots[id];
        if std::mem::take(&mut slot.notified) {
            self.notified -= 1;
        }
    }

    /// Consumer `id` waits for work; `waker` wakes it.
    pub(crate) fn wait(&mut self, id: usize, waker: &Waker) {
        let slot = &mut self.slots[id];
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        if !slot.waiting {
            slot.waiting = true;
            self.queue.push_back(id);
        }
    }

    /// Consumer `id` stops waiting (it took something, or its wait was
    /// cancelled); a wake-up it got and did not use goes to the next one.
    pub(crate) fn stop(&mut self, id: usize, wakers: &mut WakeList) {
        let slot = &mut self.slots[id];
        if std::mem::take(&mut slot.waiting)
            && let Some(at) = self.queue.iter().position(|&c| c == id)
        {
            self.queue.remove(at);
        }
        if std::mem::take(&mut slot.notified) {
            self.notified -= 1;
            self.notify_one(wakers);
        }
    }

    fn notify_one(&mut self, wakers: &mut WakeList) {
        if !wakers.is_full()
            && let Some(waker) = self.pop_waker()
        {
            wakers.push(waker);
        }
    }

    /// Takes the first waiting consumer off the FIFO, marks it woken, and
    /// returns its waker.
    fn pop_waker(&mut self) -> Option<Waker> {
        while let Some(id) = self.queue.pop_front() {
            let slot = &mut self.slots[id];
            slot.waiting = false;
            if let Some(waker) = slot.waker.clone() {
                slot.notified = true;
                self.notified += 1;
                return Some(waker);
            }
        }
        None
    }

    /// Wakes waiting consumers, as many as the list holds: each one that
    /// finds the channel ended wakes the next ones.
    fn wake_all(&mut self, wakers: &mut WakeList) {
        while !wakers.is_full() && !self.queue.is_empty() {
            self.notify_one(wakers);
        }
    }
}

/// Wakes `waker`, if any.
pub(crate) fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Metrics' view of the counters the only consumer publishes.
impl SoloCounts {
    /// Adds `n` (a load and a store: the only consumer is the only
    /// writer, so no read-modify-write is needed).
    #[inline]
    pub(crate) fn add(counter: &Counter, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub(crate) fn get(counter: &Counter) -> usize {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Zeroes every counter (under the lock, by the consumer that wrote
    /// them, after adding them to the table's).
    pub(crate) fn clear(&self) {
        for counter in [
            &self.delivered,
            &self.redelivered,
            &self.committed,
            &self.released,
            &self.taken,
            &self.removed,
        ] {
            counter.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Loom models of the in-flight table under the channel's lock, racing the
/// lock-free slot release: a delivery's end against its lease's expiry, and
/// an end against a consumer that is about to wait for it. Run with
/// `--cfg async_patterns_loom`: `cargo xtask ci --only loom`, or `RUSTFLAGS="--cfg async_patterns_loom" cargo test --release --lib -p async-patterns-txn-channel -- loom`.
#[cfg(all(test, async_patterns_loom))]
mod loom_in_flight_table {
    use std::time::Duration;

    use async_patterns_core::__private::loom::Arc;
    use loom::thread;
    use tokio::time::Instant;

    use super::*;
    use crate::table::{OrderKind, Rules};

    const LEASE: Duration = Duration::from_secs(3600);

    fn shared(order: OrderKind, lease: bool) -> Arc<Shared<u32>> {
        let rules = Rules {
            order,
            max_in_flight: usize::MAX,
            max_attempts: None,
            lease: lease.then_some(LEASE),
            copy: lease.then_some(u32::clone as fn(&u32) -> u32),
            retry: None,
            stamp: false,
        };
        Arc::new(Shared::new(4, Table::new(rules), None, None))
    }

    /// Sends `items` and takes one delivery at `at` (leased if the channel is).
    fn send_and_take(shared: &Shared<u32>, items: &[u32], at: Instant) -> (u32, Ticket) {
        for &item in items {
            shared.try_send(item, 0).unwrap();
        }
        let mut got = None;
        let mut st = shared.lock();
        st.table
            .take(1, true, &mut Clock::at(at), |item, _, ticket| {
                got = Some((item, ticket))
            });
        got.expect("an item to take")
    }

    #[test]
    fn an_end_racing_its_lease_expiry_happens_exactly_once() {
        loom::model(|| {
            let shared = shared(OrderKind::Unordered, true);
            let start = Instant::now();
            let (item, ticket) = send_and_take(&shared, &[7], start);
            assert_eq!(item, 7);

            let ender = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.end(ticket, End::Commit))
            };
            let expirer = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    // A clock past the deadline: the lease has run out.
                    let mut clock = Clock::at(start + LEASE * 2);
                    shared.lock().table.settle(&mut clock);
                })
            };
            let ended = ender.join().unwrap();
            expirer.join().unwrap();

            let st = shared.lock();
            let counts = st.table.counts();
            match ended {
                Ok(Ended::Committed) => {
                    // The commit came first: nothing left, nothing expired,
                    // the slot given back.
                    assert_eq!((counts.committed, counts.expired), (1, 0));
                    assert!(st.table.is_empty());
                    drop(st);
                    assert_eq!(shared.used.load(Acquire) & !WAITING, 0);
                }
                Err(Expired) => {
                    // The expiry came first: the item is back, queued, its
                    // slot still taken; the late commit changed nothing.
                    assert_eq!((counts.committed, counts.expired), (0, 1));
                    assert_eq!((st.table.len(), st.table.in_flight()), (1, 0));
                    drop(st);
                    assert_eq!(shared.used.load(Acquire) & !WAITING, 1);
                }
                other => panic!("unexpected end {other:?}"),
            }
        });
    }

    #[test]
    fn a_take_racing_an_expiry_and_a_late_end_never_hands_an_item_out_twice() {
        loom::model(|| {
            let shared = shared(OrderKind::Unordered, true);
            let start = Instant::now();
            let (_, first) = send_and_take(&shared, &[1], start);
            let late = start + LEASE * 2;

            // Another consumer looks at a time past the lease: it expires
            // the first delivery and takes the item again.
            let taker = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let mut clock = Clock::at(late);
                    let mut st = shared.lock();
                    st.table.settle(&mut clock);
                    let mut got = None;
                    st.table.take(1, true, &mut clock, |item, meta, ticket| {
                        got = Some((item, meta.attempts, ticket))
                    });
                    got
                })
            };
            // Meanwhile the first holder gives up on it.
            let holder = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    shared.end(
                        first,
                        End::Rollback {
                            item: Some(1),
                            delay: None,
                            panicked: false,
                        },
                    )
                })
            };
            let taken = taker.join().unwrap();
            let ended = holder.join().unwrap();

            let st = shared.lock();
            match (ended, taken) {
                // Rolled back first, then taken again: attempt 2.
                (Ok(Ended::Requeued), Some((1, 2, _))) => {
                    assert_eq!(st.table.counts().expired, 0);
                }
                // Expired and taken first: the late rollback is refused.
                (Err(Expired), Some((1, 2, second))) => {
                    assert_ne!(second, first);
                    assert_eq!(st.table.counts().expired, 1);
                }
                other => panic!("unexpected outcome {other:?}"),
            }
            // Either way exactly one delivery is in flight, nothing queued.
            assert_eq!((st.table.in_flight(), st.table.len()), (1, 1));
        });
    }

    #[test]
    fn an_end_wakes_the_consumer_that_waits_for_it() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        use std::task::{Wake, Waker};

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, SeqCst);
            }
        }

        loom::model(|| {
            // Strict order: while one item is in flight the next one waits.
            let shared = shared(OrderKind::Strict, false);
            let (_, ticket) = send_and_take(&shared, &[1, 2], Instant::now());

            let ender = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.end(ticket, End::Commit))
            };
            // A consumer looks, finds nothing takeable, and waits — unless
            // the end came first.
            let flag = std::sync::Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(std::sync::Arc::clone(&flag));
            let waited = {
                let mut st = shared.lock();
                if st.table.can_take() {
                    false
                } else {
                    st.consumers.wait(0, &waker);
                    true
                }
            };
            assert_eq!(ender.join().unwrap(), Ok(Ended::Committed));
            if waited {
                assert!(
                    flag.0.load(SeqCst),
                    "the end did not wake the waiting consumer"
                );
            }
            assert!(shared.lock().table.can_take(), "item 2 is takeable now");
        });
    }
}
