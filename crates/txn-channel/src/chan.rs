//! The state shared by the senders and the receiver of a channel: the queue of
//! sent items, the count of capacity slots in use, and the FIFO of senders
//! waiting for a slot.
//!
//! A slot is taken when a value is sent (or reserved) and given back only when
//! the receiver commits or dead-letters the item, so `capacity` bounds every
//! item that has not left the channel — queued, held by the receiver, or
//! rolled back — not only those still queued.
//!
//! The receiver gives slots back without taking the lock: `used` is an
//! atomic, and its top bit, [`WAITING`], says whether senders wait. Both the
//! release (`fetch_sub`) and a sender that starts to wait (`fetch_or`) are
//! read-modify-writes of that one atomic, so one of them always sees the
//! other: either the release sees the flag and hands the slot to the oldest
//! waiter, or the sender sees the free slot and takes it.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use crate::loom::{
    AtomicUsize, Mutex, MutexGuard,
    Ordering::{AcqRel, Acquire},
};

/// Set in [`Chan::used`] while at least one sender waits for a slot.
const WAITING: usize = 1 << (usize::BITS - 1);

/// The largest capacity a channel can have: the bits below [`WAITING`].
pub(crate) const MAX_CAPACITY: usize = WAITING - 1;

/// How many wakers are collected under the lock before it is released to
/// wake them; more are handled in further rounds.
const WAKE_BATCH: usize = 16;

pub(crate) struct Chan<T> {
    state: Mutex<State<T>>,
    /// Slots in use, plus [`WAITING`]. Senders add under the lock; the
    /// receiver subtracts without it.
    used: AtomicUsize,
    capacity: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    /// Set by the receiver (closed or dropped): no value is accepted anymore.
    closed: bool,
    rx_waker: Option<Waker>,
    /// Senders waiting for a slot, oldest first; empty exactly when
    /// [`WAITING`] is clear.
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// Waiters are granted slots in id order: a live waiter whose id is at
    /// most this one holds a slot.
    last_granted: u64,
}

struct Waiter {
    id: u64,
    waker: Waker,
}

/// The channel is closed: the receiver closed it or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// What [`Chan::try_take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Items were moved to the receiver's buffer.
    Some,
    /// Nothing queued, senders still alive.
    Empty,
    /// Nothing queued and nothing will be: every sender is gone or the
    /// receiver closed the channel.
    End,
}

/// A sender's place among the waiters, kept by whatever waits for a slot (a
/// send future, a reservation, the receiver's dead-letter path). Its owner
/// must call [`Chan::cancel_wait`] if it stops waiting before the slot comes.
#[derive(Debug, Default)]
pub(crate) struct WaitSlot(Option<u64>);

impl WaitSlot {
    pub(crate) fn is_waiting(&self) -> bool {
        self.0.is_some()
    }
}

/// Wakers collected under the lock, woken after it is released.
struct WakeList {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
}

impl WakeList {
    fn new() -> Self {
        WakeList {
            wakers: std::array::from_fn(|_| None),
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == WAKE_BATCH
    }

    fn push(&mut self, waker: Waker) {
        self.wakers[self.len] = Some(waker);
        self.len += 1;
    }

    fn wake_all(&mut self) {
        for waker in self.wakers[..self.len].iter_mut() {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
        }
        self.len = 0;
    }
}

impl<T> Chan<T> {
    /// A channel with one sender.
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!((1..=MAX_CAPACITY).contains(&capacity));
        Chan {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                senders: 1,
                closed: false,
                rx_waker: None,
                waiters: VecDeque::new(),
                next_waiter: 1,
                last_granted: 0,
            }),
            used: AtomicUsize::new(0),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while the lock is held except a foreign waker's
        // clone; the state is consistent between statements, so a poisoned
        // lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ----- senders -------------------------------------------------------

    pub(crate) fn add_sender(&self) {
        self.lock().senders += 1;
    }

