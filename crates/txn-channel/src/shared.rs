//! The state shared by the senders, the consumers and the deliveries of one
//! channel: the [`Table`] of items under the channel's lock, the count of
//! capacity slots in use, the FIFO of senders waiting for a slot, and the
//! consumers waiting for an item.
//!
//! **Off the lock.** Senders with a free slot queue into the [`Inbox`], so
//! a send never waits for a consumer's work under the channel's lock. Two
//! more things keep consumers sharing a channel from meeting on that lock
//! for every item (every order but strict): a consumer takes items ahead
//! into its [`Ahead`] cell and hands them out from there; and a light
//! delivery's commit is counted in its consumer's cell. In strict order the
//! only consumer's own buffer takes everything queued at once, and its
//! commits only count the slots they free until a sender wants room
//! ([`Shared::owed`]). Whoever takes the
//! lock to look at the table first moves the inbox and the counted commits
//! into it ([`Shared::lock`]), so the table is exact under the lock; a
//! consumer about to wait listens on the inbox and arms the cells, so that
//! a send or a commit it depends on wakes it.
//!
//! **Capacity.** A slot is taken when a value is sent (or reserved) and given
//! back only when the item is committed or dead-lettered, so `capacity`
//! bounds every item that has not left the channel — queued, in flight, or
//! given back — not only those still queued. Slots are given back without
//! the lock: the count of slots in use is part of the [`Inbox`]'s atomic
//! word (a send takes its slot and claims its place in the inbox in one
//! compare-and-swap), and a flag there, [`WAITING`], says whether senders
//! wait. Both the release (`fetch_sub`) and a sender that starts to wait
//! (`fetch_or`) are read-modify-writes of that one word, so one of them
//! always sees the other: either the release sees the flag and hands the
//! slot to the oldest waiter, or the sender sees the free slot and takes it.
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
    Arc, AtomicBool, AtomicUsize, Mutex, MutexGuard,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use async_patterns_core::__private::{CachePadded, WakeList, lock};

use async_patterns_core::RetryPolicy;

use crate::inbox::{Inbox, Push, WAITING, used_of};

use crate::table::{
    Clock, End, Ended, Entry, Expired, Meta, OrderKind, Table, Ticket, retry_delay,
};

/// Set in [`Shared::owed`] while senders want room (see there).
const WANTED: usize = 1 << (usize::BITS - 1);

pub(crate) use crate::inbox::MAX_CAPACITY;

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
    state: CachePadded<Mutex<State<T>>>,
    /// Values sent and not yet moved into the table (see [`Inbox`]).
    inbox: Inbox<T>,
    /// Strict order: the only consumer's commits may owe their slots (see
    /// [`owed`](Self::owed)).
    owes: bool,
    /// Strict order: slots the consumer's own buffer freed by commits and
    /// did not give back to the slots in use yet, plus [`WANTED`].
    ///
    /// Giving a slot back at every commit would move the inbox word's line
    /// from the sender's CPU to the consumer's and back for every item
    /// (tokio's `recv_many` gives its permits back once per call). So the
    /// consumer only counts them here, on a line of its own, and gives them
    /// back when a sender wants room: a sender that finds the channel full
    /// takes them back itself, under the lock, before it waits
    /// or fails — and one that is about to wait sets [`WANTED`] in the same
    /// atomic swap, after which every commit gives its slot back at once
    /// ([`release_lazy`](Self::release_lazy) sees the flag in the result of
    /// its own add). Both are read-modify-writes of this one atomic, so one
    /// of the two sees the other: no slot is left owed while a sender waits.
    /// [`WANTED`] is cleared when no sender waits anymore.
    owed: CachePadded<AtomicUsize>,
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
    /// Deliveries go without a slot ([`Ticket::Light`]: no lease, not
    /// strict order), and an owned one is committed without the channel's
    /// lock, into its consumer's [`Ahead`] (see [`commit_light`](Self::commit_light)).
    light: bool,
    /// Set by a light commit (after it counted itself in its consumer's
    /// [`Ahead`]) and cleared by whoever then moves the commits into the
    /// table: a hint that there is something to move, tested before it is
    /// set, so that a run of commits writes its line once.
    dirty: CachePadded<AtomicBool>,
    keyed: bool,
    max_in_flight: usize,
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

