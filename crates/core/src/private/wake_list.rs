//! Wakers collected while a lock is held and woken after it is released, on
//! the stack, so that waking allocates nothing and no waker runs under the
//! lock (a waker may run arbitrary code, even take the same lock).

use std::task::Waker;

/// How many wakers one round holds; a caller with more takes another round.
const CAPACITY: usize = 32;

/// A fixed-size list of wakers to wake once the lock is released.
#[derive(Debug)]
pub struct WakeList {
    wakers: [Option<Waker>; CAPACITY],
    len: usize,
}

impl Default for WakeList {
    fn default() -> Self {
        WakeList::new()
    }
}

impl WakeList {
    /// An empty list.
    pub fn new() -> Self {
        WakeList {
            wakers: std::array::from_fn(|_| None),
            len: 0,
        }
    }

    /// How many wakers one round can hold.
    pub const CAPACITY: usize = CAPACITY;

    /// Whether the list can take no more wakers this round.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == CAPACITY
    }

    /// Whether the list holds no waker.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a waker.
    ///
    /// # Panics
    ///
    /// If the list is full: check [`is_full`](Self::is_full) first.
    #[inline]
    pub fn push(&mut self, waker: Waker) {
        assert!(!self.is_full(), "WakeList::push on a full list");
        self.wakers[self.len] = Some(waker);
        self.len += 1;
    }

    /// Wakes every waker in the list and empties it.
    pub fn wake_all(&mut self) {
        for waker in &mut self.wakers[..self.len] {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
        }
        self.len = 0;
    }
}

impl Drop for WakeList {
    /// A list dropped before `wake_all` (a panic between collecting and
    /// waking) still wakes what it holds, so that no waiter is forgotten.
    fn drop(&mut self) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::WakeList;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_waker_pushed_is_woken_once_even_if_the_list_is_dropped() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut list = WakeList::new();
        while !list.is_full() {
            list.push(Waker::from(count.clone()));
        }
        list.wake_all();
        assert_eq!(count.0.load(Ordering::SeqCst), WakeList::CAPACITY);
        assert!(list.is_empty());
        list.push(Waker::from(count.clone()));
        drop(list);
        assert_eq!(count.0.load(Ordering::SeqCst), WakeList::CAPACITY + 1);
    }
}
