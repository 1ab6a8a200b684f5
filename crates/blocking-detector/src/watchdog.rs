//! The watchdog thread: every quarter threshold (or when a test guard asks)
//! it looks at each worker of the watched runtime and reports one that has
//! been blocked longer than the threshold — once while it is stuck, once
//! more when it ends.
//!
//! What the watchdog decides about one thread from one look is a small state
//! machine ([`ThreadWatch::look`]), kept apart from the threads and clocks it
//! reads so that its tests can replay recorded looks.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Acquire;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::activity::{PollRecord, Snapshot};
use crate::detector::{Shared, lock};
use crate::report::{BlockingReport, ReportKind, TaskId};
use crate::runtime::{Installation, Next, RuntimeThread, RuntimeWatch};
use crate::sched::{classify, fit, split};

/// The watchdog thread's body; returns when the runtime's hooks are dropped
/// (an installed detector) or the detector is (one made with `build`).
pub(crate) fn run(installation: &Arc<Installation>, shared: &Weak<Shared>) {
    // Tells waiting guards that the watchdog is gone, even if a scan panics.
    struct Exit<'a>(&'a Installation);
    impl Drop for Exit<'_> {
        fn drop(&mut self) {
            self.0.exited();
        }
    }
    let _exit = Exit(installation);
    crate::sched::raise_priority();

    let mut scanner = Scanner::default();
    let mut last = 0;
    loop {
        let next = installation.wait(last);
        // Held for one scan only: a detector made with `build` is not kept
        // alive by its watchdog.
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match next {
            Next::Exit => {
                // The runtime and its hooks are gone, and with them its
                // threads: the blocks still open have ended.
                if shared.is_enabled() {
                    installation.take_samples();
                    scanner.scan(&shared, installation, None, false);
                }
                return;
            }
            Next::Scan(requested) => {
                // A look a guard asked for refreshes the blocks in progress.
                let refresh = requested != last;
                if shared.is_enabled() {
                    installation.take_samples();
                    let watch = installation.current();
                    scanner.scan(&shared, installation, watch.as_ref(), refresh);
                } else {
                    // Nothing is measured or reported while disabled.
                    scanner.threads.clear();
                }
                installation.scanned(requested, scanner.open());
                last = requested;
            }
        }
    }
}

/// What the watchdog remembers about each thread between looks.
#[derive(Default)]
struct Scanner {
    threads: HashMap<u64, Watched>,
}

struct Watched {
    thread: Arc<RuntimeThread>,
    watch: Arc<RuntimeWatch>,
    state: ThreadWatch,
    seen: bool,
}

/// The watchdog's view of one thread, updated by [`look`](Self::look).
#[derive(Debug, Default, Clone)]
pub(crate) struct ThreadWatch {
    /// The worker's busy-time metric at the last look.
    last_busy: Option<Duration>,
    /// When the metric was last seen to change.
    heartbeat_at: u64,
    /// The look before that: the change happened after this time.
    changed_after: u64,
    /// When the metric was last read.
    last_look: u64,
    /// The block reported as stuck and not yet seen to end, if any.
    episode: Option<Episode>,
}

/// A block the watchdog reported as stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Episode {
    /// Where the measured time starts.
    pub(crate) since: u64,
    /// The tracked poll it is in ([`PollRecord::IDLE`] outside tracked polls,
    /// whose end the watchdog reports itself).
    pub(crate) record: PollRecord,
}

impl Episode {
    fn tracked(&self) -> bool {
        self.record.is_polling()
    }
}

/// Everything one look at a thread reads.
#[derive(Clone, Copy)]
pub(crate) struct Look<'a> {
    pub(crate) now: u64,
    pub(crate) threshold_ns: u64,
    /// When the detector was last enabled: time before it is not counted.
    pub(crate) enabled_since: u64,
    pub(crate) snapshot: Snapshot,
    /// The worker's busy-time metric, where tokio offers it.
    pub(crate) busy: Option<Duration>,
    /// Whether a stall outside tracked polls would keep tasks waiting (on a
    /// current-thread runtime, only while tasks are alive).
    pub(crate) starving_if_untracked: bool,
    /// Whether the thread is waiting for a CPU right now (runnable, and no
    /// CPU time since the previous look); asked only of a stuck thread.
    pub(crate) waiting_for_cpu: &'a dyn Fn() -> bool,
}

