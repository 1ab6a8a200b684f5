//! The in-flight table: every item of a channel that has not left it yet —
//! queued, delayed, in flight, or waiting to be dead-lettered — and the rules
//! of order, limits, leases and backoff that decide which item goes next.
//!
//! # Design
//!
//! The table is a plain data structure. It owns no lock, no waker and no
//! clock: [`Shared`](crate::shared::Shared) keeps it under the channel's one
//! mutex, and every operation that depends on time takes a [`Clock`] that
//! reads tokio's clock at most once per operation, and only if the operation
//! needs it. That keeps the rules in one place, testable without a runtime,
//! and lets the loom model race them against the lock-free parts of the
//! channel with a clock it controls.
//!
//! An item is in exactly one of these places:
//!
//! | place | what | leaves by |
//! |---|---|---|
//! | `fresh` | sent, never delivered (just `T`, plus its key in per-key order) | [`take`](Table::take), or a consumer's [`drain_strict`](Table::drain_strict) |
//! | the order's ready queue | delivered before and given back, with its [`Meta`] | `take`, `drain_strict` |
//! | the order's delayed set | given back with a delay (`retry_after`, the retry policy) | becoming due in [`settle`](Table::settle) |
//! | `slots` (in flight) | delivered by `take`; a [`Ticket`] names its slot | [`end`](Table::end) by its holder, or [`settle`](Table::settle) when its lease ran out |
//! | `dead` | exhausted (attempts, lease, panic) or failed: to be dead-lettered | [`take_dead`](Table::take_dead) by a consumer, which hands it to the destination |
//!
//! (A consumer that is the channel's only one may also hold items in its own
//! buffer — the sequential fast path — which the table does not see; see
//! [`Receiver`](crate::Receiver). Consumers sharing an unordered or per-key
//! channel may hold items they [`reserve`](Table::reserve)d ahead of handing
//! them out: the table counts those as in flight, and frees them when their
//! commits, counted outside it, are moved in by
//! [`absorb_commits`](Table::absorb_commits).)
//!
//! **Order.** Strict: one ready queue; the head goes first, and nothing is
//! delivered while anything is in flight or while the head waits out a delay
//! (a delayed head holds the queue: that is what strict means). Per key:
//! one queue per key (the key is hashed to a `u64` by the sender, outside
//! the lock), a FIFO of *runnable* keys (items queued, none in flight, head
//! not delayed) and a heap of delayed keys; a key is never in flight twice
//! and its items keep their order, while other keys pass a busy or delayed
//! one. A consumer that takes items ahead takes a key's next queued items
//! with its head ([`reserve`](Table::reserve)): the key stays busy until
//! the last of them ends, and the consumer hands each out only when the
//! one before it ended. Unordered: one ready queue, and a heap of delayed
//! items that the ready ones pass.
//!
//! **In flight.** A slot per delivered item holds its key, its [`Meta`]
//! (attempts, delivery times) and, for a leased delivery, its deadline and a
//! backup copy of the item: the holder works on its own copy, so that when
//! the lease runs out the backup goes back to the queue even if the holder
//! never lets go. A slot's generation makes a [`Ticket`] unique, so a holder
//! whose lease expired — and whose slot may have been reused — is told
//! [`Expired`] instead of ending someone else's delivery. Lease deadlines
//! sit in a heap; [`extend`](Table::extend) pushes a new entry and the stale
//! one is skipped when it comes up.
//!
//! **Attempts and dead letters.** A delivery counts one attempt when it is
//! taken. An end other than a commit gives the item back; if that was its
//! last allowed attempt (or it failed explicitly), it goes to `dead` with
//! its [`DeadLetterReason`] instead, and consumers hand `dead` items to the
//! dead-letter destination before they deliver anything else.
//!
//! **Backoff.** A rollback without an explicit delay waits the retry
//! policy's delay for that attempt (`base_delay(attempts)`, jittered); an
//! explicit `retry_after` wins; a lease expiry counts as a rollback.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use async_patterns_core::{DeadLetterReason, Jitter, RetryPolicy};
use tokio::time::Instant;

use crate::own_buffer::OwnBuffer;

/// The order items are delivered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderKind {
    Strict,
    PerKey,
    Unordered,
}

/// Reads tokio's clock at most once, on first use.
#[derive(Debug, Default)]
pub(crate) struct Clock(Option<Instant>);

impl Clock {
    pub(crate) fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }

    /// A clock stopped at `at`, for tests and models.
    #[cfg(test)]
    pub(crate) fn at(at: Instant) -> Self {
        Clock(Some(at))
    }
}

/// When an item was first and last delivered; kept only if the channel has
/// a dead-letter destination, so that the fast path does not read the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) first: Instant,
    pub(crate) last: Instant,
}

/// What the channel knows about an item beyond the item itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Deliveries so far.
    pub(crate) attempts: u32,
    /// The hashed key (per-key order only).
    pub(crate) key: u64,
    pub(crate) times: Option<Times>,
    /// The last delivery ended by a panic (the own buffer's rollbacks; the
    /// table decides the reason when the delivery ends).
    pub(crate) panicked: bool,
}

impl Meta {
    /// Counts one more delivery at `clock` (read only if `stamp`).
    pub(crate) fn deliver(&mut self, stamp: bool, clock: &mut Clock) {
        self.attempts = self.attempts.saturating_add(1);
        if stamp {
            let now = clock.now();
            self.times = Some(Times {
                first: self.times.map_or(now, |t| t.first),
                last: now,
            });
        }
    }
}

/// An item with its [`Meta`].
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub(crate) item: T,
    pub(crate) meta: Meta,
}

