//! [`BlockingDetector`]: the shared state of a detector, its metrics, and
//! the one path every report takes — counted, collected by the active test
//! guards, rate-limited, then handed to the handler.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, Location};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_patterns_core::__private::CachePadded;
pub(crate) use async_patterns_core::__private::lock;

use crate::builder::BlockingDetectorBuilder;
use crate::clock::Clock;
use crate::guard::GuardRegistry;
use crate::report::{BlockingHandler, BlockingReport, ReportKind, default_handler};

/// How many distinct locations the rate limiter remembers.
const RATE_LIMIT_ENTRIES: usize = 1024;

/// Finds the poll that blocks a tokio runtime thread, names it, and reports
/// it — through a [`BlockingHandler`], to the active
/// [`BlockingGuard`](crate::BlockingGuard)s, and in its [`DetectorMetrics`].
///
/// A detector is a cheap handle (`Clone` shares it). It watches in up to
/// three ways, which combine:
///
/// - [`watch`](Self::watch) / [`spawn`](Self::spawn) wrap one future and time
///   each of its polls (stable tokio, any runtime);
/// - [`install`](BlockingDetectorBuilder::install) adds a watchdog to a
///   runtime, which reports a blocked worker *while it is still blocked*;
/// - built with `--cfg tokio_unstable`, the installed detector also times
///   every task poll of that runtime (precise mode).
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::BlockingDetector;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let detector = BlockingDetector::builder()
///     .threshold(Duration::from_millis(20))
///     .handler(|report: &_| eprintln!("{report}"))
///     .build()?;
///
/// detector.spawn("well-behaved", async { tokio::task::yield_now().await }).await?;
/// detector.spawn("sleeper", async { std::thread::sleep(Duration::from_millis(50)) }).await?;
/// assert_eq!(detector.metrics().blocked, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BlockingDetector {
    pub(crate) shared: Arc<Shared>,
    /// Shared by the clones: when the last is dropped, the detector lives on
    /// for as long as futures it watches do.
    _handle: Arc<Handle>,
}

/// The handles' part of a detector's life (see [`Hot::keep`]).
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.hot.orphan(&self.shared);
    }
}

/// What happens to a stall that the wait for a CPU explains — one that,
/// less the time its thread waited in the kernel's run queue, is under the
/// threshold ([`StallClass::Descheduled`](crate::StallClass::Descheduled)):
/// on a busy machine (any CI runner) a well-behaved task is sometimes kept
/// off a CPU longer than the threshold, and that is not the task's fault.
///
/// Such stalls are always counted (`descheduled` in [`DetectorMetrics`]); the policy
/// says who else hears of them. A stall whose figures are unknown (no
/// per-thread CPU counters on this platform) is never taken for descheduled.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, DescheduledPolicy};
///
/// // Production: do not page anyone because the machine was busy.
/// let detector = BlockingDetector::builder()
///     .descheduled(DescheduledPolicy::Ignore)
///     .build()
///     .unwrap();
/// # drop(detector);
/// assert_eq!(DescheduledPolicy::default(), DescheduledPolicy::IgnoreInGuards);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DescheduledPolicy {
    /// Report them like any other stall, to the handler and the test guards.
    Report,
    /// Report them to the handler (classified, so it can tell), but do not
    /// fail a test guard on them. The default: a test passes on a loaded CI
    /// machine and still fails on code that blocks.
    #[default]
    IgnoreInGuards,
    /// Report them to neither: count them only.
    Ignore,
}

/// A snapshot of what a detector counted: see [`BlockingDetector::metrics`].
///
/// Counters count since the detector was made and never go down;
/// `watched_threads` is a gauge (the value now).
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, DetectorMetrics};
///
/// let detector = BlockingDetector::builder().build().unwrap();
/// assert_eq!(detector.metrics(), DetectorMetrics::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DetectorMetrics {
    /// [`ReportKind::Blocked`] reports: polls (or watchdog-found stalls) over
    /// the threshold that ended.
    pub blocked: u64,
    /// [`ReportKind::Stuck`] reports: blocks the watchdog saw in progress.
    pub stuck: u64,
    /// Reports counted above whose stall the wait for a CPU explains
    /// ([`StallClass::Descheduled`](crate::StallClass::Descheduled)).
    pub descheduled: u64,
    /// Reports counted above that the [`DescheduledPolicy`] kept from the
    /// handler.
    pub ignored: u64,
    /// Reports counted above that rate limiting kept from the handler.
    pub suppressed: u64,
    /// The total duration of the `blocked` reports.
    pub blocked_time: Duration,
    /// Runtime threads the watchdog currently watches (0 without
    /// [`install`](BlockingDetectorBuilder::install)): a worker joins at its
    /// first park, unpark or (precise mode) task poll.
    pub watched_threads: usize,
}

