//! [`BlockingDetectorBuilder`]: every option of a detector, and the two ways
//! to make one — [`build`](BlockingDetectorBuilder::build) (watched futures)
//! and [`install`](BlockingDetectorBuilder::install) (a runtime's watchdog).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_patterns_core::ConfigError;

use crate::detector::{BlockingDetector, DescheduledPolicy, Shared};
use crate::report::BlockingHandler;
use crate::runtime::{InstallError, UserHooks};

/// The threshold when none is set.
pub(crate) const DEFAULT_THRESHOLD: Duration = Duration::from_millis(100);
/// The shortest accepted threshold.
const MIN_THRESHOLD: Duration = Duration::from_millis(1);
/// The longest accepted threshold.
const MAX_THRESHOLD: Duration = Duration::from_secs(3600);
/// The rate limit when none is set: one report per kind and location per second.
const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Configures a [`BlockingDetector`].
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::BlockingDetector;
/// use std::time::Duration;
///
/// let detector = BlockingDetector::builder()
///     .threshold(Duration::from_millis(50))
///     .report_interval(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// assert_eq!(detector.threshold(), Duration::from_millis(50));
///
/// let err = BlockingDetector::builder().threshold(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "threshold");
/// ```
#[must_use = "a builder does nothing until `build` or `install` is called"]
pub struct BlockingDetectorBuilder {
    pub(crate) threshold: Duration,
    pub(crate) handler: Option<Arc<dyn BlockingHandler>>,
    pub(crate) report_interval: Duration,
    pub(crate) enabled: bool,
    pub(crate) descheduled: DescheduledPolicy,
    pub(crate) hooks: crate::runtime::UserHooks,
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    pub(crate) capture_stacks: bool,
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    pub(crate) stack_signal: Option<i32>,
}

impl BlockingDetectorBuilder {
    /// A builder with the defaults: threshold 100 ms, one report per kind and
    /// location per second, the default handler ([`StderrHandler`], or
    /// `TracingHandler` with the `tracing` feature), descheduled stalls kept
    /// from test guards, enabled. The same as [`BlockingDetector::builder`].
    ///
    /// [`StderrHandler`]: crate::StderrHandler
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetectorBuilder;
    /// use std::time::Duration;
    ///
    /// let detector = BlockingDetectorBuilder::new().build().unwrap();
    /// assert_eq!(detector.threshold(), Duration::from_millis(100));
    /// ```
    pub fn new() -> BlockingDetectorBuilder {
        BlockingDetectorBuilder {
            threshold: DEFAULT_THRESHOLD,
            handler: None,
            report_interval: DEFAULT_REPORT_INTERVAL,
            enabled: true,
            descheduled: DescheduledPolicy::default(),
            hooks: UserHooks::default(),
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            capture_stacks: false,
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            stack_signal: None,
        }
    }

