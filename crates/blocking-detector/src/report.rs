//! [`BlockingReport`]: one finding of the detector — what blocked, where it
//! came from, for how long, on which thread — and the [`BlockingHandler`]s
//! that receive them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Whether a report is about a block still in progress or one that ended.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::ReportKind;
///
/// assert_eq!(ReportKind::Stuck.to_string(), "stuck");
/// assert_eq!(ReportKind::Blocked.to_string(), "blocked");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportKind {
    /// From the runtime watchdog: a worker has been blocked for longer than
    /// the threshold and still is. The duration is the time so far.
    Stuck,
    /// A poll (or, from the watchdog, a stall) that took longer than the
    /// threshold has ended. The duration is the total. A `Stuck` report of the
    /// same block, if there was one, came first.
    Blocked,
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportKind::Stuck => "stuck",
            ReportKind::Blocked => "blocked",
        })
    }
}

/// What kept a thread from running other tasks during a stall: the task
/// itself (on a CPU, or off one), or a busy machine.
///
/// Read from the thread's CPU time and its time waiting for a CPU (see
/// [`StallTimes`]); [`Unknown`](Self::Unknown) where the platform does not
/// give them — never a guess.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::StallClass;
///
/// assert_eq!(StallClass::CpuBound.to_string(), "CPU-bound");
/// assert_eq!(StallClass::Blocked.to_string(), "blocked");
/// assert_eq!(StallClass::Descheduled.to_string(), "descheduled");
/// assert!(StallClass::Descheduled.is_descheduled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StallClass {
    /// The thread spent at least as much of the stall on a CPU as off one:
    /// a CPU loop, heavy computation, a spin.
    CpuBound,
    /// The thread spent more of the stall off a CPU, not runnable: asleep
    /// (`std::thread::sleep`), in a blocking system call (file or network
    /// I/O, DNS), waiting for a lock (a held `std::sync::Mutex`).
    Blocked,
    /// The stall less the time the thread waited for a CPU (and the time
    /// taken from it, see [`StallTimes::stolen`]) is under the threshold:
    /// the machine was busy, and the task was not at fault.
    Descheduled,
    /// The figures could not be read (no per-thread CPU counters on this
    /// platform, or no sample of the thread since the stall began).
    Unknown,
}

impl StallClass {
    /// Whether the run-queue wait explains the stall.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::StallClass;
    ///
    /// assert!(!StallClass::Blocked.is_descheduled());
    /// ```
    pub fn is_descheduled(self) -> bool {
        self == StallClass::Descheduled
    }
}

impl fmt::Display for StallClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StallClass::CpuBound => "CPU-bound",
            StallClass::Blocked => "blocked",
            StallClass::Descheduled => "descheduled",
            StallClass::Unknown => "unknown",
        })
    }
}

/// Where a stalled thread's time went: on a CPU, waiting for one (runnable,
/// in the kernel's run queue), and the rest (off a CPU and not runnable:
/// asleep, in a blocking system call, waiting for a lock).
///
/// # Precision
///
/// The figures cover [`measured`](Self::measured), most of the stall but
/// not always all of it. Reading the counters costs two system calls, so a
/// poll does not read them every time it starts. Instead:
///
/// - a thread reads its own counters at the start of a watched (or, in
///   precise mode, any) poll only if it has not for a quarter threshold —
///   the common poll pays one comparison — and at the end of each slow poll;
/// - the watchdog thread samples every watched thread at each look (a
///   quarter threshold apart);
/// - a slow poll's figures run from whichever sample is nearest its start —
///   the thread's own (within half a threshold of it, either side), or the
///   watchdog's after it — to its end, read by the thread itself.
///
/// So the start of the figures is off by at most half a threshold (more
/// only if the watchdog itself waited for a CPU and the thread had not read
/// its own counters lately): from a sample before the start, a wait for a
/// CPU in between is counted (at most that long); from one after it, a wait
/// that ended in between is not. Linux counts a wait for a CPU whole when
/// the thread gets the CPU back, so a wait still going on is not in the
/// figures yet: the watchdog holds back a `Stuck` report while the thread
/// waits for a CPU, and reports it at the next look if the block goes on.
/// For a stall outside tracked polls (a runtime watched on stable tokio),
/// only the watchdog's samples exist, from its first look after the stall
/// began to its first look after it ended.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, BlockingReport};
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
/// let detector = BlockingDetector::builder()
///     .threshold(Duration::from_millis(20))
///     .handler({
///         let seen = seen.clone();
///         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
///     })
///     .build()?;
/// detector.watch(async { std::thread::sleep(Duration::from_millis(100)) }).await;
///
/// let report = seen.lock().unwrap()[0].clone();
/// if let Some(times) = report.times() {
///     // Asleep: off the CPU for most of what was measured.
///     assert!(times.off_cpu() > times.on_cpu());
///     assert!(times.measured() <= report.duration());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallTimes {
    pub(crate) measured: Duration,
    pub(crate) on_cpu: Duration,
    pub(crate) run_queue: Duration,
    pub(crate) off_cpu: Duration,
    pub(crate) stolen: Duration,
    /// The thread blocked (made a voluntary context switch) meanwhile.
    pub(crate) blocked: bool,
}

