//! [`Watched`]: a future wrapper that times each poll, and the
//! `watch`/`spawn` entry points that make one.
//!
//! The hot path is two clock reads, one thread-local access and, on a thread
//! of a runtime the detector is installed in, two writes of the thread's poll
//! record (so the watchdog can name the poll while it is stuck). A watched
//! future refers to its detector without a reference count (see
//! [`Hot`](crate::detector::Hot)). Everything else — finding the detector,
//! building and delivering a report — is on the cold path of a poll that was
//! over the threshold.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::JoinHandle;

use crate::activity::{Activity, PollRecord};
use crate::clock::Clock;
use crate::detector::{BlockingDetector, Hot, Shared};
use crate::report::{BlockingReport, ReportKind, StallTimes, TaskId, ThreadInfo};
use crate::runtime::{REPORTED_POLLS, THREAD, ThreadState};
use crate::sched::{ThreadSamples, classify, fit, split};

impl BlockingDetector {
    /// Wraps `future` so that each of its polls is timed; a poll longer than
    /// the threshold is reported when it returns, with the caller's location.
    ///
    /// On a runtime the detector is [installed](crate::BlockingDetectorBuilder::install)
    /// in, the watchdog also knows the future is being polled, so a stuck
    /// poll is reported by name while it is still stuck.
    ///
    /// The future keeps the detector alive: its polls are timed and
    /// reported even after every [`BlockingDetector`] handle is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let detector = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(20))
    ///     .handler(|_: &_| {})
    ///     .build()
    ///     .unwrap();
    /// let line = line!() + 1;
    /// let watched = detector.watch(async { std::thread::sleep(Duration::from_millis(40)) });
    /// assert_eq!(watched.location().line(), line);
    ///
    /// let guard = detector.fail_on_blocking();
    /// watched.await;
    /// let failure = guard.check().unwrap_err();
    /// assert_eq!(failure.reports()[0].location().unwrap().line(), line);
    /// # }
    /// ```
    #[track_caller]
    pub fn watch<F: Future>(&self, future: F) -> Watched<F> {
        self.watched(None, future, Location::caller())
    }

    /// Like [`watch`](Self::watch), with a name for the reports. Names are
    /// static labels for the kind of work; the task id and location tell
    /// instances apart.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// let watched = detector.watch_named("parse", async { 1 + 1 });
    /// assert_eq!(watched.name(), Some("parse"));
    /// ```
    #[track_caller]
    pub fn watch_named<F: Future>(&self, name: &'static str, future: F) -> Watched<F> {
        self.watched(Some(name), future, Location::caller())
    }

    /// [`tokio::spawn`]s `future`, [watched](Self::watch) under `name`; the
    /// reported location (and tokio's spawn location) is the caller's.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`tokio::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let detector = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(20))
    ///     .handler(|_: &_| {})
    ///     .build()
    ///     .unwrap();
    /// let guard = detector.fail_on_blocking();
    /// let answer = detector.spawn("answer", async { 42 }).await.unwrap();
    /// assert_eq!(answer, 42);
    /// assert!(guard.check().is_ok());
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, name: &'static str, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(self.watched(Some(name), future, Location::caller()))
    }

    fn watched<F: Future>(
        &self,
        name: Option<&'static str>,
        future: F,
        location: &'static Location<'static>,
    ) -> Watched<F> {
        let hot = self.shared.hot;
        hot.future_made();
        Watched {
            future,
            hot,
            detector: self.shared.id,
            name,
            location,
            _live: Live {
                hot,
                detector: self.shared.id,
            },
        }
    }
}

pin_project! {
    /// A future whose polls a [`BlockingDetector`] times; made by
    /// [`BlockingDetector::watch`], [`watch_named`](BlockingDetector::watch_named)
    /// and [`spawn`](BlockingDetector::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, Watched};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// let watched: Watched<_> = detector.watch(async { "done" });
    /// assert_eq!(watched.await, "done");
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct Watched<F> {
        #[pin]
        future: F,
        hot: &'static Hot,
        detector: u64,
        name: Option<&'static str>,
        location: &'static Location<'static>,
        _live: Live,
    }
}

/// Counts a watched future among those keeping its detector alive.
struct Live {
    hot: &'static Hot,
    detector: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.hot.future_dropped(self.detector);
    }
}