    /// Report polls and stalls longer than `threshold` (default 100 ms; from
    /// 1 ms to 1 hour).
    ///
    /// Durations are measured with a clock whose resolution is at most a
    /// tenth of the threshold; the watchdog looks every quarter threshold.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// let err = BlockingDetector::builder()
    ///     .threshold(Duration::from_micros(10))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid `threshold`: got 10µs, expected from 1ms to 3600s"
    /// );
    /// ```
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// Deliver reports to `handler` instead of the default one.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, BlockingReport};
    /// use std::sync::mpsc;
    /// use std::sync::Mutex;
    ///
    /// let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// let tx = Mutex::new(tx);
    /// let detector = BlockingDetector::builder()
    ///     .handler(move |r: &BlockingReport| {
    ///         let _ = tx.lock().unwrap().send(r.clone());
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # drop((detector, rx));
    /// ```
    pub fn handler(mut self, handler: impl BlockingHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Deliver at most one report per kind and location (the watch or spawn
    /// call site; the worker for stalls outside any tracked poll) per
    /// `interval` (default 1 s); [`Duration::ZERO`] delivers every report.
    /// Suppressed reports are still counted and still collected by test
    /// guards; the next delivered report says how many were suppressed.
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
    ///     .threshold(Duration::from_millis(10))
    ///     .report_interval(Duration::ZERO)
    ///     .handler(|_: &_| {})
    ///     .build()
    ///     .unwrap();
    /// for _ in 0..2 {
    ///     detector.watch(async { std::thread::sleep(Duration::from_millis(20)) }).await;
    /// }
    /// assert_eq!(detector.metrics().suppressed, 0);
    /// # }
    /// ```
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// What to do with stalls that the wait for a CPU explains (default
    /// [`DescheduledPolicy::IgnoreInGuards`]): whether the handler and the
    /// test guards hear of them. A stall is judged on its duration less the
    /// time its thread waited for a CPU; see [`DescheduledPolicy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, DescheduledPolicy};
    /// use std::time::Duration;
    ///
    /// // Fail tests on every stall over 20 ms, busy machine or not.
    /// let strict = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(20))
    ///     .descheduled(DescheduledPolicy::Report)
    ///     .build()
    ///     .unwrap();
    /// # drop(strict);
    /// ```
    pub fn descheduled(mut self, policy: DescheduledPolicy) -> Self {
        self.descheduled = policy;
        self
    }

    /// Also run `hook` when a thread of the runtime starts: tokio's runtime
    /// builder keeps one hook of each kind, and
    /// [`install`](Self::install) sets its own, replacing whatever was set
    /// there before. Give yours here instead and both run (yours after the
    /// detector's).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// let detector = BlockingDetector::builder()
    ///     .on_thread_start({
    ///         let started = started.clone();
    ///         move || {
    ///             started.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .install(builder.worker_threads(2))?;
    /// let rt = builder.build()?;
    /// rt.block_on(async { tokio::task::yield_now().await });
    /// drop(rt);
    /// assert!(started.load(Ordering::Relaxed) >= 2);
    /// # drop(detector);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_thread_start(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.thread_start = Some(Arc::new(hook));
        self
    }

    /// Also run `hook` when a thread of the runtime stops (before the
    /// detector's own hook); see [`on_thread_start`](Self::on_thread_start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let stopped = Arc::new(AtomicUsize::new(0));
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// let detector = BlockingDetector::builder()
    ///     .on_thread_stop({
    ///         let stopped = stopped.clone();
    ///         move || {
    ///             stopped.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .install(builder.worker_threads(2))?;
    /// drop(builder.build()?);
    /// assert_eq!(stopped.load(Ordering::Relaxed), 2);
    /// # drop(detector);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_thread_stop(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.thread_stop = Some(Arc::new(hook));
        self
    }