impl StallTimes {
    /// The part of the stall the figures cover (see the type's docs).
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// if let Some(times) = report.times() {
    ///     assert!(times.measured() <= report.duration());
    /// }
    /// # }
    /// ```
    pub fn measured(&self) -> Duration {
        self.measured
    }

    /// Time on a CPU.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// if let Some(times) = report.times() {
    ///     assert!(times.on_cpu() < Duration::from_millis(20));
    /// }
    /// # }
    /// ```
    pub fn on_cpu(&self) -> Duration {
        self.on_cpu
    }

    /// Time runnable but waiting for a CPU (Linux's run delay).
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// if let Some(times) = report.times() {
    ///     assert!(times.run_queue() <= times.measured());
    /// }
    /// # }
    /// ```
    pub fn run_queue(&self) -> Duration {
        self.run_queue
    }

    /// Off a CPU and not runnable — asleep, in a blocking system call,
    /// waiting for a lock or a page: the rest of the measured time when the
    /// thread blocked (made a voluntary context switch) meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// if let Some(times) = report.times() {
    ///     assert!(times.off_cpu() + times.stolen() > times.on_cpu());
    /// }
    /// # }
    /// ```
    pub fn off_cpu(&self) -> Duration {
        self.off_cpu
    }

    /// Taken from the thread: the rest of the measured time when the thread
    /// never blocked meanwhile (no voluntary context switch), so it was
    /// neither on a CPU, nor waiting for one, nor blocked — on a virtual
    /// machine, the hypervisor ran another machine on its CPU (steal time,
    /// which Linux counts as neither). Like the wait for a CPU, not the
    /// task's doing.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// if let Some(times) = report.times() {
    ///     assert!(times.stolen() <= times.measured());
    /// }
    /// # }
    /// ```
    pub fn stolen(&self) -> Duration {
        self.stolen
    }
}

/// A tokio task id, as a number: the value tokio prints for
/// [`tokio::task::Id`].
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::TaskId;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let task = tokio::spawn(async {});
/// let id = TaskId::from(task.id());
/// assert_eq!(id.to_string(), task.id().to_string());
/// assert_eq!(TaskId::from(task.id()), id);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(u64);

impl TaskId {
    /// The number.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::TaskId;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let task = tokio::spawn(async {});
    /// assert!(TaskId::from(task.id()).as_u64() > 0);
    /// # }
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub(crate) fn from_raw(raw: u64) -> Option<TaskId> {
        (raw != 0).then_some(TaskId(raw))
    }
}

impl From<tokio::task::Id> for TaskId {
    fn from(id: tokio::task::Id) -> TaskId {
        // tokio exposes the number only through `Display` and `Hash`; `Hash`
        // writes it with a single `write_u64`, which this hasher keeps.
        struct Keep(u64);
        impl Hasher for Keep {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, bytes: &[u8]) {
                for b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(*b);
                }
            }
            fn write_u64(&mut self, n: u64) {
                self.0 = n;
            }
        }
        let mut keep = Keep(0);
        id.hash(&mut keep);
        TaskId(keep.0.max(1))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The thread a report is about.
#[derive(Debug, Clone)]
pub(crate) struct ThreadInfo {
    pub(crate) id: ThreadId,
    pub(crate) name: Option<Arc<str>>,
}

impl ThreadInfo {
    pub(crate) fn current() -> ThreadInfo {
        let thread = std::thread::current();
        ThreadInfo {
            id: thread.id(),
            name: thread.name().map(Arc::from),
        }
    }
}

