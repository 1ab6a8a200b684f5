//! Installing a detector into a `tokio::runtime::Builder`: the hooks, the
//! per-runtime registry of threads the watchdog looks at, and the thread-local
//! binding that lets a hook or a watched poll find its thread's
//! [`Activity`] without a lock.
//!
//! Lifetimes, since nothing may leak: the hooks own a [`HookGuard`]; when the
//! runtime and its builder are gone, the hooks are dropped and the guard tells
//! the watchdog thread to exit. To learn when the runtime shuts down (a
//! current-thread runtime has no thread that stops), the registry keeps one
//! idle task on the runtime, the sentinel, which tokio drops at shutdown.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use async_patterns_core::ConfigError;
use tokio::runtime::Handle;

use crate::activity::Activity;
use crate::builder::BlockingDetectorBuilder;
use crate::detector::{BlockingDetector, Shared, lock};
use crate::report::ThreadInfo;
use crate::sched::ThreadSamples;

/// `RuntimeThread::worker` when the thread has not run a worker yet.
const NO_WORKER: usize = usize::MAX;

/// Installing a detector into a runtime builder failed.
///
/// # Examples
///
/// ```
/// use async_patterns_blocking_detector::{BlockingDetector, InstallError};
/// use std::time::Duration;
///
/// let mut rt = tokio::runtime::Builder::new_multi_thread();
/// let err = BlockingDetector::builder()
///     .threshold(Duration::ZERO)
///     .install(&mut rt)
///     .unwrap_err();
/// assert!(matches!(err, InstallError::Config(_)));
/// assert_eq!(
///     err.to_string(),
///     "invalid `threshold`: got 0ns, expected from 1ms to 3600s"
/// );
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallError {
    /// A setting was out of range.
    Config(ConfigError),
    /// The watchdog thread could not be started.
    Watchdog(io::Error),
    /// The stack-capture signal handler could not be installed (the signal
    /// already has a handler, or it is not a real-time signal).
    StackCapture(io::Error),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Config(e) => fmt::Display::fmt(e, f),
            InstallError::Watchdog(e) => write!(f, "cannot start the watchdog thread: {e}"),
            InstallError::StackCapture(e) => {
                write!(f, "cannot install the stack-capture signal handler: {e}")
            }
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::Config(e) => Some(e),
            InstallError::Watchdog(e) | InstallError::StackCapture(e) => Some(e),
        }
    }
}

impl From<ConfigError> for InstallError {
    fn from(e: ConfigError) -> InstallError {
        InstallError::Config(e)
    }
}

/// Installs a detector configured by `config` into a runtime `builder`:
/// see [`BlockingDetectorBuilder::install`].
pub(crate) fn install(
    config: &BlockingDetectorBuilder,
    builder: &mut tokio::runtime::Builder,
) -> Result<BlockingDetector, InstallError> {
    config.validate()?;
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    let stack_signal = if config.capture_stacks {
        Some(
            crate::stack::install_handler(config.stack_signal)
                .map_err(InstallError::StackCapture)?,
        )
    } else {
        None
    };
    let installation = Installation::new(
        true,
        config,
        #[cfg(all(feature = "stack-capture", target_os = "linux"))]
        stack_signal,
    );
    let shared = Shared::new(config, installation.clone());
    installation
        .start_watchdog(&shared)
        .map_err(InstallError::Watchdog)?;

    let hooks = Arc::new(HookGuard {
        shared: shared.clone(),
        user: config.hooks.clone(),
    });
    // Ours first where the time of the event matters (a thread starts,
    // wakes up), theirs first where their hook is part of the worker's
    // busy time (before it parks, before it stops).
    builder
        .on_thread_start({
            let hooks = hooks.clone();
            move || {
                hooks.thread_start();
                if let Some(f) = &hooks.user.thread_start {
                    f();
                }
            }
        })
        .on_thread_stop({
            let hooks = hooks.clone();
            move || {
                if let Some(f) = &hooks.user.thread_stop {
                    f();
                }
                hooks.thread_stop();
            }
        })
        .on_thread_park({
            let hooks = hooks.clone();
            move || {
                if let Some(f) = &hooks.user.thread_park {
                    f();
                }
                hooks.park();
            }
        })
        .on_thread_unpark({
            let hooks = hooks.clone();
            move || {
                hooks.unpark();
                if let Some(f) = &hooks.user.thread_unpark {
                    f();
                }
            }
        });
    #[cfg(tokio_unstable)]
    builder
        .on_before_task_poll({
            let hooks = hooks.clone();
            move |meta| {
                crate::precise::before_poll(&hooks.shared, meta);
                if let Some(f) = &hooks.user.before_task_poll {
                    f(meta);
                }
            }
        })
        .on_after_task_poll({
            let hooks = hooks.clone();
            move |meta| {
                if let Some(f) = &hooks.user.after_task_poll {
                    f(meta);
                }
                crate::precise::after_poll(&hooks.shared, meta);
            }
        });
    drop(hooks);
    Ok(BlockingDetector::from_shared(shared))
}