/// Items a consumer took from the table ahead of handing them out (see
/// [`Shared::takes_ahead`]), with the deliveries it made from them. Locked
/// by its consumer alone to hand an item out, and under the channel's lock
/// by another consumer that steals from it, or by `metrics`; the lock order
/// is always the channel's first.
///
/// It also counts the light commits of the consumer's owned deliveries
/// (see [`Shared::commit_light`]) until they are moved into the table.
#[derive(Debug)]
pub(crate) struct Ahead<T> {
    pub(crate) items: VecDeque<Entry<T>>,
    pub(crate) delivered: u64,
    pub(crate) redelivered: u64,
    /// Per key: the items may hold several of one key (a chain, oldest
    /// first), taken together; an item is handed out only while no
    /// delivery of its key from here is out.
    keyed: bool,
    /// Per key: the keys of this consumer's light deliveries that are out
    /// (handed out, not ended).
    out: Vec<u64>,
    /// Light commits not moved into the table yet whose key stays busy (per
    /// key, a chain goes on here; unordered, every one), and the keys of
    /// those that free their key.
    committed: usize,
    committed_keys: Vec<u64>,
    /// A commit must take the channel's lock and wake: see [`Shared::arm`].
    armed: bool,
    /// Its consumer is gone: commits go through the channel's lock.
    detached: bool,
}

impl<T> Default for Ahead<T> {
    fn default() -> Self {
        Ahead {
            items: VecDeque::new(),
            delivered: 0,
            redelivered: 0,
            keyed: false,
            out: Vec::new(),
            committed: 0,
            committed_keys: Vec::new(),
            armed: false,
            detached: false,
        }
    }
}

/// A consumer's [`Ahead`], shared with the channel.
pub(crate) type AheadCell<T> = Arc<Mutex<Ahead<T>>>;

/// Under the channel's lock: moves the light commits counted in `cell` into
/// `table` (`spare` lends its allocation for their keys). They are taken out
/// under the consumer's lock and moved in after it, so that its next commit
/// does not wait on the table's work.
fn absorb_cell<T>(cell: &AheadCell<T>, table: &mut Table<T>, spare: &mut Vec<u64>) {
    let n = lock(cell).take_commits(spare);
    table.absorb_commits(n);
    table.absorb_keyed_commits(spare.drain(..));
}

/// What a consumer's owned deliveries hold: the channel, and the
/// consumer's [`Ahead`] (where their light commits are counted).
pub(crate) struct Home<T> {
    pub(crate) shared: Arc<Shared<T>>,
    pub(crate) cell: AheadCell<T>,
}

/// The most items a consumer takes ahead at once: enough to spread the
/// channel's lock over a few dozen deliveries, few enough that the lock is
/// held for well under a microsecond.
pub(crate) const AHEAD_MAX: usize = 32;

impl<T> Ahead<T> {
    /// Takes its light commits out: returns how many keep their key busy,
    /// and swaps the keys of those that free theirs (per key) into the
    /// empty `keys`.
    fn take_commits(&mut self, keys: &mut Vec<u64>) -> usize {
        debug_assert!(keys.is_empty());
        std::mem::swap(&mut self.committed_keys, keys);
        std::mem::take(&mut self.committed)
    }

    /// Whether light commits wait to be moved into the table.
    fn has_commits(&self) -> bool {
        self.committed > 0 || !self.committed_keys.is_empty()
    }

    /// Moves its light commits into `table`.
    fn move_commits(&mut self, table: &mut Table<T>) {
        table.absorb_commits(std::mem::take(&mut self.committed));
        table.absorb_keyed_commits(self.committed_keys.drain(..));
    }

    /// Hands out the first item that may go (per key, the first whose key
    /// has no delivery out from here): one more attempt, counted here.
    pub(crate) fn start(&mut self, stamp: bool) -> Option<(T, Meta, Ticket)> {
        let mut entry = if self.keyed {
            let at = self
                .items
                .iter()
                .position(|e| !self.out.contains(&e.meta.key))?;
            let entry = self.items.remove(at).expect("found");
            self.out.push(entry.meta.key);
            entry
        } else {
            self.items.pop_front()?
        };
        entry.meta.deliver(stamp, &mut Clock::default());
        self.delivered += 1;
        if entry.meta.attempts > 1 {
            self.redelivered += 1;
        }
        Some((entry.item, entry.meta, Ticket::Light(entry.meta)))
    }

    /// Per key: the delivery of `key` out from here ended. Returns whether
    /// items of `key` are still here (its chain goes on: the key stays busy).
    fn end_out(&mut self, key: u64) -> bool {
        if let Some(at) = self.out.iter().position(|k| *k == key) {
            self.out.swap_remove(at);
        }
        self.items.iter().any(|e| e.meta.key == key)
    }