/// One finding of a [`BlockingDetector`](crate::BlockingDetector): a poll or
/// a stall that kept a runtime thread from running other tasks for longer
/// than the threshold.
///
/// `Display` writes one line; the alternate form (`{:#}`) adds the captured
/// stack when there is one.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
/// let detector = BlockingDetector::builder()
///     .threshold(Duration::from_millis(20))
///     .handler({
///         let seen = seen.clone();
///         move |report: &BlockingReport| seen.lock().unwrap().push(report.clone())
///     })
///     .build()?;
///
/// detector
///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
///     .await?;
///
/// let seen = seen.lock().unwrap();
/// let report = &seen[0];
/// assert_eq!(report.kind(), ReportKind::Blocked);
/// assert_eq!(report.name(), Some("resize"));
/// assert_eq!(report.location().unwrap().file(), file!());
/// assert!(report.duration() >= Duration::from_millis(40));
/// assert!(report.task_id().is_some());
/// assert!(report.to_string().contains("task \"resize\""));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BlockingReport {
    pub(crate) kind: ReportKind,
    pub(crate) duration: Duration,
    pub(crate) started_at: Instant,
    pub(crate) name: Option<&'static str>,
    pub(crate) location: Option<&'static Location<'static>>,
    pub(crate) task_id: Option<TaskId>,
    pub(crate) thread: ThreadInfo,
    pub(crate) worker: Option<usize>,
    pub(crate) suppressed: u64,
    /// Identifies the block across its `Stuck` and `Blocked` reports.
    pub(crate) episode: (ThreadId, u64),
    pub(crate) times: Option<StallTimes>,
    pub(crate) class: StallClass,
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    pub(crate) stack: Option<Arc<crate::StackTrace>>,
}

impl BlockingReport {
    /// Whether the block is still in progress ([`ReportKind::Stuck`]) or over.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert_eq!(report.kind(), ReportKind::Blocked);
    /// # }
    /// ```
    pub fn kind(&self) -> ReportKind {
        self.kind
    }