/// What a look found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finding {
    /// A block reached the threshold and is still in progress.
    Stuck(Episode),
    /// A block outside tracked polls (reported stuck before) ended at `end`.
    Ended { episode: Episode, end: u64 },
}

impl ThreadWatch {
    /// One look at the thread: at most one block ended and one new block
    /// found stuck, in that order.
    pub(crate) fn look(&mut self, look: &Look<'_>) -> Vec<Finding> {
        let now = look.now;
        // tokio updates a worker's busy time at least every 61 polls and at
        // every park: a change means the worker is not stuck in one poll.
        if let Some(busy) = look.busy {
            if self.last_busy.is_some_and(|b| b != busy) {
                self.heartbeat_at = now;
                self.changed_after = self.last_look;
            }
            self.last_busy = Some(busy);
            self.last_look = now;
        }

        let snapshot = look.snapshot;
        let mut found = Vec::new();
        let Some(record) = snapshot.record else {
            return found; // being rewritten on every attempt: look next tick
        };
        let tracked = record.is_polling();
        let since = if tracked {
            record.start
        } else if snapshot.progress_at == 0 {
            0 // no park or poll seen yet: nothing to measure from
        } else {
            snapshot.progress_at.max(self.heartbeat_at)
        };
        let since = if since == 0 {
            0
        } else {
            since.max(look.enabled_since)
        };
        // The worker moved on after the tracked poll started: another thread
        // runs it now (the poll called `block_in_place`). Strictly after:
        // readings of the coarse clock within one tick are equal.
        let handed_over = tracked && self.changed_after > record.start;
        let stuck = !snapshot.parked
            && !handed_over
            && (tracked || look.starving_if_untracked)
            && since != 0
            && now.saturating_sub(since) >= look.threshold_ns;
        // A thread waiting for a CPU is not reported stuck now: the wait is
        // not in its figures until it gets the CPU back (Linux adds it up
        // then), and a block that continues is reported at the next look.
        let stuck =
            stuck && (self.episode.is_some_and(|e| e.since == since) || !(look.waiting_for_cpu)());

        if let Some(episode) = self.episode {
            if stuck && episode.since == since {
                return found; // the same block, still in progress
            }
            self.episode = None;
            if !episode.tracked() {
                found.push(Finding::Ended {
                    episode,
                    end: self.end_of(&episode, &snapshot, now),
                });
            }
            // A tracked poll reports its own end (before it leaves the poll
            // record, so a guard that sees the record change has it).
        }
        if stuck {
            let episode = Episode {
                since,
                record: if tracked { record } else { PollRecord::IDLE },
            };
            self.episode = Some(episode);
            found.push(Finding::Stuck(episode));
        }
        found
    }

    /// The thread is gone (it stopped, or its runtime shut down): the block
    /// in progress, if any, ended.
    pub(crate) fn close(&mut self, snapshot: &Snapshot, now: u64) -> Option<Finding> {
        let episode = self.episode.take()?;
        (!episode.tracked()).then(|| Finding::Ended {
            episode,
            end: self.end_of(&episode, snapshot, now),
        })
    }

    /// The block in progress, if any.
    pub(crate) fn open(&self) -> Option<Episode> {
        self.episode
    }

    /// When a block outside tracked polls ended: the first progress seen
    /// after it began, or `now` if there is none.
    fn end_of(&self, episode: &Episode, snapshot: &Snapshot, now: u64) -> u64 {
        [snapshot.progress_at, self.heartbeat_at]
            .into_iter()
            .filter(|t| *t > episode.since)
            .min()
            .unwrap_or(now)
    }
}

impl Scanner {
    fn open(&self) -> usize {
        self.threads
            .values()
            .filter(|w| w.state.open().is_some())
            .count()
    }