impl BlockingDetector {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> BlockingDetector {
        BlockingDetector {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
        }
    }

    /// A builder with the defaults: threshold 100 ms, one report per kind and
    /// location per second, the default handler ([`StderrHandler`], or
    /// `TracingHandler` with the `tracing` feature), enabled.
    ///
    /// [`StderrHandler`]: crate::StderrHandler
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// let detector = BlockingDetector::builder().build().unwrap();
    /// assert_eq!(detector.threshold(), Duration::from_millis(100));
    /// ```
    pub fn builder() -> BlockingDetectorBuilder {
        BlockingDetectorBuilder::new()
    }

    /// A detector for [`watch`](Self::watch) and [`spawn`](Self::spawn)
    /// with every default but the threshold: the shorthand for
    /// `BlockingDetector::builder().threshold(threshold).build()`.
    ///
    /// # Panics
    ///
    /// If `threshold` is outside 1 ms ..= 1 hour (the builder returns a
    /// [`ConfigError`](async_patterns_core::ConfigError) instead).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// let detector = BlockingDetector::new(Duration::from_millis(20));
    /// assert_eq!(detector.threshold(), Duration::from_millis(20));
    /// ```
    ///
    /// ```should_panic
    /// # use async_patterns_blocking_detector::BlockingDetector;
    /// # use std::time::Duration;
    /// BlockingDetector::new(Duration::ZERO); // panics: below 1 ms
    /// ```
    #[track_caller]
    pub fn new(threshold: Duration) -> BlockingDetector {
        match BlockingDetector::builder().threshold(threshold).build() {
            Ok(detector) => detector,
            Err(e) => panic!("{e}"),
        }
    }

    /// A poll (or stall) longer than this is reported.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// let detector = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(30))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(detector.threshold(), Duration::from_millis(30));
    /// ```
    pub fn threshold(&self) -> Duration {
        self.shared.threshold
    }

    /// What the detector counted so far (a snapshot).
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
    /// for _ in 0..3 {
    ///     detector.watch(async { std::thread::sleep(Duration::from_millis(30)) }).await;
    /// }
    /// let metrics = detector.metrics();
    /// assert_eq!(metrics.blocked, 3);
    /// // Same location, within a second: the handler saw the first only.
    /// assert_eq!(metrics.suppressed, 2);
    /// assert!(metrics.blocked_time >= Duration::from_millis(60));
    /// # }
    /// ```
    pub fn metrics(&self) -> DetectorMetrics {
        let c = &self.shared.counters;
        DetectorMetrics {
            blocked: c.blocked.load(Relaxed),
            stuck: c.stuck.load(Relaxed),
            descheduled: c.descheduled.load(Relaxed),
            ignored: c.ignored.load(Relaxed),
            suppressed: c.suppressed.load(Relaxed),
            blocked_time: Duration::from_nanos(c.blocked_ns.load(Relaxed)),
            watched_threads: self.shared.watched_threads(),
        }
    }

    /// Turns the detector off or on. Off, a watched poll costs one branch
    /// and the runtime hooks return at once; nothing is measured or reported.
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
    /// detector.set_enabled(false);
    /// assert!(!detector.is_enabled());
    /// detector.watch(async { std::thread::sleep(Duration::from_millis(30)) }).await;
    /// assert_eq!(detector.metrics().blocked, 0);
    /// # }
    /// ```
    pub fn set_enabled(&self, enabled: bool) {
        let hot = self.shared.hot;
        if enabled && !hot.enabled.load(Relaxed) {
            // Time spent disabled must not count as blocked once re-enabled.
            self.shared
                .enabled_since
                .store(self.shared.clock.now_ns(), Release);
        }
        hot.enabled.store(enabled, Release);
    }

    /// Whether the detector measures and reports.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let detector = BlockingDetector::builder().enabled(false).build().unwrap();
    /// assert!(!detector.is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.shared.is_enabled()
    }
}

