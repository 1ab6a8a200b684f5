//! [`PerCoreRuntime`] (owns the worker threads, shuts them down) and
//! [`Handle`] (spawns from anywhere), with [`WorkerId`] and [`Placement`].

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use async_patterns_core::RuntimeContext;
use tokio::sync::Notify;

use crate::builder::{BuildError, Hooks, PerCoreRuntimeBuilder};
use crate::error::{BlockOnWorkerError, SpawnError, SpawnErrorKind};
use crate::join::JoinHandle;
use crate::loom::Arc;
use crate::metrics::{RuntimeMetrics, ShutdownReport};
use crate::shutdown::{self, WorkerThreads};
use crate::task::{Stage, Task};
use crate::worker::{self, WorkerShared, WorkerStart};

/// The index of one worker of a [`PerCoreRuntime`], from `0` to
/// `workers() - 1`.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let id = rt.block_on(1, || async { PerCoreRuntime::current_worker() })?;
/// assert_eq!(id.map(|id| id.index()), Some(1));
/// assert_eq!(id.unwrap().to_string(), "worker 1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub(crate) usize);

impl WorkerId {
    /// The worker's index.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// assert_eq!(rt.spawn_on(0, || async {})?.worker().index(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

/// Where [`PerCoreRuntime::spawn`] and [`spawn_with`](PerCoreRuntime::spawn_with)
/// put a task.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
///
/// let rt = PerCoreRuntime::builder().workers(4).build()?;
/// // Every task for one key lands on the same worker: its state can live
/// // there without locks.
/// let key = Placement::by_key(&"user-42");
/// let a = rt.spawn_with(key, || async {})?.worker();
/// let b = rt.spawn_with(key, || async {})?.worker();
/// assert_eq!(a, b);
/// assert_eq!(rt.spawn_with(Placement::ByKey(6), || async {})?.worker().index(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Placement {
    /// Workers in turn: 0, 1, …, n-1, 0, …
    #[default]
    RoundRobin,
    /// The worker with the fewest alive tasks (accepted and not ended; the
    /// lowest index on a tie). Reads every worker's counters: a little more
    /// work per spawn than round-robin.
    LeastLoaded,
    /// Worker `key % workers`: the same key always goes to the same worker.
    /// [`Placement::by_key`] hashes any key into one.
    ByKey(u64),
}

impl Placement {
    /// [`ByKey`](Placement::ByKey) with `key`'s hash (std's `DefaultHasher`
    /// with fixed keys, so the same within a build of your program).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::Placement;
    ///
    /// assert_eq!(Placement::by_key(&("tenant", 7)), Placement::by_key(&("tenant", 7)));
    /// ```
    pub fn by_key<K: Hash + ?Sized>(key: &K) -> Placement {
        Placement::ByKey(BuildHasherDefault::<DefaultHasher>::default().hash_one(key))
    }
}

/// What all handles of one runtime share.
pub(crate) struct PoolShared {
    workers: Box<[Arc<WorkerShared>]>,
    cpus: Option<Vec<usize>>,
    placement: Placement,
    name_prefix: String,
    next: AtomicUsize,
    closed: AtomicBool,
    shutdown_started: Notify,
    /// Workers whose thread has not finished yet.
    running: AtomicUsize,
    all_stopped: Notify,
}

impl PoolShared {
    pub(crate) fn workers(&self) -> &[Arc<WorkerShared>] {
        &self.workers
    }

    /// Shutdown begins: intake stops on every worker, each drains what it
    /// has, and the tasks waiting in `shutting_down` are woken. Idempotent.
    fn begin_shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        for worker in self.workers.iter() {
            worker.drain();
        }
        // After every inbox is closed: a task woken here finds spawns refused.
        self.shutdown_started.notify_waiters();
    }

    /// The worker the calling thread is, if it is one of this runtime's.
    fn own_worker(self: &Arc<Self>) -> Option<usize> {
        worker::current()
            .filter(|current| Arc::ptr_eq(&current.handle.shared, self))
            .map(|current| current.worker.index)
    }
}

