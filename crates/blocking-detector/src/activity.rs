//! [`Activity`]: what one runtime thread is doing right now — parked or not,
//! when it last made progress, and which tracked poll it is inside — written
//! lock-free by that thread and read by the watchdog thread.
//!
//! The poll record is a sequence lock with a single writer (the thread the
//! activity belongs to): the writer never waits, and the reader retries a
//! bounded number of times and gives up rather than spin. Everything the
//! record points to is `'static` (task names, `Location`s), so a reader can
//! never follow a pointer into freed memory; the sequence number only
//! guarantees that a name's pointer and length come from the same write.

// Under `--cfg async_patterns_loom` only this module is built, for the
// models in `loom_tests`.
#![cfg_attr(async_patterns_loom, allow(dead_code))]

use std::panic::Location;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::loom::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};

/// How often a reader retries a record that is being rewritten before it
/// gives up for this look (the watchdog looks again one tick later).
const READ_ATTEMPTS: usize = if cfg!(async_patterns_loom) { 2 } else { 64 };

/// The poll a thread is inside, as far as the detector tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollRecord {
    /// When the poll started, in clock nanoseconds; 0 when no tracked poll
    /// is running.
    pub(crate) start: u64,
    /// The name given to `watch_named` / `spawn`.
    pub(crate) name: Option<&'static str>,
    /// Where the future was watched or the task spawned.
    pub(crate) location: Option<&'static Location<'static>>,
    /// The tokio task id, 0 when unknown.
    pub(crate) task_id: u64,
}

impl PollRecord {
    /// No tracked poll.
    pub(crate) const IDLE: PollRecord = PollRecord {
        start: 0,
        name: None,
        location: None,
        task_id: 0,
    };

    pub(crate) fn is_polling(&self) -> bool {
        self.start != 0
    }
}

/// What the watchdog sees of a thread in one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) parked: bool,
    /// The last park, unpark or end of a tracked poll.
    pub(crate) progress_at: u64,
    /// `None` when the record was being rewritten on every attempt.
    pub(crate) record: Option<PollRecord>,
}

/// The lock-free state of one runtime thread.
///
/// Only the thread it belongs to may call the writing methods
/// ([`begin_poll`](Self::begin_poll), [`end_poll`](Self::end_poll),
/// [`park`](Self::park), [`unpark`](Self::unpark)); any thread may call
/// [`snapshot`](Self::snapshot).
#[derive(Debug)]
pub(crate) struct Activity {
    parked: AtomicBool,
    progress_at: AtomicU64,
    // The record, guarded by `seq` (odd while a write is in progress).
    seq: AtomicU64,
    start: AtomicU64,
    name_ptr: AtomicPtr<u8>,
    name_len: AtomicUsize,
    location: AtomicPtr<Location<'static>>,
    task_id: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            parked: AtomicBool::new(false),
            progress_at: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            start: AtomicU64::new(0),
            name_ptr: AtomicPtr::new(std::ptr::null_mut()),
            name_len: AtomicUsize::new(0),
            location: AtomicPtr::new(std::ptr::null_mut()),
            task_id: AtomicU64::new(0),
        }
    }

    /// Writer only: publishes `record` and returns the one it replaces, to be
    /// handed back to [`end_poll`](Self::end_poll) (tracked polls nest).
    #[inline]
    // Used by precise mode (`cfg(tokio_unstable)`), the tests and the models.
    #[cfg_attr(not(any(tokio_unstable, async_patterns_loom, test)), allow(dead_code))]
    pub(crate) fn begin_poll(&self, record: PollRecord) -> PollRecord {
        let previous = self.own_record();
        self.write(&record);
        previous
    }

    /// Writer only: like [`begin_poll`](Self::begin_poll) for a poll nested in
    /// the current one (a watched future inside a task): the task id carries
    /// over.
    #[inline]
    pub(crate) fn begin_nested_poll(
        &self,
        start: u64,
        name: Option<&'static str>,
        location: &'static Location<'static>,
    ) -> PollRecord {
        let previous = self.own_record();
        self.write(&PollRecord {
            start,
            name,
            location: Some(location),
            task_id: previous.task_id,
        });
        previous
    }

    /// Writer only: restores the record that `begin_poll` replaced and notes
    /// progress at `now`.
    #[inline]
    pub(crate) fn end_poll(&self, previous: PollRecord, now: u64) {
        self.write(&previous);
        self.progress_at.store(now, Release);
    }

    /// Writer only: the thread is about to park.
    pub(crate) fn park(&self, now: u64) {
        self.progress_at.store(now, Release);
        self.parked.store(true, Release);
    }

    /// Writer only: the thread woke up and is about to run tasks.
    pub(crate) fn unpark(&self, now: u64) {
        self.progress_at.store(now, Release);
        self.parked.store(false, Release);
    }

    /// Writer only: the record as the writer last wrote it. No other thread
    /// writes it, so plain relaxed loads are consistent here.
    #[inline]
    pub(crate) fn own_record(&self) -> PollRecord {
        let name_ptr = self.name_ptr.load(Relaxed);
        let name_len = self.name_len.load(Relaxed);
        PollRecord {
            start: self.start.load(Relaxed),
            // SAFETY: the caller is the only writer, so the pair is the one it
            // last stored together from a `&'static str`.
            name: unsafe { name_from_raw(name_ptr, name_len) },
            // SAFETY: `location` only ever holds null or a `&'static Location`.
            location: unsafe { location_from_raw(self.location.load(Relaxed)) },
            task_id: self.task_id.load(Relaxed),
        }
    }

    #[inline]
    fn write(&self, record: &PollRecord) {
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        // Orders the odd sequence number before the data: a reader that sees
        // any of the new data then sees an odd or newer sequence number.
        fence(Release);
        self.start.store(record.start, Relaxed);
        let (ptr, len) = record.name.map_or((std::ptr::null_mut(), 0), |n| {
            (n.as_ptr().cast_mut(), n.len())
        });
        self.name_ptr.store(ptr, Relaxed);
        self.name_len.store(len, Relaxed);
        let location = record
            .location
            .map_or(std::ptr::null_mut(), |l| std::ptr::from_ref(l).cast_mut());
        self.location.store(location, Relaxed);
        self.task_id.store(record.task_id, Relaxed);
        self.seq.store(seq.wrapping_add(2), Release);
    }

    /// Any thread: one consistent look at the thread's state.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            parked: self.parked.load(Acquire),
            progress_at: self.progress_at.load(Acquire),
            record: self.read_record(),
        }
    }

    fn read_record(&self) -> Option<PollRecord> {
        for _ in 0..READ_ATTEMPTS {
            let before = self.seq.load(Acquire);
            if before & 1 == 0 {
                let start = self.start.load(Relaxed);
                let name_ptr = self.name_ptr.load(Relaxed);
                let name_len = self.name_len.load(Relaxed);
                let location = self.location.load(Relaxed);
                let task_id = self.task_id.load(Relaxed);
                // Pairs with the writer's release fence: if any load above saw
                // data of a newer write, `after` sees that write's odd number.
                fence(Acquire);
                let after = self.seq.load(Relaxed);
                if before == after {
                    return Some(PollRecord {
                        start,
                        // SAFETY: the sequence number did not change and was
                        // even, so no write overlapped the loads: the pair is
                        // one the writer stored together from a `&'static str`.
                        name: unsafe { name_from_raw(name_ptr, name_len) },
                        // SAFETY: `location` only ever holds null or a
                        // `&'static Location`.
                        location: unsafe { location_from_raw(location) },
                        task_id,
                    });
                }
            }
            spin_hint();
        }
        None
    }
}

