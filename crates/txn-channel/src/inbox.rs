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
//! **Slots.** Positions count up from 0 and map onto a ring of
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
//! **Listening.** A consumer about to wait sets [`LISTENING`] in the tail,
//! where every sender's claim reads it: the sender whose claim clears it
//! wakes a consumer once its value is written. The mark's read-modify-write
//! returns the positions claimed so far: if one is not drained yet, it is
//! written or being written (nothing between a claim and its write can
//! wait), so the consumer waits for that write instead of sleeping. Both
//! sides are read-modify-writes of the one tail, so no fence is needed, and
//! a send costs two atomic read-modify-writes in all: its capacity slot and
//! its claim — the write itself is a plain release store.
//!
//! **Closing.** The tail carries [`CLOSED`]: once set, no position is
//! claimed. A position claimed before is being written (the claim and the
//! write have nothing between them that can wait), so whoever closes drains
//! up to the last claimed position, spinning on those writes.
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
    AtomicPtr, AtomicUsize,
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
/// In the tail: no position is claimed any more.
const CLOSED: usize = 1;
/// In the tail: a consumer waits for the next value.
const LISTENING: usize = 2;
/// The tail's positions are shifted past its flags.
const SHIFT: u32 = 2;
/// One position, in the tail.
const STEP: usize = 1 << SHIFT;

struct Slot<T> {
    stamp: AtomicUsize,
    /// The value and its key (per key; 0 otherwise).
    value: UnsafeCell<MaybeUninit<(T, u64)>>,
}

struct Segment<T> {
    slots: Box<[Slot<T>]>,
}

impl<T> Segment<T> {
    /// The segment whose first slot is slot `first` of the ring: each slot
    /// waits for its position of the first lap.
    fn new(first: usize) -> Self {
        Segment {
            slots: (first..first + SEGMENT)
                .map(|index| Slot {
                    stamp: AtomicUsize::new(index << 1),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
        }
    }
}

/// What [`Inbox::push`] did with a value.
pub(crate) enum Push<T> {
    /// Queued; `wake`: a consumer listened for it.
    Queued { wake: bool },
    /// The inbox is closed: the value back.
    Closed(T),
    /// The ring is full: the value back, to be queued under the lock.
    Full(T),
}

pub(crate) struct Inbox<T> {
    /// Positions claimed, shifted by [`SHIFT`], plus [`CLOSED`] and
    /// [`LISTENING`].
    tail: CachePadded<AtomicUsize>,
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
            tail: CachePadded::new(AtomicUsize::new(0)),
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

    /// Queues `value` (with its `key`) at the tail, without waiting.
    ///
    /// The caller holds one of the channel's capacity slots for it.
    pub(crate) fn push(&self, value: T, key: u64) -> Push<T> {
        let mut tail = self.tail.load(Acquire);
        loop {
            if tail & CLOSED != 0 {
                return Push::Closed(value);
            }
            let pos = tail >> SHIFT;
            let slot = self.slot(pos);
            let stamp = slot.stamp.load(Acquire);
            if stamp != pos << 1 {
                if stamp >> 1 < pos {
                    // The slot still holds the previous lap.
                    return Push::Full(value);
                }
                // Another sender claimed `pos` since the tail was read.
                tail = self.tail.load(Acquire);
                continue;
            }
            match self
                .tail
                .compare_exchange_weak(tail, (tail + STEP) & !LISTENING, AcqRel, Acquire)
            {
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
                        wake: tail & LISTENING != 0,
                    };
                }
                Err(now) => tail = now,
            }
        }
    }

    /// Moves the values written from `head` on into `each`, in order, up to
    /// the first position not written yet; returns how many.
    ///
    /// Only one caller at a time (the holder of the channel's lock), which
    /// keeps `head`.
    pub(crate) fn drain(&self, head: &mut usize, mut each: impl FnMut(T, u64)) -> usize {
        let mut moved = 0;
        loop {
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
            slot.stamp.store((pos + self.slots) << 1, Release);
            *head = pos + 1;
            moved += 1;
            each(value, key);
        }
    }

    /// [`drain`](Self::drain) until `head` reaches `upto` (a position claimed
    /// already), waiting for the writes in progress: a sender writes the
    /// position it claimed at once, with nothing between that can wait.
    pub(crate) fn drain_to(&self, head: &mut usize, upto: usize, mut each: impl FnMut(T, u64)) {
        let mut spins = 0_u32;
        while *head < upto {
            if self.drain(head, &mut each) == 0 {
                backoff(&mut spins);
            }
        }
    }

