//! The errors of spawning and of `block_on`: each hands back what the caller
//! passed in (the closure, or the future), so nothing is lost on refusal.

use std::fmt;

use crate::join::{JoinError, JoinHandle};

/// A task was not spawned; the closure (or, for
/// [`PerCoreRuntime::spawn_local`](crate::PerCoreRuntime::spawn_local), the
/// future) is handed back, unrun.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{PerCoreRuntime, SpawnErrorKind};
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let err = rt.spawn_on(5, || async { 1 }).unwrap_err();
/// assert_eq!(err.kind(), SpawnErrorKind::NoSuchWorker { index: 5, workers: 2 });
/// assert_eq!(err.to_string(), "no worker 5: the runtime has 2 workers");
/// let closure = err.into_inner();
/// assert_eq!(rt.block_on(0, closure)?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SpawnError<T> {
    kind: SpawnErrorKind,
    task: T,
}

/// Why a spawn was refused.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{PerCoreRuntime, SpawnErrorKind};
///
/// let err = PerCoreRuntime::spawn_local(async {}).unwrap_err();
/// assert_eq!(err.kind(), SpawnErrorKind::NotOnWorker);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnErrorKind {
    /// The worker index is out of range.
    NoSuchWorker {
        /// The index that was asked for.
        index: usize,
        /// How many workers the runtime has (valid indexes are below this).
        workers: usize,
    },
    /// The runtime is shutting down or has shut down: it accepts no new tasks.
    ShutDown,
    /// [`PerCoreRuntime::spawn_local`](crate::PerCoreRuntime::spawn_local)
    /// was called on a thread that is not a worker.
    NotOnWorker,
}

impl<T> SpawnError<T> {
    pub(crate) fn new(kind: SpawnErrorKind, task: T) -> Self {
        SpawnError { kind, task }
    }

    /// Why the spawn was refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, SpawnErrorKind};
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.handle().clone();
    /// rt.shutdown(std::time::Duration::ZERO);
    /// let err = handle.spawn(|| async {}).unwrap_err();
    /// assert_eq!(err.kind(), SpawnErrorKind::ShutDown);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kind(&self) -> SpawnErrorKind {
        self.kind
    }

    /// The closure (or future) that was not spawned.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let make = rt.spawn_on(1, || async { "unrun" }).unwrap_err().into_inner();
    /// assert_eq!(rt.block_on(0, make)?, "unrun");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.task
    }
}

impl fmt::Display for SpawnErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnErrorKind::NoSuchWorker { index, workers } => {
                write!(f, "no worker {index}: the runtime has {workers} workers")
            }
            SpawnErrorKind::ShutDown => f.write_str("the runtime is shut down"),
            SpawnErrorKind::NotOnWorker => {
                f.write_str("not called on a worker thread of a per-core runtime")
            }
        }
    }
}

impl<T> fmt::Display for SpawnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl<T> fmt::Debug for SpawnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<T> std::error::Error for SpawnError<T> {}

/// [`PerCoreRuntime::block_on`](crate::PerCoreRuntime::block_on) did not
/// return the task's output.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{BlockOnWorkerError, PerCoreRuntime};
///
/// let rt = PerCoreRuntime::builder().workers(1).build()?;
/// match rt.block_on(3, || async { 1 }) {
///     Err(BlockOnWorkerError::Spawn(err)) => assert_eq!(err.to_string(), "no worker 3: the runtime has 1 workers"),
///     other => panic!("unexpected {other:?}"),
/// }
/// let err = rt.block_on(0, || async { panic!("boom") }).unwrap_err();
/// assert_eq!(err.to_string(), "task panicked: boom");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum BlockOnWorkerError<T> {
    /// The task was not spawned (no such worker, or shut down); the closure
    /// is inside, unrun.
    Spawn(SpawnError<T>),
    /// The calling thread drives a current-thread runtime (one of the
    /// workers, for example): blocking it could wait forever. The closure is
    /// handed back, unrun; `.await` a [`JoinHandle`](crate::JoinHandle)
    /// instead.
    WouldDeadlock(T),
    /// The task ran but panicked or was cancelled.
    Task(JoinError),
}

impl<T> BlockOnWorkerError<T> {
    /// The closure, if it never ran.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let unrun = rt.block_on(9, || async { 1 }).unwrap_err().into_inner();
    /// assert!(unrun.is_some());
    /// let ran = rt.block_on(0, || async { panic!() }).unwrap_err().into_inner();
    /// assert!(ran.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> Option<T> {
        match self {
            BlockOnWorkerError::Spawn(err) => Some(err.into_inner()),
            BlockOnWorkerError::WouldDeadlock(task) => Some(task),
            BlockOnWorkerError::Task(_) => None,
        }
    }
}