/// A cheap, cloneable reference to a [`PerCoreRuntime`] for spawning from
/// anywhere — other threads, other runtimes, tasks on the workers — without
/// owning the runtime. Once the runtime has shut down, spawns fail with
/// [`SpawnErrorKind::ShutDown`].
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{Handle, PerCoreRuntime};
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let handle: Handle = rt.handle().clone();
/// let from_thread = std::thread::spawn(move || handle.block_on(1, || async { "hi" }).unwrap());
/// assert_eq!(from_thread.join().unwrap(), "hi");
///
/// // Inside a worker, the handle of its runtime is at hand.
/// let nested = rt.block_on(0, || async {
///     let here = Handle::current().expect("on a worker");
///     here.spawn_on(1, || async { 5 }).unwrap().await.unwrap()
/// })?;
/// assert_eq!(nested, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<PoolShared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.workers())
            .field("placement", &self.shared.placement)
            .field("shut_down", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Handle {
    /// The handle of the runtime whose worker is the calling thread, or
    /// `None` outside the workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{Handle, PerCoreRuntime};
    ///
    /// assert!(Handle::current().is_none());
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// assert!(rt.block_on(0, || async { Handle::current().is_some() })?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current() -> Option<Handle> {
        worker::current().map(|current| current.handle)
    }

    /// The number of workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// assert_eq!(rt.handle().workers(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Whether shutdown has begun: from then on every spawn is refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.handle().clone();
    /// assert!(!handle.is_shutting_down());
    /// drop(rt);
    /// assert!(handle.is_shutting_down());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Completes when shutdown begins (at once if it has): the signal for
    /// long-running tasks — an accept loop, a subscription — to wind down,
    /// so that a graceful [`shutdown`](PerCoreRuntime::shutdown) finishes
    /// before its deadline.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only waits for a signal, and a new call
    /// completes at once if shutdown began meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_per_core_runtime::{Handle, PerCoreRuntime};
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let serving = rt.spawn_on(0, || async {
    ///     let handle = Handle::current().unwrap();
    ///     let mut served = 0;
    ///     loop {
    ///         tokio::select! {
    ///             _ = handle.shutting_down() => break served,
    ///             _ = tokio::time::sleep(Duration::from_millis(1)) => served += 1,
    ///         }
    ///     }
    /// })?;
    /// let report = rt.shutdown(Duration::from_secs(60));
    /// assert!(!report.deadline_reached);
    /// assert_eq!(report.completed(), 1);
    /// serving.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn shutting_down(&self) {
        let notified = self.shared.shutdown_started.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is checked: a shutdown in between
        // cannot be missed.
        notified.as_mut().enable();
        if self.is_shutting_down() {
            return;
        }
        notified.await;
    }

    /// Completes once every worker has stopped: its tasks ended, what tokio
    /// held on it dropped, its `spawn_blocking` tasks waited for and
    /// `on_worker_stop` run (at once if they all have).
    ///
    /// A shutdown started from a task on one of the workers
    /// ([`shutdown_async`](PerCoreRuntime::shutdown_async)) reports before
    /// the caller's own worker has drained; wait for this before the process
    /// exits, so that the drain is not cut short.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only waits for a signal, and a new call
    /// completes at once if the workers stopped meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_core::park_on;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handle = rt.handle().clone();
    /// assert!(!handle.is_stopped());
    /// let report = rt.shutdown(Duration::from_secs(1));
    /// assert_eq!(report.completed(), 0);
    /// // From a plain thread, wait with any executor (here core's `park_on`).
    /// park_on(handle.stopped());
    /// assert!(handle.is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn stopped(&self) {
        let notified = self.shared.all_stopped.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the count is read: a stop in between is seen.
        notified.as_mut().enable();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }

    /// Whether every worker has stopped; see [`stopped`](Self::stopped).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.handle().clone();
    /// assert!(!handle.is_stopped());
    /// drop(rt); // outside any runtime: waits for the workers
    /// assert!(handle.is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.running.load(Ordering::Acquire) == 0
    }

    /// A worker's thread has finished (or never started).
    pub(crate) fn worker_stopped(&self) {
        if self.shared.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_stopped.notify_waiters();
        }
    }

    /// Spawns a task on worker `worker`; see [`PerCoreRuntime::spawn_on`].
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f`, unrun: [`SpawnErrorKind::NoSuchWorker`] if
    /// `worker` is not below the number of workers,
    /// [`SpawnErrorKind::ShutDown`] once shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, SpawnErrorKind};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handle = rt.handle();
    /// assert_eq!(handle.spawn_on(1, || async { 1 })?.join()?, 1);
    /// let err = handle.spawn_on(2, || async { 1 }).unwrap_err();
    /// assert_eq!(err.kind(), SpawnErrorKind::NoSuchWorker { index: 2, workers: 2 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_on<F, Fut>(
        &self,
        worker: usize,
        f: F,
    ) -> Result<JoinHandle<Fut::Output>, SpawnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let Some(target) = self.shared.workers.get(worker) else {
            let kind = SpawnErrorKind::NoSuchWorker {
                index: worker,
                workers: self.workers(),
            };
            return Err(SpawnError::new(kind, f));
        };
        submit(target, Stage::Closure(f)).map_err(|stage| {
            let f = stage
                .into_closure()
                .expect("a refused task was never started");
            SpawnError::new(SpawnErrorKind::ShutDown, f)
        })
    }

    /// Spawns a task on the worker chosen by the runtime's default
    /// [`Placement`]; see [`PerCoreRuntime::spawn`].
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f`, unrun: [`SpawnErrorKind::ShutDown`] once
    /// shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let a = rt.handle().spawn(|| async {})?;
    /// let b = rt.handle().spawn(|| async {})?;
    /// assert_ne!(a.worker(), b.worker());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F, Fut>(&self, f: F) -> Result<JoinHandle<Fut::Output>, SpawnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.spawn_with(self.shared.placement, f)
    }

    /// Spawns a task on the worker chosen by `placement`; see
    /// [`PerCoreRuntime::spawn_with`].
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f`, unrun: [`SpawnErrorKind::ShutDown`] once
    /// shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
    ///
    /// let rt = PerCoreRuntime::builder().workers(3).build()?;
    /// let task = rt.handle().spawn_with(Placement::ByKey(4), || async {})?;
    /// assert_eq!(task.worker().index(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_with<F, Fut>(
        &self,
        placement: Placement,
        f: F,
    ) -> Result<JoinHandle<Fut::Output>, SpawnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let worker = self.place(placement);
        self.spawn_on(worker, f)
    }

    fn place(&self, placement: Placement) -> usize {
        let workers = &self.shared.workers;
        let n = workers.len();
        match placement {
            Placement::RoundRobin => self.shared.next.fetch_add(1, Ordering::Relaxed) % n,
            Placement::LeastLoaded => workers
                .iter()
                .enumerate()
                .min_by_key(|(i, w)| (w.alive_tasks(), *i))
                .map_or(0, |(i, _)| i),
            // The remainder is below `n`, so it fits in a `usize`.
            Placement::ByKey(key) => (key % n as u64) as usize,
        }
    }

    /// Spawns one task per worker, each built by `f` on its worker with that
    /// worker's id; see [`PerCoreRuntime::spawn_on_all`].
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f` ([`SpawnErrorKind::ShutDown`]) if shutdown
    /// had begun before the call; if it begins while the tasks are being
    /// spawned, the handles of the tasks it refused report
    /// [`JoinError::is_cancelled`](crate::JoinError::is_cancelled) instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handles = rt.handle().spawn_on_all(|id| async move { id.index() * 10 })?;
    /// let got: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    /// assert_eq!(got, [0, 10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_on_all<F, Fut>(&self, f: F) -> Result<Vec<JoinHandle<Fut::Output>>, SpawnError<F>>
    where
        F: Fn(WorkerId) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SpawnError::new(SpawnErrorKind::ShutDown, f));
        }
        let f = Arc::new(f);
        let handles = self
            .shared
            .workers
            .iter()
            .map(|target| {
                let f = f.clone();
                let id = WorkerId(target.index);
                let stage = Stage::Closure(move || f(id));
                // A shutdown that started after the check above refuses the
                // task: its handle reports the cancellation.
                submit(target, stage).unwrap_or_else(|stage| refused(target, stage))
            })
            .collect();
        Ok(handles)
    }

    /// Runs a task on worker `worker` and blocks the calling thread until it
    /// ends; see [`PerCoreRuntime::block_on`].
    ///
    /// # Errors
    ///
    /// - [`BlockOnWorkerError::WouldDeadlock`] with `f`, unrun, on a thread that
    ///   drives a current-thread runtime (this runtime's workers included).
    /// - [`BlockOnWorkerError::Spawn`] with `f`, unrun, for a bad index or a
    ///   runtime that is shutting down.
    /// - [`BlockOnWorkerError::Task`] if the task panicked or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// assert_eq!(rt.handle().block_on(0, || async { 3 })?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F, Fut>(
        &self,
        worker: usize,
        f: F,
    ) -> Result<Fut::Output, BlockOnWorkerError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        if !RuntimeContext::current().can_block() {
            return Err(BlockOnWorkerError::WouldDeadlock(f));
        }
        let mut handle = self
            .spawn_on(worker, f)
            .map_err(BlockOnWorkerError::Spawn)?;
        handle.wait().map_err(BlockOnWorkerError::Task)
    }

    /// A snapshot of the runtime's counters, per worker and summed; see
    /// [`PerCoreRuntime::metrics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// rt.block_on(1, || async {})?;
    /// let metrics = rt.handle().metrics();
    /// let spawned: Vec<u64> = metrics.workers.iter().map(|m| m.spawned).collect();
    /// assert_eq!(spawned, [0, 1]);
    /// assert_eq!(metrics.spawned, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> RuntimeMetrics {
        RuntimeMetrics::from_workers(self.shared.workers.iter().map(|w| w.metrics()).collect())
    }
}