/// A hook with no arguments, as tokio's runtime builder takes them.
pub(crate) type Hook = Arc<dyn Fn() + Send + Sync + 'static>;

/// A task-poll hook, as tokio's runtime builder takes them.
#[cfg(tokio_unstable)]
pub(crate) type TaskHook = Arc<dyn Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static>;

/// The user's own runtime hooks, which [`install`](BlockingDetectorBuilder::install)
/// calls beside the detector's.
#[derive(Clone, Default)]
pub(crate) struct UserHooks {
    pub(crate) thread_start: Option<Hook>,
    pub(crate) thread_stop: Option<Hook>,
    pub(crate) thread_park: Option<Hook>,
    pub(crate) thread_unpark: Option<Hook>,
    #[cfg(tokio_unstable)]
    pub(crate) before_task_poll: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    pub(crate) after_task_poll: Option<TaskHook>,
}

impl fmt::Debug for UserHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UserHooks");
        d.field("thread_start", &self.thread_start.is_some())
            .field("thread_stop", &self.thread_stop.is_some())
            .field("thread_park", &self.thread_park.is_some())
            .field("thread_unpark", &self.thread_unpark.is_some());
        #[cfg(tokio_unstable)]
        d.field("before_task_poll", &self.before_task_poll.is_some())
            .field("after_task_poll", &self.after_task_poll.is_some());
        d.finish()
    }
}

impl BlockingDetector {
    /// Whether the runtime watchdog thread is running: from
    /// [`install`](BlockingDetectorBuilder::install) until the runtime and its
    /// builder are dropped. Always `false` for a detector made with
    /// [`build`](BlockingDetectorBuilder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::BlockingDetector;
    /// use std::time::{Duration, Instant};
    ///
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder().install(&mut builder).unwrap();
    /// let rt = builder.build().unwrap();
    /// rt.block_on(async { tokio::task::yield_now().await });
    /// assert!(detector.watchdog_running());
    ///
    /// drop((rt, builder));
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// while detector.watchdog_running() && Instant::now() < deadline {
    ///     std::thread::sleep(Duration::from_millis(5));
    /// }
    /// assert!(!detector.watchdog_running());
    /// ```
    pub fn watchdog_running(&self) -> bool {
        let installation = &self.shared.installation;
        installation.hooked && installation.running.load(Acquire)
    }
}

/// The watchdog side of a detector: its thread, the runtime it watches (if
/// the detector is installed in one) and the threads it samples.
pub(crate) struct Installation {
    /// Installed in a runtime's hooks: the watchdog watches the runtime's
    /// threads. A detector made with `build` only samples the threads its
    /// watched futures run on.
    pub(crate) hooked: bool,
    watchdog: Mutex<WatchdogState>,
    /// Wakes the watchdog: shutdown, a new runtime, a scan request.
    wake: Condvar,
    /// Wakes the threads waiting for a requested scan.
    scanned: Condvar,
    /// The runtime being watched, if any.
    runtime: Mutex<Option<Arc<RuntimeWatch>>>,
    /// The threads whose CPU counters the watchdog samples.
    sampled: Mutex<Vec<Weak<ThreadSamples>>>,
    /// Set when the watchdog thread starts, cleared as it exits.
    pub(crate) running: AtomicBool,
    /// Whether the watchdog thread was started (or failed to start).
    started: AtomicBool,
    /// The detector's clock, to note when a runtime ended.
    clock: crate::clock::Clock,
    /// How long the watchdog sleeps between looks.
    tick: Duration,
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    pub(crate) stack_signal: Option<i32>,
}