impl<F> Watched<F> {
    /// The name given to `watch_named` or `spawn`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// assert_eq!(detector.watch(async {}).name(), None);
    /// ```
    pub fn name(&self) -> Option<&'static str> {
        self.name
    }

    /// Where the future was watched.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// assert_eq!(detector.watch(async {}).location().file(), file!());
    /// ```
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }

    /// The wrapped future, no longer watched.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// let inner = detector.watch(async { 5 }).into_inner();
    /// assert_eq!(inner.await, 5);
    /// # }
    /// ```
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for Watched<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("future", &self.future)
            .field("name", &self.name)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let (hot, detector) = (*this.hot, *this.detector);
        let mut future = this.future;
        // Off (or gone): one branch.
        if !hot.enabled.load(Relaxed) || hot.id.load(Acquire) != detector {
            return future.poll(cx);
        }
        let clock = Clock::from_coarse(hot.coarse.load(Relaxed));
        let threshold_ns = hot.threshold_ns.load(Relaxed);
        if !hot.installed.load(Relaxed) {
            // No runtime watches this detector: nothing to publish.
            let start = clock.now_ns();
            // CPU figures for a poll that turns out slow: the watchdog
            // samples this thread, and the thread reads its own counters
            // at most once per quarter threshold.
            let _ = THREAD.try_with(|s| {
                if s.sampled_by.get() != detector {
                    sample_this_thread(hot, detector);
                } else if start.saturating_sub(s.own_sample_at.get()) > threshold_ns / 4 {
                    sample_own(s, start);
                }
            });
            let mut record = Published::begin(None, clock, start, *this.name, this.location);
            record.watched = Some((hot, detector, threshold_ns));
            let output = future.poll(cx);
            let end = clock.now_ns();
            if end.saturating_sub(start) >= threshold_ns {
                self::slow(hot, detector, start, end, *this.name, this.location);
            }
            std::mem::forget(record);
            return output;
        }
        let timed = THREAD.try_with(|state| {
            // Held across the inner poll: a hook on this thread cannot rebind
            // it meanwhile, so the activity stays the one written to.
            let binding = state.binding.borrow();
            let bound = binding.as_ref().filter(|b| b.detector == detector);
            let start = clock.now_ns();
            if state.sampled_by.get() != detector {
                sample_this_thread(hot, detector);
            } else if start.saturating_sub(state.own_sample_at.get()) > threshold_ns / 4 {
                sample_own(state, start);
            }
            let activity = bound.map(|b| &b.thread.activity);
            let mut record = Published::begin(activity, clock, start, *this.name, this.location);
            record.watched = Some((hot, detector, threshold_ns));
            let output = future.as_mut().poll(cx);
            let end = clock.now_ns();
            let slow = end.saturating_sub(start) >= threshold_ns;
            // The thread ran a worker but no longer does: another thread took
            // the worker over during the poll (the future called
            // `block_in_place`), and the worker's other tasks ran on.
            let handed_over = slow
                && bound
                    .is_some_and(|b| b.thread.worker().is_some() && !b.watch.is_owner(&b.thread));
            if slow && !handed_over {
                // Reported before the record is taken down: whoever sees the
                // poll over (the watchdog, for a guard) finds the report made.
                self::slow(hot, detector, start, end, *this.name, this.location);
            }
            record.end(end, slow);
            output
        });
        match timed {
            Ok(output) => output,
            // The thread-locals are being destroyed: poll untimed.
            Err(_) => future.poll(cx),
        }
    }
}

/// Has the watchdog of detector `detector` sample the calling thread's CPU
/// counters (once per thread and detector).
#[cold]
#[inline(never)]
fn sample_this_thread(hot: &Hot, detector: u64) {
    // Read before the sample is taken, never after: the gate must not think
    // the sample newer than it is.
    let now = shared_clock_now(hot);
    if let Some(shared) = hot.detector(detector) {
        shared.installation.sample_current_thread(&shared);
    }
    let _ = THREAD.try_with(|s| {
        s.sampled_by.set(detector);
        s.own_sample_at.set(now);
    });
}

/// The detector clock now, as a watched poll of `hot` reads it.
fn shared_clock_now(hot: &Hot) -> u64 {
    Clock::from_coarse(hot.coarse.load(Relaxed)).now_ns()
}

/// The thread reads its own CPU counters at the start of a poll (at most
/// once per quarter threshold): the start figure of a poll that turns out
/// slow.
#[cold]
#[inline(never)]
pub(crate) fn sample_own(state: &ThreadState, now: u64) {
    // Never waits for the watchdog: if it holds the samples, the next poll
    // tries again.
    if ThreadSamples::current().is_none_or(|samples| samples.try_sample_own()) {
        state.own_sample_at.set(now);
    }
}

