//! The errors of spawning and of `block_on`: each hands back what the caller
//! passed in (the closure, or the future), so nothing is lost on refusal.

use std::fmt;

use crate::join::JoinError;

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
/// use async_patterns_per_core_runtime::{BlockOnError, PerCoreRuntime};
///
/// let rt = PerCoreRuntime::builder().workers(1).build()?;
/// match rt.block_on(3, || async { 1 }) {
///     Err(BlockOnError::Spawn(err)) => assert_eq!(err.to_string(), "no worker 3: the runtime has 1 workers"),
///     other => panic!("unexpected {other:?}"),
/// }
/// let err = rt.block_on(0, || async { panic!("boom") }).unwrap_err();
/// assert_eq!(err.to_string(), "task panicked: boom");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum BlockOnError<T> {
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

impl<T> BlockOnError<T> {
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
            BlockOnError::Spawn(err) => Some(err.into_inner()),
            BlockOnError::WouldDeadlock(task) => Some(task),
            BlockOnError::Task(_) => None,
        }
    }
}

impl<T> fmt::Display for BlockOnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOnError::Spawn(err) => fmt::Display::fmt(err, f),
            BlockOnError::WouldDeadlock(_) => f.write_str(
                "blocking here would deadlock: this thread drives a current-thread tokio runtime",
            ),
            BlockOnError::Task(err) => fmt::Display::fmt(err, f),
        }
    }
}

impl<T> fmt::Debug for BlockOnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOnError::Spawn(err) => f.debug_tuple("Spawn").field(err).finish(),
            BlockOnError::WouldDeadlock(_) => {
                f.debug_tuple("WouldDeadlock").finish_non_exhaustive()
            }
            BlockOnError::Task(err) => f.debug_tuple("Task").field(err).finish(),
        }
    }
}

impl<T> std::error::Error for BlockOnError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BlockOnError::Spawn(_) | BlockOnError::WouldDeadlock(_) => None,
            BlockOnError::Task(err) => Some(err),
        }
    }
}
