//! [`OwnBuffer`]: the items the only consumer of a strict-order channel took
//! from the channel under one lock, delivered from here without it — the
//! sequential fast path.
//!
//! Items are kept oldest first: those delivered at least once come first
//! (deliveries always take the front), with their attempt counts, then
//! those never delivered. Per item it keeps a `u32` — the attempts, and in
//! its top bit whether the last attempt ended in a panic — and, only when
//! the channel records delivery times (it has a dead-letter destination),
//! the times.

use std::collections::VecDeque;
use std::collections::vec_deque::Drain;

use crate::table::{Clock, Entry, Meta, Times};

/// The top bit of an attempt count: the last attempt ended in a panic.
const PANICKED: u32 = 1 << 31;

#[derive(Debug)]
pub(crate) struct OwnBuffer<T> {
    items: VecDeque<T>,
    /// Attempts (| [`PANICKED`]) of the first `attempts.len()` items.
    attempts: VecDeque<u32>,
    /// Delivery times of the same items, when the channel records them.
    times: VecDeque<Times>,
}

impl<T> Default for OwnBuffer<T> {
    fn default() -> Self {
        OwnBuffer {
            items: VecDeque::new(),
            attempts: VecDeque::new(),
            times: VecDeque::new(),
        }
    }
}

impl<T> OwnBuffer<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn items(&self) -> &VecDeque<T> {
        &self.items
    }

    pub(crate) fn items_mut(&mut self) -> &mut VecDeque<T> {
        &mut self.items
    }

    /// Deliveries so far of the item at `index` (0 if never delivered).
    pub(crate) fn attempts(&self, index: usize) -> u32 {
        self.attempts.get(index).map_or(0, |a| a & !PANICKED)
    }

    /// Counts one more delivery of each of the first `n` items; returns
    /// how many of them had been delivered before.
    #[inline]
    pub(crate) fn deliver(&mut self, n: usize, stamp: bool) -> usize {
        if n == 1 && !stamp {
            // The sequential fast path: one item, no clock.
            return match self.attempts.front_mut() {
                Some(a) => {
                    *a = (*a & !PANICKED).saturating_add(1).min(!PANICKED);
                    1
                }
                None => {
                    self.attempts.push_back(1);
                    0
                }
            };
        }
        let before = self.attempts.len().min(n);
        for a in self.attempts.iter_mut().take(n) {
            *a = (*a & !PANICKED).saturating_add(1).min(!PANICKED);
        }
        for _ in self.attempts.len()..n {
            self.attempts.push_back(1);
        }
        if stamp {
            let now = Clock::default().now();
            for t in self.times.iter_mut().take(n) {
                t.last = now;
            }
            for _ in self.times.len()..n {
                self.times.push_back(Times {
                    first: now,
                    last: now,
                });
            }
        }
        before
    }

    /// Marks the first `n` items' last attempt as ended in a panic.
    pub(crate) fn set_panicked(&mut self, n: usize) {
        for a in self.attempts.iter_mut().take(n) {
            *a |= PANICKED;
        }
    }

    /// Removes the front item (committed).
    #[inline]
    pub(crate) fn pop_front(&mut self) -> T {
        self.attempts.pop_front();
        self.times.pop_front();
        self.items
            .pop_front()
            .expect("a delivery holds the front item")
    }

    /// Removes the first `k` items (committed).
    pub(crate) fn drain_front(&mut self, k: usize) -> Drain<'_, T> {
        let counted = k.min(self.attempts.len());
        self.attempts.drain(..counted);
        let timed = k.min(self.times.len());
        self.times.drain(..timed);
        self.items.drain(..k)
    }

    /// Removes the front item with its meta (to be dead-lettered).
    pub(crate) fn pop_front_entry(&mut self) -> Entry<T> {
        let attempts = self.attempts.pop_front().unwrap_or(0);
        let times = self.times.pop_front();
        let item = self.items.pop_front().expect("an item at the front");
        Entry {
            item,
            meta: Meta {
                attempts: attempts & !PANICKED,
                panicked: attempts & PANICKED != 0,
                times,
                key: 0,
            },
        }
    }

    /// Puts an entry back at the front (the dead-letter channel refused it).
    pub(crate) fn push_front_entry(&mut self, entry: Entry<T>) {
        let mut attempts = entry.meta.attempts;
        if entry.meta.panicked {
            attempts |= PANICKED;
        }
        self.attempts.push_front(attempts);
        if let Some(times) = entry.meta.times {
            self.times.push_front(times);
        }
        self.items.push_front(entry.item);
    }

    /// Appends a delivered-before item (from the table's queue) at the end
    /// of the delivered prefix — only while nothing undelivered is here.
    pub(crate) fn push_back_entry(&mut self, entry: Entry<T>) {
        debug_assert_eq!(self.items.len(), self.attempts.len());
        let mut attempts = entry.meta.attempts;
        if entry.meta.panicked {
            attempts |= PANICKED;
        }
        self.attempts.push_back(attempts);
        if let Some(times) = entry.meta.times {
            self.times.push_back(times);
        }
        self.items.push_back(entry.item);
    }

    /// Takes every item out, oldest first: delivered ones as entries with
    /// their meta, then the never-delivered ones.
    pub(crate) fn take_all(&mut self) -> (Vec<Entry<T>>, VecDeque<T>) {
        let mut delivered = Vec::with_capacity(self.attempts.len());
        while !self.attempts.is_empty() {
            delivered.push(self.pop_front_entry());
        }
        (delivered, std::mem::take(&mut self.items))
    }
}