    /// Positions claimed so far (written or being written).
    pub(crate) fn claimed(&self) -> usize {
        self.tail.load(Acquire) >> SHIFT
    }

    /// Closes the inbox: no value is queued from now on. Returns the
    /// positions claimed before, for the caller to [`drain_to`](Self::drain_to).
    pub(crate) fn close(&self) -> usize {
        self.tail.fetch_or(CLOSED, AcqRel) >> SHIFT
    }

    /// For a consumer about to wait, with `head` the drainer's: sets
    /// [`LISTENING`], so that the next sender to claim a position wakes a
    /// consumer once it wrote its value. `true` if a value was claimed
    /// already: the caller drains instead of waiting (this returns once the
    /// one at the head is written).
    pub(crate) fn listen(&self, head: usize) -> bool {
        let claimed = self.tail.fetch_or(LISTENING, AcqRel) >> SHIFT;
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
    //! The inbox's protocol under loom (a ring of two slots):
    //! concurrent senders, the drainer, a listening consumer and a close.

    use async_patterns_core::__private::loom::Arc;
    use loom::thread;

    use super::{Inbox, Push};

    fn queued(push: Push<u32>) -> bool {
        match push {
            Push::Queued { .. } => true,
            Push::Closed(_) | Push::Full(_) => false,
        }
    }

    /// Two senders and a drainer draining while they send: every value comes
    /// out once, each sender's in the order it sent them.
    #[test]
    fn two_senders_and_a_drainer_lose_nothing_and_keep_each_senders_order() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            let a = {
                let inbox = inbox.clone();
                thread::spawn(move || queued(inbox.push(10, 0)))
            };
            let b = {
                let inbox = inbox.clone();
                thread::spawn(move || queued(inbox.push(20, 0)))
            };
            let mut head = 0;
            let mut out = Vec::new();
            inbox.drain(&mut head, |v, _| out.push(v));
            assert!(a.join().unwrap() && b.join().unwrap(), "room for both");
            inbox.drain_to(&mut head, inbox.claimed(), |v, _| out.push(v));
            out.sort_unstable();
            assert_eq!(out, [10, 20]);
        });
    }

    /// One sender sends three values into a ring of two slots while the
    /// drainer drains: a value that finds the ring full comes back, and
    /// what was queued comes out in order.
    #[test]
    fn a_full_ring_hands_the_value_back_and_keeps_the_order() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::<u32>::new(2));
            let sender = {
                let inbox = inbox.clone();
                thread::spawn(move || {
                    let mut queued_ones = Vec::new();
                    for v in 1..=3 {
                        if queued(inbox.push(v, u64::from(v))) {
                            queued_ones.push(v);
                        }
                    }
                    queued_ones
                })
            };
            let mut head = 0;
            let mut out = Vec::new();
            inbox.drain(&mut head, |v, key| {
                assert_eq!(u64::from(v), key, "a value keeps its key");
                out.push(v);
            });
            let queued_ones = sender.join().unwrap();
            assert!(queued_ones.len() >= 2, "two slots are room for two");
            inbox.drain_to(&mut head, inbox.claimed(), |v, _| out.push(v));
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
            let sender = {
                let inbox = inbox.clone();
                thread::spawn(move || match inbox.push(7, 0) {
                    Push::Queued { wake } => wake,
                    Push::Closed(_) | Push::Full(_) => panic!("open, with room"),
                })
            };
            let mut head = 0;
            let mut seen = inbox.drain(&mut head, |_, _| {}) == 1;
            if !seen {
                seen = inbox.listen(head);
            }
            let woken = sender.join().unwrap();
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
                .map(|v| {
                    let inbox = inbox.clone();
                    thread::spawn(move || queued(inbox.push(v, 0)).then_some(v))
                })
                .collect();
            let mut head = 0;
            let mut out = Vec::new();
            let claimed = inbox.close();
            inbox.drain_to(&mut head, claimed, |v, _| out.push(v));
            let mut accepted: Vec<u32> = senders
                .into_iter()
                .filter_map(|s| s.join().unwrap())
                .collect();
            accepted.sort_unstable();
            out.sort_unstable();
            assert_eq!(out, accepted);
            assert!(matches!(inbox.push(3, 0), Push::Closed(3)));
        });
    }
}