#[derive(Debug, Default)]
struct WatchdogState {
    shutdown: bool,
    runtime_alive: bool,
    /// Threads are being sampled: look every tick.
    sampling: bool,
    requested: u64,
    completed: u64,
    /// Blocks seen in progress and not yet seen to end, after the last scan.
    open: usize,
    /// The watchdog thread has finished (after its last scan).
    exited: bool,
}

/// What the watchdog loop does next.
pub(crate) enum Next {
    Scan(u64),
    Exit,
}

impl Installation {
    pub(crate) fn new(
        hooked: bool,
        config: &BlockingDetectorBuilder,
        #[cfg(all(feature = "stack-capture", target_os = "linux"))] stack_signal: Option<i32>,
    ) -> Arc<Installation> {
        Arc::new(Installation {
            hooked,
            watchdog: Mutex::new(WatchdogState::default()),
            wake: Condvar::new(),
            scanned: Condvar::new(),
            runtime: Mutex::new(None),
            sampled: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
            started: AtomicBool::new(false),
            clock: crate::clock::Clock::for_threshold(config.threshold),
            tick: (config.threshold / 4).max(Duration::from_millis(1)),
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            stack_signal,
        })
    }

    /// Starts the watchdog thread, once.
    pub(crate) fn start_watchdog(self: &Arc<Self>, shared: &Arc<Shared>) -> io::Result<()> {
        if self.started.swap(true, AcqRel) {
            return Ok(());
        }
        self.running.store(true, Release);
        let spawned = std::thread::Builder::new()
            .name("blocking-detector-watchdog".into())
            .spawn({
                let installation = self.clone();
                let shared = Arc::downgrade(shared);
                move || crate::watchdog::run(&installation, &shared)
            });
        if spawned.is_err() {
            self.exited();
        }
        spawned.map(drop)
    }

    /// Samples the calling thread's CPU counters from now on (the thread
    /// runs a watched poll of `shared`); starts the watchdog if needed.
    #[cold]
    pub(crate) fn sample_current_thread(self: &Arc<Self>, shared: &Arc<Shared>) {
        if let Some(samples) = ThreadSamples::current() {
            // A start figure for the poll about to begin.
            samples.sample_own();
            self.sample(&samples);
            // Without a thread there are no figures; nothing else is lost.
            let _ = self.start_watchdog(shared);
        }
    }

    /// Samples `samples` from now on.
    pub(crate) fn sample(&self, samples: &Arc<ThreadSamples>) {
        let mut sampled = lock(&self.sampled);
        if sampled
            .iter()
            .any(|s| std::ptr::eq(s.as_ptr(), Arc::as_ptr(samples)))
        {
            return;
        }
        sampled.push(Arc::downgrade(samples));
        drop(sampled);
        let mut state = lock(&self.watchdog);
        if !state.sampling {
            state.sampling = true;
            drop(state);
            self.wake.notify_all();
        }
    }

    /// Watchdog thread: takes a sample of every sampled thread that is
    /// still alive, and forgets the others.
    pub(crate) fn take_samples(&self) {
        // Read outside the lock: a runtime thread that registers must never
        // wait for the watchdog's system calls.
        let threads: Vec<Weak<ThreadSamples>> = lock(&self.sampled).clone();
        let gone: Vec<*const ThreadSamples> = threads
            .iter()
            .filter(|s| s.upgrade().is_none_or(|s| s.sample().is_none()))
            .map(Weak::as_ptr)
            .collect();
        if !gone.is_empty() {
            let mut sampled = lock(&self.sampled);
            sampled.retain(|s| !gone.contains(&s.as_ptr()));
            if sampled.is_empty() {
                lock(&self.watchdog).sampling = false;
            }
        }
    }

    pub(crate) fn watched_threads(&self) -> usize {
        self.current().map_or(0, |w| w.watched_threads())
    }

    /// The runtime being watched, if it is alive.
    pub(crate) fn current(&self) -> Option<Arc<RuntimeWatch>> {
        lock(&self.runtime).clone().filter(|w| w.is_alive())
    }

    fn current_or_new(self: &Arc<Self>) -> Arc<RuntimeWatch> {
        let mut runtime = lock(&self.runtime);
        if let Some(watch) = runtime.as_ref().filter(|w| w.is_alive()) {
            return watch.clone();
        }
        let handle = Handle::try_current().ok();
        let workers = handle
            .as_ref()
            .map_or(1, |h| h.metrics().num_workers().max(1));
        let current_thread = handle
            .as_ref()
            .is_some_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        let watch = Arc::new(RuntimeWatch {
            current_thread,
            threads: Mutex::new(Vec::new()),
            owners: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            handle: Mutex::new(None),
            alive: AtomicBool::new(true),
            ended_at: AtomicU64::new(0),
            sentinel_started: AtomicBool::new(false),
        });
        *runtime = Some(watch.clone());
        drop(runtime);
        lock(&self.watchdog).runtime_alive = true;
        self.wake.notify_all();
        watch
    }

