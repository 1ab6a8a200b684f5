//! The bounded lock-free ring behind [`channel`](crate::channel): a
//! multi-producer queue of `capacity` preallocated slots in which each slot
//! carries a stamp saying which position it holds and whether someone waits
//! on it.
//!
//! Positions count up forever (wrapping); a position is `lap + index * UNIT`,
//! where `lap` is a multiple of `one_lap` (the next power of two above the
//! capacity, shifted). A slot's stamp is the position it waits to be written
//! at (empty) or that position plus one `UNIT` (full), with three flag bits
//! below:
//!
//! - `RX_WAITING`: the receiver found this slot at the head not yet readable
//!   and sleeps until it changes.
//! - `TX_WAITING`: a sender found this slot at the tail still taken by the
//!   previous lap and sleeps until it changes.
//! - `RX_GONE`: the receiver was dropped while a sender was writing this slot;
//!   the sender takes its value back and reports the channel closed.
//!
//! Whoever next changes a slot's state (the writer publishing a value, the
//! reader freeing the slot) does so with one atomic swap, which also returns
//! the flags: it wakes the side that asked, and the flags are cleared. So a
//! sender wakes the receiver only when it actually sleeps — no syscall and no
//! extra atomic operation per item — and a woken side simply looks again.
//!
//! The tail carries a `CLOSED` bit: once set, no position is claimed any more.
//! Both ends claim a position with a compare-and-swap, so a sender may also pop
//! (the `DropOldest` overflow policy) while the receiver does.

use std::fmt;
use std::mem::MaybeUninit;

use crate::loom::{AtomicUsize, CachePadded, Ordering, UnsafeCell};

const SHIFT: u32 = 3;
const UNIT: usize = 1 << SHIFT;
const FLAGS: usize = UNIT - 1;

const RX_WAITING: usize = 0b001;
const TX_WAITING: usize = 0b010;
const RX_GONE: usize = 0b100;

/// In `tail`: no more positions are claimed.
const CLOSED: usize = 0b001;

/// The largest capacity a ring accepts. Its slots are allocated up front.
pub(crate) const MAX_CAPACITY: usize = 1 << 24;

/// Why a push did not store its value.
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

/// Who must be woken after a slot changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Wakes(usize);

impl Wakes {
    #[inline]
    pub(crate) fn any(self) -> bool {
        self.0 & (RX_WAITING | TX_WAITING) != 0
    }

    pub(crate) fn receiver(self) -> bool {
        self.0 & RX_WAITING != 0
    }

    pub(crate) fn senders(self) -> bool {
        self.0 & TX_WAITING != 0
    }
}

/// What a pop found.
pub(crate) enum Pop<T> {
    /// The oldest item, and who to wake now that its slot is free.
    Item { value: T, wakes: Wakes },
    /// Nothing to take yet at position `pos`, whose slot showed `stamp`
    /// (for [`Ring::mark_rx_waiting`]).
    Empty { pos: usize, stamp: usize },
    /// Closed, and every claimed position has been taken.
    Closed,
}

/// What a sender that found the ring full should do next.
pub(crate) enum TxWait {
    /// The slot it waits for is marked: the reader that frees it will wake
    /// the registered senders.
    Marked,
    /// The ring is no longer full (or the sender's view was stale): retry.
    Retry,
    /// The ring is closed.
    Closed,
}

struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

pub(crate) struct Ring<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    capacity: usize,
    one_lap: usize,
    /// Claimed positions whose value went back to its sender because the
    /// receiver was gone (see `RX_GONE`); only the rare close race writes it.
    reclaimed: AtomicUsize,
    /// Whether senders pop too (`DropOldest`). If not, the receiver is the
    /// only thread that moves the head and may store it without a
    /// compare-and-swap.
    shared_head: bool,
}