    /// How long the thread was blocked: so far for [`ReportKind::Stuck`], in
    /// total for [`ReportKind::Blocked`].
    ///
    /// Measured with the detector's clock, whose resolution is at most a
    /// tenth of the threshold.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert!(report.duration() >= Duration::from_millis(45));
    /// # }
    /// ```
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When the block started.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert!(report.started_at().elapsed() >= report.duration());
    /// # }
    /// ```
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The name given to [`spawn`](crate::BlockingDetector::spawn) or
    /// [`watch_named`](crate::BlockingDetector::watch_named).
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert_eq!(report.name(), Some("resize"));
    /// # }
    /// ```
    pub fn name(&self) -> Option<&'static str> {
        self.name
    }

    /// Where the blocking future was watched or spawned (the caller of
    /// `watch`/`spawn`, or of `tokio::spawn` in precise mode). `None` when
    /// the watchdog found a stall outside any tracked poll.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert_eq!(report.location().unwrap().file(), file!());
    /// # }
    /// ```
    pub fn location(&self) -> Option<&'static Location<'static>> {
        self.location
    }

    /// The tokio task that blocked, when the poll ran inside a task and the
    /// detector could learn its id.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert!(report.task_id().is_some());
    /// # }
    /// ```
    pub fn task_id(&self) -> Option<TaskId> {
        self.task_id
    }

    /// The blocked thread.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// // A current-thread runtime polls on the calling thread.
    /// assert_eq!(report.thread_id(), std::thread::current().id());
    /// # }
    /// ```
    pub fn thread_id(&self) -> ThreadId {
        self.thread.id
    }

    /// The blocked thread's name, if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert_eq!(report.thread_name(), std::thread::current().name());
    /// # }
    /// ```
    pub fn thread_name(&self) -> Option<&str> {
        self.thread.name.as_deref()
    }

    /// The runtime worker the thread was running (its
    /// [`tokio::runtime::worker_index`]), when known.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert_eq!(report.worker(), Some(0));
    /// # }
    /// ```
    pub fn worker(&self) -> Option<usize> {
        self.worker
    }

    /// How many reports of the same kind from the same location were
    /// suppressed by rate limiting since the previous one was delivered.
    /// Always 0 in the reports a [`BlockingGuard`](crate::BlockingGuard)
    /// collects.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// assert_eq!(report.suppressed(), 0);
    /// # }
    /// ```
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// What kept the thread: the task on a CPU, the task off one, or a busy
    /// machine; [`StallClass::Unknown`] where the figures cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// // Asleep: not CPU-bound (unknown where the figures cannot be read).
    /// assert_ne!(report.class(), StallClass::CpuBound);
    /// # }
    /// ```
    pub fn class(&self) -> StallClass {
        self.class
    }

    /// Where the thread's time went during the stall (Linux), or `None`
    /// where that cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// if let Some(times) = report.times() {
    ///     assert!(times.off_cpu() > times.on_cpu());
    /// }
    /// # }
    /// ```
    pub fn times(&self) -> Option<StallTimes> {
        self.times
    }

    /// The stuck thread's stack, captured while it was stuck (Linux x86_64
    /// and aarch64, feature `stack-capture`, [`ReportKind::Stuck`] reports
    /// only; `None` elsewhere, or if the thread did not answer the signal).
    /// Which frames it holds depends on frame pointers: see
    /// [`capture_stacks`](crate::BlockingDetectorBuilder::capture_stacks).
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, StallClass};
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let seen = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler({
    /// #         let seen = seen.clone();
    /// #         move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
    /// #     })
    /// #     .build()
    /// #     .unwrap();
    /// detector
    ///     .spawn("resize", async { std::thread::sleep(Duration::from_millis(50)) })
    ///     .await
    ///     .unwrap();
    /// let report = seen.lock().unwrap()[0].clone();
    /// // Only `Stuck` reports of an installed detector carry a stack.
    /// assert!(report.stack().is_none());
    /// # }
    /// ```
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
    pub fn stack(&self) -> Option<&crate::StackTrace> {
        self.stack.as_deref()
    }

    fn describe_task(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_none() && self.location.is_none() && self.task_id.is_none() {
            return f.write_str("untracked code");
        }
        f.write_str("task")?;
        if let Some(name) = self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(id) = self.task_id {
            write!(f, " (id {id})")?;
        }
        if let Some(location) = self.location {
            write!(f, " at {location}")?;
        }
        Ok(())
    }

    fn describe_thread(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.thread_name() {
            Some(name) => write!(f, "thread {name:?}")?,
            None => write!(f, "thread {:?}", self.thread.id)?,
        }
        if let Some(worker) = self.worker {
            write!(f, " (tokio worker {worker})")?;
        }
        Ok(())
    }
}

/// A short duration in milliseconds, with a decimal under 10 ms.
struct Ms(Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1e3;
        if ms < 10.0 {
            write!(f, "{ms:.1}ms")
        } else {
            write!(f, "{ms:.0}ms")
        }
    }
}

/// Milliseconds, the unit a blocking report is read in.
fn millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

impl fmt::Display for BlockingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("blocking: ")?;
        match self.kind {
            ReportKind::Stuck => {
                self.describe_thread(f)?;
                write!(f, " has been stuck for {:?} in ", millis(self.duration))?;
                self.describe_task(f)?;
            }
            ReportKind::Blocked => {
                self.describe_task(f)?;
                f.write_str(" blocked ")?;
                self.describe_thread(f)?;
                write!(f, " for {:?}", millis(self.duration))?;
            }
        }
        match &self.times {
            Some(t) => {
                write!(
                    f,
                    ": {} (on CPU {}, waiting for a CPU {}, ",
                    self.class,
                    Ms(t.on_cpu),
                    Ms(t.run_queue),
                )?;
                write!(f, "off CPU {}, ", Ms(t.off_cpu))?;
                if t.stolen >= Duration::from_millis(1) {
                    write!(f, "taken by the machine {}, ", Ms(t.stolen))?;
                }
                write!(f, "of {} measured)", Ms(t.measured))?;
            }
            None => f.write_str(": cause unknown (no CPU figures for this thread)")?,
        }
        if self.suppressed > 0 {
            write!(f, " ({} similar reports suppressed)", self.suppressed)?;
        }
        #[cfg(all(feature = "stack-capture", target_os = "linux"))]
        if f.alternate()
            && let Some(stack) = &self.stack
        {
            write!(f, "\n{stack}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BlockingReport");
        d.field("kind", &self.kind)
            .field("duration", &self.duration)
            .field("name", &self.name)
            .field("location", &self.location)
            .field("task_id", &self.task_id)
            .field("thread", &self.thread)
            .field("worker", &self.worker)
            .field("suppressed", &self.suppressed)
            .field("class", &self.class)
            .field("times", &self.times);
        #[cfg(all(feature = "stack-capture", target_os = "linux"))]
        d.field("stack", &self.stack.as_ref().map(|s| s.addresses().len()));
        d.finish_non_exhaustive()
    }
}