    /// Also run `hook` when a worker is about to park (before the
    /// detector's own hook, so time your hook takes counts as the worker's
    /// busy time); see [`on_thread_start`](Self::on_thread_start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let parks = Arc::new(AtomicUsize::new(0));
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder()
    ///     .on_thread_park({
    ///         let parks = parks.clone();
    ///         move || {
    ///             parks.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .install(builder.enable_time())?;
    /// let rt = builder.build()?;
    /// rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(5)).await });
    /// assert!(parks.load(Ordering::Relaxed) >= 1);
    /// # drop(detector);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_thread_park(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.thread_park = Some(Arc::new(hook));
        self
    }

    /// Also run `hook` when a worker wakes up (after the detector's own
    /// hook); see [`on_thread_start`](Self::on_thread_start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let wakes = Arc::new(AtomicUsize::new(0));
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder()
    ///     .on_thread_unpark({
    ///         let wakes = wakes.clone();
    ///         move || {
    ///             wakes.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .install(builder.enable_time())?;
    /// let rt = builder.build()?;
    /// rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(5)).await });
    /// assert!(wakes.load(Ordering::Relaxed) >= 1);
    /// # drop(detector);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_thread_unpark(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.thread_unpark = Some(Arc::new(hook));
        self
    }

    /// Also run `hook` before each task poll (precise mode, built with
    /// `--cfg tokio_unstable`, after the detector's own hook); see
    /// [`on_thread_start`](Self::on_thread_start).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder()
    ///     .on_before_task_poll(|meta| eprintln!("polling task {}", meta.id()))
    ///     .install(&mut builder)
    ///     .unwrap();
    /// # drop(detector);
    /// # }
    /// ```
    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    pub fn on_before_task_poll(
        mut self,
        hook: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.before_task_poll = Some(Arc::new(hook));
        self
    }

    /// Also run `hook` after each task poll (precise mode, before the
    /// detector's own hook); see [`on_thread_start`](Self::on_thread_start).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder()
    ///     .on_after_task_poll(|meta| eprintln!("polled task {}", meta.id()))
    ///     .install(&mut builder)
    ///     .unwrap();
    /// # drop(detector);
    /// # }
    /// ```
    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    pub fn on_after_task_poll(
        mut self,
        hook: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.after_task_poll = Some(Arc::new(hook));
        self
    }

    /// Start enabled (the default) or disabled; see
    /// [`BlockingDetector::set_enabled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    ///
    /// let detector = BlockingDetector::builder().enabled(false).build().unwrap();
    /// detector.set_enabled(true);
    /// assert!(detector.is_enabled());
    /// ```
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// A detector for [`watch`](BlockingDetector::watch) and
    /// [`spawn`](BlockingDetector::spawn) only, with no watchdog.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `threshold` if it is outside 1 ms ..= 1 hour.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::Duration;
    ///
    /// assert!(BlockingDetector::builder().build().is_ok());
    /// let err = BlockingDetector::builder()
    ///     .threshold(Duration::from_secs(7200))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "threshold");
    /// ```
    pub fn build(self) -> Result<BlockingDetector, ConfigError> {
        self.validate()?;
        let installation = crate::runtime::Installation::new(
            false,
            &self,
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            None,
        );
        let shared = Shared::new(&self, installation.clone());
        // Started here, not from a runtime thread: a thread inherits the
        // CPU affinity and priority of the one that starts it. If the OS
        // refuses a thread, reports come without CPU figures.
        let _ = installation.start_watchdog(&shared);
        Ok(BlockingDetector::from_shared(shared))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.threshold < MIN_THRESHOLD || self.threshold > MAX_THRESHOLD {
            return Err(ConfigError::new(
                "threshold",
                format_args!("{:?}", self.threshold),
                format!("from {MIN_THRESHOLD:?} to {MAX_THRESHOLD:?}"),
            ));
        }
        Ok(())
    }

    /// Capture the stack of a stuck worker with each
    /// [`ReportKind::Stuck`](crate::ReportKind::Stuck) report (default off;
    /// only for [`install`](Self::install)ed detectors).
    ///
    /// The watchdog signals the stuck thread with a real-time signal
    /// (`SIGRTMIN + 4` unless [`stack_capture_signal`](Self::stack_capture_signal)
    /// says otherwise). The signal handler calls no function — no unwinder,
    /// no allocator, no lock — so it is safe wherever the thread was
    /// interrupted (inside `malloc`, the dynamic loader, another unwinder):
    /// it copies addresses into a preallocated buffer, and the addresses are
    /// resolved to symbols, files and lines later, on the thread that looks
    /// at [`StackTrace::frames`](crate::StackTrace::frames). The handler is installed once per process
    /// and never removed; it ignores signals it did not ask for. The signal
    /// interrupts the stuck thread's system call, which is restarted
    /// (`SA_RESTART`), and std's blocking calls retry on `EINTR`.
    ///
    /// # What is captured
    ///
    /// On x86_64 and aarch64 Linux, up to 128 addresses:
    ///
    /// 1. the instruction the thread was interrupted at — always, exact;
    /// 2. then the return address of each frame record on the chain that
    ///    starts at the frame-pointer register (`rbp`, `x29`), as long as
    ///    each record lies between the interrupted stack pointer and the top
    ///    of the thread's stack (recorded when the thread was first watched),
    ///    is aligned, and lies above the one before.
    ///
    /// A function appears (after the first line) exactly when the function
    /// it called keeps a frame record. Rust's standard library is built with
    /// frame pointers, as are most C libraries' callers compiled with
    /// `-fno-omit-frame-pointer`; your code and its dependencies are not,
    /// by default. So:
    ///
    /// - **built with `RUSTFLAGS="-C force-frame-pointers=yes"`** (we
    ///   recommend it wherever you capture stacks; its cost is a register and
    ///   two instructions per call), the stack is complete except for the
    ///   caller of the interrupted function when that function keeps no
    ///   frame record itself — typically a libc system-call wrapper, so the
    ///   std function that called it (`std::thread::sleep` above
    ///   `clock_nanosleep`) is missing and its caller is shown;
    /// - **without it**, you get the interrupted instruction, the functions
    ///   that called into std (each std function's record holds its
    ///   caller's return address), and std's own frames (thread start,
    ///   `main`): the frames of your code between them are missing. Where
    ///   the frame-pointer register holds something else (code built without
    ///   frame pointers may use it as a general register), the chain may
    ///   stop early or — if that value happens to point into the stack —
    ///   show a few addresses that are not return addresses: they resolve to
    ///   unrelated symbols or none.
    ///
    /// On other architectures no stack is captured: the reports'
    /// [`stack`](crate::BlockingReport::stack) is `None`. A thread running
    /// on an alternate signal stack when signalled (inside another signal
    /// handler set up with `SA_ONSTACK`) yields the interrupted instruction
    /// only. A capture the thread does not answer within 250 ms (it blocks
    /// the signal) yields no stack.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// use std::sync::{mpsc, Mutex};
    /// use std::time::Duration;
    ///
    /// #[inline(never)]
    /// fn load_config_synchronously() {
    ///     std::thread::sleep(Duration::from_millis(600));
    /// }
    ///
    /// let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// let tx = Mutex::new(tx);
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(100))
    ///     .capture_stacks(true)
    ///     .handler(move |r: &BlockingReport| {
    ///         let _ = tx.lock().unwrap().send(r.clone());
    ///     })
    ///     .install(builder.enable_time())?;
    /// let rt = builder.build()?;
    /// rt.block_on(async {
    ///     tokio::time::sleep(Duration::from_millis(10)).await; // park once: watched
    ///     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// });
    /// let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!(stuck.kind(), ReportKind::Stuck);
    /// let stack = stuck.stack().expect("a stack");
    /// assert!(stack.frames().iter().any(|f| {
    ///     f.symbol().is_some_and(|s| s.contains("load_config_synchronously"))
    /// }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
    pub fn capture_stacks(mut self, capture: bool) -> Self {
        self.capture_stacks = capture;
        self
    }

    /// The real-time signal stack capture uses (from `SIGRTMIN` to
    /// `SIGRTMAX`); [`install`](Self::install) fails if it already has a
    /// handler, or if another detector captures with a different signal.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, InstallError};
    ///
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let err = BlockingDetector::builder()
    ///     .capture_stacks(true)
    ///     .stack_capture_signal(2) // SIGINT: not a real-time signal
    ///     .install(&mut builder)
    ///     .unwrap_err();
    /// assert!(matches!(err, InstallError::StackCapture(_)));
    /// ```
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
    pub fn stack_capture_signal(mut self, signal: i32) -> Self {
        self.stack_signal = Some(signal);
        self
    }
    /// Installs the detector into a runtime `builder` and starts its watchdog
    /// thread.
    ///
    /// The runtime built from `builder` is then watched for workers that stay
    /// busy longer than the threshold without parking or making progress:
    /// each is reported *while it is still blocked* ([`ReportKind::Stuck`])
    /// and again when it ends, with the total ([`ReportKind::Blocked`]).
    /// Current-thread and multi-thread runtimes both work. With
    /// `--cfg tokio_unstable`, every task poll of the runtime is timed as if
    /// it were [watched](BlockingDetector::watch) (precise mode): reports name
    /// the task id and where it was spawned.
    ///
    /// # Your own runtime hooks
    ///
    /// tokio's runtime builder keeps one hook of each kind. The detector sets
    /// the builder's `on_thread_start`, `on_thread_stop`, `on_thread_park`
    /// and `on_thread_unpark` (and, in precise mode, `on_before_task_poll` /
    /// `on_after_task_poll`), so any of those set on the runtime builder
    /// before is replaced. To keep yours, give them to the detector's builder
    /// instead — [`on_thread_start`](Self::on_thread_start),
    /// [`on_thread_stop`](Self::on_thread_stop),
    /// [`on_thread_park`](Self::on_thread_park),
    /// [`on_thread_unpark`](Self::on_thread_unpark) (and, in precise mode,
    /// `on_before_task_poll`, `on_after_task_poll`) — and the installed hooks
    /// call them; setting one on the runtime builder after `install`
    /// replaces the detector's.
    ///
    /// The watchdog thread sleeps a quarter threshold between looks and exits
    /// once the runtime and the builder are dropped. While the runtime runs,
    /// the detector keeps one idle task on it (to learn when it shuts down),
    /// so `num_alive_tasks` counts one more task.
    ///
    /// Build one runtime from the builder at a time; a detector watches one
    /// runtime.
    ///
    /// [`ReportKind::Stuck`]: crate::ReportKind::Stuck
    /// [`ReportKind::Blocked`]: crate::ReportKind::Blocked
    ///
    /// # Limits
    ///
    /// Without tokio's per-poll hooks, the watchdog sees a worker thread, not
    /// a poll: it knows when the thread parked, when a watched poll started
    /// and ended, and (on targets with 64-bit atomics) when tokio last
    /// updated the worker's busy-time metric, which it does at least every
    /// 61 polls. A worker is reported when none of these moved for the
    /// threshold. So: a burst of fewer than 61 polls that together exceed
    /// the threshold is reported too; outside tracked polls a stall is seen
    /// once it has lasted the threshold plus up to half of it (the metric is
    /// read at each look), so a shorter one may go unreported; and a worker
    /// is watched from its first park (or task poll in precise mode).
    ///
    /// On a current-thread runtime, a stall outside tracked polls is
    /// reported only while the runtime has tasks waiting (besides the
    /// detector's idle one), not regardless: the runtime's thread is the
    /// caller's, which leaves the runtime whenever `block_on` returns, and
    /// tokio has no hook for that. Outside tracked polls, a thread that
    /// returned from `block_on` and went on with other work looks exactly
    /// like one stuck in a poll — it does not park — so reporting it
    /// regardless would report every program that does anything between two
    /// `block_on` calls. A stall with tasks waiting starves them, and that
    /// is reported. To have a blocking `block_on` future itself reported,
    /// watch it — `rt.block_on(detector.watch(main()))` — or build with
    /// `--cfg tokio_unstable` (precise mode tracks every task poll).
    ///
    /// # Errors
    ///
    /// [`InstallError::Config`] for an invalid setting, [`InstallError::Watchdog`]
    /// if the thread cannot be spawned, [`InstallError::StackCapture`] if
    /// stack capture was asked for and its signal handler cannot be set.
    ///
    /// # Examples
    ///
    /// A worker blocked for 500 ms is reported while it is still blocked:
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// use std::sync::mpsc;
    /// use std::sync::Mutex;
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// let tx = Mutex::new(tx);
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// let detector = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(100))
    ///     .handler(move |r: &BlockingReport| {
    ///         let _ = tx.lock().unwrap().send(r.clone());
    ///     })
    ///     .install(builder.worker_threads(2).enable_all())?;
    /// let rt = builder.build()?;
    ///
    /// let (done_tx, done_rx) = mpsc::channel();
    /// rt.block_on(async {
    ///     // Wait until both workers have parked once and are watched.
    ///     while detector.metrics().watched_threads < 2 {
    ///         tokio::time::sleep(Duration::from_millis(5)).await;
    ///     }
    ///     tokio::spawn(async move {
    ///         std::thread::sleep(Duration::from_millis(500));
    ///         done_tx.send(()).unwrap();
    ///     });
    /// });
    /// let first = rx.recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!(first.kind(), ReportKind::Stuck);
    /// // Reported while the task was still sleeping.
    /// assert!(done_rx.try_recv().is_err());
    ///
    /// let second = rx.recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!(second.kind(), ReportKind::Blocked);
    /// assert!(second.duration() >= Duration::from_millis(400));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn install(
        self,
        builder: &mut tokio::runtime::Builder,
    ) -> Result<BlockingDetector, InstallError> {
        crate::runtime::install(&self, builder)
    }
}

impl Default for BlockingDetectorBuilder {
    fn default() -> BlockingDetectorBuilder {
        BlockingDetectorBuilder::new()
    }
}

impl fmt::Debug for BlockingDetectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingDetectorBuilder")
            .field("threshold", &self.threshold)
            .field("custom_handler", &self.handler.is_some())
            .field("report_interval", &self.report_interval)
            .field("enabled", &self.enabled)
            .field("descheduled", &self.descheduled)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}