    fn runtime_ended(&self, watch: &Arc<RuntimeWatch>) {
        let current = lock(&self.runtime)
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, watch));
        if current {
            let mut state = lock(&self.watchdog);
            state.runtime_alive = false;
            // One more look, to end the blocks still open on its threads.
            state.requested += 1;
            drop(state);
            self.wake.notify_all();
        }
    }

    /// Watchdog thread: waits for the next reason to look (a tick while a
    /// runtime is alive, a scan request) or for shutdown.
    pub(crate) fn wait(&self, last: u64) -> Next {
        let tick = self.tick;
        let mut state = lock(&self.watchdog);
        if !state.shutdown && state.requested == last {
            state = if state.runtime_alive || state.sampling {
                self.wake
                    .wait_timeout(state, tick)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0)
            } else {
                self.wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
        }
        if state.shutdown {
            Next::Exit
        } else {
            Next::Scan(state.requested)
        }
    }

    /// Watchdog thread: a scan covering requests up to `requested` is done,
    /// and `open` blocks are still in progress.
    pub(crate) fn scanned(&self, requested: u64, open: usize) {
        let mut state = lock(&self.watchdog);
        state.completed = state.completed.max(requested);
        state.open = open;
        drop(state);
        self.scanned.notify_all();
    }

    /// Watchdog thread: it is exiting.
    pub(crate) fn exited(&self) {
        self.running.store(false, Release);
        let mut state = lock(&self.watchdog);
        state.shutdown = true;
        state.exited = true;
        drop(state);
        self.scanned.notify_all();
    }

    /// Asks the watchdog for one look at the runtime now and waits for it,
    /// until `deadline`. Returns how many blocks were still in progress after
    /// that look, or `None` if the watchdog is gone or did not answer in time.
    /// A requested look also gives the guards the current figure of each
    /// block still in progress.
    pub(crate) fn scan_now(&self, deadline: Instant) -> Option<usize> {
        if !self.started.load(Acquire) {
            return None;
        }
        let mut state = lock(&self.watchdog);
        if state.exited {
            return None;
        }
        state.requested += 1;
        let target = state.requested;
        self.wake.notify_all();
        while state.completed < target {
            // Shutting down, the watchdog ends the open blocks and exits.
            if state.exited {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .scanned
                .wait_timeout(state, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Some(state.open)
    }

    pub(crate) fn shutdown(&self) {
        lock(&self.watchdog).shutdown = true;
        self.wake.notify_all();
    }
}

/// One runtime, as the watchdog sees it.
pub(crate) struct RuntimeWatch {
    /// A current-thread runtime: its thread may leave `block_on` at any time.
    pub(crate) current_thread: bool,
    pub(crate) threads: Mutex<Vec<Arc<RuntimeThread>>>,
    /// For each worker index, the id of the thread that last ran it.
    owners: Box<[AtomicU64]>,
    /// The runtime's handle, for its metrics; taken by the sentinel at
    /// shutdown, which breaks the cycle runtime → hooks → detector → handle.
    handle: Mutex<Option<Handle>>,
    alive: AtomicBool,
    /// When the runtime shut down (its sentinel was dropped); 0 before.
    ended_at: AtomicU64,
    sentinel_started: AtomicBool,
}

impl RuntimeWatch {
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Acquire)
    }

    /// When the runtime shut down, if it has.
    pub(crate) fn ended_at(&self) -> Option<u64> {
        Some(self.ended_at.load(Acquire)).filter(|t| *t != 0)
    }

    /// Whether `thread` is the one currently running its worker.
    pub(crate) fn is_owner(&self, thread: &RuntimeThread) -> bool {
        let worker = thread.worker.load(Relaxed);
        thread.alive.load(Relaxed)
            && self
                .owners
                .get(worker)
                .is_some_and(|o| o.load(Relaxed) == thread.id)
    }

    fn watched_threads(&self) -> usize {
        lock(&self.threads)
            .iter()
            .filter(|t| self.is_owner(t))
            .count()
    }

    pub(crate) fn handle(&self) -> Option<Handle> {
        lock(&self.handle).clone()
    }

    /// Records that the calling thread runs worker `worker_index()`, and makes
    /// sure the sentinel is on the runtime.
    #[inline]
    fn claim(self: &Arc<Self>, thread: &RuntimeThread, installation: &Arc<Installation>) {
        let Some(worker) = tokio::runtime::worker_index() else {
            return;
        };
        if thread.worker.load(Relaxed) != worker {
            thread.worker.store(worker, Relaxed);
        }
        if let Some(owner) = self.owners.get(worker)
            && owner.load(Relaxed) != thread.id
        {
            owner.store(thread.id, Relaxed);
        }
        if !self.sentinel_started.load(Relaxed) {
            self.start_sentinel(installation);
        }
    }

    #[cold]
    fn start_sentinel(self: &Arc<Self>, installation: &Arc<Installation>) {
        if self.sentinel_started.swap(true, Relaxed) {
            return;
        }
        let Ok(handle) = Handle::try_current() else {
            self.sentinel_started.store(false, Relaxed);
            return;
        };
        *lock(&self.handle) = Some(handle.clone());
        // If the runtime is shutting down, `spawn` drops the sentinel at
        // once, which ends this watch; the lock above is released by then.
        drop(handle.spawn(Sentinel {
            watch: self.clone(),
            installation: installation.clone(),
        }));
    }

    fn remove(&self, thread: &RuntimeThread) {
        thread.alive.store(false, Relaxed);
        lock(&self.threads).retain(|t| t.id != thread.id);
    }
}

