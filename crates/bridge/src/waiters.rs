//! [`Waiters`]: the senders sleeping until a full channel has room — blocked
//! threads and pending `send` futures alike. Only the slow path touches it:
//! a sender registers before it marks the slot it waits for, and whoever
//! frees that slot (or closes the channel) wakes every registered sender.
//! Waking all rather than one means a sender that gives up (timeout, dropped
//! future) can never swallow the wake-up another one needed.

use std::fmt;
use std::task::Waker;

use crate::loom::thread::Thread;
use crate::loom::{Mutex, MutexGuard, lock};

/// How to wake one waiting sender.
pub(crate) enum Wake {
    Thread(Thread),
    Task(Waker),
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => waker.wake(),
        }
    }
}

/// A registration, to remove with [`Waiters::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterId(u64);

#[derive(Default)]
struct List {
    next_id: u64,
    entries: Vec<(WaiterId, Wake)>,
}

pub(crate) struct Waiters {
    list: Mutex<List>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Waiters {
            list: Mutex::new(List::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, List> {
        // The list stays consistent even if a waker panicked while it was
        // held: recover rather than poison the channel.
        lock(&self.list)
    }

    pub(crate) fn register(&self, wake: Wake) -> WaiterId {
        let mut list = self.lock();
        let id = WaiterId(list.next_id);
        list.next_id += 1;
        list.entries.push((id, wake));
        id
    }

    /// Replaces the waker of a registered task, or registers it again if it
    /// was woken meanwhile.
    pub(crate) fn reregister(&self, id: Option<WaiterId>, waker: &Waker) -> WaiterId {
        let mut list = self.lock();
        if let Some(id) = id
            && let Some((_, Wake::Task(w))) = list.entries.iter_mut().find(|(i, _)| *i == id)
        {
            w.clone_from(waker);
            return id;
        }
        let id = WaiterId(list.next_id);
        list.next_id += 1;
        list.entries.push((id, Wake::Task(waker.clone())));
        id
    }

    /// Removes a registration if it is still there (it is gone once woken).
    pub(crate) fn remove(&self, id: WaiterId) {
        let mut list = self.lock();
        if let Some(i) = list.entries.iter().position(|(e, _)| *e == id) {
            list.entries.swap_remove(i);
        }
    }

    /// Wakes and unregisters every waiting sender.
    pub(crate) fn wake_all(&self) {
        let woken = std::mem::take(&mut self.lock().entries);
        // Wake outside the lock: a woken thread's first act is to lock it.
        for (_, wake) in woken {
            wake.wake();
        }
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl fmt::Debug for Waiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.len())
            .finish()
    }
}
