//! [`JoinHandle`]: the result of a task, awaitable from any runtime or
//! joined from a plain thread; and [`JoinError`], how a task can fail to
//! produce one (aborted, cancelled by shutdown, panicked).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use async_patterns_core::RuntimeContext;

use crate::WorkerId;
use crate::error::JoinBlockingError;
use crate::loom::Arc;
use crate::task::JoinTarget;

/// An owned permission to wait for a task's result, returned by the spawn
/// methods of [`PerCoreRuntime`](crate::PerCoreRuntime) and
/// [`Handle`](crate::Handle).
///
/// `.await` it from any runtime (or any executor), or call
/// [`join`](JoinHandle::join) from a plain thread. A task that panicked
/// yields [`JoinError::is_panic`]; one that was aborted or cancelled by
/// shutdown yields [`JoinError::is_cancelled`]. Dropping the handle detaches
/// the task: it keeps running and its result is dropped on completion.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(2).build()?;
/// let handle = rt.spawn_on(1, || async { 6 * 7 })?;
/// assert_eq!(handle.worker().index(), 1);
/// assert_eq!(handle.join()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a JoinHandle detaches the task; `.await` it or call `join` for its result"]
pub struct JoinHandle<T> {
    task: Arc<dyn JoinTarget<T>>,
    worker: WorkerId,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: Arc<dyn JoinTarget<T>>, worker: WorkerId) -> Self {
        JoinHandle { task, worker }
    }

    /// The worker the task runs on.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let handle = rt.spawn_on(0, || async {})?;
    /// assert_eq!(handle.worker().index(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// Whether the task has ended (completed, panicked or been cancelled), so
    /// that awaiting or joining the handle returns at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// assert!(!handle.is_finished());
    /// handle.abort();
    /// assert!(handle.join().unwrap_err().is_cancelled());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.task.is_complete()
    }

    /// Asks the worker to cancel the task: a task that has not started never
    /// runs, a started one is dropped (on its worker, so its `Drop`s run
    /// there) before its next poll, and one that has ended keeps its result.
    /// The handle then yields an error for which
    /// [`is_cancelled`](JoinError::is_cancelled) is true.
    ///
    /// Aborting is asynchronous: when `abort` returns, the task may still be
    /// in the middle of a poll on its worker.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.spawn_on(0, || std::future::pending::<u32>())?;
    /// handle.abort();
    /// let err = handle.join().unwrap_err();
    /// assert!(err.is_cancelled());
    /// assert_eq!(err.to_string(), "task was aborted");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        self.task.clone().abort();
    }

    /// Blocks the calling thread until the task ends, and returns its result.
    ///
    /// Use it from plain threads (and `spawn_blocking` threads, and
    /// multi-thread tokio workers, where it blocks through
    /// `block_in_place`); in async code, `.await` the handle instead.
    ///
    /// # Errors
    ///
    /// - [`JoinBlockingError::WouldDeadlock`], with this handle inside, if
    ///   the calling thread drives a current-thread tokio runtime — one of
    ///   this crate's workers included — where blocking could wait forever
    ///   for a task that needs this very thread. Checked every time, even if
    ///   the task has ended, so that a misplaced `join` fails at once. The
    ///   task is not touched: `.await` the handle you get back.
    /// - [`JoinBlockingError::Task`] if the task panicked, was aborted or
    ///   was cancelled by shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{JoinBlockingError, PerCoreRuntime};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// let ok = rt.spawn_on(0, || async { "done" })?;
    /// assert_eq!(ok.join()?, "done");
    ///
    /// let failed = rt.spawn_on(0, || async { panic!("boom") as u32 })?;
    /// let err = failed.join().unwrap_err();
    /// assert!(err.is_panic());
    /// assert_eq!(err.to_string(), "task panicked: boom");
    ///
    /// // On a worker (a current-thread runtime), `join` hands the handle back.
    /// let handle = rt.handle().clone();
    /// let awaited = rt.spawn_on(0, move || async move {
    ///     let other = handle.spawn_on(1, || async { 7 }).unwrap();
    ///     match other.join() {
    ///         Err(JoinBlockingError::WouldDeadlock(other)) => other.await.unwrap(),
    ///         _ => unreachable!("a worker thread must not block"),
    ///     }
    /// })?;
    /// assert_eq!(awaited.join()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(mut self) -> Result<T, JoinBlockingError<T>> {
        if !RuntimeContext::current().can_block() {
            return Err(JoinBlockingError::WouldDeadlock(self));
        }
        self.wait().map_err(JoinBlockingError::Task)
    }

    /// Waits for the result on a thread that may block (the caller checked).
    pub(crate) fn wait(&mut self) -> Result<T, JoinError> {
        // Fast path: already finished, nothing to park on.
        if let Poll::Ready(result) = self.task.poll_join(&mut Context::from_waker(Waker::noop())) {
            return result;
        }
        RuntimeContext::run_blocking(|| park_until_ready(self))
            .unwrap_or_else(|_| unreachable!("the caller checked that this thread may block"))
    }
}