/// A thread of a watched runtime.
pub(crate) struct RuntimeThread {
    /// Unique among all threads of all runtimes; never 0.
    pub(crate) id: u64,
    pub(crate) info: ThreadInfo,
    /// The worker index it last ran, or [`NO_WORKER`].
    pub(crate) worker: AtomicUsize,
    pub(crate) activity: Activity,
    pub(crate) alive: AtomicBool,
    /// Its CPU counters, where they can be read.
    pub(crate) samples: Option<Arc<ThreadSamples>>,
    /// The kernel thread id, to signal it.
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    pub(crate) tid: i32,
    /// Its stack, for the stack-capture signal handler.
    #[cfg(all(feature = "stack-capture", target_os = "linux"))]
    pub(crate) stack: Option<crate::stack::StackBounds>,
}

impl RuntimeThread {
    fn current() -> RuntimeThread {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        RuntimeThread {
            id: NEXT_ID.fetch_add(1, Relaxed),
            info: ThreadInfo::current(),
            worker: AtomicUsize::new(NO_WORKER),
            activity: Activity::new(),
            alive: AtomicBool::new(true),
            samples: ThreadSamples::current(),
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            tid: crate::stack::current_tid(),
            #[cfg(all(feature = "stack-capture", target_os = "linux"))]
            stack: crate::stack::StackBounds::current(),
        }
    }

    pub(crate) fn worker(&self) -> Option<usize> {
        Some(self.worker.load(Relaxed)).filter(|w| *w != NO_WORKER)
    }
}

/// The idle task whose drop tells the watch that its runtime shut down.
struct Sentinel {
    watch: Arc<RuntimeWatch>,
    installation: Arc<Installation>,
}

impl std::future::Future for Sentinel {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // Never woken: it only waits to be dropped with the runtime.
        std::task::Poll::Pending
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let now = self.installation.clock.now_ns();
        self.watch.ended_at.store(now, Release);
        self.watch.alive.store(false, Release);
        let handle = lock(&self.watch.handle).take();
        drop(handle);
        self.installation.runtime_ended(&self.watch);
    }
}

/// How many reported polls a thread remembers, to tell an outer poll which
/// of its time nested polls already reported.
pub(crate) const REPORTED_POLLS: usize = 8;

/// Per-thread state: the binding to a watched runtime, and the last polls
/// this thread reported as `(start, end)` (so that a watched future inside a
/// watched task does not report the same block twice).
pub(crate) struct ThreadState {
    pub(crate) binding: RefCell<Option<Binding>>,
    /// The detector whose watchdog samples this thread's CPU counters (the
    /// last one to run a watched poll here).
    pub(crate) sampled_by: Cell<u64>,
    /// When this thread last read its own CPU counters at the start of a
    /// poll (detector clock).
    pub(crate) own_sample_at: Cell<u64>,
    pub(crate) reported: Cell<[(u64, u64); REPORTED_POLLS]>,
    pub(crate) next_reported: Cell<usize>,
}