/// A watched poll took `start..end`, the threshold or more.
#[cold]
#[inline(never)]
fn slow(
    hot: &Hot,
    detector: u64,
    start: u64,
    end: u64,
    name: Option<&'static str>,
    location: &'static Location<'static>,
) {
    if let Some(shared) = hot.detector(detector) {
        poll_was_slow(
            &shared,
            SlowPoll {
                start,
                end,
                name,
                location: Some(location),
                task_id: tokio::task::try_id().map(TaskId::from),
            },
        );
    }
}

/// This thread's poll record while a watched poll runs; restores the outer
/// record when the poll returns or unwinds.
struct Published<'a> {
    activity: Option<&'a Activity>,
    previous: PollRecord,
    clock: Clock,
    start: u64,
    name: Option<&'static str>,
    location: &'static Location<'static>,
    /// The detector, to report a slow poll that panics.
    watched: Option<(&'static Hot, u64, u64)>,
}

impl<'a> Published<'a> {
    #[inline]
    fn begin(
        activity: Option<&'a Activity>,
        clock: Clock,
        start: u64,
        name: Option<&'static str>,
        location: &'static Location<'static>,
    ) -> Published<'a> {
        let previous = match activity {
            Some(a) => a.begin_nested_poll(start, name, location),
            None => PollRecord::IDLE,
        };
        Published {
            activity,
            previous,
            clock,
            start,
            name,
            location,
            watched: None,
        }
    }

    /// Restores the outer record. After a `slow` poll, which reports its own
    /// block, the outer poll's time for the watchdog starts again at `now`:
    /// the block is this poll's, not the outer one's.
    #[inline]
    fn end(self, now: u64, slow: bool) {
        if let Some(a) = self.activity {
            let mut previous = self.previous;
            if slow && previous.is_polling() {
                previous.start = now;
            }
            a.end_poll(previous, now);
        }
        std::mem::forget(self);
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        // Only reached when the inner poll panicked. A slow poll that ends
        // in a panic blocked the thread all the same: report it first.
        let end = self.clock.now_ns();
        if let Some((hot, detector, threshold_ns)) = self.watched
            && end.saturating_sub(self.start) >= threshold_ns
        {
            self::slow(hot, detector, self.start, end, self.name, self.location);
        }
        if let Some(a) = self.activity {
            a.end_poll(self.previous, end);
        }
    }
}

/// A poll that reached the threshold, before nested reports are subtracted.
pub(crate) struct SlowPoll {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) name: Option<&'static str>,
    pub(crate) location: Option<&'static Location<'static>>,
    pub(crate) task_id: Option<TaskId>,
}

/// The figures of this thread's poll that started at `start` and ends now:
/// from the watchdog's first sample after the start to the counters now.
fn figures(shared: &Shared, start: u64) -> Option<StallTimes> {
    let samples = ThreadSamples::current()?;
    // Kept: the start figure of a slow poll that follows at once.
    let end = samples.sample_own()?;
    let first = samples.start_of(start, shared.clock.lag_ns(), shared.threshold_ns / 2)?;
    (first.at < end.at).then(|| split(first, end))
}

/// Reports `poll` unless polls nested in it already reported most of its
/// time (a watched future inside a task tracked in precise mode, or inside
/// another watched future): only what is left must reach the threshold.
#[cold]
#[inline(never)]
pub(crate) fn poll_was_slow(shared: &Shared, poll: SlowPoll) {
    let duration = poll.end.saturating_sub(poll.start);
    // Polls this thread reported within this one were nested in it.
    let nested: u64 = THREAD
        .try_with(|s| {
            s.reported
                .get()
                .iter()
                .filter(|(start, end)| *start >= poll.start && *end <= poll.end && end > start)
                .map(|(start, end)| end - start)
                .sum()
        })
        .unwrap_or(0);
    if duration.saturating_sub(nested) < shared.threshold_ns {
        return;
    }
    let _ = THREAD.try_with(|s| {
        let mut reported = s.reported.get();
        let next = s.next_reported.get();
        reported[next % REPORTED_POLLS] = (poll.start, poll.end);
        s.reported.set(reported);
        s.next_reported.set(next.wrapping_add(1));
    });
    let duration = Duration::from_nanos(duration);
    let times = figures(shared, poll.start).map(|t| fit(t, duration));
    let thread = ThreadInfo::current();
    shared.dispatch(BlockingReport {
        kind: ReportKind::Blocked,
        duration,
        class: classify(duration, times.as_ref(), shared.threshold),
        times,
        started_at: shared.clock.instant_of(poll.start),
        name: poll.name,
        location: poll.location,
        task_id: poll.task_id,
        episode: (thread.id, poll.start),
        thread,
        worker: tokio::runtime::worker_index(),
        suppressed: 0,
        #[cfg(all(feature = "stack-capture", target_os = "linux"))]
        stack: None,
    });
}