// SAFETY: the ring hands each value from exactly one pusher to exactly one
// popper (the position protocol grants each slot access to one thread at a
// time), so it is `Send`/`Sync` when the values may move between threads.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; `&Ring<T>` only moves `T`s in and out, never shares them.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring of `capacity` slots, `1 <= capacity <= MAX_CAPACITY` (checked by
    /// the builders). `shared_head` if more than one thread may pop.
    pub(crate) fn new(capacity: usize, shared_head: bool) -> Self {
        debug_assert!((1..=MAX_CAPACITY).contains(&capacity));
        let one_lap = (capacity + 1).next_power_of_two() << SHIFT;
        let slots = (0..capacity)
            .map(|i| Slot {
                stamp: AtomicUsize::new(i << SHIFT),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ring {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            reclaimed: AtomicUsize::new(0),
            slots,
            capacity,
            one_lap,
            shared_head,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many positions come before `pos`: the number of claims that
    /// moved an end there. (Positions wrap after at least 2^59 claims.)
    #[inline]
    fn count(&self, pos: usize) -> u64 {
        let laps = (pos & !FLAGS) / self.one_lap;
        laps as u64 * self.capacity as u64 + self.index(pos) as u64
    }

    /// How many values the ring has accepted: positions claimed at the tail,
    /// less those whose value went back to a sender that was writing when
    /// the receiver was dropped.
    pub(crate) fn accepted(&self) -> u64 {
        // Reclaimed first: a reclaim seen here (acquired) comes after its
        // claim, so the tail read next counts that claim too.
        let reclaimed = self.reclaimed.load(Ordering::Acquire) as u64;
        let claimed = self.count(self.tail.load(Ordering::Acquire));
        claimed.saturating_sub(reclaimed)
    }

    #[inline]
    fn index(&self, pos: usize) -> usize {
        (pos & (self.one_lap - 1)) >> SHIFT
    }

    #[inline]
    fn slot(&self, pos: usize) -> &Slot<T> {
        // The index is below `capacity` by construction of the positions.
        &self.slots[self.index(pos)]
    }

    /// The position after `pos`.
    #[inline]
    fn next(&self, pos: usize) -> usize {
        if self.index(pos) + 1 < self.capacity {
            pos.wrapping_add(UNIT)
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Stores `value` at the tail; returns who to wake.
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<Wakes, PushError<T>> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err(PushError::Closed(value));
            }
            let slot = self.slot(tail);
            let stamp = slot.stamp.load(Ordering::Acquire) & !FLAGS;
            if stamp == tail {
                // The slot is free for this lap: claim the position.
                match self.tail.compare_exchange_weak(
                    tail,
                    self.next(tail),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return self.write(slot, tail, value),
                    Err(current) => tail = current,
                }
            } else if self.held_by_previous_lap(stamp, tail) {
                return Err(PushError::Full(value));
            } else {
                // Another sender claimed this position: our tail is stale.
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Whether a slot whose stamp (without flags) is `stamp` still belongs to
    /// the lap before `pos`: full, being written, or being read.
    #[inline]
    fn held_by_previous_lap(&self, stamp: usize, pos: usize) -> bool {
        let previous = pos.wrapping_sub(self.one_lap);
        stamp == previous || stamp == previous.wrapping_add(UNIT)
    }

    #[inline]
    fn write(&self, slot: &Slot<T>, pos: usize, value: T) -> Result<Wakes, PushError<T>> {
        // SAFETY: the successful claim of `pos` gives this thread the slot
        // until it publishes the new stamp: the stamp said "empty at `pos`"
        // (acquired, so the previous reader is done with it) and no one else
        // can claim `pos`.
        slot.value
            .with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
        let previous = slot.stamp.swap(pos.wrapping_add(UNIT), Ordering::AcqRel);
        if previous & RX_GONE != 0 {
            // The receiver is gone and skipped this slot: nobody will read
            // it, so the value goes back to its sender.
            // SAFETY: the receiver marked the slot gone before the value was
            // published and moved past it; this thread wrote the value and is
            // the only one to touch the slot again.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            slot.stamp.store(pos | RX_GONE, Ordering::Release);
            self.reclaimed.fetch_add(1, Ordering::Release);
            return Err(PushError::Closed(value));
        }
        Ok(Wakes(previous))
    }

    /// Takes the oldest item.
    #[inline]
    pub(crate) fn pop(&self) -> Pop<T> {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire) & !FLAGS;
            if stamp == head.wrapping_add(UNIT) {
                let claimed = if self.shared_head {
                    self.head.compare_exchange_weak(
                        head,
                        self.next(head),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                } else {
                    // The only popper: nobody else can move the head.
                    self.head.store(self.next(head), Ordering::Release);
                    Ok(head)
                };
                match claimed {
                    Ok(_) => {
                        // SAFETY: the stamp said "full at `head`" (acquired,
                        // so the write is visible) and the claim of `head`
                        // makes this thread its only reader.
                        let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                        let previous = slot
                            .stamp
                            .swap(head.wrapping_add(self.one_lap), Ordering::AcqRel);
                        return Pop::Item {
                            value,
                            wakes: Wakes(previous),
                        };
                    }
                    Err(current) => head = current,
                }
            } else if self.tail.load(Ordering::Acquire) == head | CLOSED {
                return Pop::Closed;
            } else if stamp == head || self.held_by_previous_lap(stamp, head) {
                // Not written yet (a sender is writing it, or will), or the
                // previous lap's item is still being read by another popper.
                return Pop::Empty { pos: head, stamp };
            } else {
                // Another popper took this position: our head is stale.
                head = self.head.load(Ordering::Acquire);
            }
        }
    }

    /// Marks the slot of `pos`, found by [`pop`](Self::pop) showing `stamp`,
    /// so that whoever changes it next wakes the receiver. `false` if it
    /// changed meanwhile (pop again).
    pub(crate) fn mark_rx_waiting(&self, pos: usize, stamp: usize) -> bool {
        self.mark(pos, stamp, RX_WAITING)
    }

    /// Sets `flag` on the slot of `pos` if its stamp (without flags) is still
    /// `expected`.
    fn mark(&self, pos: usize, expected: usize, flag: usize) -> bool {
        let slot = self.slot(pos);
        let mut current = slot.stamp.load(Ordering::Relaxed);
        loop {
            if current & !FLAGS != expected {
                return false;
            }
            match slot.stamp.compare_exchange_weak(
                current,
                current | flag,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// For a sender that found the ring full: marks the slot at the tail,
    /// still held by the previous lap, so that whoever changes it next wakes
    /// the waiting senders. Call it after registering as a waiter.
    pub(crate) fn mark_tx_waiting(&self) -> TxWait {
        let tail = self.tail.load(Ordering::Acquire);
        if tail & CLOSED != 0 {
            return TxWait::Closed;
        }
        let stamp = self.slot(tail).stamp.load(Ordering::Acquire) & !FLAGS;
        if self.held_by_previous_lap(stamp, tail) && self.mark(tail, stamp, TX_WAITING) {
            TxWait::Marked
        } else {
            TxWait::Retry
        }
    }

    /// Stops all further pushes. `true` if this call closed the ring.
    pub(crate) fn close(&self) -> bool {
        self.tail.fetch_or(CLOSED, Ordering::AcqRel) & CLOSED == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tail.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Closed, and nothing left to take at `pos` or after it.
    pub(crate) fn is_drained_at(&self, pos: usize) -> bool {
        self.tail.load(Ordering::Acquire) == pos | CLOSED
    }

    /// The number of items stored, as of some instant during the call.
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::Acquire) & !CLOSED;
            let head = self.head.load(Ordering::Acquire);
            if self.tail.load(Ordering::Acquire) & !CLOSED != tail {
                continue;
            }
            let (hix, tix) = (self.index(head), self.index(tail));
            return if hix < tix {
                tix - hix
            } else if hix > tix {
                self.capacity - hix + tix
            } else if tail == head {
                0
            } else {
                self.capacity
            };
        }
    }

    /// For a receiver that is dropped: closes the ring and drops every item
    /// in it. Senders still writing a slot they claimed before the close get
    /// their value back. Returns the number of items dropped.
    pub(crate) fn close_and_drain(&self) -> usize {
        self.close();
        let mut dropped = 0;
        loop {
            match self.pop() {
                Pop::Item { value, .. } => {
                    // Count first: a panicking destructor must not hide the loss.
                    dropped += 1;
                    drop(value);
                }
                Pop::Closed => return dropped,
                Pop::Empty { pos, stamp } => {
                    // A sender claimed `pos` before the close and is writing
                    // it. Mark the slot gone (the sender then takes its value
                    // back) and move past it; if it was written meanwhile,
                    // pop it on the next turn. (A slot still being read by
                    // another popper cannot be at the head here: nothing
                    // after it could have been claimed, so the ring would
                    // be drained.)
                    if stamp == pos && self.mark(pos, pos, RX_GONE) {
                        let _ = self.head.compare_exchange(
                            pos,
                            self.next(pos),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                }
            }
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        // Exclusive access: every claimed position has been written or handed
        // back. Normally the receiver drained everything already.
        let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
        let mut pos = self.head.load(Ordering::Relaxed);
        while pos != tail {
            let slot = self.slot(pos);
            if slot.stamp.load(Ordering::Relaxed) & !FLAGS == pos.wrapping_add(UNIT) {
                // SAFETY: the slot is full at `pos` and no handle is left to
                // read it.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
            pos = self.next(pos);
        }
    }
}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}
