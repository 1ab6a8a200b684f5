//! The senders' hand-off to the channel's table: a lock-free queue that
//! any number of senders push into and whoever holds the channel's lock
//! drains, in the order the values were queued.
//!
//! A sender never takes a lock to queue a value, and a consumer's look does
//! not stop it: the consumer reads what the senders wrote, slot by slot,
//! without writing anything a sender reads for its next value (until it
//! comes round to that slot again). A lock here (the inbox of 0.2's first
//! cut) put the sender and a consumer that looks for every few items on
//! one contended lock, and the sender to sleep on it.
//!
//! **Slots.** Positions count up (modulo 2^30) and map onto a ring of
//! `slots` (a power of two, at least the channel's capacity up to
//! [`MAX_SLOTS`]), allocated in segments of [`SEGMENT`] the first time a
//! sender reaches them, so that memory follows what the channel holds as a
//! `VecDeque` would. Each slot's stamp says which position it holds and
//! whether it is written (Dmitry Vyukov's bounded queue): `pos << 1` while
//! it waits for position `pos`, `| FULL` once written; the drainer frees it
//! for the next lap with `(pos + slots) << 1`. A sender claims the position
//! at the tail with a compare-and-swap, once the slot's stamp says it is
//! free for it, writes, and publishes with a release store.
//!
//! **One word.** The positions claimed share one atomic word with the
//! channel's capacity count ([`USED`], with [`WAITING`]: senders wait for a
//! slot) and two flags, [`CLOSED`] and [`LISTENING`]. A send with a free
//! slot takes it and claims its position in one compare-and-swap
//! ([`Inbox::send`]); its write is a plain release store. That one atomic
//! read-modify-write is the whole cost of a send on the sender's side (a
//! tokio mpsc send makes four: its permit, its claim, its slot's ready bit
//! and its receiver's waker).
//!
//! **Listening.** A consumer about to wait sets [`LISTENING`] in the word,
//! which every claim reads: the sender whose claim clears it wakes a
//! consumer once its value is written. The mark's read-modify-write returns
//! the positions claimed so far: if one is not drained yet, it is written
//! or being written (nothing between a claim and its write can wait), so
//! the consumer waits for that write instead of sleeping. Both sides are
//! read-modify-writes of the one word, so no fence is needed, and a sender
//! pays for nothing when nobody listens.
//!
//! **Closing.** [`CLOSED`]: once set, no position is claimed. A position
//! claimed before is being written, so whoever closes drains up to the last
//! claimed position, spinning on those writes.
//!
//! **Full.** Every queued value holds one of the channel's capacity slots,
//! so the ring fills only when the capacity is above [`MAX_SLOTS`] and the
//! consumers are that far behind: the sender then gets its value back
//! ([`Push::Full`]) and queues it under the channel's lock, after
//! draining everything claimed before (see [`Inbox::drain_to`]), so that no
//! sender's values change order.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr;

use async_patterns_core::__private::CachePadded;
use async_patterns_core::__private::loom::{
    AtomicPtr, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Release},
    UnsafeCell, spin_hint,
};

/// Slots per segment (under loom, 2: the models' whole ring, allocated by
/// whichever thread reaches it first).
pub(crate) const SEGMENT: usize = if cfg!(async_patterns_loom) { 2 } else { 32 };
/// The most slots a ring has (its segment table: 2,048 pointers; under
/// loom, 2 slots, so that the models fill it).
pub(crate) const MAX_SLOTS: usize = if cfg!(async_patterns_loom) {
    2
} else {
    1 << 16
};

/// In a stamp: the slot is written.
const FULL: usize = 1;

/// In the word: the channel's capacity slots in use (31 bits).
const USED: u64 = (1 << 31) - 1;
/// In the word: no position is claimed any more.
const CLOSED: u64 = 1 << 31;
/// In the word: a consumer waits for the next value.
const LISTENING: u64 = 1 << 32;
/// In the word: at least one sender waits for a capacity slot (set and
/// cleared by the channel, under its lock).
pub(crate) const WAITING: u64 = 1 << 33;
/// The word's positions claimed are its top bits.
const POS_SHIFT: u32 = 34;
/// One position, in the word.
const POS_ONE: u64 = 1 << POS_SHIFT;
/// Positions count modulo 2^30 (the word's top 30 bits); a ring is far
/// smaller, so that a slot's stamp is never mistaken for another lap's.
const POS_MASK: usize = (1 << (64 - POS_SHIFT)) - 1;