/// Names one in-flight delivery of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// A delivery with a slot in the table (a lease, or per-key or strict
    /// order, needs one); the generation makes the ticket unique.
    Slot { index: usize, generation: u64 },
    /// A delivery without a slot: unordered and unleased, nothing about it
    /// can change while it is in flight, so the ticket carries its [`Meta`]
    /// and its commit needs no lock (see [`Table::absorb_commits`]).
    Light(Meta),
}

/// The delivery's lease ran out first: the item is no longer its holder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

/// How a delivery ends.
#[derive(Debug)]
pub(crate) enum End<T> {
    Commit,
    /// Give the item back. `item` is the holder's copy (`None` if it only
    /// holds a backup-less view); `delay` an explicit `retry_after`.
    Rollback {
        item: Option<T>,
        delay: Option<Duration>,
        panicked: bool,
    },
    /// Give up on it now.
    Fail {
        item: Option<T>,
        reason: String,
    },
}

/// What an [`end`](Table::end) did, for the caller's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Committed: its capacity slot is free.
    Committed,
    /// Back in the queue (maybe delayed).
    Requeued,
    /// Waiting in `dead` for a consumer to dead-letter it.
    Dead,
    /// Nowhere to go (no consumer left): dropped, counted.
    Dropped,
}

/// What [`take`](Table::take) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// This many items were handed out.
    Some(usize),
    /// Nothing can be delivered now.
    Nothing,
}

/// The settings the table applies.
pub(crate) struct Rules<T> {
    pub(crate) order: OrderKind,
    /// Items in flight at most (strict order: one delivery, however many items).
    pub(crate) max_in_flight: usize,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) lease: Option<Duration>,
    /// Copies an item for a leased delivery; set with the lease.
    pub(crate) copy: Option<fn(&T) -> T>,
    pub(crate) retry: Option<RetryPolicy>,
    /// Record delivery times (a dead-letter destination exists).
    pub(crate) stamp: bool,
}

impl<T> Rules<T> {
    /// Whether deliveries go without a slot ([`Ticket::Light`]): without a
    /// lease nothing can happen to a delivery while it is in flight, so its
    /// commit only counts (and, per key, frees its key) and can be recorded
    /// without the lock. Strict order keeps its slots: its one delivery
    /// holds the whole queue.
    pub(crate) fn light(&self) -> bool {
        self.order != OrderKind::Strict && self.lease.is_none()
    }
}

impl<T> Clone for Rules<T> {
    fn clone(&self) -> Self {
        Rules {
            order: self.order,
            max_in_flight: self.max_in_flight,
            max_attempts: self.max_attempts,
            lease: self.lease,
            copy: self.copy,
            retry: self.retry.clone(),
            stamp: self.stamp,
        }
    }
}

/// Counters kept by the table (the consumers' fast path keeps its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) delivered: u64,
    pub(crate) redelivered: u64,
    pub(crate) committed: u64,
    pub(crate) expired: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) dropped: u64,
}

struct Slot<T> {
    generation: u64,
    meta: Meta,
    deadline: Option<Instant>,
    backup: Option<T>,
}

/// Per key: how many emptied key queues are kept for reuse.
const SPARE_QUEUES: usize = 64;

/// A `u64` key is the user's hash of the item's key, but often a small
/// number (an id, a partition): one multiply by an odd constant spreads it
/// over every bit. The map takes bucket bits from the bottom and tag bits
/// from the top of the hash, and a small number used as is has the same
/// (zero) tag for every key, so each lookup compares every key it probes.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    /// In `runnable`.
    Runnable,
    /// Its item is in flight.
    Busy,
    /// Its head waits until `not_before`.
    Delayed,
}

/// A key's queued items, oldest first: those that came back (from flight,
/// or from a consumer's items taken ahead) with their [`Meta`], then those
/// never delivered, bare. A fresh item's `Meta` is the default with the
/// key, so it is made when the item is handed out: the queue of a small
/// item is a small fraction of the memory it would be with every `Meta`,
/// and the consumers that take from it on other CPUs read that much less.
struct KeyQueue<T> {
    back: VecDeque<Entry<T>>,
    fresh: VecDeque<T>,
    state: KeyState,
    not_before: Option<Instant>,
}

impl<T> KeyQueue<T> {
    fn new(fresh: VecDeque<T>, state: KeyState) -> Self {
        debug_assert!(fresh.is_empty());
        KeyQueue {
            back: VecDeque::new(),
            fresh,
            state,
            not_before: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.back.is_empty() && self.fresh.is_empty()
    }

    fn pop_front(&mut self, key: u64) -> Option<Entry<T>> {
        if let Some(entry) = self.back.pop_front() {
            return Some(entry);
        }
        self.fresh.pop_front().map(|item| Entry {
            item,
            meta: Meta {
                key,
                ..Meta::default()
            },
        })
    }

    /// Its items, oldest first.
    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.back
            .drain(..)
            .map(|e| e.item)
            .chain(self.fresh.drain(..))
    }
}

/// A delayed item (unordered) or key (per key), by due time then arrival.
struct Due<V> {
    at: Instant,
    seq: u64,
    value: V,
}

impl<V> PartialEq for Due<V> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<V> Eq for Due<V> {}
impl<V> PartialOrd for Due<V> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<V> Ord for Due<V> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum Queues<T> {
    Strict {
        /// Delivered before and given back, oldest first; older than `fresh`.
        returned: VecDeque<Entry<T>>,
        /// The head may not be delivered before this.
        not_before: Option<Instant>,
    },
    Unordered {
        returned: VecDeque<Entry<T>>,
        delayed: BinaryHeap<Reverse<Due<Entry<T>>>>,
    },
    PerKey {
        keys: KeyMap<KeyQueue<T>>,
        runnable: VecDeque<u64>,
        /// Keys whose head is delayed; an entry is stale if the key's
        /// `not_before` no longer matches.
        delayed: BinaryHeap<Reverse<Due<u64>>>,
        /// The emptied fresh queues of keys that left the map, kept for
        /// their allocations (a key comes and goes with every item when
        /// items are handled as fast as they come).
        spare: Vec<VecDeque<T>>,
    },
}