/// Queues a new task on `worker`, or hands its stage back if the worker no
/// longer accepts tasks.
pub(crate) fn submit<F, Fut>(
    worker: &Arc<WorkerShared>,
    stage: Stage<F, Fut>,
) -> Result<JoinHandle<Fut::Output>, Stage<F, Fut>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let task = Arc::new(Task::new(worker.clone(), stage));
    match worker.inbox.submit(task.clone()) {
        Ok(()) => Ok(JoinHandle::new(task, WorkerId(worker.index))),
        Err(refused) => {
            drop(refused);
            let task = Arc::into_inner(task).expect("a refused task has no other owner");
            Err(task.into_stage())
        }
    }
}

/// A handle for a task that shutdown refused, reporting the cancellation.
fn refused<F, Fut>(worker: &Arc<WorkerShared>, stage: Stage<F, Fut>) -> JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    drop(stage);
    let task: Task<F, Fut> = Task::finished(worker.clone(), Err(crate::JoinError::shut_down()));
    let task = Arc::new(task);
    JoinHandle::new(task, WorkerId(worker.index))
}

/// One single-threaded tokio runtime per CPU core (or per worker you ask
/// for), optionally pinned; see the [crate docs](crate) for when to use it.
///
/// Spawn from anywhere with [`spawn_on`](Self::spawn_on),
/// [`spawn`](Self::spawn), [`spawn_with`](Self::spawn_with),
/// [`spawn_on_all`](Self::spawn_on_all) and [`block_on`](Self::block_on), or
/// through a cloned [`Handle`]. The closure you pass is `Send`; the future it
/// builds on the worker need not be, and stays on that worker until it ends.
///
/// [`shutdown`](Self::shutdown) stops intake, lets tasks finish until a
/// deadline, cancels the rest and joins every thread. Dropping the runtime
/// does the same with no grace period.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let handle = rt.spawn_on(1, || {
///     let local = Rc::new(20); // not Send: fine, it never leaves worker 1
///     async move {
///         tokio::task::yield_now().await;
///         *local + 1
///     }
/// })?;
/// assert_eq!(handle.join()?, 21);
///
/// let report = rt.shutdown(Duration::from_secs(1));
/// assert_eq!(report.completed(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PerCoreRuntime {
    handle: Handle,
    /// `None` once a shutdown has taken them.
    threads: Option<WorkerThreads>,
}