/// The largest capacity a channel can have: half of what [`USED`] counts,
/// so that a receiver over a stream (whose capacity this is, and which may
/// hold more than it in bursts of pulled items) never carries into the
/// flags.
pub(crate) const MAX_CAPACITY: usize = 1 << 30;

/// The position in `word`.
fn pos_of(word: u64) -> usize {
    // The top 30 bits: the cast cannot truncate.
    (word >> POS_SHIFT) as usize
}

/// The capacity slots in use in `word`.
pub(crate) fn used_of(word: u64) -> usize {
    // 31 bits: the cast cannot truncate.
    (word & USED) as usize
}

struct Slot<T> {
    stamp: AtomicUsize,
    /// The value and its key (per key; 0 otherwise).
    value: UnsafeCell<MaybeUninit<(T, u64)>>,
}

struct Segment<T> {
    /// In line: a slot is one pointer away from the ring's table.
    slots: [Slot<T>; SEGMENT],
}

impl<T> Segment<T> {
    /// The segment whose first slot is slot `first` of the ring: each slot
    /// waits for its position of the first lap.
    fn new(first: usize) -> Self {
        Segment {
            slots: std::array::from_fn(|offset| Slot {
                stamp: AtomicUsize::new((first + offset) << 1),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            }),
        }
    }
}

/// What [`Inbox::push`] or [`Inbox::send`] did with a value.
pub(crate) enum Push<T> {
    /// Queued; `wake`: a consumer listened for it.
    Queued { wake: bool },
    /// The inbox is closed: the value back.
    Closed(T),
    /// The ring is full: the value back, to be queued under the lock (no
    /// capacity slot taken).
    Full(T),
    /// [`send`](Inbox::send) only: no capacity slot is free, or senders wait
    /// for one: the value back.
    NoSlot(T),
}

pub(crate) struct Inbox<T> {
    /// The channel's capacity slots in use ([`USED`]), [`CLOSED`],
    /// [`LISTENING`], [`WAITING`] and the positions claimed: one word, so
    /// that a send takes its slot and claims its position in one
    /// compare-and-swap.
    word: CachePadded<AtomicU64>,
    /// The ring's segments, allocated when first reached.
    segments: Box<[AtomicPtr<Segment<T>>]>,
    /// Slots in the ring (a power of two).
    slots: usize,
    /// Values are moved in and out, never shared: see the `Send` and
    /// `Sync` impls.
    _values: PhantomData<*mut T>,
}

// SAFETY: the inbox owns the values queued in it and only moves them (a
// sender writes one into a slot it claimed, the drainer reads it out after
// the slot's stamp says it is written, and `Drop` drops what is left); no
// `&T` is ever handed out. Sending values between threads is what a channel
// does, so `T: Send` is what both need, as for `Mutex<VecDeque<T>>`.
unsafe impl<T: Send> Send for Inbox<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Inbox<T> {}

impl<T> Inbox<T> {
    /// An inbox for a channel of `capacity` slots.
    pub(crate) fn new(capacity: usize) -> Self {
        let slots = capacity
            .checked_next_power_of_two()
            .unwrap_or(MAX_SLOTS)
            .clamp(SEGMENT, MAX_SLOTS);
        Inbox {
            word: CachePadded::new(AtomicU64::new(0)),
            segments: (0..slots / SEGMENT)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            slots,
            _values: PhantomData,
        }
    }

    /// The slot of position `pos`, allocating its segment if nobody did.
    #[inline]
    fn slot(&self, pos: usize) -> &Slot<T> {
        let index = pos & (self.slots - 1);
        let cell = &self.segments[index / SEGMENT];
        let mut segment = cell.load(Acquire);
        if segment.is_null() {
            segment = Self::allocate(cell, index);
        }
        // SAFETY: a segment, once in the ring, is freed only by `Drop`, which
        // has `&mut self`; the returned reference borrows `self`.
        unsafe { &(*segment).slots[index % SEGMENT] }
    }