/// This thread belongs to `watch`, a runtime watched by detector `detector`.
pub(crate) struct Binding {
    pub(crate) detector: u64,
    pub(crate) watch: Arc<RuntimeWatch>,
    pub(crate) thread: Arc<RuntimeThread>,
}

thread_local! {
    pub(crate) static THREAD: ThreadState = const {
        ThreadState {
            binding: RefCell::new(None),
            sampled_by: Cell::new(0),
            own_sample_at: Cell::new(0),
            reported: Cell::new([(0, 0); REPORTED_POLLS]),
            next_reported: Cell::new(0),
        }
    };
}

/// Runs `f` with the runtime `shared` watches and the calling thread's record
/// in it. With `claim`, binds the thread first if needed and notes which
/// worker it runs — only for hooks that run with the worker's core (park,
/// unpark, before a task poll). `None` if the detector is not installed, the
/// thread is not bound (without `claim`), or the thread-local is gone.
pub(crate) fn with_thread<R>(
    shared: &Shared,
    claim: bool,
    f: impl FnOnce(&RuntimeWatch, &RuntimeThread) -> R,
) -> Option<R> {
    let installation = Some(&shared.installation).filter(|i| i.hooked)?;
    THREAD
        .try_with(|state| {
            let mut f = Some(f);
            {
                // The common case: bound already; no reference counts touched.
                let binding = state.binding.borrow();
                if let Some(b) = binding
                    .as_ref()
                    .filter(|b| b.detector == shared.id && b.watch.is_alive())
                {
                    if claim {
                        b.watch.claim(&b.thread, installation);
                    }
                    return f.take().map(|f| f(&b.watch, &b.thread));
                }
            }
            if !claim {
                return None;
            }
            let (watch, thread) = bind(state, shared, installation)?;
            watch.claim(&thread, installation);
            f.take().map(|f| f(&watch, &thread))
        })
        .ok()
        .flatten()
}

/// Binds the calling thread to the runtime `installation` watches, replacing
/// a stale binding. `None` while a watched poll on this thread holds the
/// binding (a runtime driven from inside a poll is not watched).
#[cold]
fn bind(
    state: &ThreadState,
    shared: &Shared,
    installation: &Arc<Installation>,
) -> Option<(Arc<RuntimeWatch>, Arc<RuntimeThread>)> {
    let detector = shared.id;
    let mut binding = state.binding.try_borrow_mut().ok()?;
    if let Some(old) = binding.take() {
        // The thread left that runtime (it shut down): a block it was in
        // there has ended.
        old.thread.activity.park(shared.clock.now_ns());
        old.watch.remove(&old.thread);
    }
    let watch = installation.current_or_new();
    let thread = Arc::new(RuntimeThread::current());
    if let Some(samples) = &thread.samples {
        installation.sample(samples);
    }
    lock(&watch.threads).push(thread.clone());
    *binding = Some(Binding {
        detector,
        watch: watch.clone(),
        thread: thread.clone(),
    });
    Some((watch, thread))
}

/// Owned by the runtime's hooks; dropping the last one stops the watchdog.
struct HookGuard {
    shared: Arc<Shared>,
    user: UserHooks,
}

impl HookGuard {
    fn thread_start(&self) {
        // Binds the thread early; it becomes a worker at its first park.
        with_thread(&self.shared, true, |_, _| ());
    }

    fn thread_stop(&self) {
        let now = self.shared.clock.now_ns();
        let _ = THREAD.try_with(|state| {
            if let Ok(mut binding) = state.binding.try_borrow_mut()
                && let Some(b) = binding.take_if(|b| b.detector == self.shared.id)
            {
                // A block the thread was in has ended: it is leaving.
                b.thread.activity.park(now);
                b.watch.remove(&b.thread);
            }
        });
    }

    fn park(&self) {
        // Park state is kept even while disabled, so that it is right when
        // the detector is enabled again.
        let now = self.shared.clock.now_ns();
        with_thread(&self.shared, true, |_, t| t.activity.park(now));
    }

    fn unpark(&self) {
        let now = self.shared.clock.now_ns();
        with_thread(&self.shared, true, |_, t| t.activity.unpark(now));
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        self.shared.installation.shutdown();
    }
}
