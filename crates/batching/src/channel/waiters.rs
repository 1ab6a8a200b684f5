//! The senders waiting for room, in arrival order. Touched only on the slow
//! path: a send that found the channel full, and a receiver that frees room
//! while someone waits.
//!
//! Each waiting `send` owns a slot (its id) until it completes or is
//! dropped, so a future polled many times never takes more than one slot.
//! Room for `n` items wakes at most `n` waiters ("one sender per freed
//! slot"), oldest first. A woken waiter that is dropped before it used its
//! turn passes the turn on, so that no room is left unclaimed while someone
//! sleeps.

use std::collections::VecDeque;
use std::task::Waker;

use async_patterns_core::__private::WakeList;

#[derive(Debug)]
enum Slot {
    Vacant,
    /// Waiting for room, in the queue.
    Waiting(Waker),
    /// Woken for room and not back yet: out of the queue.
    Notified,
}

/// The wait list; lives behind a mutex in the channel.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Ids of the `Waiting` slots, oldest first.
    queue: VecDeque<usize>,
}

impl Waiters {
    /// How many senders wait (not counting notified ones).
    pub(super) fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Makes the sender with slot `id` (allocated on first use) wait with
    /// `waker`; a sender already waiting keeps its place.
    pub(super) fn register(&mut self, id: &mut Option<usize>, waker: &Waker) {
        let index = *id.get_or_insert_with(|| match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot::Vacant);
                self.slots.len() - 1
            }
        });
        match &mut self.slots[index] {
            Slot::Waiting(current) => {
                if !current.will_wake(waker) {
                    *current = waker.clone();
                }
            }
            slot => {
                *slot = Slot::Waiting(waker.clone());
                self.queue.push_back(index);
            }
        }
    }

    /// Gives up slot `id`; true if it had been notified and had not used
    /// its turn, which the caller then passes on.
    pub(super) fn remove(&mut self, id: &mut Option<usize>) -> bool {
        let Some(index) = id.take() else {
            return false;
        };
        let notified = match std::mem::replace(&mut self.slots[index], Slot::Vacant) {
            Slot::Waiting(_) => {
                if let Some(at) = self.queue.iter().position(|&i| i == index) {
                    self.queue.remove(at);
                }
                false
            }
            Slot::Notified => true,
            Slot::Vacant => false,
        };
        self.free.push(index);
        notified
    }

    /// Notifies up to `n` waiters, oldest first, moving their wakers into
    /// `out` until it is full; returns how many it notified.
    pub(super) fn notify(&mut self, n: usize, out: &mut WakeList) -> usize {
        let mut notified = 0;
        while notified < n && !out.is_full() {
            let Some(index) = self.queue.pop_front() else {
                break;
            };
            if let Slot::Waiting(waker) = std::mem::replace(&mut self.slots[index], Slot::Notified)
            {
                out.push(waker);
            }
            notified += 1;
        }
        notified
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wakers(n: usize) -> Vec<(Arc<Count>, Waker)> {
        (0..n)
            .map(|_| {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                let waker = Waker::from(count.clone());
                (count, waker)
            })
            .collect()
    }

    #[test]
    fn room_for_n_wakes_the_n_oldest_waiters() {
        let mut waiters = Waiters::default();
        let ws = wakers(3);
        let mut ids = [None, None, None];
        for (id, (_, waker)) in ids.iter_mut().zip(&ws) {
            waiters.register(id, waker);
        }
        // Registering again keeps the place.
        waiters.register(&mut ids[0], &ws[0].1);
        assert_eq!(waiters.waiting(), 3);
        let mut out = WakeList::new();
        assert_eq!(waiters.notify(2, &mut out), 2);
        out.wake_all();
        let woken: Vec<usize> = ws.iter().map(|(c, _)| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 1, 0]);
        assert_eq!(waiters.waiting(), 1);
        // A notified waiter that gives up says so, to pass its turn on.
        assert!(waiters.remove(&mut ids[0]));
        assert!(!waiters.remove(&mut ids[2]));
        assert_eq!(waiters.waiting(), 0);
        assert!(!waiters.remove(&mut ids[2]), "already removed");
    }
}