    /// Puts the segment of slot `index` in `cell` unless another thread
    /// did first; returns the one in place.
    #[cold]
    fn allocate(cell: &AtomicPtr<Segment<T>>, index: usize) -> *mut Segment<T> {
        let fresh = Box::into_raw(Box::new(Segment::new(index - index % SEGMENT)));
        match cell.compare_exchange(ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(theirs) => {
                // SAFETY: `fresh` came from `Box::into_raw` above and was
                // never shared: the exchange failed.
                drop(unsafe { Box::from_raw(fresh) });
                theirs
            }
        }
    }

    /// The slot of position `pos` if its segment exists.
    #[inline]
    fn slot_if_allocated(&self, pos: usize) -> Option<&Slot<T>> {
        let index = pos & (self.slots - 1);
        let segment = self.segments[index / SEGMENT].load(Acquire);
        // SAFETY: as in `slot`.
        (!segment.is_null()).then(|| unsafe { &(*segment).slots[index % SEGMENT] })
    }

    /// Queues `value` (with its `key`) at the tail, without waiting, with
    /// a capacity slot the caller holds.
    #[inline]
    pub(crate) fn push(&self, value: T, key: u64) -> Push<T> {
        self.enqueue(value, key, None)
    }

    /// Takes a capacity slot, if one of `capacity` is free and no sender
    /// waits for one, and queues `value` (with its `key`) with it, in one
    /// compare-and-swap; without waiting.
    #[inline]
    pub(crate) fn send(&self, value: T, key: u64, capacity: usize) -> Push<T> {
        self.enqueue(value, key, Some(capacity))
    }

    #[inline]
    fn enqueue(&self, value: T, key: u64, take_slot: Option<usize>) -> Push<T> {
        let mut word = self.word.load(Acquire);
        loop {
            if word & CLOSED != 0 {
                return Push::Closed(value);
            }
            if let Some(capacity) = take_slot
                && (word & WAITING != 0 || used_of(word) >= capacity)
            {
                return Push::NoSlot(value);
            }
            let pos = pos_of(word);
            let slot = self.slot(pos);
            let stamp = slot.stamp.load(Acquire);
            if stamp != pos << 1 {
                let behind = pos.wrapping_sub(stamp >> 1) & POS_MASK;
                if behind != 0 && behind <= self.slots {
                    // The slot still holds the previous lap.
                    return Push::Full(value);
                }
                // Another sender claimed `pos` since the word was read.
                word = self.word.load(Acquire);
                continue;
            }
            let next = word.wrapping_add(POS_ONE + u64::from(take_slot.is_some())) & !LISTENING;
            match self.word.compare_exchange_weak(word, next, AcqRel, Acquire) {
                Ok(_) => {
                    // SAFETY: the claim makes this sender the slot's only
                    // writer for `pos`, and the stamp read above (acquire)
                    // says the drainer is done with the previous lap's value;
                    // the drainer reads it only after the store below.
                    slot.value.with_mut(|cell| unsafe {
                        (*cell).write((value, key));
                    });
                    slot.stamp.store((pos << 1) | FULL, Release);
                    return Push::Queued {
                        wake: word & LISTENING != 0,
                    };
                }
                Err(now) => word = now,
            }
        }
    }

    // ----- capacity slots ----------------------------------------------

    /// The word as it is now (for its [`used_of`] and [`WAITING`]).
    #[inline]
    pub(crate) fn word(&self) -> u64 {
        self.word.load(Acquire)
    }