fn park_until_ready<T>(handle: &mut JoinHandle<T>) -> Result<T, JoinError> {
    async_patterns_core::park_on(std::future::poll_fn(|cx| handle.task.poll_join(cx)))
}

/// Awaiting a `JoinHandle` waits for the task's result, on any runtime or
/// executor, without blocking the thread.
///
/// # Cancel safety
///
/// Cancel safe: dropping the handle (a `select!` branch that lost) detaches
/// the task, which keeps running on its worker; its result is dropped there
/// when it ends. Nothing about the task is lost but its output.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(1).build()?;
/// let task = rt.spawn_on(0, || async { 2 + 2 })?;
/// let other = tokio::runtime::Builder::new_current_thread().build()?;
/// assert_eq!(other.block_on(task)?, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// # Panics
    ///
    /// If polled again after it returned `Ready`, as other futures may.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("worker", &self.worker)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task produced no result: it was aborted, cancelled because the
/// runtime shut down, or it panicked (the panic is caught on the worker,
/// which keeps running).
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::PerCoreRuntime;
///
/// let rt = PerCoreRuntime::builder().workers(1).build()?;
/// let handle = rt.spawn_on(0, || async { panic!("bad input") })?;
/// let err: Box<dyn std::error::Error> = Box::new(handle.join().unwrap_err());
/// assert_eq!(err.to_string(), "task panicked: bad input");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Aborted,
    ShutDown,
    Panicked {
        // The payload is `Send` but not `Sync`; the mutex makes the error
        // `Sync`, so that it fits in `Box<dyn Error + Send + Sync>`. It is
        // never locked: the payload is only taken out, by value.
        payload: Mutex<Box<dyn Any + Send + 'static>>,
        /// The panic's message, if it panicked with a string.
        message: Option<String>,
    },
}

impl JoinError {
    pub(crate) fn aborted() -> Self {
        JoinError {
            repr: Repr::Aborted,
        }
    }

    pub(crate) fn shut_down() -> Self {
        JoinError {
            repr: Repr::ShutDown,
        }
    }

    pub(crate) fn panicked(payload: Box<dyn Any + Send + 'static>) -> Self {
        let message = payload
            .downcast_ref::<&'static str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        JoinError {
            repr: Repr::Panicked {
                payload: Mutex::new(payload),
                message,
            },
        }
    }

    /// Whether the task was cancelled — by [`JoinHandle::abort`] or by the
    /// runtime's shutdown — instead of running to the end.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    /// use std::time::Duration;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// rt.shutdown(Duration::ZERO);
    /// let err = handle.join().unwrap_err();
    /// assert!(err.is_cancelled() && !err.is_panic());
    /// assert_eq!(err.to_string(), "task was cancelled because the runtime shut down");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Aborted | Repr::ShutDown)
    }

    /// Whether the task panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.spawn_on(0, || async { panic!("boom") })?;
    /// assert!(handle.join().unwrap_err().is_panic());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked { .. })
    }

    /// The panic's payload, to resume it with [`std::panic::resume_unwind`],
    /// or the error back if the task did not panic.
    ///
    /// # Errors
    ///
    /// The error itself, unchanged, if the task did not panic (it was aborted
    /// or cancelled by shutdown).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).build()?;
    /// let handle = rt.spawn_on(0, || async { std::panic::panic_any(7_u8) })?;
    /// // Awaited (here on another runtime), a handle yields a `JoinError`.
    /// let other = tokio::runtime::Builder::new_current_thread().build()?;
    /// let err = other.block_on(handle).unwrap_err();
    /// let payload = err.try_into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<u8>(), Some(&7));
    ///
    /// let aborted = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// aborted.abort();
    /// let err = other.block_on(aborted).unwrap_err();
    /// assert!(err.try_into_panic().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panicked { payload, .. } => Ok(payload
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)),
            repr => Err(JoinError { repr }),
        }
    }

    /// The panic's message, if the task panicked with a string.
    fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panicked { message, .. } => message.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Aborted => f.write_str("task was aborted"),
            Repr::ShutDown => f.write_str("task was cancelled because the runtime shut down"),
            Repr::Panicked { .. } => match self.panic_message() {
                Some(message) => write!(f, "task panicked: {message}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Aborted => f.write_str("JoinError::Aborted"),
            Repr::ShutDown => f.write_str("JoinError::ShutDown"),
            Repr::Panicked { .. } => match self.panic_message() {
                Some(message) => write!(f, "JoinError::Panicked({message:?})"),
                None => f.write_str("JoinError::Panicked(..)"),
            },
        }
    }
}

impl std::error::Error for JoinError {}