impl<T> fmt::Display for BlockOnWorkerError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOnWorkerError::Spawn(err) => fmt::Display::fmt(err, f),
            BlockOnWorkerError::WouldDeadlock(_) => {
                fmt::Display::fmt(&async_patterns_core::WouldDeadlock, f)
            }
            BlockOnWorkerError::Task(err) => fmt::Display::fmt(err, f),
        }
    }
}

impl<T> fmt::Debug for BlockOnWorkerError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOnWorkerError::Spawn(err) => f.debug_tuple("Spawn").field(err).finish(),
            BlockOnWorkerError::WouldDeadlock(_) => {
                f.debug_tuple("WouldDeadlock").finish_non_exhaustive()
            }
            BlockOnWorkerError::Task(err) => f.debug_tuple("Task").field(err).finish(),
        }
    }
}

impl<T> std::error::Error for BlockOnWorkerError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BlockOnWorkerError::Spawn(_) | BlockOnWorkerError::WouldDeadlock(_) => None,
            BlockOnWorkerError::Task(err) => Some(err),
        }
    }
}

/// [`JoinHandle::join`](crate::JoinHandle::join) did not return the task's
/// output: the calling thread may not block (the handle is handed back), or
/// the task ended without a value.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{JoinBlockingError, PerCoreRuntime};
///
/// let rt = PerCoreRuntime::builder().workers(1).build()?;
/// let err = rt.spawn_on(0, || async { panic!("boom") })?.join().unwrap_err();
/// assert!(matches!(&err, JoinBlockingError::Task(e) if e.is_panic()));
/// assert_eq!(err.to_string(), "task panicked: boom");
///
/// // Inside an async block on a current-thread runtime, the handle comes back.
/// let task = rt.spawn_on(0, || async { 5 })?;
/// let here = tokio::runtime::Builder::new_current_thread().build()?;
/// let got = here.block_on(async move {
///     match task.join() {
///         Err(JoinBlockingError::WouldDeadlock(task)) => task.await.unwrap(),
///         _ => unreachable!(),
///     }
/// });
/// assert_eq!(got, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum JoinBlockingError<T> {
    /// The calling thread drives a current-thread runtime (one of the
    /// workers, for example): blocking it could wait forever. The handle is
    /// handed back, the task untouched; `.await` it instead.
    WouldDeadlock(JoinHandle<T>),
    /// The task panicked, was aborted or was cancelled by shutdown.
    Task(JoinError),
}

impl<T> JoinBlockingError<T> {
    /// The handle, if the join was refused before waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let failed = rt.spawn_on(0, || async { panic!() as u8 })?.join().unwrap_err();
    /// assert!(failed.into_inner().is_none());
    ///
    /// let task = rt.spawn_on(0, || async { 1 })?;
    /// let here = tokio::runtime::Builder::new_current_thread().build()?;
    /// let back = here.block_on(async move { task.join().unwrap_err().into_inner() });
    /// assert_eq!(back.unwrap().join()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> Option<JoinHandle<T>> {
        match self {
            JoinBlockingError::WouldDeadlock(handle) => Some(handle),
            JoinBlockingError::Task(_) => None,
        }
    }

    /// Whether the task panicked (tokio's [`JoinError::is_panic`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// assert!(rt.spawn_on(0, || async { panic!() })?.join().unwrap_err().is_panic());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinBlockingError::Task(err) if err.is_panic())
    }

    /// Whether the task was aborted or cancelled by shutdown (tokio's
    /// [`JoinError::is_cancelled`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let task = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// task.abort();
    /// assert!(task.join().unwrap_err().is_cancelled());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinBlockingError::Task(err) if err.is_cancelled())
    }
}

impl<T> fmt::Display for JoinBlockingError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinBlockingError::WouldDeadlock(_) => {
                fmt::Display::fmt(&async_patterns_core::WouldDeadlock, f)
            }
            JoinBlockingError::Task(err) => fmt::Display::fmt(err, f),
        }
    }
}

impl<T> fmt::Debug for JoinBlockingError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinBlockingError::WouldDeadlock(_) => {
                f.debug_tuple("WouldDeadlock").finish_non_exhaustive()
            }
            JoinBlockingError::Task(err) => f.debug_tuple("Task").field(err).finish(),
        }
    }
}

impl<T> std::error::Error for JoinBlockingError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinBlockingError::WouldDeadlock(_) => None,
            JoinBlockingError::Task(err) => Some(err),
        }
    }
}