/// Sent items not yet sorted into the order's queues.
struct Intake<T> {
    /// Sent, never delivered (every order but per key, whose items go
    /// straight to their key's queue).
    fresh: VecDeque<T>,
    keyed: bool,
}

/// See the [module docs](self).
pub(crate) struct Table<T> {
    /// What senders touch, together: a send writes one or two cache lines.
    intake: Intake<T>,
    rules: Rules<T>,
    queues: Queues<T>,
    /// Items queued in `queues` (ready or delayed), not counting `fresh`.
    queued: usize,
    slots: Vec<Option<Slot<T>>>,
    free: Vec<usize>,
    in_flight: usize,
    next_generation: u64,
    leases: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    dead: VecDeque<(Entry<T>, DeadLetterReason)>,
    /// The dead-letter channel is closed: deliver exhausted items again.
    dead_closed: bool,
    seq: u64,
    rng: u64,
    counts: Counts,
}

impl<T> Table<T> {
    pub(crate) fn new(rules: Rules<T>) -> Self {
        let queues = match rules.order {
            OrderKind::Strict => Queues::Strict {
                returned: VecDeque::new(),
                not_before: None,
            },
            OrderKind::Unordered => Queues::Unordered {
                returned: VecDeque::new(),
                delayed: BinaryHeap::new(),
            },
            OrderKind::PerKey => Queues::PerKey {
                keys: KeyMap::default(),
                runnable: VecDeque::new(),
                delayed: BinaryHeap::new(),
                spare: Vec::new(),
            },
        };
        Table {
            intake: Intake {
                fresh: VecDeque::new(),
                keyed: rules.order == OrderKind::PerKey,
            },
            rules,
            queues,
            queued: 0,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            next_generation: 1,
            leases: BinaryHeap::new(),
            dead: VecDeque::new(),
            dead_closed: false,
            seq: 0,
            rng: 0x853c_49e6_748f_ea9b,
            counts: Counts::default(),
        }
    }

    pub(crate) fn rules(&self) -> &Rules<T> {
        &self.rules
    }

    /// The counters (`sent` is left to the caller, who derives it: every
    /// item sent is in the table, in the only consumer's buffer, or gone).
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// Adds to the counters of the consumers' fast path.
    pub(crate) fn counts_mut(&mut self) -> &mut Counts {
        &mut self.counts
    }

    // ----- intake ------------------------------------------------------------

    /// A sent item (`key` is its hashed key in per-key order, where it goes
    /// straight to its key's queue).
    #[inline]
    pub(crate) fn push(&mut self, item: T, key: u64) {
        if self.intake.keyed {
            self.push_keyed(item, key);
        } else {
            self.intake.fresh.push_back(item);
        }
    }

    #[inline(never)]
    fn push_keyed(&mut self, item: T, key: u64) {
        let Queues::PerKey {
            keys,
            runnable,
            spare,
            ..
        } = &mut self.queues
        else {
            unreachable!("keyed means per key");
        };
        let queue = keys.entry(key).or_insert_with(|| {
            runnable.push_back(key);
            KeyQueue::new(spare.pop().unwrap_or_default(), KeyState::Runnable)
        });
        queue.fresh.push_back(item);
        self.queued += 1;
    }

    // ----- looking -----------------------------------------------------------

    /// Items not ended: queued, delayed, in flight, or waiting to be
    /// dead-lettered.
    pub(crate) fn len(&self) -> usize {
        self.intake.fresh.len() + self.queued + self.in_flight + self.dead.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Nothing queued, in flight or dead: once the intake is closed too, the
    /// channel has ended.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn has_dead(&self) -> bool {
        !self.dead.is_empty()
    }

    /// Whether [`take`](Self::take) would hand out an item now (after
    /// [`settle`](Self::settle)). Cheap: no clock.
    pub(crate) fn can_take(&self) -> bool {
        if !self.dead.is_empty() {
            return true;
        }
        match &self.queues {
            Queues::Strict {
                returned,
                not_before,
            } => {
                self.in_flight == 0
                    && not_before.is_none()
                    && !(returned.is_empty() && self.intake.fresh.is_empty())
            }
            Queues::Unordered { returned, .. } => {
                self.in_flight < self.rules.max_in_flight
                    && !(returned.is_empty() && self.intake.fresh.is_empty())
            }
            Queues::PerKey { runnable, .. } => {
                self.in_flight < self.rules.max_in_flight && !runnable.is_empty()
            }
        }
    }