/// The validated settings `PerCoreRuntimeBuilder::build` starts a runtime with.
pub(crate) struct StartConfig {
    pub(crate) workers: usize,
    pub(crate) cpus: Option<Vec<usize>>,
    pub(crate) name_prefix: String,
    pub(crate) stack_size: Option<usize>,
    pub(crate) placement: Placement,
    pub(crate) spin: Duration,
    pub(crate) hooks: Hooks,
}

impl PerCoreRuntime {
    /// A builder with the defaults: one unpinned worker per CPU of the
    /// [`CpuBudget`](crate::CpuBudget), round-robin placement.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).pin(false).build()?;
    /// assert_eq!(rt.workers(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> PerCoreRuntimeBuilder {
        PerCoreRuntimeBuilder::new()
    }

    /// A runtime with the default settings: `PerCoreRuntime::builder().build()`.
    ///
    /// # Errors
    ///
    /// A [`BuildError`], as [`PerCoreRuntimeBuilder::build`] returns it (a
    /// worker's thread or tokio runtime could not start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntime};
    ///
    /// let rt = PerCoreRuntime::new()?;
    /// assert_eq!(rt.workers(), CpuBudget::detect().workers());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<PerCoreRuntime, BuildError> {
        PerCoreRuntimeBuilder::new().build()
    }

    pub(crate) fn start(config: StartConfig) -> Result<PerCoreRuntime, BuildError> {
        let workers: Box<[Arc<WorkerShared>]> = (0..config.workers)
            .map(|i| Arc::new(WorkerShared::new(i)))
            .collect();
        let handle = Handle {
            shared: Arc::new(PoolShared {
                workers,
                cpus: config.cpus.map(|mut cpus| {
                    cpus.truncate(config.workers);
                    cpus
                }),
                placement: config.placement,
                name_prefix: config.name_prefix.clone(),
                next: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                shutdown_started: Notify::new(),
                running: AtomicUsize::new(config.workers),
                all_stopped: Notify::new(),
            }),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (exited_tx, exited) = mpsc::channel();
        let mut threads = WorkerThreads::new(exited, config.workers);
        for (index, shared) in handle.shared.workers.iter().enumerate() {
            let start =
                WorkerStart {
                    shared: shared.clone(),
                    handle: handle.clone(),
                    cpu: handle.shared.cpus.as_ref().map(|cpus| cpus[index]),
                    own_cpu: handle.shared.cpus.as_ref().is_some_and(|cpus| {
                        cpus.iter().filter(|&&c| c == cpus[index]).count() == 1
                    }),
                    spin: config.spin,
                    hooks: config.hooks.clone(),
                    ready: ready_tx.clone(),
                    exited: exited_tx.clone(),
                };
            let mut builder =
                thread::Builder::new().name(format!("{}-{index}", config.name_prefix));
            if let Some(bytes) = config.stack_size {
                builder = builder.stack_size(bytes);
            }
            match builder.spawn(move || worker::main(start)) {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    // Workers that never started must not be waited for.
                    for never in &handle.shared.workers[index..] {
                        never.inbox.exit();
                        handle.worker_stopped();
                    }
                    // Dropping stops and joins the workers that did start.
                    drop(PerCoreRuntime {
                        handle,
                        threads: Some(threads),
                    });
                    return Err(BuildError::Thread {
                        worker: index,
                        source,
                    });
                }
            }
        }
        drop((ready_tx, exited_tx));
        let runtime = PerCoreRuntime {
            handle,
            threads: Some(threads),
        };
        let mut first_error = None;
        let mut reported = vec![false; config.workers];
        for _ in 0..config.workers {
            let (index, result) = match ready_rx.recv() {
                Ok(report) => report,
                // A worker thread ended without reporting (a panic this
                // crate did not catch): the build fails, naming it.
                Err(mpsc::RecvError) => {
                    let index = reported.iter().position(|r| !r).unwrap_or(0);
                    let source =
                        std::io::Error::other("the worker thread ended before it was ready");
                    (
                        index,
                        Err(BuildError::Thread {
                            worker: index,
                            source,
                        }),
                    )
                }
            };
            reported[index] = true;
            if let Err(error) = result
                && first_error.as_ref().is_none_or(|(i, _)| index < *i)
            {
                first_error = Some((index, error));
            }
        }
        match first_error {
            None => Ok(runtime),
            Some((_, error)) => {
                // Dropping stops and joins the workers that did start.
                drop(runtime);
                Err(error)
            }
        }
    }

    /// The handle for spawning from elsewhere; clone it freely.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.handle().clone();
    /// assert_eq!(std::thread::spawn(move || handle.block_on(0, || async { 7 }).unwrap()).join().unwrap(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The number of workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// assert_eq!(PerCoreRuntime::builder().workers(2).build()?.workers(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.handle.workers()
    }

    /// The CPU each worker is pinned to (worker `i` to `cpus()[i]`), or
    /// `None` if the workers are not pinned.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntime};
    ///
    /// assert_eq!(PerCoreRuntime::builder().workers(1).build()?.cpus(), None);
    /// let first = CpuBudget::detect().cpus()[0];
    /// let pinned = PerCoreRuntime::builder().workers(1).pin(true).build()?;
    /// assert_eq!(pinned.cpus(), Some(&[first][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cpus(&self) -> Option<&[usize]> {
        self.handle.shared.cpus.as_deref()
    }

    /// The worker the calling thread is, or `None` outside the workers of
    /// every `PerCoreRuntime`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// assert_eq!(PerCoreRuntime::current_worker(), None);
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let on = rt.block_on(1, || async { PerCoreRuntime::current_worker().map(|w| w.index()) })?;
    /// assert_eq!(on, Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current_worker() -> Option<WorkerId> {
        worker::current_index().map(WorkerId)
    }

    /// Spawns `future` on the calling worker, from inside one of its tasks:
    /// for futures that already live there and may not be `Send` (the
    /// per-connection task of a server, say). Unlike tokio's `spawn_local`,
    /// the task is counted, joinable, and waited for by a graceful shutdown.
    ///
    /// Fails with [`SpawnErrorKind::NotOnWorker`] outside the workers and
    /// [`SpawnErrorKind::ShutDown`] once shutdown has begun, handing the
    /// future back.
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `future`, unpolled:
    /// [`SpawnErrorKind::NotOnWorker`] outside the workers,
    /// [`SpawnErrorKind::ShutDown`] once shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, SpawnErrorKind};
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let sum = rt.block_on(0, || async {
    ///     let shared = Rc::new(5);
    ///     let child = {
    ///         let shared = shared.clone();
    ///         PerCoreRuntime::spawn_local(async move { *shared * 2 }).unwrap()
    ///     };
    ///     child.await.unwrap() + *shared
    /// })?;
    /// assert_eq!(sum, 15);
    ///
    /// let err = PerCoreRuntime::spawn_local(async {}).unwrap_err();
    /// assert_eq!(err.kind(), SpawnErrorKind::NotOnWorker);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_local<Fut>(future: Fut) -> Result<JoinHandle<Fut::Output>, SpawnError<Fut>>
    where
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let Some(current) = worker::current() else {
            return Err(SpawnError::new(SpawnErrorKind::NotOnWorker, future));
        };
        let stage: Stage<fn() -> Fut, Fut> = Stage::Running { future, slot: None };
        submit(&current.worker, stage).map_err(|stage| {
            let future = stage
                .into_future()
                .expect("a refused task was never polled");
            SpawnError::new(SpawnErrorKind::ShutDown, future)
        })
    }

    /// Spawns a task on worker `worker` (`0..workers()`): `f` is sent to the
    /// worker and called there; the future it returns runs there until it
    /// ends, and need not be `Send`.
    ///
    /// Fails, handing `f` back, if the index is out of range or the runtime
    /// is shutting down.
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f`, unrun: [`SpawnErrorKind::NoSuchWorker`] if
    /// `worker` is not below the number of workers,
    /// [`SpawnErrorKind::ShutDown`] once shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, SpawnErrorKind};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handle = rt.spawn_on(1, || {
    ///     let hits = Rc::new(Cell::new(0));
    ///     async move {
    ///         for _ in 0..3 {
    ///             hits.set(hits.get() + 1);
    ///             tokio::task::yield_now().await;
    ///         }
    ///         (hits.get(), PerCoreRuntime::current_worker().unwrap().index())
    ///     }
    /// })?;
    /// assert_eq!(handle.join()?, (3, 1));
    ///
    /// let err = rt.spawn_on(2, || async {}).unwrap_err();
    /// assert_eq!(err.kind(), SpawnErrorKind::NoSuchWorker { index: 2, workers: 2 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_on<F, Fut>(
        &self,
        worker: usize,
        f: F,
    ) -> Result<JoinHandle<Fut::Output>, SpawnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.spawn_on(worker, f)
    }

    /// Spawns a task on the worker chosen by the builder's
    /// [`placement`](PerCoreRuntimeBuilder::placement) (round-robin by default).
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f`, unrun: [`SpawnErrorKind::ShutDown`] once
    /// shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let workers: Vec<usize> = (0..4)
    ///     .map(|_| rt.spawn(|| async {}).unwrap().worker().index())
    ///     .collect();
    /// assert_eq!(workers, [0, 1, 0, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F, Fut>(&self, f: F) -> Result<JoinHandle<Fut::Output>, SpawnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }

    /// Spawns a task on the worker chosen by `placement`.
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f`, unrun: [`SpawnErrorKind::ShutDown`] once
    /// shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let session = Placement::by_key(&"session-9");
    /// let first = rt.spawn_with(session, || async {})?.worker();
    /// assert!((0..10).all(|_| rt.spawn_with(session, || async {}).unwrap().worker() == first));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_with<F, Fut>(
        &self,
        placement: Placement,
        f: F,
    ) -> Result<JoinHandle<Fut::Output>, SpawnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.spawn_with(placement, f)
    }

    /// Spawns one task per worker: `f(id)` is called on worker `id` and the
    /// future it returns runs there. Returns the handles in worker order.
    ///
    /// Fails, handing `f` back, if the runtime has shut down. If shutdown
    /// begins while the tasks are being spawned, the handles of the tasks it
    /// refused report [`JoinError::is_cancelled`](crate::JoinError::is_cancelled).
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] holding `f` ([`SpawnErrorKind::ShutDown`]) if shutdown
    /// had begun before the call; if it begins while the tasks are being
    /// spawned, the handles of the tasks it refused report
    /// [`JoinError::is_cancelled`](crate::JoinError::is_cancelled) instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handles = rt.spawn_on_all(|id| async move {
    ///     assert_eq!(PerCoreRuntime::current_worker(), Some(id));
    ///     id.index()
    /// })?;
    /// let ids: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    /// assert_eq!(ids, [0, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_on_all<F, Fut>(&self, f: F) -> Result<Vec<JoinHandle<Fut::Output>>, SpawnError<F>>
    where
        F: Fn(WorkerId) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.spawn_on_all(f)
    }

    /// Runs a task on worker `worker` and blocks the calling thread until it
    /// ends: for code outside the pool (a `main`, a test, a plain thread, a
    /// `spawn_blocking` closure). On a multi-thread tokio worker it blocks
    /// through `block_in_place`.
    ///
    /// Fails with [`BlockOnWorkerError::WouldDeadlock`] on a thread that drives a
    /// current-thread runtime (this runtime's workers included), with
    /// [`BlockOnWorkerError::Spawn`] for a bad index or a shut-down runtime (the
    /// closure handed back, unrun in both cases), and with
    /// [`BlockOnWorkerError::Task`] if the task panicked or was cancelled.
    ///
    /// # Errors
    ///
    /// - [`BlockOnWorkerError::WouldDeadlock`] with `f`, unrun, on a thread that
    ///   drives a current-thread runtime (this runtime's workers included).
    /// - [`BlockOnWorkerError::Spawn`] with `f`, unrun, for a bad index or a
    ///   runtime that is shutting down.
    /// - [`BlockOnWorkerError::Task`] if the task panicked or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{BlockOnWorkerError, PerCoreRuntime};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// assert_eq!(rt.block_on(0, || async { 40 + 2 })?, 42);
    ///
    /// let inner = rt.block_on(1, {
    ///     let handle = rt.handle().clone();
    ///     move || async move { handle.block_on(0, || async {}).map_err(|e| e.to_string()) }
    /// })?;
    /// assert_eq!(
    ///     inner.unwrap_err(),
    ///     "blocking here would deadlock: this thread drives a current-thread tokio runtime"
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F, Fut>(
        &self,
        worker: usize,
        f: F,
    ) -> Result<Fut::Output, BlockOnWorkerError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.block_on(worker, f)
    }

    /// A snapshot of the runtime's counters: for each worker, and summed
    /// over the workers, the tasks spawned, completed, panicked, aborted,
    /// cancelled and alive, and each worker's busy time.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let waiting = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// rt.block_on(1, || async {})?;
    /// let m = rt.metrics();
    /// assert_eq!((m.workers[0].alive_tasks, m.workers[1].alive_tasks, m.workers[1].completed), (1, 0, 1));
    /// assert_eq!((m.spawned, m.alive_tasks), (2, 1));
    /// waiting.abort();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> RuntimeMetrics {
        self.handle.metrics()
    }

    /// Shuts the runtime down gracefully and reports how every task ended;
    /// blocks the calling thread until every worker thread is joined. From
    /// async code, use [`shutdown_async`](Self::shutdown_async).
    ///
    /// 1. Intake stops: every spawn fails with
    ///    [`SpawnErrorKind::ShutDown`] from now on, and
    ///    [`Handle::shutting_down`] completes.
    /// 2. Tasks already accepted keep running; a worker stops as soon as all
    ///    its tasks have ended.
    /// 3. At `timeout`, the tasks still unfinished are cancelled: each future
    ///    is dropped on its worker (so its `Drop`s run there) and its handle
    ///    reports [`JoinError::is_cancelled`](crate::JoinError::is_cancelled).
    /// 4. Each worker then drops what tokio itself holds (tasks started with
    ///    tokio's `spawn` or `spawn_local`), waits for its `spawn_blocking`
    ///    tasks, runs `on_worker_stop`, and its thread is joined.
    ///
    /// On a multi-thread tokio worker it blocks through `block_in_place`.
    ///
    /// # Panics
    ///
    /// If the calling thread drives a current-thread tokio runtime (one of
    /// this runtime's workers, or the runtime of a
    /// `#[tokio::main(flavor = "current_thread")]`): waiting there would
    /// stall every task of that runtime for up to `timeout`, and on a worker
    /// of this runtime it would wait for itself. `.await`
    /// [`shutdown_async`](Self::shutdown_async) there instead. The panic
    /// drops the runtime, which then cancels its tasks at once (see
    /// [`Drop`](#impl-Drop-for-PerCoreRuntime)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let slow = rt.spawn_on(0, || async {
    ///     tokio::time::sleep(Duration::from_millis(20)).await;
    ///     "finished"
    /// })?;
    /// let report = rt.shutdown(Duration::from_secs(10));
    /// assert!(!report.deadline_reached);
    /// assert_eq!(report.completed(), 1);
    /// assert_eq!(slow.join()?, "finished");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        if !RuntimeContext::current().can_block() {
            panic!(
                "PerCoreRuntime::shutdown: {}; `.await` `shutdown_async` instead",
                async_patterns_core::WouldDeadlock
            );
        }
        let deadline = Instant::now().checked_add(timeout);
        let shared = self.handle.shared.clone();
        shared.begin_shutdown();
        let mut threads = self
            .threads
            .take()
            .expect("only a shutdown takes the threads");
        let deadline_reached = RuntimeContext::run_blocking(|| threads.stop(&shared, deadline))
            .unwrap_or_else(|_| unreachable!("checked above: this thread may block"));
        ShutdownReport::new(&shared, deadline_reached)
    }

    /// The same shutdown as [`shutdown`](Self::shutdown), for async code:
    /// it never blocks the calling thread, on any runtime or executor. The
    /// waiting (for the workers to drain, until the deadline, and for their
    /// threads to end) happens on a thread of its own, named
    /// `{thread_name_prefix}-shutdown`, which joins every worker thread.
    ///
    /// The shutdown **starts when `shutdown_async` is called**, not when the
    /// future is first polled: intake stops at once, and the deadline counts
    /// from the call.
    ///
    /// Called from a task on one of this runtime's own workers (a "shut
    /// down" request handled by the runtime itself), the future completes as
    /// soon as the *other* workers have stopped: the calling task keeps its
    /// own worker alive while it waits, so that worker's counts in the
    /// report are those of the moment (the calling task among its
    /// `alive_tasks`). That worker then goes on draining until the same
    /// deadline; past it, its remaining tasks — the calling task included,
    /// at its next `.await` — are cancelled. [`Handle::stopped`] completes
    /// when that worker, too, has stopped: wait for it before the process
    /// exits. Call it from a task spawned through this crate: a task started
    /// with tokio's own `spawn` on a worker is dropped when that worker's
    /// last counted task ends.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not stop the shutdown, which was already
    /// under way: it completes in the background — tasks drain until the
    /// deadline, the rest are cancelled, every thread is joined — and only
    /// the report is lost.
    ///
    /// # Panics
    ///
    /// If the operating system refuses to start the shutdown thread (as
    /// [`std::thread::spawn`] would); every task is then cancelled at once,
    /// so that nothing is left draining without a deadline.
    ///
    /// # Examples
    ///
    /// From async code outside the runtime:
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let task = rt.spawn_on(1, || async {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     "done"
    /// })?;
    /// // On a current-thread runtime: the sync `shutdown` would panic here.
    /// let report = rt.shutdown_async(Duration::from_secs(5)).await;
    /// assert_eq!((report.completed(), report.deadline_reached), (1, false));
    /// assert_eq!(task.await?, "done");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// From a task on the runtime's own worker, with the process waiting
    /// until that worker has drained too:
    ///
    /// ```
    /// # // Under miri the shutdown thread, detached, outlives `main`.
    /// # if cfg!(miri) { return Ok(()); }
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handle = rt.handle().clone();
    /// let owner = Arc::new(Mutex::new(Some(rt)));
    /// let admin = {
    ///     let owner = owner.clone();
    ///     handle.spawn_on(0, move || async move {
    ///         let rt = owner.lock().unwrap().take().unwrap();
    ///         let report = rt.shutdown_async(Duration::from_secs(5)).await;
    ///         // This task is still alive on worker 0.
    ///         (report.workers[0].alive_tasks, report.deadline_reached)
    ///     })?
    /// };
    /// assert_eq!(admin.join()?, (1, false));
    /// assert!(handle.is_shutting_down());
    /// async_patterns_core::park_on(handle.stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_async(
        mut self,
        timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        let deadline = Instant::now().checked_add(timeout);
        let shared = self.handle.shared.clone();
        shared.begin_shutdown();
        let own = shared.own_worker();
        let threads = self
            .threads
            .take()
            .expect("only a shutdown takes the threads");
        let name = format!("{}-shutdown", shared.name_prefix);
        let receiver = shutdown::in_background(threads, shared, deadline, own, name)
            .unwrap_or_else(|error| {
                panic!("PerCoreRuntime::shutdown_async: cannot start the shutdown thread: {error}")
            });
        receiver.receive()
    }
}

