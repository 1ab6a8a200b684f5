//! The watchdog thread: every quarter threshold (or when a test guard asks)
//! it looks at each worker of the watched runtime and reports one that has
//! been blocked longer than the threshold — once while it is stuck, once
//! more when it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Acquire;
use std::time::Duration;

use crate::activity::PollRecord;
use crate::detector::{Shared, lock};
use crate::report::{BlockingReport, ReportKind, TaskId};
use crate::runtime::{Installation, Next, RuntimeThread, RuntimeWatch};

/// The watchdog thread's body; returns when the runtime's hooks are dropped.
pub(crate) fn run(shared: &Arc<Shared>) {
    let Some(installation) = shared.installation.as_ref() else {
        return;
    };
    // Tells waiting guards that the watchdog is gone, even if a scan panics.
    struct Exit<'a>(&'a Installation);
    impl Drop for Exit<'_> {
        fn drop(&mut self) {
            self.0.exited();
        }
    }
    let _exit = Exit(installation);

    let tick = (shared.threshold / 4).max(Duration::from_millis(1));
    let mut scanner = Scanner::default();
    let mut last = 0;
    loop {
        match installation.wait(tick, last) {
            Next::Exit => return,
            Next::Scan(requested) => {
                if shared.is_enabled() {
                    match installation.current() {
                        Some(watch) => scanner.scan(shared, installation, &watch),
                        None => scanner.threads.clear(),
                    }
                }
                installation.scanned(requested);
                last = requested;
            }
        }
    }
}

/// What the watchdog remembers about each thread between looks.
#[derive(Debug, Default)]
struct Scanner {
    threads: HashMap<u64, ThreadWatch>,
}

#[derive(Debug, Default)]
struct ThreadWatch {
    /// The worker's busy-time metric at the last look.
    last_busy: Option<Duration>,
    /// When the metric was last seen to change.
    heartbeat_at: u64,
    /// The look before that: the change happened after this time.
    changed_after: u64,
    /// When the metric was last read.
    last_look: u64,
    /// The block reported as stuck, if any.
    episode: Option<Episode>,
    seen: bool,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    since: u64,
    /// Inside a tracked poll, whose end the poller reports itself.
    tracked: bool,
}

impl Scanner {
    fn scan(&mut self, shared: &Shared, installation: &Installation, watch: &RuntimeWatch) {
        let now = shared.clock.now_ns();
        let enabled_since = shared.enabled_since.load(Acquire);
        #[cfg(target_has_atomic = "64")]
        let metrics = watch.handle().map(|h| h.metrics());
        let threads: Vec<Arc<RuntimeThread>> = lock(&watch.threads).clone();
        for state in self.threads.values_mut() {
            state.seen = false;
        }
        for thread in threads.iter().filter(|t| watch.is_owner(t)) {
            let state = self.threads.entry(thread.id).or_default();
            state.seen = true;

            // tokio updates a worker's busy time at least every 61 polls and
            // at every park: a change means the worker is not stuck in one poll.
            #[cfg(target_has_atomic = "64")]
            if let (Some(metrics), Some(worker)) = (&metrics, thread.worker())
                && worker < metrics.num_workers()
            {
                let busy = metrics.worker_total_busy_duration(worker);
                if state.last_busy.is_some_and(|b| b != busy) {
                    state.heartbeat_at = now;
                    state.changed_after = state.last_look;
                }
                state.last_busy = Some(busy);
                state.last_look = now;
            }

            let snapshot = thread.activity.snapshot();
            let Some(record) = snapshot.record else {
                continue; // being rewritten on every attempt: look next tick
            };
            let tracked = record.is_polling();
            let since = if tracked {
                record.start
            } else if snapshot.progress_at == 0 {
                0 // no park or poll seen yet: nothing to measure from
            } else {
                snapshot.progress_at.max(state.heartbeat_at)
            };
            let since = if since == 0 {
                0
            } else {
                since.max(enabled_since)
            };
            // The worker moved on after the tracked poll started: another
            // thread runs it now (the poll called `block_in_place`). Strictly
            // after: readings of the coarse clock within one tick are equal.
            let handed_over = tracked && state.changed_after > record.start;
            // A current-thread runtime's thread that left `block_on` looks
            // like one stuck outside any tracked poll; it only matters (and is
            // only reported) if tasks wait for it — more than the sentinel.
            #[cfg(target_has_atomic = "64")]
            let starving = tracked
                || !watch.current_thread
                || metrics.as_ref().is_none_or(|m| m.num_alive_tasks() > 1);
            #[cfg(not(target_has_atomic = "64"))]
            let starving = tracked || !watch.current_thread;
            let stuck = !snapshot.parked
                && !handed_over
                && starving
                && since != 0
                && now.saturating_sub(since) >= shared.threshold_ns;

            if let Some(episode) = state.episode {
                if stuck && episode.since == since {
                    continue; // the same block, already reported
                }
                state.episode = None;
                if !episode.tracked {
                    let end = [snapshot.progress_at, state.heartbeat_at]
                        .into_iter()
                        .filter(|t| *t > episode.since)
                        .min()
                        .unwrap_or(now);
                    let report = build(shared, thread, &PollRecord::IDLE, episode.since, end);
                    shared.dispatch(BlockingReport {
                        kind: ReportKind::Blocked,
                        ..report
                    });
                }
            }
            if stuck {
                state.episode = Some(Episode { since, tracked });
                let shown = if tracked { record } else { PollRecord::IDLE };
                #[allow(unused_mut)]
                let mut report = build(shared, thread, &shown, since, now);
                #[cfg(all(feature = "stack-capture", target_os = "linux"))]
                if let Some(signal) = installation.stack_signal {
                    report.stack = crate::stack::capture(thread.tid, signal).map(Arc::new);
                }
                shared.dispatch(report);
            }
        }
        let _ = installation;
        self.threads.retain(|_, state| state.seen);
    }
}

/// A `Stuck` report of `thread`, blocked from `since` to `until`.
fn build(
    shared: &Shared,
    thread: &RuntimeThread,
    record: &PollRecord,
    since: u64,
    until: u64,
) -> BlockingReport {
    BlockingReport {
        kind: ReportKind::Stuck,
        duration: Duration::from_nanos(until.saturating_sub(since)),
        started_at: shared.clock.instant_of(since),
        name: record.name,
        location: record.location,
        task_id: TaskId::from_raw(record.task_id),
        thread: thread.info.clone(),
        worker: thread.worker(),
        suppressed: 0,
        episode: (thread.info.id, since),
        #[cfg(all(feature = "stack-capture", target_os = "linux"))]
        stack: None,
    }
}