    /// The next instant at which [`settle`](Self::settle) has work: a
    /// delayed item coming due, or a lease running out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let delayed = match &self.queues {
            Queues::Strict { not_before, .. } => *not_before,
            Queues::Unordered { delayed, .. } => delayed.peek().map(|Reverse(d)| d.at),
            Queues::PerKey { delayed, .. } => delayed.peek().map(|Reverse(d)| d.at),
        };
        let lease = self.leases.peek().map(|Reverse((at, _, _))| *at);
        match (delayed, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether anything in the table depends on time now.
    pub(crate) fn has_timers(&self) -> bool {
        self.next_deadline().is_some()
    }

    // ----- time --------------------------------------------------------------

    /// Moves delayed items that are due to the ready queues and gives back
    /// the items whose lease ran out. Reads the clock only if something
    /// waits for a time.
    pub(crate) fn settle(&mut self, clock: &mut Clock) {
        if !self.has_timers() {
            return;
        }
        let now = clock.now();
        self.expire_leases(now);
        match &mut self.queues {
            Queues::Strict { not_before, .. } => {
                if not_before.is_some_and(|at| at <= now) {
                    *not_before = None;
                }
            }
            Queues::Unordered { returned, delayed } => {
                while delayed.peek().is_some_and(|Reverse(d)| d.at <= now) {
                    let Reverse(due) = delayed.pop().expect("peeked");
                    returned.push_back(due.value);
                }
            }
            Queues::PerKey {
                keys,
                runnable,
                delayed,
                ..
            } => {
                while delayed.peek().is_some_and(|Reverse(d)| d.at <= now) {
                    let Reverse(due) = delayed.pop().expect("peeked");
                    if let Some(queue) = keys.get_mut(&due.value)
                        && queue.state == KeyState::Delayed
                        && queue.not_before == Some(due.at)
                    {
                        queue.not_before = None;
                        queue.state = KeyState::Runnable;
                        runnable.push_back(due.value);
                    }
                }
            }
        }
    }

    fn expire_leases(&mut self, now: Instant) {
        while let Some(&Reverse((at, index, generation))) = self.leases.peek() {
            if at > now {
                return;
            }
            self.leases.pop();
            let live = matches!(
                &self.slots[index],
                Some(slot) if slot.generation == generation && slot.deadline == Some(at)
            );
            if !live {
                continue; // ended, or extended (a later entry stands for it)
            }
            let slot = self.free_slot(index);
            self.in_flight -= 1;
            self.counts.expired += 1;
            let entry = Entry {
                item: slot.backup.expect("a leased slot keeps a backup"),
                meta: slot.meta,
            };
            // Its backoff counts from the deadline, whenever the expiry is
            // noticed.
            let mut clock = Clock(Some(at));
            self.give_back(entry, None, DeadLetterReason::LeaseExpired, &mut clock);
        }
    }

    // ----- delivering --------------------------------------------------------

    /// Hands out up to `max` items, oldest first as the order allows, to
    /// `out` with their [`Meta`] (one more attempt counted) and [`Ticket`].
    /// A `leased` delivery gets a deadline and a backup copy. Call
    /// [`settle`](Self::settle) first, and deal with [`take_dead`](Self::take_dead)
    /// before: dead items are not handed out here.
    pub(crate) fn take(
        &mut self,
        max: usize,
        leased: bool,
        clock: &mut Clock,
        mut out: impl FnMut(T, Meta, Ticket),
    ) -> Take {
        let room = match self.rules.order {
            OrderKind::Strict if self.in_flight > 0 => 0,
            OrderKind::Strict => max,
            _ => max.min(self.rules.max_in_flight.saturating_sub(self.in_flight)),
        };
        let mut taken = 0;
        while taken < room {
            let Some(entry) = self.next_ready() else {
                break;
            };
            let (item, meta, ticket) = self.start(entry, leased, clock);
            out(item, meta, ticket);
            taken += 1;
        }
        if taken == 0 {
            Take::Nothing
        } else {
            Take::Some(taken)
        }
    }

    /// Unordered, without a lease or an in-flight limit: moves up to `max`
    /// items that may be delivered now to a consumer that delivers them
    /// later, without the lock (its [`Ahead`](crate::shared::Ahead)
    /// buffer). They count as in flight from now — they are no longer
    /// anyone else's to take — but not as delivered: no attempt is counted
    /// until the consumer hands one out. Returns how many it moved.
    pub(crate) fn reserve(&mut self, max: usize, mut out: impl FnMut(Entry<T>)) -> usize {
        debug_assert!(self.rules.light() && self.rules.max_in_flight == usize::MAX);
        let mut moved = 0;
        while moved < max {
            let Some(entry) = self.next_ready() else {
                break;
            };
            let key = entry.meta.key;
            out(entry);
            moved += 1;
            // Per key, the key's next items go with it, as a chain: its
            // consumer hands each out when the one before it committed (see
            // `Ahead`). The key stays busy until the chain ends.
            while moved < max
                && let Some(entry) = self.next_of_busy_key(key)
            {
                out(entry);
                moved += 1;
            }
        }
        self.in_flight += moved;
        moved
    }

    /// Per key: the next queued item of `key`, which was just taken (busy);
    /// `None` in other orders.
    fn next_of_busy_key(&mut self, key: u64) -> Option<Entry<T>> {
        let Queues::PerKey { keys, .. } = &mut self.queues else {
            return None;
        };
        let queue = keys.get_mut(&key)?;
        debug_assert_eq!(queue.state, KeyState::Busy);
        let entry = queue.pop_front(key)?;
        self.queued -= 1;
        Some(entry)
    }

    /// Takes back items [`reserve`](Self::reserve)d and never handed out,
    /// at the head of the queue, in the order given, their attempts
    /// untouched. Per key, a key stays busy if `out(key)`: a delivery of it
    /// taken with these items is still out (they are its chain); otherwise
    /// it was busy because of them, and is runnable again, first.
    pub(crate) fn unreserve(
        &mut self,
        entries: impl DoubleEndedIterator<Item = Entry<T>>,
        out: impl Fn(u64) -> bool,
    ) {
        for entry in entries.rev() {
            self.queued += 1;
            self.in_flight -= 1;
            match &mut self.queues {
                Queues::Unordered { returned, .. } => returned.push_front(entry),
                Queues::PerKey { keys, runnable, .. } => {
                    let key = entry.meta.key;
                    let queue = keys.get_mut(&key).expect("a reserved item's key is busy");
                    queue.back.push_front(entry);
                    if queue.state == KeyState::Busy && !out(key) {
                        queue.state = KeyState::Runnable;
                        runnable.push_front(key);
                    }
                }
                Queues::Strict { .. } => unreachable!("strict order reserves nothing"),
            }
        }
    }

    /// How many items may be delivered now (unordered order; a cheap upper
    /// bound elsewhere), for sizing a reservation.
    pub(crate) fn ready_len(&self) -> usize {
        match &self.queues {
            Queues::Unordered { returned, .. } => returned.len() + self.intake.fresh.len(),
            Queues::PerKey { .. } => self.queued,
            Queues::Strict { .. } => self.intake.fresh.len() + self.queued,
        }
    }

    /// The next item the order allows, out of its queue.
    fn next_ready(&mut self) -> Option<Entry<T>> {
        match &mut self.queues {
            Queues::Strict {
                returned,
                not_before,
            } => {
                if not_before.is_some() {
                    return None;
                }
                if let Some(entry) = returned.pop_front() {
                    self.queued -= 1;
                    return Some(entry);
                }
                self.intake.fresh.pop_front().map(|item| Entry {
                    item,
                    meta: Meta::default(),
                })
            }
            Queues::Unordered { returned, .. } => {
                if let Some(entry) = returned.pop_front() {
                    self.queued -= 1;
                    return Some(entry);
                }
                self.intake.fresh.pop_front().map(|item| Entry {
                    item,
                    meta: Meta::default(),
                })
            }
            Queues::PerKey { keys, runnable, .. } => {
                let key = runnable.pop_front()?;
                let queue = keys.get_mut(&key).expect("a runnable key has a queue");
                let entry = queue.pop_front(key).expect("a runnable key has items");
                queue.state = KeyState::Busy;
                self.queued -= 1;
                Some(entry)
            }
        }
    }

    fn start(&mut self, mut entry: Entry<T>, leased: bool, clock: &mut Clock) -> (T, Meta, Ticket) {
        entry.meta.deliver(self.rules.stamp, clock);
        self.counts.delivered += 1;
        if entry.meta.attempts > 1 {
            self.counts.redelivered += 1;
        }
        self.in_flight += 1;
        if self.rules.light() {
            return (entry.item, entry.meta, Ticket::Light(entry.meta));
        }
        let (deadline, backup) = match (leased, self.rules.lease, self.rules.copy) {
            (true, Some(lease), Some(copy)) => (Some(clock.now() + lease), Some(copy(&entry.item))),
            _ => (None, None),
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = Slot {
            generation,
            meta: entry.meta,
            deadline,
            backup,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        if let Some(at) = deadline {
            self.leases.push(Reverse((at, index, generation)));
        }
        (entry.item, entry.meta, Ticket::Slot { index, generation })
    }

    /// The oldest item waiting to be dead-lettered, with its reason.
    pub(crate) fn take_dead(&mut self) -> Option<(Entry<T>, DeadLetterReason)> {
        self.dead.pop_front()
    }

    /// A dead item that could not be dead-lettered (the destination is
    /// closed): from now on exhausted items are delivered again instead.
    pub(crate) fn undead(&mut self, entry: Entry<T>) {
        self.dead_closed = true;
        self.requeue(entry, None, false);
    }

    /// Counts an item handed to the dead-letter destination (or discarded
    /// because there is none).
    pub(crate) fn count_dead_lettered(&mut self) {
        self.counts.dead_lettered += 1;
    }

    // ----- ending ------------------------------------------------------------

    /// Ends the delivery `ticket`. `Err(Expired)` if its lease ran out first
    /// (checked against the clock too, so an end after the deadline fails
    /// even if nobody noticed the expiry yet).
    pub(crate) fn end(
        &mut self,
        ticket: Ticket,
        how: End<T>,
        clock: &mut Clock,
    ) -> Result<Ended, Expired> {
        let index = match ticket {
            Ticket::Light(meta) => return Ok(self.finish(meta, None, how, clock)),
            Ticket::Slot { index, generation } => match self.live_slot(index, generation) {
                Some(slot) => {
                    if let Some(at) = slot.deadline
                        && clock.now() >= at
                    {
                        self.settle(clock);
                        return Err(Expired);
                    }
                    index
                }
                None => return Err(Expired),
            },
        };
        let slot = self.free_slot(index);
        Ok(self.finish(slot.meta, slot.backup, how, clock))
    }

    /// Counts `n` commits of [`Ticket::Light`] deliveries made without the
    /// lock: they left the table's in-flight count and are committed.
    pub(crate) fn absorb_commits(&mut self, n: usize) {
        debug_assert!(n <= self.in_flight, "more light commits than in flight");
        self.in_flight -= n;
        self.counts.committed += n as u64;
    }

    /// Per key: counts the commits of [`Ticket::Light`] deliveries of
    /// `keys` made without the lock, and frees their keys.
    pub(crate) fn absorb_keyed_commits(&mut self, keys: impl Iterator<Item = u64>) {
        for key in keys {
            self.absorb_commits(1);
            self.release_key(key);
        }
    }

    /// Items queued (ready or delayed), not counting `fresh`: per key, every
    /// queued item.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// The slot of a live delivery: `index` holds generation `generation`.
    fn live_slot(&self, index: usize, generation: u64) -> Option<&Slot<T>> {
        match self.slots.get(index) {
            Some(Some(slot)) if slot.generation == generation => Some(slot),
            _ => None,
        }
    }

    fn finish(&mut self, meta: Meta, backup: Option<T>, how: End<T>, clock: &mut Clock) -> Ended {
        self.in_flight -= 1;
        match how {
            End::Commit => {
                self.counts.committed += 1;
                self.release_key(meta.key);
                Ended::Committed
            }
            End::Rollback {
                item,
                delay,
                panicked,
            } => {
                let item = item.or(backup).expect("a rollback has the item");
                let reason = if panicked {
                    DeadLetterReason::Panicked
                } else {
                    DeadLetterReason::MaxAttempts
                };
                self.give_back(Entry { item, meta }, delay, reason, clock)
            }
            End::Fail { item, reason } => {
                let item = item.or(backup).expect("a failure has the item");
                self.release_key(meta.key);
                self.dead
                    .push_back((Entry { item, meta }, DeadLetterReason::Failed(reason)));
                Ended::Dead
            }
        }
    }

    /// Gives an item back after a failed attempt: to `dead` if it has used
    /// up its attempts, else to its queue after `delay` (or the policy's).
    fn give_back(
        &mut self,
        entry: Entry<T>,
        delay: Option<Duration>,
        reason: DeadLetterReason,
        clock: &mut Clock,
    ) -> Ended {
        let exhausted = self
            .rules
            .max_attempts
            .is_some_and(|max| entry.meta.attempts >= max);
        if exhausted && !self.dead_closed {
            self.release_key(entry.meta.key);
            self.dead.push_back((entry, reason));
            return Ended::Dead;
        }
        let delay = match (delay, &self.rules.retry) {
            (Some(d), _) => Some(d),
            (None, Some(policy)) => Some(retry_delay(policy, entry.meta.attempts, &mut self.rng)),
            (None, None) => None,
        };
        let not_before = match delay {
            Some(d) if !d.is_zero() => Some(clock.now() + d),
            _ => None,
        };
        self.requeue(entry, not_before, true);
        Ended::Requeued
    }

    /// Puts a delivered item back at the front of its queue, not to be
    /// delivered before `not_before`. `from_flight`: the item was its key's
    /// delivery in flight (so the key is busy because of it), rather than a
    /// dead item coming back.
    fn requeue(&mut self, entry: Entry<T>, not_before: Option<Instant>, from_flight: bool) {
        self.queued += 1;
        self.seq += 1;
        let seq = self.seq;
        match &mut self.queues {
            Queues::Strict {
                returned,
                not_before: head,
            } => {
                returned.push_front(entry);
                *head = not_before;
            }
            Queues::Unordered { returned, delayed } => match not_before {
                Some(at) => delayed.push(Reverse(Due {
                    at,
                    seq,
                    value: entry,
                })),
                None => returned.push_front(entry),
            },
            Queues::PerKey {
                keys,
                runnable,
                delayed,
                spare,
            } => {
                let key = entry.meta.key;
                let known = keys.contains_key(&key);
                // A key in flight stays in the map, so an item coming back
                // from flight finds its key `Busy` (because of it).
                let queue = keys.entry(key).or_insert_with(|| {
                    KeyQueue::new(spare.pop().unwrap_or_default(), KeyState::Busy)
                });
                queue.back.push_front(entry);
                if !from_flight && known {
                    // A dead item coming back to a key that is busy,
                    // runnable or delayed: it goes first when the key's turn
                    // comes, and the key's state stands.
                    return;
                }
                match not_before {
                    Some(at) => {
                        if queue.state == KeyState::Runnable {
                            runnable.retain(|k| *k != key);
                        }
                        queue.state = KeyState::Delayed;
                        queue.not_before = Some(at);
                        delayed.push(Reverse(Due {
                            at,
                            seq,
                            value: key,
                        }));
                    }
                    None => {
                        if queue.state != KeyState::Runnable {
                            queue.state = KeyState::Runnable;
                            queue.not_before = None;
                            runnable.push_back(key);
                        }
                    }
                }
            }
        }
    }

    /// Per key: the key's delivery ended for good (committed or dead):
    /// its next item may go.
    fn release_key(&mut self, key: u64) {
        let Queues::PerKey {
            keys,
            runnable,
            spare,
            ..
        } = &mut self.queues
        else {
            return;
        };
        let Some(queue) = keys.get_mut(&key) else {
            return;
        };
        if queue.state != KeyState::Busy {
            return;
        }
        if queue.is_empty() {
            if let Some(queue) = keys.remove(&key)
                && spare.len() < SPARE_QUEUES
            {
                spare.push(queue.fresh);
            }
        } else {
            queue.state = KeyState::Runnable;
            runnable.push_back(key);
        }
    }

    fn free_slot(&mut self, index: usize) -> Slot<T> {
        let slot = self.slots[index].take().expect("a live slot");
        self.free.push(index);
        slot
    }

    /// Pushes the lease of `ticket` to `extend` from now, if that is later
    /// than it ends now.
    pub(crate) fn extend(
        &mut self,
        ticket: Ticket,
        extend: Duration,
        clock: &mut Clock,
    ) -> Result<(), Expired> {
        let (index, generation) = match ticket {
            Ticket::Light(_) => return Ok(()), // not leased: nothing to extend
            Ticket::Slot { index, generation } => (index, generation),
        };
        let Some(slot) = self.live_slot(index, generation) else {
            return Err(Expired);
        };
        let Some(at) = slot.deadline else {
            return Ok(()); // not leased: nothing to extend
        };
        let now = clock.now();
        if now >= at {
            self.settle(clock);
            return Err(Expired);
        }
        let new = now + extend;
        if new > at {
            if let Some(Some(slot)) = self.slots.get_mut(index) {
                slot.deadline = Some(new);
            }
            self.leases.push(Reverse((new, index, generation)));
        }
        Ok(())
    }

    /// When the lease of `ticket` ends, if it is live and leased.
    pub(crate) fn deadline(&self, ticket: Ticket) -> Option<Instant> {
        match ticket {
            Ticket::Light(_) => None,
            Ticket::Slot { index, generation } => self
                .live_slot(index, generation)
                .and_then(|slot| slot.deadline),
        }
    }

    // ----- the only consumer's own buffer (strict order) -----------------------

    /// Strict order, for the only consumer: moves every item that may be
    /// delivered in order — given-back ones (with their meta) first, then
    /// fresh ones — into the consumer's (empty) own buffer. Returns `None`
    /// if none may go now (one is in flight, or nothing is queued), else
    /// the delay on the head, which moves with it.
    pub(crate) fn drain_strict(&mut self, own: &mut OwnBuffer<T>) -> Option<Option<Instant>> {
        let Queues::Strict {
            returned,
            not_before: head,
        } = &mut self.queues
        else {
            unreachable!("drain_strict in strict order only");
        };
        if self.in_flight > 0 || (returned.is_empty() && self.intake.fresh.is_empty()) {
            return None;
        }
        debug_assert!(own.is_empty());
        let not_before = head.take();
        self.queued -= returned.len();
        for entry in returned.drain(..) {
            own.push_back_entry(entry);
        }
        let buf = own.items_mut();
        if buf.is_empty() {
            // Swapping hands the whole queue over in O(1); the empty buffer,
            // reset to the start of its allocation, becomes the new queue so
            // the next batch arrives contiguous.
            buf.clear();
            std::mem::swap(buf, &mut self.intake.fresh);
        } else {
            buf.append(&mut self.intake.fresh);
        }
        Some(not_before)
    }

    /// Strict order: puts the only consumer's own buffer back at the head
    /// of the queue, in order, when it stops being the only one (or is
    /// dropped, or begins an owned delivery), with the head's delay. Items
    /// it had used up (out of attempts, or the front `failed` with a
    /// reason) go to the dead letters instead, as they would have from the
    /// buffer.
    pub(crate) fn restore_strict(
        &mut self,
        own: &mut OwnBuffer<T>,
        not_before: Option<Instant>,
        failed: Option<String>,
    ) {
        let Queues::Strict {
            returned,
            not_before: head,
        } = &mut self.queues
        else {
            unreachable!("restore_strict in strict order only");
        };
        if own.is_empty() {
            return;
        }
        let (delivered, never) = own.take_all();
        // Never-delivered items go back to `fresh`, ahead of what was sent
        // since; delivered ones to `returned`, which comes first.
        for item in never.into_iter().rev() {
            self.intake.fresh.push_front(item);
        }
        let mut failed = failed;
        let mut dead = Vec::new();
        let mut back = Vec::new();
        let mut front_stays = false;
        for (i, entry) in delivered.into_iter().enumerate() {
            let exhausted = self
                .rules
                .max_attempts
                .is_some_and(|max| entry.meta.attempts >= max)
                && !self.dead_closed;
            match (i, failed.take()) {
                (0, Some(reason)) => dead.push((entry, DeadLetterReason::Failed(reason))),
                _ if exhausted => {
                    let reason = if entry.meta.panicked {
                        DeadLetterReason::Panicked
                    } else {
                        DeadLetterReason::MaxAttempts
                    };
                    dead.push((entry, reason));
                }
                _ => {
                    front_stays |= i == 0;
                    back.push(entry);
                }
            }
        }
        for entry in back.into_iter().rev() {
            returned.push_front(entry);
            self.queued += 1;
        }
        // The delay was the front's: it stays only if the front stayed.
        *head = if front_stays { not_before } else { None };
        self.dead.extend(dead);
    }

    /// Own buffer, for a batch: appends what was sent since, without
    /// waiting. Only the only consumer in strict order has a buffer, and
    /// then nothing is in `returned` (it took it all, and nothing is in
    /// flight to come back).
    pub(crate) fn append_fresh(&mut self, buf: &mut VecDeque<T>) {
        buf.append(&mut self.intake.fresh);
    }

    /// Takes out every queued, delayed and dead item (the last consumer is
    /// gone), counting them as dropped. Items in flight stay with their
    /// holders; what they give back later is dropped by [`end`](Self::end)'s
    /// caller.
    pub(crate) fn clear(&mut self) -> Vec<T> {
        let mut out: Vec<T> = self.intake.fresh.drain(..).collect();
        match &mut self.queues {
            Queues::Strict {
                returned,
                not_before,
            } => {
                out.extend(returned.drain(..).map(|e| e.item));
                *not_before = None;
            }
            Queues::Unordered { returned, delayed } => {
                out.extend(returned.drain(..).map(|e| e.item));
                out.extend(delayed.drain().map(|Reverse(d)| d.value.item));
            }
            Queues::PerKey {
                keys,
                runnable,
                delayed,
                ..
            } => {
                runnable.clear();
                delayed.clear();
                for queue in keys.values_mut() {
                    out.extend(queue.drain());
                }
                // Keys in flight stay, so that their holders' ends find them.
                keys.retain(|_, q| q.state == KeyState::Busy);
            }
        }
        out.extend(self.dead.drain(..).map(|(e, _)| e.item));
        self.queued = 0;
        self.counts.dropped += out.len() as u64;
        out
    }
}

/// The retry policy's delay after attempt `attempts` failed, jittered with
/// `rng` (SplitMix64: jitter needs spread, not secrecy).
pub(crate) fn retry_delay(policy: &RetryPolicy, attempts: u32, rng: &mut u64) -> Duration {
    let base = policy.base_delay(attempts.max(1));
    let low = match policy.jitter() {
        Jitter::None => return base,
        Jitter::Full => Duration::ZERO,
        Jitter::Proportional(f) => base.mul_f64(1.0 - f),
        _ => return base,
    };
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let fraction = (z >> 11) as f64 / (1u64 << 53) as f64;
    low + base.saturating_sub(low).mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(order: OrderKind) -> Rules<u32> {
        Rules {
            order,
            max_in_flight: usize::MAX,
            max_attempts: None,
            lease: None,
            copy: None,
            retry: None,
            stamp: false,
        }
    }

    /// Takes up to `max` items, returning them with their tickets.
    fn take(table: &mut Table<u32>, max: usize, clock: &mut Clock) -> Vec<(u32, Meta, Ticket)> {
        let mut out = Vec::new();
        table.take(max, true, clock, |item, meta, ticket| {
            out.push((item, meta, ticket))
        });
        out
    }

    #[test]
    fn per_key_never_has_a_key_in_flight_twice_and_keeps_its_order() {
        let mut table = Table::new(rules(OrderKind::PerKey));
        let mut clock = Clock::at(Instant::now());
        for (item, key) in [(1, 7), (2, 7), (3, 8), (4, 7)] {
            table.push(item, key);
        }
        let first = take(&mut table, 10, &mut clock);
        // One per key: 1 (key 7) and 3 (key 8).
        assert_eq!(first.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3]);
        assert!(!table.can_take());
        // Rolling 1 back puts it first again for key 7.
        let (_, _, t1) = first[0];
        table
            .end(
                t1,
                End::Rollback {
                    item: Some(1),
                    delay: None,
                    panicked: false,
                },
                &mut clock,
            )
            .unwrap();
        let again = take(&mut table, 10, &mut clock);
        assert_eq!((again[0].0, again[0].1.attempts), (1, 2));
        table.end(again[0].2, End::Commit, &mut clock).unwrap();
        assert_eq!(take(&mut table, 10, &mut clock)[0].0, 2);
    }

    #[test]
    fn an_expired_lease_gives_the_backup_back_and_its_holder_is_told() {
        let mut rules = rules(OrderKind::Unordered);
        rules.lease = Some(Duration::from_secs(10));
        rules.copy = Some(u32::clone);
        let mut table = Table::new(rules);
        let start = Instant::now();
        table.push(5, 0);
        let got = take(&mut table, 1, &mut Clock::at(start));
        let ticket = got[0].2;
        // Not before the deadline...
        table.settle(&mut Clock::at(start + Duration::from_millis(9_999)));
        assert_eq!(table.in_flight(), 1);
        // ...yes at it.
        table.settle(&mut Clock::at(start + Duration::from_secs(10)));
        assert_eq!((table.in_flight(), table.counts().expired), (0, 1));
        let late = table.end(
            ticket,
            End::Commit,
            &mut Clock::at(start + Duration::from_secs(11)),
        );
        assert_eq!(late, Err(Expired));
        let again = take(
            &mut table,
            1,
            &mut Clock::at(start + Duration::from_secs(11)),
        );
        assert_eq!((again[0].0, again[0].1.attempts), (5, 2));
        assert_ne!(again[0].2, ticket, "a new ticket for the new delivery");
    }

    #[test]
    fn an_end_after_the_deadline_expires_even_if_nobody_settled() {
        let mut rules = rules(OrderKind::Strict);
        rules.lease = Some(Duration::from_secs(1));
        rules.copy = Some(u32::clone);
        let mut table = Table::new(rules);
        let start = Instant::now();
        table.push(1, 0);
        let ticket = take(&mut table, 1, &mut Clock::at(start))[0].2;
        let end = table.end(
            ticket,
            End::Commit,
            &mut Clock::at(start + Duration::from_secs(1)),
        );
        assert_eq!(end, Err(Expired));
        assert_eq!(table.counts().committed, 0);
        assert_eq!(table.len(), 1, "the item is back, not lost");
    }

    #[test]
    fn the_last_attempt_goes_to_the_dead_letters_with_its_reason() {
        let mut rules = rules(OrderKind::Strict);
        rules.max_attempts = Some(2);
        let mut table = Table::new(rules);
        let mut clock = Clock::at(Instant::now());
        table.push(9, 0);
        for (attempt, panicked) in [(1, false), (2, true)] {
            let (item, meta, ticket) = take(&mut table, 1, &mut clock).remove(0);
            assert_eq!(meta.attempts, attempt);
            let how = End::Rollback {
                item: Some(item),
                delay: None,
                panicked,
            };
            let ended = table.end(ticket, how, &mut clock).unwrap();
            assert_eq!(
                ended,
                if attempt == 2 {
                    Ended::Dead
                } else {
                    Ended::Requeued
                }
            );
        }
        let (entry, reason) = table.take_dead().unwrap();
        assert_eq!(
            (entry.item, entry.meta.attempts, reason),
            (9, 2, DeadLetterReason::Panicked)
        );
    }

    #[test]
    fn backoff_spaces_rollbacks_by_attempt_and_retry_after_wins() {
        let mut rules = rules(OrderKind::Unordered);
        rules.retry = Some(
            RetryPolicy::builder()
                .initial_delay(Duration::from_secs(1))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        );
        let mut table = Table::new(rules);
        let start = Instant::now();
        table.push(1, 0);
        table.push(2, 0);
        let mut clock = Clock::at(start);
        let got = take(&mut table, 2, &mut clock);
        for (item, _, ticket) in got {
            let delay = (item == 2).then(|| Duration::from_secs(5));
            let how = End::Rollback {
                item: Some(item),
                delay,
                panicked: false,
            };
            table.end(ticket, how, &mut clock).unwrap();
        }
        // Item 1 waits the policy's 1 s, item 2 its explicit 5 s.
        assert_eq!(table.next_deadline(), Some(start + Duration::from_secs(1)));
        let mut at = |secs| {
            let mut clock = Clock::at(start + Duration::from_millis(secs));
            table.settle(&mut clock);
            take(&mut table, 2, &mut clock)
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(999), Vec::<u32>::new());
        assert_eq!(at(1_000), [1]);
        assert_eq!(at(4_999), Vec::<u32>::new());
        assert_eq!(at(5_000), [2]);
    }
}
