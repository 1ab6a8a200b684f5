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

use crate::builder::{BuildError, Builder, Hooks};
use crate::error::{BlockOnError, SpawnError, SpawnErrorKind};
use crate::join::JoinHandle;
use crate::loom::Arc;
use crate::metrics::{ShutdownReport, WorkerMetrics};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// The worker with the fewest live tasks (accepted and not ended; the
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
    next: AtomicUsize,
    closed: AtomicBool,
    shutdown_started: Notify,
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

    /// Spawns a task on worker `worker`; see [`PerCoreRuntime::spawn_on`].
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
                .min_by_key(|(i, w)| (w.live_tasks(), *i))
                .map_or(0, |(i, _)| i),
            // The remainder is below `n`, so it fits in a `usize`.
            Placement::ByKey(key) => (key % n as u64) as usize,
        }
    }

    /// Spawns one task per worker, each built by `f` on its worker with that
    /// worker's id; see [`PerCoreRuntime::spawn_on_all`].
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
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// assert_eq!(rt.handle().block_on(0, || async { 3 })?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F, Fut>(&self, worker: usize, f: F) -> Result<Fut::Output, BlockOnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        if !RuntimeContext::current().can_block() {
            return Err(BlockOnError::WouldDeadlock(f));
        }
        let handle = self.spawn_on(worker, f).map_err(BlockOnError::Spawn)?;
        handle.join().map_err(BlockOnError::Task)
    }

    /// A snapshot of each worker's counters; see [`PerCoreRuntime::metrics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// rt.block_on(1, || async {})?;
    /// let spawned: Vec<u64> = rt.handle().metrics().iter().map(|m| m.spawned).collect();
    /// assert_eq!(spawned, [0, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> Vec<WorkerMetrics> {
        self.shared.workers.iter().map(|w| w.metrics()).collect()
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
    threads: Vec<Option<thread::JoinHandle<()>>>,
    exited: mpsc::Receiver<usize>,
    stopped: bool,
}

/// The validated settings `Builder::build` starts a runtime with.
pub(crate) struct StartConfig {
    pub(crate) workers: usize,
    pub(crate) cpus: Option<Vec<usize>>,
    pub(crate) name_prefix: String,
    pub(crate) stack_size: Option<usize>,
    pub(crate) placement: Placement,
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
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A runtime with the default settings: `PerCoreRuntime::builder().build()`.
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
        Builder::new().build()
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
                next: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                shutdown_started: Notify::new(),
            }),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (exited_tx, exited) = mpsc::channel();
        let mut runtime = PerCoreRuntime {
            handle: handle.clone(),
            threads: Vec::with_capacity(config.workers),
            exited,
            stopped: false,
        };
        for (index, shared) in handle.shared.workers.iter().enumerate() {
            let start = WorkerStart {
                shared: shared.clone(),
                handle: handle.clone(),
                cpu: handle.shared.cpus.as_ref().map(|cpus| cpus[index]),
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
                Ok(thread) => runtime.threads.push(Some(thread)),
                Err(source) => {
                    // Workers that never started must not be waited for.
                    for never in &handle.shared.workers[index..] {
                        never.inbox.exit();
                    }
                    drop(runtime);
                    return Err(BuildError::Thread {
                        worker: index,
                        source,
                    });
                }
            }
        }
        drop((ready_tx, exited_tx));
        let mut first_error = None;
        for _ in 0..config.workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((index, Err(error))) => {
                    if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                        first_error = Some((index, error));
                    }
                }
                // Every worker reports before it can end: unreachable, but a
                // lost report must not hang the build.
                Err(mpsc::RecvError) => break,
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
    /// [`placement`](Builder::placement) (round-robin by default).
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
    /// Fails with [`BlockOnError::WouldDeadlock`] on a thread that drives a
    /// current-thread runtime (this runtime's workers included), with
    /// [`BlockOnError::Spawn`] for a bad index or a shut-down runtime (the
    /// closure handed back, unrun in both cases), and with
    /// [`BlockOnError::Task`] if the task panicked or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{BlockOnError, PerCoreRuntime};
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
    pub fn block_on<F, Fut>(&self, worker: usize, f: F) -> Result<Fut::Output, BlockOnError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.block_on(worker, f)
    }

    /// A snapshot of each worker's counters: live tasks, spawned, completed,
    /// panicked, aborted, cancelled, busy time.
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
    /// assert_eq!((m[0].live_tasks, m[1].live_tasks, m[1].completed), (1, 0, 1));
    /// waiting.abort();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> Vec<WorkerMetrics> {
        self.handle.metrics()
    }

    /// Shuts the runtime down gracefully and reports how every task ended.
    ///
    /// 1. Intake stops: every spawn fails with
    ///    [`SpawnErrorKind::ShutDown`] from now on.
    /// 2. Tasks already accepted keep running; a worker stops as soon as all
    ///    its tasks have ended.
    /// 3. At `timeout`, the tasks still unfinished are cancelled: each future
    ///    is dropped on its worker (so its `Drop`s run there) and its handle
    ///    reports [`JoinError::is_cancelled`](crate::JoinError::is_cancelled).
    /// 4. Each worker then drops what tokio itself holds (tasks started with
    ///    tokio's `spawn` or `spawn_local`), waits for its `spawn_blocking`
    ///    tasks, runs `on_worker_stop`, and its thread is joined.
    ///
    /// Called from a task on one of this runtime's own workers, it cannot
    /// wait for that worker: the worker stops (cancelling its tasks) once
    /// the calling task returns, and its counts in the report are those of
    /// the moment.
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
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> ShutdownReport {
        let shared = self.handle.shared.clone();
        let deadline = Instant::now().checked_add(timeout);
        self.stopped = true;
        shared.closed.store(true, Ordering::Release);
        for worker in shared.workers.iter() {
            worker.drain();
        }
        // After every inbox is closed: a task woken here finds spawns refused.
        shared.shutdown_started.notify_waiters();
        // A worker cannot wait for itself.
        let own = worker::current()
            .filter(|current| Arc::ptr_eq(&current.handle.shared, &shared))
            .map(|current| current.worker.index);
        let mut running: Vec<bool> = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, thread)| thread.is_some() && Some(i) != own)
            .collect();
        let mut deadline_reached = false;
        while running.iter().any(|&r| r) {
            let next = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.exited.recv_timeout(left)
                }
                None => self
                    .exited
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(index) => running[index] = false,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    deadline_reached = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if deadline_reached || own.is_some() {
            for (worker, still) in shared.workers.iter().zip(&running) {
                if *still || Some(worker.index) == own {
                    worker.cancel_all();
                }
            }
        }
        while running.iter().any(|&r| r) {
            match self.exited.recv() {
                Ok(index) => running[index] = false,
                Err(mpsc::RecvError) => break,
            }
        }
        for (i, thread) in self.threads.iter_mut().enumerate() {
            if Some(i) == own {
                continue;
            }
            if let Some(thread) = thread.take() {
                // The worker caught every panic of its tasks and hooks; a
                // panic here would be a bug of this crate, and its tasks were
                // cancelled by the loop's `Drop` anyway.
                let _ = thread.join();
            }
        }
        ShutdownReport {
            workers: shared.workers.iter().map(|w| w.metrics()).collect(),
            deadline_reached,
        }
    }
}

impl Drop for PerCoreRuntime {
    fn drop(&mut self) {
        if !self.stopped {
            self.stop(Duration::ZERO);
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