    fn scan(
        &mut self,
        shared: &Shared,
        installation: &Installation,
        watch: Option<&Arc<RuntimeWatch>>,
        refresh: bool,
    ) {
        let now = shared.clock.now_ns();
        for watched in self.threads.values_mut() {
            watched.seen = false;
        }
        if let Some(watch) = watch {
            self.look_at(shared, installation, watch, now, refresh);
        }
        for watched in self.threads.values_mut() {
            // A multi-thread runtime shuts down while a worker is still in a
            // poll: the block goes on until the worker stops.
            let lingering = !watched.seen
                && watched.state.open().is_some()
                && !watched.watch.is_alive()
                && !watched.watch.current_thread
                && watched.thread.alive.load(Acquire);
            if lingering {
                watched.seen = true;
                let waiting = || waiting_for_cpu(&watched.thread);
                let look = Look {
                    now,
                    threshold_ns: shared.threshold_ns,
                    enabled_since: shared.enabled_since.load(Acquire),
                    snapshot: watched.thread.activity.snapshot(),
                    busy: None,
                    starving_if_untracked: true,
                    waiting_for_cpu: &waiting,
                };
                for finding in watched.state.look(&look) {
                    report(shared, installation, &watched.thread, finding, now);
                }
                if refresh && let Some(episode) = watched.state.open() {
                    shared.refresh_guards(&build(shared, &watched.thread, &episode, now));
                }
            }
        }
        // Threads that stopped, or whose runtime shut down: their blocks
        // ended — at the latest when the runtime did.
        self.threads.retain(|_, watched| {
            if !watched.seen {
                let snapshot = watched.thread.activity.snapshot();
                let bound = watched.watch.ended_at().map_or(now, |t| t.min(now));
                if let Some(finding) = watched.state.close(&snapshot, bound) {
                    report(shared, installation, &watched.thread, finding, now);
                }
            }
            watched.seen
        });
    }

    fn look_at(
        &mut self,
        shared: &Shared,
        installation: &Installation,
        watch: &Arc<RuntimeWatch>,
        now: u64,
        refresh: bool,
    ) {
        let enabled_since = shared.enabled_since.load(Acquire);
        #[cfg(target_has_atomic = "64")]
        let metrics = watch.handle().map(|h| h.metrics());
        // A current-thread runtime's thread that left `block_on` looks like
        // one stuck outside any tracked poll; it only matters (and is only
        // reported) if tasks wait for it — more than the sentinel.
        #[cfg(target_has_atomic = "64")]
        let starving_if_untracked =
            !watch.current_thread || metrics.as_ref().is_none_or(|m| m.num_alive_tasks() > 1);
        #[cfg(not(target_has_atomic = "64"))]
        let starving_if_untracked = !watch.current_thread;

        let threads: Vec<Arc<RuntimeThread>> = lock(&watch.threads).clone();
        for thread in threads.iter().filter(|t| watch.is_owner(t)) {
            let watched = self.threads.entry(thread.id).or_insert_with(|| Watched {
                thread: thread.clone(),
                watch: watch.clone(),
                state: ThreadWatch::default(),
                seen: false,
            });
            watched.seen = true;
            #[cfg(target_has_atomic = "64")]
            let busy = match (&metrics, thread.worker()) {
                (Some(metrics), Some(worker)) if worker < metrics.num_workers() => {
                    Some(metrics.worker_total_busy_duration(worker))
                }
                _ => None,
            };
            #[cfg(not(target_has_atomic = "64"))]
            let busy = None;
            let waiting = || waiting_for_cpu(thread);
            let look = Look {
                now,
                threshold_ns: shared.threshold_ns,
                enabled_since,
                snapshot: thread.activity.snapshot(),
                busy,
                starving_if_untracked,
                waiting_for_cpu: &waiting,
            };
            for finding in watched.state.look(&look) {
                report(shared, installation, thread, finding, now);
            }
            if refresh && let Some(episode) = watched.state.open() {
                // A guard is deciding: give it the figure as of now.
                shared.refresh_guards(&build(shared, thread, &episode, now));
            }
        }
    }
}

