//! Test support: [`BlockingGuard`] collects every report made while it is
//! alive and fails the test when it is dropped if there was any.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::detector::{BlockingDetector, Shared, lock};
use crate::report::{BlockingReport, ReportKind};

/// How many reports one guard keeps; more are counted, not kept.
const GUARD_CAPACITY: usize = 256;

/// How long a guard waits, when it ends, for the watchdog to see the end of
/// the blocks it saw in progress.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest pause between two looks the guard asks for while it waits.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

impl BlockingDetector {
    /// A guard that fails the test (panics when dropped) if any poll or stall
    /// over the threshold is reported while it is alive, listing every one.
    ///
    /// Reports are collected before rate limiting, so the list is complete
    /// (up to 256 entries; the rest are counted). Each block is listed once,
    /// with its final duration: if the detector is installed, the guard has
    /// the watchdog look at the runtime when it ends and, if a block it saw
    /// in progress has not visibly ended yet (the worker has not parked or
    /// moved on since), looks again until it has — up to 2 s; a block still
    /// in progress then is listed as stuck, with its duration so far. Use
    /// [`BlockingGuard::check`] to get the failure as a value.
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
    ///
    /// let guard = detector.fail_on_blocking();
    /// detector.watch(async { tokio::task::yield_now().await }).await;
    /// assert!(guard.check().is_ok());
    ///
    /// let guard = detector.fail_on_blocking();
    /// detector
    ///     .watch_named("sleeper", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await;
    /// let failure = guard.check().unwrap_err();
    /// assert_eq!(failure.reports().len(), 1);
    /// assert!(failure.to_string().contains("\"sleeper\""));
    /// # }
    /// ```
    ///
    /// In a test, keep the guard in a variable so it lives to the end:
    ///
    /// ```should_panic
    /// # use async_patterns_blocking_detector::BlockingDetector;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler(|_: &_| {})
    /// #     .build()
    /// #     .unwrap();
    /// let _guard = detector.fail_on_blocking();
    /// detector.watch(async { std::thread::sleep(Duration::from_millis(50)) }).await;
    /// // `_guard` is dropped here and panics, listing the poll.
    /// # }
    /// ```
    pub fn fail_on_blocking(&self) -> BlockingGuard {
        let id = lock(&self.shared.guards).open();
        BlockingGuard {
            shared: self.shared.clone(),
            id,
            finished: false,
        }
    }
}

/// Fails the test if the detector reports a block while it is alive; see
/// [`BlockingDetector::fail_on_blocking`].
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, BlockingGuard};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let detector = BlockingDetector::new(Duration::from_millis(20));
/// let guard: BlockingGuard = detector.fail_on_blocking();
/// detector.spawn("polite", async { tokio::task::yield_now().await }).await.unwrap();
/// // Nothing blocked: dropping the guard (or `check`) passes.
/// assert!(guard.check().is_ok());
/// # }
/// ```
#[must_use = "the guard checks for blocking when it is dropped; bind it with `let _guard = ...`"]
pub struct BlockingGuard {
    shared: Arc<Shared>,
    id: u64,
    finished: bool,
}

impl BlockingGuard {
    /// The reports collected so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// let guard = detector.fail_on_blocking();
    /// assert!(guard.reports().is_empty());
    /// # guard.check().unwrap();
    /// ```
    pub fn reports(&self) -> Vec<BlockingReport> {
        lock(&self.shared.guards)
            .logs
            .iter()
            .find(|(id, _)| *id == self.id)
            .map(|(_, log)| log.listed().cloned().collect())
            .unwrap_or_default()
    }

    /// Ends the guard without panicking: `Err` lists the reports if there
    /// were any.
    ///
    /// # Errors
    ///
    /// A [`BlockingFailure`] if any poll or stall over the threshold was
    /// reported while the guard was alive.
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
    /// let guard = detector.fail_on_blocking();
    /// detector.watch(async { std::thread::sleep(Duration::from_millis(40)) }).await;
    /// let failure = guard.check().unwrap_err();
    /// assert!(failure.to_string().starts_with("1 block over 20ms"));
    /// # }
    /// ```
    pub fn check(mut self) -> Result<(), BlockingFailure> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), BlockingFailure> {
        self.finished = true;
        {
            let installation = &self.shared.installation;
            // A block the watchdog saw in progress may have ended a moment
            // ago without the watchdog knowing yet (the worker has not parked
            // or made visible progress since): look again until every such
            // block has ended, so that each is listed with its total. One
            // still in progress at the deadline is listed as stuck, with its
            // duration at the last look (each requested look refreshes it).
            let deadline = Instant::now() + FLUSH_TIMEOUT;
            let mut pause = Duration::from_millis(1);
            while installation.scan_now(deadline).is_some_and(|open| open > 0) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(FLUSH_PAUSE);
            }
        }
        let log = lock(&self.shared.guards).close(self.id);
        let reports: Vec<BlockingReport> = log.listed().cloned().collect();
        if reports.is_empty() && log.omitted == 0 {
            return Ok(());
        }
        Err(BlockingFailure {
            threshold: self.shared.threshold,
            reports,
            omitted: log.omitted,
        })
    }
}

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let result = self.finish();
        if let Err(failure) = result
            && !std::thread::panicking()
        {
            panic!("{failure}");
        }
    }
}