/// Receives the detector's reports.
///
/// Closures `Fn(&BlockingReport)` are handlers. A handler runs on the thread
/// that found the block: the worker that just finished a slow poll, or the
/// watchdog thread. Keep it short — hand the report to a channel or a log.
/// A handler that panics has its panic caught; the report is still counted
/// and still collected by [`BlockingGuard`](crate::BlockingGuard)s.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, BlockingHandler, BlockingReport};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// struct Count(Arc<AtomicUsize>);
///
/// impl BlockingHandler for Count {
///     fn on_report(&self, _report: &BlockingReport) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let count = Arc::new(AtomicUsize::new(0));
/// let detector = BlockingDetector::builder()
///     .threshold(Duration::from_millis(20))
///     .handler(Count(count.clone()))
///     .build()?;
/// detector.watch(async { std::thread::sleep(Duration::from_millis(50)) }).await;
/// assert_eq!(count.load(Ordering::Relaxed), 1);
/// # Ok(())
/// # }
/// ```
pub trait BlockingHandler: Send + Sync + 'static {
    /// Called once per delivered report.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingHandler, BlockingReport, StderrHandler};
    /// # use async_patterns_blocking_detector::BlockingDetector;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(20))
    /// #     .handler(|_: &BlockingReport| {})
    /// #     .build()
    /// #     .unwrap();
    /// let guard = detector.fail_on_blocking();
    /// detector.watch(async { std::thread::sleep(Duration::from_millis(40)) }).await;
    /// let failure = guard.check().unwrap_err();
    /// // Hand a report to another handler yourself, e.g. to log what a guard saw.
    /// StderrHandler.on_report(&failure.reports()[0]);
    /// # }
    /// ```
    fn on_report(&self, report: &BlockingReport);
}

impl<F> BlockingHandler for F
where
    F: Fn(&BlockingReport) + Send + Sync + 'static,
{
    fn on_report(&self, report: &BlockingReport) {
        self(report)
    }
}

/// Writes each report as one line to standard error (the default handler
/// without the `tracing` feature).
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, StderrHandler};
///
/// let detector = BlockingDetector::builder().handler(StderrHandler).build().unwrap();
/// # drop(detector);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrHandler;

impl BlockingHandler for StderrHandler {
    fn on_report(&self, report: &BlockingReport) {
        eprintln!("{report:#}");
    }
}

/// Emits each report as a `tracing` event at `WARN` level, target
/// `async_patterns_blocking_detector`, with the report's parts as fields (the
/// default handler with the `tracing` feature).
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, TracingHandler};
///
/// let detector = BlockingDetector::builder().handler(TracingHandler).build().unwrap();
/// # drop(detector);
/// ```
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingHandler;

#[cfg(feature = "tracing")]
impl BlockingHandler for TracingHandler {
    fn on_report(&self, report: &BlockingReport) {
        tracing::warn!(
            target: "async_patterns_blocking_detector",
            kind = %report.kind(),
            duration_ms = report.duration().as_millis() as u64,
            task.name = report.name(),
            task.id = report.task_id().map(TaskId::as_u64),
            location = report.location().map(tracing::field::display),
            thread = report.thread_name(),
            worker = report.worker(),
            suppressed = report.suppressed(),
            class = %report.class(),
            on_cpu_ms = report.times().map(|t| t.on_cpu().as_millis() as u64),
            run_queue_ms = report.times().map(|t| t.run_queue().as_millis() as u64),
            off_cpu_ms = report.times().map(|t| t.off_cpu().as_millis() as u64),
            stolen_ms = report.times().map(|t| t.stolen().as_millis() as u64),
            measured_ms = report.times().map(|t| t.measured().as_millis() as u64),
            "{report}"
        );
    }
}

/// The handler used when none is set.
pub(crate) fn default_handler() -> Arc<dyn BlockingHandler> {
    #[cfg(feature = "tracing")]
    {
        Arc::new(TracingHandler)
    }
    #[cfg(not(feature = "tracing"))]
    {
        Arc::new(StderrHandler)
    }
}