/// Whether `thread` waits for a CPU right now: runnable, and no CPU time
/// since the previous sample.
fn waiting_for_cpu(thread: &RuntimeThread) -> bool {
    let Some(samples) = &thread.samples else {
        return false;
    };
    let still = samples
        .last_two()
        .is_some_and(|(before, last)| before.counters.on_cpu == last.counters.on_cpu);
    still && samples.runnable() == Some(true)
}

/// Reports what a look found.
fn report(
    shared: &Shared,
    installation: &Installation,
    thread: &RuntimeThread,
    finding: Finding,
    now: u64,
) {
    match finding {
        Finding::Stuck(episode) => {
            #[allow(unused_mut)]
            let mut report = build(shared, thread, &episode, now);
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            if let Some(signal) = installation.stack_signal {
                report.stack =
                    crate::stack::capture(thread.tid, signal, thread.stack).map(Arc::new);
            }
            let _ = installation;
            shared.dispatch(report);
        }
        Finding::Ended { episode, end } => {
            shared.dispatch(BlockingReport {
                kind: ReportKind::Blocked,
                ..build(shared, thread, &episode, end)
            });
        }
    }
}

/// A `Stuck` report of `thread`, blocked from the episode's start to `until`,
/// with the figures from the first sample after the start to the latest.
fn build(shared: &Shared, thread: &RuntimeThread, episode: &Episode, until: u64) -> BlockingReport {
    let record = &episode.record;
    let duration = Duration::from_nanos(until.saturating_sub(episode.since));
    let times = thread.samples.as_ref().and_then(|samples| {
        let last = samples.latest()?;
        let first = samples.start_of(
            episode.since,
            shared.clock.lag_ns(),
            shared.threshold_ns / 2,
        )?;
        (first.at < last.at).then(|| fit(split(first, last), duration))
    });
    BlockingReport {
        kind: ReportKind::Stuck,
        duration,
        started_at: shared.clock.instant_of(episode.since),
        name: record.name,
        location: record.location,
        task_id: TaskId::from_raw(record.task_id),
        thread: thread.info.clone(),
        worker: thread.worker(),
        suppressed: 0,
        // A tracked poll's own report names the block by the poll's start.
        episode: (
            thread.info.id,
            if episode.tracked() {
                record.start
            } else {
                episode.since
            },
        ),
        class: classify(duration, times.as_ref(), shared.threshold),
        times,
        #[cfg(all(feature = "stack-capture", target_os = "linux"))]
        stack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::Location;

    const MS: u64 = 1_000_000;
    const THRESHOLD: u64 = 50 * MS;

    fn no() -> bool {
        false
    }

    fn look(now_ms: u64, snapshot: Snapshot, busy_ms: u64) -> Look<'static> {
        Look {
            now: now_ms * MS,
            threshold_ns: THRESHOLD,
            enabled_since: 1,
            snapshot,
            busy: Some(Duration::from_millis(busy_ms)),
            starving_if_untracked: true,
            waiting_for_cpu: &no,
        }
    }

    fn running(progress_ms: u64) -> Snapshot {
        Snapshot {
            parked: false,
            progress_at: progress_ms * MS,
            record: Some(PollRecord::IDLE),
        }
    }

    fn parked(at_ms: u64) -> Snapshot {
        Snapshot {
            parked: true,
            ..running(at_ms)
        }
    }

    fn polling(start_ms: u64) -> Snapshot {
        Snapshot {
            parked: false,
            progress_at: start_ms * MS,
            record: Some(PollRecord {
                start: start_ms * MS,
                name: Some("task"),
                location: Some(Location::caller()),
                task_id: 7,
            }),
        }
    }

    #[test]
    fn an_untracked_block_is_stuck_once_and_ends_at_the_park() {
        let mut w = ThreadWatch::default();
        assert!(w.look(&look(10, running(10), 5)).is_empty());
        assert!(w.look(&look(40, running(10), 5)).is_empty());
        let stuck = w.look(&look(62, running(10), 5));
        assert_eq!(stuck.len(), 1);
        assert!(matches!(stuck[0], Finding::Stuck(e) if e.since == 10 * MS));
        // Still in progress: nothing more.
        assert!(w.look(&look(200, running(10), 5)).is_empty());
        assert!(w.open().is_some());
        // The worker parked at 310 ms: the block ended then.
        let ended = w.look(&look(320, parked(310), 305));
        assert_eq!(
            ended,
            [Finding::Ended {
                episode: Episode {
                    since: 10 * MS,
                    record: PollRecord::IDLE
                },
                end: 310 * MS
            }]
        );
        assert!(w.open().is_none());
    }

    #[test]
    fn a_look_before_the_worker_parks_keeps_the_block_open() {
        // Issue 13 §2: the task returned at 310 ms, but a look at 311 ms sees
        // no park and no metric change yet. The block stays open (the guard
        // waits for it to end) instead of being taken as seen and settled.
        let mut w = ThreadWatch::default();
        w.look(&look(10, running(10), 5));
        w.look(&look(62, running(10), 5));
        assert!(w.look(&look(311, running(10), 5)).is_empty());
        assert_eq!(w.open().map(|e| e.since), Some(10 * MS));
        let ended = w.look(&look(313, parked(312), 307));
        assert!(matches!(ended[..], [Finding::Ended { end, .. }] if end == 312 * MS));
    }

    #[test]
    fn a_metric_change_ends_an_untracked_block_without_a_park() {
        let mut w = ThreadWatch::default();
        w.look(&look(10, running(10), 5));
        w.look(&look(62, running(10), 5));
        // The worker moved on to other polls: tokio updated its busy time.
        let found = w.look(&look(87, running(10), 80));
        assert!(matches!(found[..], [Finding::Ended { end, .. }] if end == 87 * MS));
    }

    #[test]
    fn a_tracked_poll_is_stuck_once_and_its_end_is_left_to_the_poller() {
        let mut w = ThreadWatch::default();
        w.look(&look(10, polling(10), 5));
        let stuck = w.look(&look(61, polling(10), 5));
        assert!(matches!(stuck[..], [Finding::Stuck(e)] if e.record.name == Some("task")));
        assert!(w.look(&look(100, polling(10), 5)).is_empty());
        // The poll ended; the poller reported it.
        assert!(w.look(&look(120, parked(115), 110)).is_empty());
        assert!(w.open().is_none());
    }

    #[test]
    fn a_block_on_a_thread_that_is_gone_ends_at_its_last_progress() {
        let mut w = ThreadWatch::default();
        w.look(&look(10, running(10), 5));
        w.look(&look(62, running(10), 5));
        let closed = w.close(&parked(400), 450 * MS);
        assert!(matches!(closed, Some(Finding::Ended { end, .. }) if end == 400 * MS));
        // No progress recorded after it began: as of the look.
        let mut w = ThreadWatch::default();
        w.look(&look(10, running(10), 5));
        w.look(&look(62, running(10), 5));
        let closed = w.close(&running(10), 450 * MS);
        assert!(matches!(closed, Some(Finding::Ended { end, .. }) if end == 450 * MS));
    }

    #[test]
    fn a_thread_waiting_for_a_cpu_is_not_reported_stuck_until_it_runs() {
        let yes = || true;
        let mut w = ThreadWatch::default();
        w.look(&look(10, running(10), 5));
        let waiting = |now| Look {
            waiting_for_cpu: &yes,
            ..look(now, running(10), 5)
        };
        assert!(w.look(&waiting(62)).is_empty());
        assert!(w.look(&waiting(87)).is_empty());
        // It got the CPU back and is still in the same stall: now reported.
        assert_eq!(w.look(&look(112, running(10), 5)).len(), 1);
        // Once reported, a wait for a CPU does not end it.
        assert!(w.look(&waiting(137)).is_empty());
        assert!(w.open().is_some());
    }

    #[test]
    fn a_starved_current_thread_is_reported_only_while_tasks_wait() {
        let mut w = ThreadWatch::default();
        let idle = |now| Look {
            starving_if_untracked: false,
            ..look(now, running(10), 5)
        };
        assert!(w.look(&idle(100)).is_empty());
        assert_eq!(w.look(&look(101, running(10), 5)).len(), 1);
    }
}