impl fmt::Debug for BlockingDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingDetector")
            .field("threshold", &self.shared.threshold)
            .field("enabled", &self.is_enabled())
            .field("installed", &self.shared.is_installed())
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// Everything a detector's handles, watched futures and hooks share.
pub(crate) struct Shared {
    /// Distinguishes detectors in thread-local bindings.
    pub(crate) id: u64,
    pub(crate) threshold: Duration,
    pub(crate) threshold_ns: u64,
    pub(crate) clock: Clock,
    /// What a watched poll reads; see [`Hot`].
    pub(crate) hot: &'static Hot,
    /// The clock reading when the detector was last enabled.
    pub(crate) enabled_since: AtomicU64,
    handler: Arc<dyn BlockingHandler>,
    pub(crate) descheduled: DescheduledPolicy,
    report_interval_ns: u64,
    limiter: Mutex<RateLimiter>,
    pub(crate) guards: Mutex<GuardRegistry>,
    counters: CounterCells,
    pub(crate) installation: Arc<crate::runtime::Installation>,
}

#[derive(Default)]
struct CounterCells {
    blocked: AtomicU64,
    stuck: AtomicU64,
    descheduled: AtomicU64,
    ignored: AtomicU64,
    suppressed: AtomicU64,
    blocked_ns: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: &BlockingDetectorBuilder,
        installation: Arc<crate::runtime::Installation>,
    ) -> Arc<Shared> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let clock = Clock::for_threshold(config.threshold);
        let threshold_ns = config.threshold.as_nanos() as u64;
        let hot = Hot::acquire();
        hot.enabled.store(config.enabled, Relaxed);
        hot.threshold_ns.store(threshold_ns, Relaxed);
        hot.coarse.store(clock.is_coarse(), Relaxed);
        hot.installed.store(installation.hooked, Relaxed);
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Relaxed),
            threshold: config.threshold,
            threshold_ns,
            hot,
            enabled_since: AtomicU64::new(clock.now_ns()),
            clock,
            handler: config.handler.clone().unwrap_or_else(default_handler),
            descheduled: config.descheduled,
            report_interval_ns: config.report_interval.as_nanos().min(u128::from(u64::MAX)) as u64,
            limiter: Mutex::new(RateLimiter::default()),
            guards: Mutex::new(GuardRegistry::new(
                config.descheduled != DescheduledPolicy::Report,
            )),
            counters: CounterCells::default(),
            installation,
        });
        *lock(&hot.shared) = Arc::downgrade(&shared);
        // Published last: a watched future checks the id before anything else.
        hot.id.store(shared.id, Release);
        shared
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.hot.enabled.load(Acquire)
    }

    fn is_installed(&self) -> bool {
        self.installation.hooked
    }

    fn watched_threads(&self) -> usize {
        if self.installation.hooked {
            self.installation.watched_threads()
        } else {
            0
        }
    }

    /// Counts `report`, gives it to the active guards, and delivers it to the
    /// handler unless rate limiting suppresses it.
    pub(crate) fn dispatch(&self, mut report: BlockingReport) {
        let c = &self.counters;
        match report.kind {
            ReportKind::Stuck => {
                c.stuck.fetch_add(1, Relaxed);
            }
            ReportKind::Blocked => {
                c.blocked.fetch_add(1, Relaxed);
                let ns = report.duration.as_nanos().min(u128::from(u64::MAX)) as u64;
                c.blocked_ns.fetch_add(ns, Relaxed);
            }
        }
        if report.class.is_descheduled() {
            c.descheduled.fetch_add(1, Relaxed);
        }
        lock(&self.guards).record(&report);
        if report.class.is_descheduled() && self.descheduled == DescheduledPolicy::Ignore {
            c.ignored.fetch_add(1, Relaxed);
            return;
        }
        let origin = Origin::of(&report);
        let admitted =
            lock(&self.limiter).admit(origin, self.clock.now_ns(), self.report_interval_ns);
        let Some(suppressed) = admitted else {
            c.suppressed.fetch_add(1, Relaxed);
            return;
        };
        report.suppressed = suppressed;
        // A panicking handler must not take a worker or the watchdog down.
        let handler = &self.handler;
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_report(&report)));
    }
}

impl Shared {
    /// Gives the active guards the current figure of a block still in
    /// progress (`report` is `Stuck`), without counting or delivering it.
    pub(crate) fn refresh_guards(&self, report: &BlockingReport) {
        lock(&self.guards).record(report);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.hot.release();
        // A detector made with `build` has nothing else to stop its watchdog.
        self.installation.shutdown();
    }
}