    pub(crate) fn drop_sender(&self) {
        let mut st = self.lock();
        st.senders -= 1;
        let waker = if st.senders == 0 {
            st.rx_waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Sends `value` if a slot is free and no earlier sender waits for one.
    pub(crate) fn try_send(&self, value: T) -> Result<(), (T, bool)> {
        let mut st = self.lock();
        if st.closed {
            return Err((value, true));
        }
        if !self.try_take_slot(&st) {
            return Err((value, false));
        }
        let waker = Self::push_locked(&mut st, value);
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
    ) -> Poll<Result<(), Closed>> {
        let mut st = self.lock();
        let polled = self.poll_slot_locked(&mut st, cx, slot);
        let rx_waker = match polled {
            Poll::Ready(Ok(())) => match value.take() {
                Some(value) => Self::push_locked(&mut st, value),
                None => None,
            },
            _ => None,
        };
        drop(st);
        wake(rx_waker);
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
    pub(crate) fn send_reserved(&self, value: T) -> Result<(), T> {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.release(1);
            return Err(value);
        }
        let waker = Self::push_locked(&mut st, value);
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
        // Other senders are excluded by the lock and the receiver only ever
        // frees slots, so a free slot seen here stays free until taken.
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
                // The receiver freed a slot after `try_take_slot` looked and
                // before the flag was up, so it did not look for waiters:
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

    fn push_locked(st: &mut State<T>, value: T) -> Option<Waker> {
        st.queue.push_back(value);
        st.rx_waker.take()
    }

    // ----- slots ---------------------------------------------------------

    /// Gives back `n` slots (items committed or dead-lettered, a reservation
    /// dropped) and hands them to waiting senders, oldest first.
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

    // ----- receiver ------------------------------------------------------

    /// Moves every queued item to the end of `buf` without waiting.
    pub(crate) fn try_take(&self, buf: &mut VecDeque<T>) -> Taken {
        let mut st = self.lock();
        Self::take_locked(&mut st, buf)
    }

    /// Moves every queued item to the end of `buf`, waiting for one if none
    /// is queued. `Ready(false)` at the end of the channel.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, buf: &mut VecDeque<T>) -> Poll<bool> {
        let mut st = self.lock();
        match Self::take_locked(&mut st, buf) {
            Taken::Some => Poll::Ready(true),
            Taken::End => Poll::Ready(false),
            Taken::Empty => {
                match &st.rx_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.rx_waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn take_locked(st: &mut State<T>, buf: &mut VecDeque<T>) -> Taken {
        if st.queue.is_empty() {
            return if st.senders == 0 || st.closed {
                Taken::End
            } else {
                Taken::Empty
            };
        }
        if buf.is_empty() {
            // Swapping hands the whole queue over in O(1); the empty buffer,
            // reset to the start of its allocation, becomes the new queue so
            // the next batch arrives contiguous.
            buf.clear();
            std::mem::swap(buf, &mut st.queue);
        } else {
            buf.append(&mut st.queue);
        }
        Taken::Some
    }

    /// Refuses new values and wakes every waiting sender; queued items stay
    /// receivable.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        let waiters = std::mem::take(&mut st.waiters);
        if !waiters.is_empty() {
            self.used.fetch_and(!WAITING, AcqRel);
        }
        drop(st);
        for waiter in waiters {
            waiter.waker.wake();
        }
    }

    /// Closes the channel and takes out what is still queued, so that it is
    /// dropped by the caller, outside the lock (an item's `Drop` may use the
    /// channel).
    pub(crate) fn close_and_drain(&self) -> VecDeque<T> {
        self.close();
        std::mem::take(&mut self.lock().queue)
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The receiver's handle on the channel: closes it and drops what is queued
/// when the receiver goes away.
pub(crate) struct RxHandle<T>(pub(crate) crate::loom::Arc<Chan<T>>);

impl<T> Drop for RxHandle<T> {
    fn drop(&mut self) {
        drop(self.0.close_and_drain());
    }
}