    /// Takes a capacity slot if one of `capacity` is free and no sender
    /// waits for one.
    #[inline]
    pub(crate) fn try_take_slot(&self, capacity: usize) -> bool {
        let mut word = self.word.load(Acquire);
        loop {
            if word & WAITING != 0 || used_of(word) >= capacity {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(word, word + 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// Takes `n` capacity slots, whatever is free.
    pub(crate) fn take_slots(&self, n: usize) {
        self.word.fetch_add(n as u64, AcqRel);
    }

    /// Gives `n` capacity slots back; returns the word before.
    #[inline]
    pub(crate) fn give_slots(&self, n: usize) -> u64 {
        let before = self.word.fetch_sub(n as u64, AcqRel);
        debug_assert!(used_of(before) >= n, "gave back more slots than used");
        before
    }

    /// Sets [`WAITING`]; returns the word before.
    pub(crate) fn set_waiting(&self) -> u64 {
        self.word.fetch_or(WAITING, AcqRel)
    }

    /// Clears [`WAITING`].
    pub(crate) fn clear_waiting(&self) {
        self.word.fetch_and(!WAITING, AcqRel);
    }

    // ----- the drainer -------------------------------------------------

    /// Moves the values written from `head` on into `each`, in order, up to
    /// the first position not written yet; returns how many.
    ///
    /// Only one caller at a time (the holder of the channel's lock), which
    /// keeps `head`.
    pub(crate) fn drain(&self, head: &mut usize, each: impl FnMut(T, u64)) -> usize {
        self.drain_at_most(head, usize::MAX, each)
    }

    /// [`drain`](Self::drain), `limit` values at most.
    fn drain_at_most(&self, head: &mut usize, limit: usize, mut each: impl FnMut(T, u64)) -> usize {
        let mut moved = 0;
        while moved < limit {
            let pos = *head;
            let Some(slot) = self.slot_if_allocated(pos) else {
                return moved;
            };
            if slot.stamp.load(Acquire) != (pos << 1) | FULL {
                return moved;
            }
            // SAFETY: the stamp (acquire) says the value is written, and no
            // one else reads this position: the drainer is one at a time.
            let (value, key) = slot
                .value
                .with(|cell| unsafe { (*cell).assume_init_read() });
            slot.stamp
                .store(((pos + self.slots) & POS_MASK) << 1, Release);
            *head = (pos + 1) & POS_MASK;
            moved += 1;
            each(value, key);
        }
        moved
    }

    /// [`drain`](Self::drain) until `head` reaches `upto` (a position claimed
    /// already) and no further, waiting for the writes in progress: a sender
    /// writes the position it claimed at once, with nothing between that can
    /// wait. (Senders may claim and write past `upto` meanwhile: a drain
    /// that went past it would wait for `head` to come round to it again.)
    pub(crate) fn drain_to(&self, head: &mut usize, upto: usize, mut each: impl FnMut(T, u64)) {
        let mut spins = 0_u32;
        while *head != upto {
            let left = upto.wrapping_sub(*head) & POS_MASK;
            if self.drain_at_most(head, left, &mut each) == 0 {
                backoff(&mut spins);
            }
        }
    }

    /// Positions claimed so far (written or being written).
    pub(crate) fn claimed(&self) -> usize {
        pos_of(self.word.load(Acquire))
    }

    /// Closes the inbox: no value is queued from now on. Returns the
    /// positions claimed before, for the caller to [`drain_to`](Self::drain_to).
    pub(crate) fn close(&self) -> usize {
        pos_of(self.word.fetch_or(CLOSED, AcqRel))
    }

    /// For a consumer about to wait, with `head` the drainer's: sets
    /// [`LISTENING`], so that the next sender to claim a position wakes a
    /// consumer once it wrote its value. `true` if a value was claimed
    /// already: the caller drains instead of waiting (this returns once the
    /// one at the head is written).
    pub(crate) fn listen(&self, head: usize) -> bool {
        let claimed = pos_of(self.word.fetch_or(LISTENING, AcqRel));
        if claimed == head {
            return false;
        }
        let slot = self.slot(head);
        let mut spins = 0_u32;
        while slot.stamp.load(Acquire) != (head << 1) | FULL {
            backoff(&mut spins);
        }
        true
    }
}

/// Waits a little for a sender's write in progress: spins, then (the
/// writer was preempted between its claim and its write) lets it run.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        spin_hint();
    } else {
        #[cfg(not(async_patterns_loom))]
        std::thread::yield_now();
        #[cfg(async_patterns_loom)]
        spin_hint();
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        for cell in self.segments.iter() {
            let segment = cell.load(Acquire);
            if segment.is_null() {
                continue;
            }
            // SAFETY: the segment came from `Box::into_raw` in `slot` and is
            // freed only here, once; `&mut self` means no one else uses it.
            let segment = unsafe { Box::from_raw(segment) };
            for slot in segment.slots.iter() {
                if slot.stamp.load(Acquire) & FULL != 0 {
                    // SAFETY: a written slot not drained holds a value; with
                    // no sender or drainer left, dropping it here is the
                    // only access.
                    slot.value
                        .with_mut(|cell| unsafe { (*cell).assume_init_drop() });
                }
            }
        }
    }
}

#[cfg(all(test, async_patterns_loom))]
mod loom_models {
    //! The inbox's protocol under loom (a ring of two slots): concurrent
    //! senders, the drainer, a listening consumer and a close.
    //!
    //! Every side of a race runs on a spawned thread, the model's own thread
    //! only joins them: loom 0.7 does not explore a spawned thread running
    //! ahead of its parent's next operation when that operation does not
    //! touch what the child touches first (a child that loads a word before
    //! it updates it never updates it before the parent reads it).

    use async_patterns_core::__private::loom::Arc;
    use loom::thread::{self, JoinHandle};

    use super::{Inbox, Push, used_of};

    fn queued(push: Push<u32>) -> bool {
        match push {
            Push::Queued { .. } => true,
            Push::Closed(_) | Push::Full(_) | Push::NoSlot(_) => false,
        }
    }

    /// Runs `f` on a thread of its own with a handle on `inbox`.
    fn on_thread<R: 'static>(
        inbox: &Arc<Inbox<u32>>,
        f: impl FnOnce(&Inbox<u32>) -> R + 'static,
    ) -> JoinHandle<R> {
        let inbox = inbox.clone();
        thread::spawn(move || f(&inbox))
    }

    /// Drains what is written, then what was claimed (once the senders are
    /// done), in order.
    fn drain_all(inbox: &Inbox<u32>, head: &mut usize, out: &mut Vec<u32>) {
        inbox.drain_to(head, inbox.claimed(), |v, _| out.push(v));
    }

    /// Two senders and a drainer draining while they send: every value comes
    /// out once.
    #[test]
    fn two_senders_and_a_drainer_lose_nothing() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            let a = on_thread(&inbox, |inbox| queued(inbox.push(10, 0)));
            let b = on_thread(&inbox, |inbox| queued(inbox.push(20, 0)));
            let drainer = on_thread(&inbox, |inbox| {
                let mut head = 0;
                let mut out = Vec::new();
                inbox.drain(&mut head, |v, _| out.push(v));
                (head, out)
            });
            assert!(a.join().unwrap() && b.join().unwrap(), "room for both");
            let (mut head, mut out) = drainer.join().unwrap();
            drain_all(&inbox, &mut head, &mut out);
            out.sort_unstable();
            assert_eq!(out, [10, 20]);
        });
    }

    /// One sender sends three values into a ring of two slots while the
    /// drainer drains: a value that finds the ring full comes back, and
    /// what was queued comes out in order, each with its key.
    #[test]
    fn a_full_ring_hands_the_value_back_and_keeps_the_order() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            let sender = on_thread(&inbox, |inbox| {
                (1..=3)
                    .filter(|&v| queued(inbox.push(v, u64::from(v))))
                    .collect::<Vec<_>>()
            });
            let drainer = on_thread(&inbox, |inbox| {
                let mut head = 0;
                let mut out = Vec::new();
                inbox.drain(&mut head, |v, key| {
                    assert_eq!(u64::from(v), key, "a value keeps its key");
                    out.push(v);
                });
                (head, out)
            });
            let queued_ones = sender.join().unwrap();
            assert!(queued_ones.len() >= 2, "two slots are room for two");
            let (mut head, mut out) = drainer.join().unwrap();
            drain_all(&inbox, &mut head, &mut out);
            assert_eq!(out, queued_ones);
        });
    }

    /// A consumer drains, finds nothing and listens while a sender sends:
    /// either the consumer sees the value (drained, or `listen` says it
    /// came), or the sender is told to wake it.
    #[test]
    fn a_send_racing_a_listen_is_seen_or_wakes() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            let sender = on_thread(&inbox, |inbox| match inbox.push(7, 0) {
                Push::Queued { wake } => wake,
                Push::Closed(_) | Push::Full(_) | Push::NoSlot(_) => {
                    panic!("open, with room")
                }
            });
            let consumer = on_thread(&inbox, |inbox| {
                let mut head = 0;
                let seen = inbox.drain(&mut head, |_, _| {}) == 1 || inbox.listen(head);
                (head, seen)
            });
            let woken = sender.join().unwrap();
            let (mut head, seen) = consumer.join().unwrap();
            assert!(seen || woken, "a value neither seen nor woken for");
            inbox.drain_to(&mut head, 1, |_, _| {});
            assert_eq!(head, 1);
        });
    }

    /// A close racing two sends: a send is either refused (the value back)
    /// or its value is among those the close drains.
    #[test]
    fn a_close_racing_sends_drains_every_value_it_accepted() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            let senders: Vec<_> = [1, 2]
                .into_iter()
                .map(|v| on_thread(&inbox, move |inbox| queued(inbox.push(v, 0)).then_some(v)))
                .collect();
            let closer = on_thread(&inbox, |inbox| {
                let mut head = 0;
                let mut out = Vec::new();
                let claimed = inbox.close();
                inbox.drain_to(&mut head, claimed, |v, _| out.push(v));
                out
            });
            let mut accepted: Vec<u32> = senders
                .into_iter()
                .filter_map(|s| s.join().unwrap())
                .collect();
            let mut out = closer.join().unwrap();
            accepted.sort_unstable();
            out.sort_unstable();
            assert_eq!(out, accepted);
            assert!(matches!(inbox.push(3, 0), Push::Closed(3)));
        });
    }

    /// Two senders take the channel's one capacity slot with their claim
    /// while the drainer gives back the slot of what it drained: a send
    /// finds no slot only while the other's value holds it, and the count
    /// ends at what is still held.
    #[test]
    fn a_send_takes_its_slot_with_its_claim() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(1));
            let senders: Vec<_> = [1, 2]
                .into_iter()
                .map(|v| {
                    on_thread(&inbox, move |inbox| match inbox.send(v, 0, 1) {
                        Push::Queued { .. } => true,
                        Push::NoSlot(_) => false,
                        Push::Closed(_) | Push::Full(_) => panic!("open, with room"),
                    })
                })
                .collect();
            let drainer = on_thread(&inbox, |inbox| {
                let mut head = 0;
                let drained = inbox.drain(&mut head, |_, _| {});
                inbox.give_slots(drained);
                (head, drained)
            });
            let queued = senders
                .into_iter()
                .map(|s| s.join().unwrap())
                .filter(|&queued| queued)
                .count();
            let (mut head, drained) = drainer.join().unwrap();
            assert!(queued >= 1, "the first send finds the slot free");
            if queued == 2 {
                assert_eq!(drained, 1, "the second took the slot the first gave back");
            }
            let rest = inbox.drain(&mut head, |_, _| {});
            assert_eq!(drained + rest, queued);
            assert_eq!(used_of(inbox.word()), queued - drained);
        });
    }

    /// The drainer drains up to the positions claimed when it looked while
    /// a sender goes on claiming and writing past them: it stops there (a
    /// drain that went past would wait for the head to come round again).
    #[test]
    fn a_drain_to_the_claimed_positions_stops_there_while_senders_go_on() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            assert!(queued(inbox.push(1, 0)));
            let sender = on_thread(&inbox, |inbox| queued(inbox.push(2, 0)));
            let drainer = on_thread(&inbox, |inbox| {
                let mut head = 0;
                let mut out = Vec::new();
                let upto = inbox.claimed();
                inbox.drain_to(&mut head, upto, |v, _| out.push(v));
                assert_eq!(head, upto);
                (head, out)
            });
            assert!(sender.join().unwrap(), "room for both");
            let (mut head, mut out) = drainer.join().unwrap();
            drain_all(&inbox, &mut head, &mut out);
            assert_eq!(out, [1, 2]);
        });
    }
}