/// The part of a detector that a watched poll reads, in memory that outlives
/// the detector: a watched future holds a `&'static Hot` and the detector's
/// id instead of a reference count, so that spawning watched tasks from one
/// thread and finishing them on others does not bounce a shared counter
/// between cores. Slots are reused when detectors are dropped, so their
/// number is the most detectors alive at once.
///
/// A watched future keeps its detector alive: futures are counted in
/// per-thread shards ([`live`](Self::live); a future may be counted up on
/// one shard and down on another, only the sum means anything), and when the
/// last handle goes while futures remain, [`keep`](Self::keep) holds the
/// detector until the last of them is dropped.
pub(crate) struct Hot {
    /// The id of the detector using the slot; 0 while free.
    pub(crate) id: AtomicU64,
    pub(crate) enabled: AtomicBool,
    pub(crate) threshold_ns: AtomicU64,
    pub(crate) coarse: AtomicBool,
    /// Installed in a runtime: watched polls publish what they poll.
    pub(crate) installed: AtomicBool,
    shared: Mutex<Weak<Shared>>,
    /// Watched futures alive, counted per thread shard.
    live: [CachePadded<AtomicI64>; SHARDS],
    /// The last handle is gone.
    orphaned: AtomicBool,
    /// The detector, held for its futures once its handles are gone.
    keep: Mutex<Option<(u64, Arc<Shared>)>>,
}

/// Shards of the live-future count.
const SHARDS: usize = 16;

/// Free slots.
static FREE_HOT: Mutex<Vec<&'static Hot>> = Mutex::new(Vec::new());

thread_local! {
    /// The calling thread's shard of the live-future counts.
    static SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Relaxed) as usize % SHARDS
    };
}

fn shard() -> usize {
    SHARD.try_with(|s| *s).unwrap_or(0)
}

impl Hot {
    fn acquire() -> &'static Hot {
        lock(&FREE_HOT).pop().unwrap_or_else(|| {
            Box::leak(Box::new(Hot {
                id: AtomicU64::new(0),
                enabled: AtomicBool::new(false),
                threshold_ns: AtomicU64::new(u64::MAX),
                coarse: AtomicBool::new(false),
                installed: AtomicBool::new(false),
                shared: Mutex::new(Weak::new()),
                live: std::array::from_fn(|_| CachePadded::new(AtomicI64::new(0))),
                orphaned: AtomicBool::new(false),
                keep: Mutex::new(None),
            }))
        })
    }

    fn release(&'static self) {
        self.id.store(0, Release);
        *lock(&self.shared) = Weak::new();
        // No future of the detector is left (it kept the detector alive), so
        // the shards add up to 0; a new detector starts them from 0.
        for count in &self.live {
            count.store(0, Relaxed);
        }
        self.orphaned.store(false, Relaxed);
        lock(&FREE_HOT).push(self);
    }

    /// The detector `id`, if it is still alive.
    pub(crate) fn detector(&self, id: u64) -> Option<Arc<Shared>> {
        let shared = lock(&self.shared).upgrade()?;
        (shared.id == id).then_some(shared)
    }

    /// A watched future of the detector was made.
    #[inline]
    pub(crate) fn future_made(&self) {
        self.live[shard()].fetch_add(1, SeqCst);
    }

    /// A watched future of detector `id` was dropped.
    #[inline]
    pub(crate) fn future_dropped(&self, id: u64) {
        self.live[shard()].fetch_sub(1, SeqCst);
        // Pairs with `orphan`: either this sees the flag, or `orphan` sees
        // this future gone (both are sequentially consistent).
        if self.orphaned.load(SeqCst) {
            self.let_go_if_unused(id);
        }
    }

    /// The last handle of `shared` is gone.
    fn orphan(&self, shared: &Arc<Shared>) {
        *lock(&self.keep) = Some((shared.id, shared.clone()));
        self.orphaned.store(true, SeqCst);
        self.let_go_if_unused(shared.id);
    }

    /// Drops the kept detector `id` if no watched future of it is alive.
    #[cold]
    fn let_go_if_unused(&self, id: u64) {
        // After `orphan` no future is made (that takes a handle), so each
        // shard only goes down: a sum of 0 read shard by shard means none is
        // left at the end of the reading.
        let alive: i64 = self.live.iter().map(|c| c.load(SeqCst)).sum();
        if alive == 0 {
            let kept = lock(&self.keep).take_if(|(kept, _)| *kept == id);
            drop(kept);
        }
    }
}

/// What rate limiting groups reports by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Origin {
    Location {
        kind: ReportKind,
        file: &'static str,
        line: u32,
        column: u32,
    },
    Worker {
        kind: ReportKind,
        worker: Option<usize>,
    },
}

impl Origin {
    fn of(report: &BlockingReport) -> Origin {
        match report.location {
            Some(l) => Origin::from_location(report.kind, l),
            None => Origin::Worker {
                kind: report.kind,
                worker: report.worker,
            },
        }
    }