/// # Safety
///
/// `ptr` is null, or `(ptr, len)` are the pointer and length of one
/// `&'static str`.
unsafe fn name_from_raw(ptr: *mut u8, len: usize) -> Option<&'static str> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller: the bytes are a live `'static` str.
    Some(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)) })
}

/// # Safety
///
/// `ptr` is null or was made from a `&'static Location<'static>`.
unsafe fn location_from_raw(ptr: *mut Location<'static>) -> Option<&'static Location<'static>> {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr.cast_const().as_ref() }
}

#[cfg(async_patterns_loom)]
fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(async_patterns_loom))]
fn spin_hint() {
    std::hint::spin_loop();
}

#[cfg(all(test, not(async_patterns_loom)))]
mod tests {
    use super::*;

    fn record(start: u64, name: &'static str) -> PollRecord {
        PollRecord {
            start,
            name: Some(name),
            location: Some(Location::caller()),
            task_id: start * 10,
        }
    }

    #[test]
    fn nested_polls_restore_the_outer_record() {
        let activity = Activity::new();
        let outer = record(5, "outer");
        let idle = activity.begin_poll(outer);
        assert_eq!(idle, PollRecord::IDLE);
        let saved = activity.begin_poll(record(7, "inner"));
        assert_eq!(saved, outer);
        assert_eq!(activity.snapshot().record.unwrap().name, Some("inner"));
        activity.end_poll(saved, 9);
        assert_eq!(activity.snapshot().record, Some(outer));
        activity.end_poll(idle, 11);
        let seen = activity.snapshot();
        assert_eq!(seen.record, Some(PollRecord::IDLE));
        assert_eq!(seen.progress_at, 11);
    }

    #[test]
    fn park_and_unpark_are_visible_with_their_time() {
        let activity = Activity::new();
        activity.park(3);
        assert!(activity.snapshot().parked);
        activity.unpark(4);
        let seen = activity.snapshot();
        assert!(!seen.parked);
        assert_eq!(seen.progress_at, 4);
    }

    #[test]
    fn a_reader_never_sees_a_torn_record_while_the_writer_runs() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        const NAMES: [&str; 3] = ["a", "a much longer name than the other", "mid-sized"];
        let activity = Arc::new(Activity::new());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (activity, stop) = (activity.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 1_u64;
                while !stop.load(Relaxed) {
                    let name = NAMES[(i % 3) as usize];
                    let saved = activity.begin_poll(record(i, name));
                    activity.end_poll(saved, i);
                    i += 1;
                }
            })
        };
        let run = std::time::Duration::from_millis(if cfg!(miri) { 5 } else { 200 });
        let deadline = std::time::Instant::now() + run;
        while std::time::Instant::now() < deadline {
            if let Some(r) = activity.snapshot().record {
                if r.is_polling() {
                    // Name and task id were written together with `start`.
                    assert_eq!(r.name, Some(NAMES[(r.start % 3) as usize]));
                    assert_eq!(r.task_id, r.start * 10);
                } else {
                    assert_eq!(r, PollRecord::IDLE);
                }
            }
        }
        stop.store(true, Relaxed);
        writer.join().unwrap();
    }
}