    /// Per key: takes out the items of `key` here, oldest first.
    fn take_key(&mut self, key: u64) -> VecDeque<Entry<T>> {
        let (taken, kept) = self.items.drain(..).partition(|e| e.meta.key == key);
        self.items = kept;
        taken
    }
}

pub(crate) struct State<T> {
    pub(crate) table: Table<T>,
    /// Each consumer's items taken ahead, by consumer id (`None`: it took
    /// none yet, or is gone).
    ahead: Vec<Option<AheadCell<T>>>,
    /// Every consumer's [`Ahead`] is armed: a waiting consumer may depend on
    /// a light commit (see [`Shared::arm`]).
    armed: bool,
    /// Per key: the keys of light commits being moved into the table, kept
    /// for its allocation.
    spare_keys: Vec<u64>,
    /// The [`Inbox`]'s next position to move into the table.
    inbox_head: usize,
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
        let light = rules.light();
        let keyed = rules.order == OrderKind::PerKey;
        let max_in_flight = rules.max_in_flight;
        let fed_by_stream = stream.is_some();
        debug_assert!((1..=MAX_CAPACITY).contains(&capacity));
        let mut consumers = Consumers::default();
        consumers.add();
        Shared {
            state: CachePadded::new(Mutex::new(State {
                table,
                senders: usize::from(!fed_by_stream),
                closed: false,
                stream_open: fed_by_stream,
                waiters: VecDeque::new(),
                next_waiter: 1,
                last_granted: 0,
                consumers,
                ahead: Vec::new(),
                armed: false,
                spare_keys: Vec::new(),
                inbox_head: 0,
            })),
            owed: CachePadded::new(AtomicUsize::new(0)),
            owes: config.order == OrderKind::Strict,
            inbox: Inbox::new(capacity),
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
            light,
            dirty: CachePadded::new(AtomicBool::new(false)),
            keyed,
            max_in_flight,
        }
    }

    /// Locks the channel's state, with the table's counts exact: light
    /// commits made without the lock are counted in first.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<T>> {
        let mut st = lock(&self.state);
        self.drain_inbox(&mut st);
        self.absorb(&mut st);
        st
    }

    /// Like [`lock`](Self::lock) for a consumer about to take items ahead
    /// into `own`, its [`Ahead`]: moves in only its own light commits, which
    /// sit in its CPU's cache, and leaves the other consumers' (and the
    /// hint) for a look that needs them — the caller looks with
    /// [`lock`](Self::lock) before it steals or waits. Per key, the keys a
    /// consumer frees are the ones it takes again, so a consumer keeps
    /// working on its keys without touching another's memory.
    ///
    /// The table's counts may then miss light commits: only a take may look
    /// through this lock (what it decides — take what is ready — holds
    /// whatever is still to be moved in; in flight is over-counted, never
    /// under).
    #[inline]
    pub(crate) fn lock_to_take(&self, own: &AheadCell<T>) -> MutexGuard<'_, State<T>> {
        let mut st = lock(&self.state);
        self.drain_inbox(&mut st);
        if self.light && self.dirty.load(Acquire) {
            let State {
                table, spare_keys, ..
            } = &mut *st;
            absorb_cell(own, table, spare_keys);
        }
        st
    }

    /// Under the lock: moves the values senders queued in the [`Inbox`]
    /// into the table, in the order they came, up to the first one still
    /// being written. While consumers wait, listens on the inbox for them
    /// (a sender that queues the next value wakes one).
    #[inline]
    fn drain_inbox(&self, st: &mut State<T>) {
        let State {
            table,
            inbox_head,
            consumers,
            ..
        } = st;
        loop {
            self.inbox
                .drain(inbox_head, |value, key| table.push(value, key));
            if consumers.queue.is_empty() || !self.inbox.listen(*inbox_head) {
                return;
            }
        }
    }

    /// [`drain_inbox`](Self::drain_inbox) up to position `upto` of the
    /// [`Inbox`] (claimed already), waiting for the writes in progress.
    fn drain_inbox_to(&self, st: &mut State<T>, upto: usize) {
        let State {
            table, inbox_head, ..
        } = st;
        self.inbox
            .drain_to(inbox_head, upto, |value, key| table.push(value, key));
        self.drain_inbox(st);
    }

    /// Under the lock, for a consumer that is about to wait: listens on the
    /// [`Inbox`]. `true` if values came meanwhile: the caller looks again
    /// instead of waiting.
    fn listen(&self, st: &State<T>) -> bool {
        self.inbox.listen(st.inbox_head)
    }

    /// Under the lock: closes the [`Inbox`] and moves what senders queued
    /// before into the table, so that nothing is queued after the close.
    fn close_inbox(&self, st: &mut State<T>) {
        let claimed = self.inbox.close();
        self.drain_inbox_to(st, claimed);
    }

    /// Under the lock: queues `value` in the table behind everything the
    /// [`Inbox`] holds (a sender's values keep their order whichever way
    /// each went), and returns the consumer to wake, if any.
    fn push_locked(&self, st: &mut State<T>, value: T, key: u64) -> Option<Waker> {
        let claimed = self.inbox.claimed();
        self.drain_inbox_to(st, claimed);
        st.push(value, key)
    }

    /// Under the lock: moves the light commits made since the last look
    /// from the consumers' [`Ahead`]s into the table.
    ///
    /// The hint is cleared before the consumers are looked at, and a
    /// commit sets it after it counted itself under its consumer's lock,
    /// which this look takes too: a commit this look missed came after it
    /// left that consumer, so it sees the hint cleared and sets it again.
    #[inline]
    fn absorb(&self, st: &mut State<T>) {
        if self.light && self.dirty.load(Acquire) {
            self.absorb_dirty(st);
        }
    }

    fn absorb_dirty(&self, st: &mut State<T>) {
        self.dirty.store(false, Release);
        let State {
            ahead,
            table,
            spare_keys,
            ..
        } = st;
        for cell in ahead.iter().flatten() {
            absorb_cell(cell, table, spare_keys);
        }
    }

    /// Under the lock, after the consumers were looked at: arms every
    /// consumer's [`Ahead`] if a waiting consumer may depend on a light
    /// commit (in-flight limit reached, the intake closed and the channel
    /// not empty yet, or per key items queued behind busy keys), so that
    /// such a commit takes the lock and wakes; disarms them otherwise.
    ///
    /// A commit counts itself and reads the flag under its consumer's lock,
    /// which arming takes too: either the commit sees the flag, or arming
    /// sees the commit — then it returns `true`, and the caller moves the
    /// commits in and looks again.
    fn arm(&self, st: &mut State<T>) -> bool {
        if !self.light {
            return false;
        }
        let in_flight = st.table.in_flight();
        let blocked = self.keyed && st.table.queued() > 0;
        let depends = st.consumers.any_waiting()
            && in_flight > 0
            && (blocked || in_flight >= self.max_in_flight || !st.intake_open());
        if depends == st.armed {
            // Already armed: every commit since sees it and wakes.
            return false;
        }
        st.armed = depends;
        let mut came = false;
        for cell in st.ahead.iter().flatten() {
            let mut ahead = lock(cell);
            ahead.armed = depends;
            came |= ahead.has_commits();
        }
        depends && came
    }

    /// Under the lock, after a change: wakes the consumers it concerns (see
    /// [`State::wake_consumers`]) and keeps the light commits armed while a
    /// waiting consumer depends on one.
    pub(crate) fn wake_consumers(&self, st: &mut State<T>, wakers: &mut WakeList) {
        loop {
            st.wake_consumers(wakers);
            if !self.arm(st) {
                return;
            }
            self.absorb_now(st);
        }
    }

    /// Like [`wake_consumers`](Self::wake_consumers), waking one consumer
    /// only if something is takeable (see [`State::wake_one`]).
    pub(crate) fn wake_one(&self, st: &mut State<T>, wakers: &mut WakeList) {
        loop {
            st.wake_one(wakers);
            if !self.arm(st) {
                return;
            }
            self.absorb_now(st);
        }
    }

    /// Whether consumers take items ahead of handing them out ([`Ahead`]):
    /// unordered or per key, no lease, no in-flight limit. A consumer then
    /// takes a share of what is ready — up to [`AHEAD_MAX`], and no more
    /// than its part of the ready items among the consumers — under one
    /// lock (per key, a key's queued items together), and hands them out
    /// one by one without it (per key, each when the one of its key before
    /// it ended); a consumer that finds nothing in the table steals half of
    /// another's (per key, whole keys with nothing out) before it waits, so
    /// no item waits behind a busy consumer while another is idle. A
    /// consumer whose items all wait behind its own deliveries gives them
    /// back before it steals or waits.
    pub(crate) fn takes_ahead(&self) -> bool {
        self.light && self.max_in_flight == usize::MAX
    }

    /// Under the lock, after a value was queued: per key, it may be queued
    /// behind a key whose light commit is not moved in yet, and so wait on
    /// it — the commits are armed (or, if some came, moved in and a
    /// consumer woken). Then releases the lock and wakes `waker` (the
    /// consumer the value was queued for, if any).
    fn finish_send(&self, mut st: MutexGuard<'_, State<T>>, waker: Option<Waker>) {
        if self.keyed && self.light && self.arm(&mut st) {
            let mut wakers = WakeList::new();
            self.absorb_now(&mut st);
            self.wake_one(&mut st, &mut wakers);
            drop(st);
            wake(waker);
            wakers.wake_all();
        } else {
            drop(st);
            wake(waker);
        }
    }

    /// [`absorb`](Self::absorb), whatever the hint says (arming saw a
    /// commit whose hint may not be set yet).
    fn absorb_now(&self, st: &mut State<T>) {
        self.dirty.store(true, Release);
        self.absorb(st);
    }

    /// Under the lock, for a consumer that registered to wait: listens for
    /// senders ([`Inbox::listen`]) and arms the light commits. `true` if
    /// it must look again instead (values or light commits came since it
    /// looked).
    pub(crate) fn arm_for_wait(&self, st: &mut State<T>) -> bool {
        if self.listen(st) {
            return true;
        }
        if self.arm(st) {
            self.absorb_now(st);
            return true;
        }
        false
    }

    /// Commits a [`Ticket::Light`] owned delivery of the consumer whose
    /// [`Ahead`] is `home`, without the channel's lock (unless a waiting
    /// consumer depends on it): counts it there, and frees its slot.
    /// `false` if that consumer is gone: the caller ends it under the lock.
    pub(crate) fn commit_light(&self, home: &AheadCell<T>, meta: &Meta) -> bool {
        let armed = {
            let mut ahead = lock(home);
            if ahead.detached {
                return false;
            }
            if self.keyed && !ahead.end_out(meta.key) {
                ahead.committed_keys.push(meta.key);
            } else {
                ahead.committed += 1;
            }
            ahead.armed
        };
        self.release(1);
        if !self.dirty.load(Relaxed) {
            self.dirty.store(true, Release);
        }
        if armed {
            let mut st = self.lock();
            let mut wakers = WakeList::new();
            self.wake_consumers(&mut st, &mut wakers);
            drop(st);
            wakers.wake_all();
        }
        true
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
            self.wake_consumers(&mut st, &mut wakers);
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
        self.inbox.take_slots(1);
        st.table.push(item, key);
    }

    /// The own buffer of a receiver over a stream took `n` items straight
    /// from the stream: they take slots and count as taken (so as sent).
    pub(crate) fn count_pulled(&self, n: usize) {
        let _st = self.lock();
        self.inbox.take_slots(n);
        SoloCounts::add(&self.solo.taken, n);
    }

    /// Sends `value` if a slot is free and no earlier sender waits for one.
    pub(crate) fn try_send(&self, value: T, key: u64) -> Result<(), (T, bool)> {
        let value = match self.inbox.send(value, key, self.capacity) {
            Push::Queued { wake } => {
                self.queued(wake);
                return Ok(());
            }
            Push::Closed(value) => return Err((value, true)),
            Push::Full(value) => {
                if self.try_take_slot() {
                    return self.queue_locked(value, key).map_err(|value| (value, true));
                }
                value
            }
            Push::NoSlot(value) => value,
        };
        // Full, or senders wait: a slot the consumer's commits owe may
        // still be free (only if no earlier sender waits for it).
        let mut st = self.lock();
        if st.closed {
            return Err((value, true));
        }
        if !(st.waiters.is_empty() && self.reclaim_owed(false)) {
            return Err((value, false));
        }
        let waker = self.push_locked(&mut st, value, key);
        drop(st);
        wake(waker);
        Ok(())
    }

    /// Queues `value` in the [`Inbox`] with a slot the caller holds, and
    /// wakes a waiting consumer if one listens. If the channel is closed,
    /// gives the slot back and hands `value` back.
    fn queue(&self, value: T, key: u64) -> Result<(), T> {
        match self.inbox.push(value, key) {
            Push::Queued { wake } => {
                self.queued(wake);
                Ok(())
            }
            Push::Closed(value) => {
                self.release(1);
                Err(value)
            }
            Push::Full(value) => self.queue_locked(value, key),
            Push::NoSlot(_) => unreachable!("`push` takes no slot"),
        }
    }

    /// A value was queued in the [`Inbox`]; `wake`: a consumer listened.
    #[inline]
    fn queued(&self, wake: bool) {
        if wake {
            // `lock` moves the value in (and listens again if more
            // consumers wait).
            let mut st = self.lock();
            let mut wakers = WakeList::new();
            self.wake_one(&mut st, &mut wakers);
            drop(st);
            wakers.wake_all();
        }
    }

    /// Queues `value` with a slot the caller holds under the channel's lock
    /// (the [`Inbox`]'s ring is full). If the channel is closed, gives the
    /// slot back and hands `value` back.
    #[cold]
    fn queue_locked(&self, value: T, key: u64) -> Result<(), T> {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.release(1);
            return Err(value);
        }
        let waker = self.push_locked(&mut st, value, key);
        self.finish_send(st, waker);
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
        if !slot.is_waiting() {
            // A free slot and nobody waiting for one: no channel lock.
            let Some(v) = value.take() else {
                return Poll::Ready(Ok(()));
            };
            let back = match self.inbox.send(v, key, self.capacity) {
                Push::Queued { wake } => {
                    self.queued(wake);
                    return Poll::Ready(Ok(()));
                }
                Push::Closed(v) => {
                    *value = Some(v);
                    return Poll::Ready(Err(Closed));
                }
                Push::Full(v) if self.try_take_slot() => {
                    return Poll::Ready(match self.queue_locked(v, key) {
                        Ok(()) => Ok(()),
                        Err(v) => {
                            *value = Some(v);
                            Err(Closed)
                        }
                    });
                }
                Push::Full(v) | Push::NoSlot(v) => v,
            };
            *value = Some(back);
        }
        let mut st = self.lock();
        let polled = self.poll_slot_locked(&mut st, cx, slot);
        let waker = match polled {
            Poll::Ready(Ok(())) => match value.take() {
                Some(value) => self.push_locked(&mut st, value, key),
                None => None,
            },
            _ => None,
        };
        self.finish_send(st, waker);
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
        self.queue(value, key)
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
                self.inbox.clear_waiting();
                self.unwanted();
            }
        }
    }

    /// Takes a slot if one is free and nobody waits for one ([`WAITING`]
    /// is set exactly while senders wait, under the lock); without the lock.
    fn try_take_slot(&self) -> bool {
        self.inbox.try_take_slot(self.capacity)
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
                    self.inbox.give_slots(1);
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
        if self.try_take_slot() {
            return Poll::Ready(Ok(()));
        }
        if st.waiters.is_empty() {
            // Strict order: the slots the consumer's commits owe, given
            // back; from now on each commit gives its slot back at once.
            if self.reclaim_owed(true) {
                self.owed.fetch_and(!WANTED, AcqRel);
                return Poll::Ready(Ok(()));
            }
            let before = self.inbox.set_waiting();
            if used_of(before) < self.capacity {
                // A slot was freed after `try_take_slot` looked and before
                // the flag was up, so its release did not look for waiters:
                // take the slot now.
                self.inbox.take_slots(1);
                self.inbox.clear_waiting();
                self.owed.fetch_and(!WANTED, AcqRel);
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

    /// Gives back `n` slots of items the only consumer committed from its
    /// own buffer: in strict order only counted in [`owed`](Self::owed)
    /// (unless a sender wants room), elsewhere as [`release`](Self::release).
    #[inline]
    pub(crate) fn release_lazy(&self, n: usize) {
        if !self.owes {
            self.release(n);
            return;
        }
        let before = self.owed.fetch_add(n, AcqRel);
        if before & WANTED != 0 {
            self.flush_owed();
        }
    }

    /// Gives the slots [`owed`](Self::owed) back now.
    pub(crate) fn flush_owed(&self) {
        if !self.owes {
            return;
        }
        let before = self.owed.fetch_and(WANTED, AcqRel);
        self.release(before & !WANTED);
    }

    /// Under the lock, strict order, no sender waiting: takes the slots
    /// [`owed`](Self::owed) back and, if that freed one, takes
    /// it for the caller. `wanted`: the caller waits if this finds none, so
    /// from now on commits give their slots back at once ([`WANTED`]).
    fn reclaim_owed(&self, wanted: bool) -> bool {
        if !self.owes {
            return false;
        }
        let before = if wanted {
            self.owed.swap(WANTED, AcqRel)
        } else {
            self.owed.fetch_and(WANTED, AcqRel)
        };
        let n = before & !WANTED;
        if n == 0 {
            return false;
        }
        self.inbox.give_slots(n);
        self.try_take_slot()
    }

    /// No sender waits anymore (under the lock): commits may owe their
    /// slots again.
    fn unwanted(&self) {
        if self.owes {
            self.owed.fetch_and(!WANTED, AcqRel);
        }
    }

    /// Gives back `n` slots (items committed, dead-lettered or dropped, a
    /// reservation dropped) and hands them to waiting senders, oldest first.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.inbox.give_slots(n);
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
            if used_of(self.inbox.word()) >= self.capacity {
                return false;
            }
            self.inbox.take_slots(1);
            st.last_granted = front.id;
            let waiter = st.waiters.pop_front().expect("front exists");
            wakers.push(waiter.waker);
        }
        self.inbox.clear_waiting();
        self.unwanted();
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
        if st.give_back_ahead(id) {
            self.wake_one(&mut st, &mut wakers);
        }
        st.forget_ahead(id);
        st.consumers.remove(id, &mut wakers);
        let last = self.solo.consumers.fetch_sub(1, AcqRel) == 1;
        let mut dropped = Vec::new();
        let mut senders = VecDeque::new();
        if last {
            self.close_inbox(&mut st);
            senders = st.close();
            dropped = st.table.clear();
        } else {
            // Its wake-up, if it had one, goes to another consumer.
            self.wake_one(&mut st, &mut wakers);
        }
        drop(st);
        if !senders.is_empty() {
            self.inbox.clear_waiting();
            self.unwanted();
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
        self.close_inbox(&mut st);
        let senders = st.close();
        let mut wakers = WakeList::new();
        self.wake_consumers(&mut st, &mut wakers);
        drop(st);
        if !senders.is_empty() {
            self.inbox.clear_waiting();
            self.unwanted();
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
        let st = self.lock();
        self.end_locked(st, ticket, how)
    }

    /// [`end`](Self::end) of an owned delivery other than by a light commit,
    /// whose consumer's [`Ahead`] is `home`. Per key, light: the items of
    /// its key that consumer holds (its chain) go back to the head of the
    /// key's queue first, so that the item given back (or dead) comes before
    /// them and the key's order holds.
    pub(crate) fn end_owned(
        &self,
        home: &AheadCell<T>,
        ticket: Ticket,
        how: End<T>,
    ) -> Result<Ended, Expired> {
        let mut st = self.lock();
        if self.keyed
            && let Ticket::Light(meta) = &ticket
        {
            let mut ahead = lock(home);
            ahead.end_out(meta.key);
            let chain = ahead.take_key(meta.key);
            drop(ahead);
            // The key stays busy: the delivery ending below holds it.
            st.table.unreserve(chain.into_iter(), |_| true);
        }
        self.end_locked(st, ticket, how)
    }

    fn end_locked(
        &self,
        mut st: MutexGuard<'_, State<T>>,
        ticket: Ticket,
        how: End<T>,
    ) -> Result<Ended, Expired> {
        let mut clock = Clock::default();
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
            self.wake_consumers(&mut st, &mut wakers);
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
            self.wake_consumers(&mut st, &mut wakers);
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
            self.wake_consumers(&mut st, &mut wakers);
        }
        drop(st);
        wakers.wake_all();
        extended
    }
}

impl<T> State<T> {
    /// The [`Ahead`] of consumer `id`, made on first use.
    pub(crate) fn ahead_of(&mut self, id: usize) -> AheadCell<T> {
        if self.ahead.len() <= id {
            self.ahead.resize_with(id + 1, || None);
        }
        let armed = self.armed;
        let keyed = self.table.rules().order == OrderKind::PerKey;
        Arc::clone(self.ahead[id].get_or_insert_with(|| {
            Arc::new(Mutex::new(Ahead {
                armed,
                keyed,
                ..Ahead::default()
            }))
        }))
    }

    /// How many items a consumer takes ahead now, at least one, at most
    /// [`AHEAD_MAX`]: while others wait, its part of the ready items among
    /// the `consumers`; otherwise as many as are ready (the others are busy,
    /// and one that runs dry steals half before it waits).
    pub(crate) fn ahead_share(&self, consumers: usize) -> usize {
        let ready = self.table.ready_len();
        let share = if self.consumers.any_waiting() {
            ready.div_ceil(consumers.max(1))
        } else {
            ready
        };
        share.clamp(1, AHEAD_MAX)
    }

    /// Moves half of the items another consumer took ahead (the first one
    /// found with any it can give) to `into`. Per key, only whole chains of
    /// keys with no delivery out from there. `false` if none had any.
    pub(crate) fn steal_ahead(&self, id: usize, into: &mut Ahead<T>) -> bool {
        for (other, cell) in self.ahead.iter().enumerate() {
            let Some(cell) = cell else { continue };
            if other == id {
                continue;
            }
            let mut from = lock(cell);
            let n = from.items.len();
            if n == 0 {
                continue;
            }
            if !from.keyed {
                let keep = n - n.div_ceil(2);
                into.items.extend(from.items.drain(keep..));
                return true;
            }
            // Keys from the back, whole, until half the items are chosen.
            let want = n.div_ceil(2);
            let mut chosen: Vec<u64> = Vec::new();
            let mut count = 0;
            for e in from.items.iter().rev() {
                let key = e.meta.key;
                if chosen.contains(&key) {
                    count += 1;
                } else if count < want && !from.out.contains(&key) {
                    chosen.push(key);
                    count += 1;
                }
            }
            if chosen.is_empty() {
                continue;
            }
            let (taken, kept): (VecDeque<_>, VecDeque<_>) = from
                .items
                .drain(..)
                .partition(|e| chosen.contains(&e.meta.key));
            from.items = kept;
            into.items.extend(taken);
            return true;
        }
        false
    }

    /// Moves half of the items another consumer took ahead (the first one
    /// found with any) back to the table's head, for consumer `id` to take
    /// in a borrowing delivery. `false` if none had any.
    pub(crate) fn steal_ahead_back(&mut self, id: usize) -> bool {
        let mut stolen = Ahead::default();
        if !self.steal_ahead(id, &mut stolen) {
            return false;
        }
        // Stolen only where no delivery of their key is out.
        self.table.unreserve(stolen.items.drain(..), |_| false);
        true
    }

    /// Gives the items consumer `id` took ahead back to the table's head
    /// (it begins a borrowing delivery, or is dropped). `true` if there
    /// were any.
    pub(crate) fn give_back_ahead(&mut self, id: usize) -> bool {
        let Some(Some(cell)) = self.ahead.get(id) else {
            return false;
        };
        let mut ahead = lock(cell);
        if ahead.items.is_empty() {
            return false;
        }
        let ahead = &mut *ahead;
        let out = &ahead.out;
        self.table
            .unreserve(ahead.items.drain(..), |key| out.contains(&key));
        true
    }

    /// Consumer `id` is gone: its counts move to the table's.
    fn forget_ahead(&mut self, id: usize) {
        let Some(cell) = self.ahead.get_mut(id).and_then(Option::take) else {
            return;
        };
        let mut ahead = lock(&cell);
        debug_assert!(ahead.items.is_empty(), "given back first");
        ahead.move_commits(&mut self.table);
        ahead.detached = true;
        let counts = self.table.counts_mut();
        counts.delivered += ahead.delivered;
        counts.redelivered += ahead.redelivered;
    }

    /// Over every consumer's [`Ahead`]: items held, delivered, redelivered.
    pub(crate) fn ahead_totals(&self) -> (usize, u64, u64) {
        let mut totals = (0, 0, 0);
        for cell in self.ahead.iter().flatten() {
            let ahead = lock(cell);
            totals.0 += ahead.items.len();
            totals.1 += ahead.delivered;
            totals.2 += ahead.redelivered;
        }
        totals
    }

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
    /// outside the lock (their sends fail). The caller closed the
    /// [`Inbox`] first ([`Shared::close_inbox`]).
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

    /// Whether any consumer waits (or was woken and has not looked yet).
    pub(crate) fn any_waiting(&self) -> bool {
        !self.queue.is_empty() || self.notified > 0
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
                    assert_eq!(used_of(shared.inbox.word()), 0);
                }
                Err(Expired) => {
                    // The expiry came first: the item is back, queued, its
                    // slot still taken; the late commit changed nothing.
                    assert_eq!((counts.committed, counts.expired), (0, 1));
                    assert_eq!((st.table.len(), st.table.in_flight()), (1, 0));
                    drop(st);
                    assert_eq!(used_of(shared.inbox.word()), 1);
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