/// Dropping the runtime shuts it down with no grace period: intake stops and
/// every task still running is cancelled at once, each future dropped on its
/// own worker (its `Drop`s run there), its handle reporting
/// [`JoinError::is_cancelled`](crate::JoinError::is_cancelled).
///
/// Where the thread may block — outside any runtime, or on a blocking-pool
/// thread — the drop waits for the workers to stop and joins their threads.
/// Anywhere else (inside a task: on this runtime's own worker, on another
/// current-thread or multi-thread runtime) it **never blocks**: it returns
/// at once, each worker stops after its current poll, and its thread ends
/// on its own right after, unjoined. To wait for the workers from async
/// code, `.await` [`PerCoreRuntime::shutdown_async`] instead.
///
/// Do not drop (or shut down) the runtime on a `spawn_blocking` thread of
/// one of its own workers: that worker waits for its blocking tasks before
/// it stops.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let handle = rt.handle().clone();
/// let stuck = rt.spawn_on(1, || std::future::pending::<()>())?;
/// // Dropped inside one of its own tasks: returns at once, never blocks worker 0.
/// let dropper = handle.spawn_on(0, move || async move {
///     drop(rt);
///     "dropped"
/// })?;
/// assert_eq!(dropper.join()?, "dropped");
/// assert!(stuck.join().unwrap_err().is_cancelled());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Drop for PerCoreRuntime {
    fn drop(&mut self) {
        let Some(mut threads) = self.threads.take() else {
            return;
        };
        let shared = self.handle.shared.clone();
        shared.begin_shutdown();
        match RuntimeContext::current() {
            RuntimeContext::NoRuntime | RuntimeContext::BlockingThread => {
                threads.stop(&shared, Some(Instant::now()));
            }
            // Inside a runtime: never wait. The threads detach and end on
            // their own once their workers have cancelled everything.
            _ => {
                for worker in shared.workers.iter() {
                    worker.cancel_all();
                }
            }
        }
    }
}

impl fmt::Debug for PerCoreRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCoreRuntime")
            .field("workers", &self.workers())
            .field("cpus", &self.cpus())
            .field("placement", &self.handle.shared.placement)
            .finish()
    }
}