impl fmt::Debug for BlockingGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingGuard")
            .field("reports", &self.reports().len())
            .finish()
    }
}

/// The blocks a [`BlockingGuard`] saw.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, ReportKind};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let detector = BlockingDetector::builder()
///     .threshold(Duration::from_millis(20))
///     .handler(|_: &_| {})
///     .build()
///     .unwrap();
/// let guard = detector.fail_on_blocking();
/// detector.watch(async { std::thread::sleep(Duration::from_millis(40)) }).await;
/// let failure = guard.check().unwrap_err();
/// assert_eq!(failure.reports()[0].kind(), ReportKind::Blocked);
/// assert_eq!(failure.omitted(), 0);
/// # }
/// ```
pub struct BlockingFailure {
    threshold: Duration,
    reports: Vec<BlockingReport>,
    omitted: usize,
}

impl BlockingFailure {
    /// The reports, in the order they were made.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::BlockingDetector;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler(|_: &_| {})
    /// #     .build()
    /// #     .unwrap();
    /// let guard = detector.fail_on_blocking();
    /// detector.watch(async { std::thread::sleep(Duration::from_millis(40)) }).await;
    /// let failure = guard.check().unwrap_err();
    /// assert_eq!(failure.reports().len(), 1);
    /// # }
    /// ```
    pub fn reports(&self) -> &[BlockingReport] {
        &self.reports
    }

    /// Reports beyond the guard's capacity (256), counted but not kept.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::BlockingDetector;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler(|_: &_| {})
    /// #     .build()
    /// #     .unwrap();
    /// let guard = detector.fail_on_blocking();
    /// detector.watch(async { std::thread::sleep(Duration::from_millis(40)) }).await;
    /// let failure = guard.check().unwrap_err();
    /// // Up to 256 reports are kept; the rest are counted here.
    /// assert_eq!(failure.omitted(), 0);
    /// # }
    /// ```
    pub fn omitted(&self) -> usize {
        self.omitted
    }
}

impl fmt::Display for BlockingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.reports.len() + self.omitted;
        write!(
            f,
            "{total} block{} over {:?} of a runtime thread:",
            if total == 1 { "" } else { "s" },
            self.threshold
        )?;
        for report in &self.reports {
            write!(f, "\n  - {report:#}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n  (and {} more)", self.omitted)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingFailure")
            .field("reports", &self.reports)
            .field("omitted", &self.omitted)
            .finish()
    }
}

impl std::error::Error for BlockingFailure {}

/// The logs of the detector's live guards.
#[derive(Debug)]
pub(crate) struct GuardRegistry {
    next_id: u64,
    /// Guards do not fail on stalls the wait for a CPU explains.
    ignore_descheduled: bool,
    logs: Vec<(u64, GuardLog)>,
}

/// How many ended blocks a guard remembers that it does not list.
const REMEMBERED: usize = 1024;

#[derive(Debug, Default)]
struct GuardLog {
    ignore_descheduled: bool,
    /// The latest word on each block, in the order the blocks were first
    /// seen; a block whose latest word says descheduled is not listed (when
    /// ignored).
    reports: Vec<BlockingReport>,
    /// Identifies each kept report's block, to merge `Stuck` and `Blocked`.
    episodes: Vec<(ThreadId, u64)>,
    /// Ended blocks that were never kept (ignored as descheduled), so that a
    /// late look at one does not list it after all.
    ended: VecDeque<(ThreadId, u64)>,
    omitted: usize,
}

impl GuardRegistry {
    pub(crate) fn new(ignore_descheduled: bool) -> GuardRegistry {
        GuardRegistry {
            next_id: 0,
            ignore_descheduled,
            logs: Vec::new(),
        }
    }

    fn open(&mut self) -> u64 {
        self.next_id += 1;
        let log = GuardLog {
            ignore_descheduled: self.ignore_descheduled,
            ..GuardLog::default()
        };
        self.logs.push((self.next_id, log));
        self.next_id
    }

    fn close(&mut self, id: u64) -> GuardLog {
        match self.logs.iter().position(|(i, _)| *i == id) {
            Some(at) => self.logs.swap_remove(at).1,
            None => GuardLog::default(),
        }
    }

    pub(crate) fn record(&mut self, report: &BlockingReport) {
        for (_, log) in &mut self.logs {
            log.record(report);
        }
    }
}

impl GuardLog {
    fn ignored(&self, report: &BlockingReport) -> bool {
        self.ignore_descheduled && report.class.is_descheduled()
    }

    /// The blocks to list.
    fn listed(&self) -> impl Iterator<Item = &BlockingReport> {
        self.reports.iter().filter(|r| !self.ignored(r))
    }

