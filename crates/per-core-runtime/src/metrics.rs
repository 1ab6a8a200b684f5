//! What the runtime tells about its workers: [`RuntimeMetrics`] with one
//! [`WorkerMetrics`] per worker (a snapshot at any time) and the
//! [`ShutdownReport`] (the final counts).

use std::time::Duration;

use crate::WorkerId;

/// A snapshot of the runtime's counters, from
/// [`PerCoreRuntime::metrics`](crate::PerCoreRuntime::metrics) or
/// [`Handle::metrics`](crate::Handle::metrics): each worker's, and their
/// sums.
///
/// Counts cover the tasks spawned through this crate (`spawn*`,
/// `block_on`, [`spawn_local`](crate::PerCoreRuntime::spawn_local)); tasks
/// started with tokio's own `spawn` or `spawn_local` on a worker are not
/// counted. Counters count since the runtime started and never go down;
/// `alive_tasks` is a gauge. Every accepted task ends exactly once, as
/// completed, panicked, aborted or cancelled, so `spawned` equals the sum of
/// the four plus `alive_tasks`.
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
/// assert_eq!((m.spawned, m.completed, m.alive_tasks), (2, 1, 1));
/// assert_eq!((m.workers[0].alive_tasks, m.workers[1].completed), (1, 1));
/// waiting.abort();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// Each worker's counters, in worker order.
    pub workers: Vec<WorkerMetrics>,
    /// Tasks accepted, over all workers (counter).
    pub spawned: u64,
    /// Tasks that ran to completion, over all workers (counter).
    pub completed: u64,
    /// Tasks that panicked, over all workers (counter).
    pub panicked: u64,
    /// Tasks aborted through their join handle, over all workers (counter).
    pub aborted: u64,
    /// Tasks cancelled by shutdown, over all workers (counter).
    pub cancelled: u64,
    /// Tasks accepted and not ended yet, over all workers (gauge; tokio's
    /// name).
    pub alive_tasks: u64,
}

impl RuntimeMetrics {
    pub(crate) fn from_workers(workers: Vec<WorkerMetrics>) -> RuntimeMetrics {
        let sum = |f: fn(&WorkerMetrics) -> u64| workers.iter().map(f).sum();
        RuntimeMetrics {
            spawned: sum(|w| w.spawned),
            completed: sum(|w| w.completed),
            panicked: sum(|w| w.panicked),
            aborted: sum(|w| w.aborted),
            cancelled: sum(|w| w.cancelled),
            alive_tasks: sum(|w| w.alive_tasks),
            workers,
        }
    }
}

/// A snapshot of one worker's counters, in [`RuntimeMetrics::workers`] or
/// the [`ShutdownReport`].
///
/// Counters count since the worker started and never go down;
/// `alive_tasks` is a gauge. `spawned` equals `completed + panicked +
/// aborted + cancelled + alive_tasks`.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(1).build()?;
/// rt.block_on(0, || async {})?;
/// let m = &rt.metrics().workers[0];
/// assert_eq!((m.worker.index(), m.spawned, m.completed, m.alive_tasks), (0, 1, 1, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// The worker.
    pub worker: WorkerId,
    /// Tasks accepted by this worker (counter).
    pub spawned: u64,
    /// Tasks that ran to completion: their output went to the join handle
    /// (counter).
    pub completed: u64,
    /// Tasks that panicked, building or polling the future (counter).
    pub panicked: u64,
    /// Tasks cancelled by [`JoinHandle::abort`](crate::JoinHandle::abort)
    /// (counter).
    pub aborted: u64,
    /// Tasks cancelled by shutdown, started or not (counter).
    pub cancelled: u64,
    /// Tasks accepted and not ended yet: queued, running or waiting (gauge;
    /// tokio's name).
    pub alive_tasks: u64,
    /// Time the worker spent polling its tasks: not waiting for work, not
    /// spinning before it parks, not in tokio's I/O driver (counter).
    pub busy_time: Duration,
    /// Time the worker spent looking for work before it parked (counter;
    /// zero unless [`spin_before_park`] is set). The worker keeps its CPU
    /// busy meanwhile: this is what the option costs. Tokio's own tasks
    /// and its I/O driver, polled between two looks, are counted in it.
    ///
    /// [`spin_before_park`]: crate::PerCoreRuntimeBuilder::spin_before_park
    pub spin_time: Duration,
}

/// What [`PerCoreRuntime::shutdown`](crate::PerCoreRuntime::shutdown)
/// found: each worker's final counts, and whether the deadline cut the
/// drain short.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::PerCoreRuntime;
/// use std::time::Duration;
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let quick = rt.spawn_on(0, || async { 1 })?;
/// assert_eq!(quick.join()?, 1);
/// let stuck = rt.spawn_on(1, || std::future::pending::<u32>())?;
/// let report = rt.shutdown(Duration::from_millis(50));
/// assert!(report.deadline_reached);
/// assert_eq!(report.completed(), 1);
/// assert_eq!(report.cancelled(), 1);
/// assert_eq!(report.workers[1].cancelled, 1);
/// assert!(stuck.join().unwrap_err().is_cancelled());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Each worker's final counts, in worker order.
    pub workers: Vec<WorkerMetrics>,
    /// Whether some tasks were still running at the deadline and were
    /// cancelled.
    pub deadline_reached: bool,
}

impl ShutdownReport {
    pub(crate) fn new(shared: &crate::runtime::PoolShared, deadline_reached: bool) -> Self {
        ShutdownReport {
            workers: shared.workers().iter().map(|w| w.metrics()).collect(),
            deadline_reached,
        }
    }

    /// Tasks that ran to completion, over all workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    /// use std::time::Duration;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// rt.block_on(0, || async {})?;
    /// assert_eq!(rt.shutdown(Duration::from_secs(1)).completed(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn completed(&self) -> u64 {
        self.workers.iter().map(|w| w.completed).sum()
    }

    /// Tasks cancelled by shutdown, over all workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    /// use std::time::Duration;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let _detached = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// assert_eq!(rt.shutdown(Duration::ZERO).cancelled(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancelled(&self) -> u64 {
        self.workers.iter().map(|w| w.cancelled).sum()
    }

    /// Tasks that panicked, over all workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    /// use std::time::Duration;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let failed = rt.spawn_on(0, || async { panic!("boom") })?;
    /// assert!(failed.join().unwrap_err().is_panic());
    /// assert_eq!(rt.shutdown(Duration::ZERO).panicked(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn panicked(&self) -> u64 {
        self.workers.iter().map(|w| w.panicked).sum()
    }

    /// Tasks aborted through their join handle, over all workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    /// use std::time::Duration;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// handle.abort();
    /// assert!(handle.join().unwrap_err().is_cancelled());
    /// assert_eq!(rt.shutdown(Duration::ZERO).aborted(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn aborted(&self) -> u64 {
        self.workers.iter().map(|w| w.aborted).sum()
    }
}