    fn from_location(kind: ReportKind, l: &'static Location<'static>) -> Origin {
        Origin::Location {
            kind,
            file: l.file(),
            line: l.line(),
            column: l.column(),
        }
    }
}

/// At most one delivered report per origin per interval, remembering at most
/// [`RATE_LIMIT_ENTRIES`] origins.
#[derive(Debug, Default)]
struct RateLimiter {
    entries: HashMap<Origin, LimitEntry>,
}

#[derive(Debug)]
struct LimitEntry {
    last_delivered: u64,
    suppressed: u64,
}

impl RateLimiter {
    /// `Some(suppressed since the last delivery)` if a report of `origin` may
    /// be delivered at `now`, `None` if it is suppressed.
    fn admit(&mut self, origin: Origin, now: u64, interval: u64) -> Option<u64> {
        if interval == 0 {
            return Some(0);
        }
        if let Some(entry) = self.entries.get_mut(&origin) {
            if now.saturating_sub(entry.last_delivered) < interval {
                entry.suppressed += 1;
                return None;
            }
            entry.last_delivered = now;
            return Some(std::mem::take(&mut entry.suppressed));
        }
        if self.entries.len() >= RATE_LIMIT_ENTRIES {
            self.entries
                .retain(|_, e| now.saturating_sub(e.last_delivered) < interval);
            if self.entries.len() >= RATE_LIMIT_ENTRIES {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_delivered)
                    .map(|(o, _)| o.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(
            origin,
            LimitEntry {
                last_delivered: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(line: u32) -> Origin {
        Origin::Location {
            kind: ReportKind::Blocked,
            file: "f.rs",
            line,
            column: 1,
        }
    }

    #[test]
    fn rate_limiter_delivers_once_per_interval_and_counts_the_rest() {
        let mut limiter = RateLimiter::default();
        assert_eq!(limiter.admit(origin(1), 100, 50), Some(0));
        assert_eq!(limiter.admit(origin(1), 120, 50), None);
        assert_eq!(limiter.admit(origin(1), 140, 50), None);
        // Another origin is independent.
        assert_eq!(limiter.admit(origin(2), 140, 50), Some(0));
        assert_eq!(limiter.admit(origin(1), 150, 50), Some(2));
        assert_eq!(limiter.admit(origin(1), 151, 50), None);
    }

    #[test]
    fn rate_limiter_with_zero_interval_delivers_everything() {
        let mut limiter = RateLimiter::default();
        for now in 0..10 {
            assert_eq!(limiter.admit(origin(1), now, 0), Some(0));
        }
        assert!(limiter.entries.is_empty());
    }

    #[test]
    fn rate_limiter_memory_is_bounded() {
        let mut limiter = RateLimiter::default();
        let lines = if cfg!(miri) {
            RATE_LIMIT_ENTRIES + 8
        } else {
            RATE_LIMIT_ENTRIES * 3
        };
        for line in 0..lines as u32 {
            assert_eq!(limiter.admit(origin(line), 1, 1_000), Some(0));
            assert!(limiter.entries.len() <= RATE_LIMIT_ENTRIES);
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
        fn rate_limiting_accounts_for_every_report(
            events in prop::collection::vec((0_u32..4, 0_u64..50), 0..200),
            interval in 0_u64..40,
        ) {
            let mut limiter = RateLimiter::default();
            let mut now = 0;
            let mut last_delivery = HashMap::new();
            let mut pending = HashMap::new();
            let (mut delivered, mut suppressed) = (0, 0);
            for (line, delta) in events.iter().copied() {
                now += delta;
                match limiter.admit(origin(line), now, interval) {
                    Some(carried) => {
                        delivered += 1;
                        // Deliveries of one origin are at least `interval` apart.
                        if let Some(previous) = last_delivery.insert(line, now) {
                            prop_assert!(now - previous >= interval);
                        }
                        // Each carries exactly the suppressions since the last.
                        prop_assert_eq!(carried, pending.remove(&line).unwrap_or(0));
                    }
                    None => {
                        suppressed += 1;
                        *pending.entry(line).or_insert(0) += 1;
                    }
                }
            }
            prop_assert_eq!(delivered + suppressed, events.len());
        }
    }

    #[test]
    fn stuck_and_blocked_of_one_location_are_limited_separately() {
        let l = Location::caller();
        assert_ne!(
            Origin::from_location(ReportKind::Stuck, l),
            Origin::from_location(ReportKind::Blocked, l)
        );
    }
}