    fn record(&mut self, report: &BlockingReport) {
        if let Some(at) = self.episodes.iter().position(|e| *e == report.episode) {
            // The same block, seen again: keep its latest word; once it has
            // ended (`Blocked`, the total), that is final.
            if self.reports[at].kind != ReportKind::Blocked {
                self.reports[at] = report.clone();
            }
            return;
        }
        if self.ended.contains(&report.episode) {
            return;
        }
        if self.ignored(report) {
            if report.kind == ReportKind::Blocked {
                if self.ended.len() == REMEMBERED {
                    self.ended.pop_front();
                }
                self.ended.push_back(report.episode);
            }
            return;
        }
        if self.reports.len() >= GUARD_CAPACITY {
            self.omitted += 1;
            return;
        }
        self.reports.push(report.clone());
        self.episodes.push(report.episode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{StallClass, ThreadInfo};
    use proptest::prelude::*;
    use std::time::Instant;

    fn report(kind: ReportKind, episode: u64, duration_ms: u64) -> BlockingReport {
        let thread = ThreadInfo::current();
        BlockingReport {
            kind,
            duration: Duration::from_millis(duration_ms),
            started_at: Instant::now(),
            name: None,
            location: None,
            task_id: None,
            episode: (thread.id, episode),
            thread,
            worker: None,
            suppressed: 0,
            times: None,
            class: StallClass::Unknown,
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            stack: None,
        }
    }

    proptest! {
        // Under miri: few cases, and no failure file (miri's isolation has
        // no current directory).
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
            ..ProptestConfig::default()
        })]
        #[test]
        fn a_guard_lists_each_block_once_with_its_final_word(
            reports in prop::collection::vec((any::<bool>(), 0_u64..20), 0..100),
        ) {
            let mut log = GuardLog::default();
            // Each report's duration is its position: it tells them apart.
            for (at, (blocked, episode)) in reports.iter().copied().enumerate() {
                let kind = if blocked { ReportKind::Blocked } else { ReportKind::Stuck };
                log.record(&report(kind, episode, at as u64));
            }
            // One entry per block, in the order the blocks were first seen.
            let mut first_seen = Vec::new();
            for (_, episode) in &reports {
                if !first_seen.contains(episode) {
                    first_seen.push(*episode);
                }
            }
            let listed: Vec<u64> = log.reports.iter().map(|r| r.episode.1).collect();
            prop_assert_eq!(&listed, &first_seen);
            prop_assert_eq!(log.omitted, 0);
            for r in &log.reports {
                let of_block = || {
                    reports
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, e))| *e == r.episode.1)
                };
                // A block that ended is listed as ended, with the figure of
                // its end; one still in progress with its latest figure.
                let expected = match of_block().find(|(_, (b, _))| *b) {
                    Some((at, _)) => (ReportKind::Blocked, at),
                    None => (ReportKind::Stuck, of_block().next_back().unwrap().0),
                };
                prop_assert_eq!((r.kind, r.duration.as_millis() as usize), expected);
            }
        }
    }

    fn descheduled(kind: ReportKind, episode: u64) -> BlockingReport {
        BlockingReport {
            class: StallClass::Descheduled,
            ..report(kind, episode, 1)
        }
    }

    fn ignoring() -> GuardLog {
        GuardLog {
            ignore_descheduled: true,
            ..GuardLog::default()
        }
    }

    #[test]
    fn a_guard_that_ignores_descheduled_stalls_lists_a_block_by_its_latest_word() {
        let mut log = ignoring();
        // Seen stuck and unexplained, then it ended explained: not listed.
        log.record(&report(ReportKind::Stuck, 1, 30));
        log.record(&descheduled(ReportKind::Blocked, 1));
        // Ended explained without a stuck report; a late look changes nothing.
        log.record(&descheduled(ReportKind::Blocked, 2));
        log.record(&report(ReportKind::Stuck, 2, 30));
        // Stuck, explained so far, then it ended as the task's own block.
        log.record(&descheduled(ReportKind::Stuck, 3));
        log.record(&report(ReportKind::Blocked, 3, 100));
        let listed: Vec<_> = log.listed().map(|r| (r.episode.1, r.kind)).collect();
        assert_eq!(listed, [(3, ReportKind::Blocked)]);
        // A guard that does not ignore them lists all three.
        let mut strict = GuardLog::default();
        for r in [
            descheduled(ReportKind::Blocked, 1),
            descheduled(ReportKind::Blocked, 2),
            report(ReportKind::Blocked, 3, 100),
        ] {
            strict.record(&r);
        }
        assert_eq!(strict.listed().count(), 3);
    }

    #[test]
    fn a_full_guard_counts_what_it_cannot_keep() {
        let mut log = GuardLog::default();
        for episode in 0..(GUARD_CAPACITY as u64 + 3) {
            log.record(&report(ReportKind::Blocked, episode, 1));
        }
        assert_eq!(log.reports.len(), GUARD_CAPACITY);
        assert_eq!(log.omitted, 3);
    }
}
