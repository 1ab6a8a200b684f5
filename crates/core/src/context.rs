//! [`RuntimeContext`]: what kind of thread the caller is on, as far as tokio
//! is concerned, and therefore whether it may block, must block through
//! `block_in_place`, or would deadlock if it blocked.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::runtime::{Handle, RuntimeFlavor};

/// The tokio context of the calling thread.
///
/// Sync code that needs to wait (for room in a channel, for an answer from an
/// async service) must know where it runs: the same wait that is harmless on
/// a plain thread stalls every task of a current-thread runtime, and tokio's
/// own helpers panic in some contexts ("Cannot start a runtime from within a
/// runtime", "can call blocking only when running on the multi-threaded
/// runtime"). [`RuntimeContext::current`] answers the question once, without
/// panicking, and [`RuntimeContext::run_blocking`] applies the answer.
///
/// | context | blocking strategy | why |
/// |---|---|---|
/// | [`NoRuntime`](Self::NoRuntime) | [`Direct`](BlockingStrategy::Direct) | no runtime is stalled |
/// | [`BlockingThread`](Self::BlockingThread) | [`Direct`](BlockingStrategy::Direct) | the thread runs no tasks |
/// | [`MultiThreadWorker`](Self::MultiThreadWorker) | [`BlockInPlace`](BlockingStrategy::BlockInPlace) | the worker's other tasks move to another thread first |
/// | [`CurrentThread`](Self::CurrentThread) | [`WouldDeadlock`](BlockingStrategy::WouldDeadlock) | the thread is the runtime: nothing else can run while it waits |
///
/// # Examples
///
/// ```
/// use async_patterns_core::RuntimeContext;
///
/// assert_eq!(RuntimeContext::current(), RuntimeContext::NoRuntime);
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     assert_eq!(RuntimeContext::current(), RuntimeContext::CurrentThread);
///     assert!(!RuntimeContext::current().can_block());
/// });
/// ```
///
/// # Limits
///
/// Tokio exposes no way to ask whether the caller is inside a
/// [`LocalSet`](tokio::task::LocalSet). Inside a `LocalSet` that runs on a
/// multi-thread worker this reports [`MultiThreadWorker`](Self::MultiThreadWorker),
/// yet tokio forbids `block_in_place` there; inside a `LocalSet` driven by the
/// thread of a multi-thread `Runtime::block_on` this reports
/// [`BlockingThread`](Self::BlockingThread), and blocking stalls the set's
/// tasks. Prefer a current-thread runtime (reported correctly) for `!Send`
/// work that calls blocking code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuntimeContext {
    /// The thread is outside any tokio runtime: blocking is safe, and tokio
    /// resources (timers, sockets) need a runtime to be entered first.
    NoRuntime,
    /// The thread drives a current-thread runtime, inside its `block_on` or a
    /// task it polls. Blocking here stops every task of that runtime; waiting
    /// for one of them never ends.
    CurrentThread,
    /// The thread is a worker of a multi-thread runtime, polling a task.
    /// Blocking is possible through [`tokio::task::block_in_place`], which
    /// hands the worker's other tasks to another thread first.
    MultiThreadWorker,
    /// The thread has a runtime's context but runs none of its tasks: a
    /// `spawn_blocking` pool thread, the thread inside a multi-thread
    /// runtime's `Runtime::block_on`, or a thread that entered a
    /// [`Handle`](tokio::runtime::Handle). Blocking is safe.
    BlockingThread,
}

/// How a thread in a given [`RuntimeContext`] may wait.
///
/// # Examples
///
/// ```
/// use async_patterns_core::{BlockingStrategy, RuntimeContext};
///
/// assert_eq!(
///     RuntimeContext::MultiThreadWorker.blocking_strategy(),
///     BlockingStrategy::BlockInPlace
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockingStrategy {
    /// Block the thread directly (park it, wait on a condition variable).
    Direct,
    /// Block inside [`tokio::task::block_in_place`].
    BlockInPlace,
    /// Do not block: the wait could only end if this thread ran other work.
    WouldDeadlock,
}

/// Blocking was refused because the calling thread drives a current-thread
/// runtime, so the wait could never end.
///
/// # Examples
///
/// ```
/// use async_patterns_core::{RuntimeContext, WouldDeadlock};
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let refused = rt.block_on(async { RuntimeContext::run_blocking(|| 1) });
/// assert_eq!(refused, Err(WouldDeadlock));
/// assert_eq!(
///     WouldDeadlock.to_string(),
///     "blocking here would deadlock: this thread drives a current-thread tokio runtime"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WouldDeadlock;

impl fmt::Display for WouldDeadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "blocking here would deadlock: this thread drives a current-thread tokio runtime",
        )
    }
}

impl std::error::Error for WouldDeadlock {}

impl RuntimeContext {
    /// Inspects the calling thread. Never panics, never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RuntimeContext;
    ///
    /// let rt = tokio::runtime::Builder::new_multi_thread()
    ///     .worker_threads(1)
    ///     .build()
    ///     .unwrap();
    /// let on_worker = rt.block_on(async {
    ///     tokio::spawn(async { RuntimeContext::current() }).await.unwrap()
    /// });
    /// assert_eq!(on_worker, RuntimeContext::MultiThreadWorker);
    ///
    /// let in_pool = rt.block_on(async {
    ///     tokio::task::spawn_blocking(RuntimeContext::current).await.unwrap()
    /// });
    /// assert_eq!(in_pool, RuntimeContext::BlockingThread);
    /// ```
    pub fn current() -> RuntimeContext {
        let Ok(handle) = Handle::try_current() else {
            return RuntimeContext::NoRuntime;
        };
        // `worker_index` is `Some` only on a thread that polls the runtime's
        // tasks: a multi-thread worker, or the thread that owns a
        // current-thread runtime's driver.
        match (tokio::runtime::worker_index(), handle.runtime_flavor()) {
            (None, _) => RuntimeContext::BlockingThread,
            (Some(_), RuntimeFlavor::CurrentThread) => RuntimeContext::CurrentThread,
            // Every other flavor (multi-thread, and the unstable ones) runs its
            // tasks on a pool of workers that `block_in_place` can hand off.
            (Some(_), _) => RuntimeContext::MultiThreadWorker,
        }
    }

    /// How a thread in this context may wait; see the table on
    /// [`RuntimeContext`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::{BlockingStrategy, RuntimeContext};
    ///
    /// assert_eq!(RuntimeContext::NoRuntime.blocking_strategy(), BlockingStrategy::Direct);
    /// assert_eq!(
    ///     RuntimeContext::CurrentThread.blocking_strategy(),
    ///     BlockingStrategy::WouldDeadlock
    /// );
    /// ```
    pub fn blocking_strategy(self) -> BlockingStrategy {
        match self {
            RuntimeContext::NoRuntime | RuntimeContext::BlockingThread => BlockingStrategy::Direct,
            RuntimeContext::MultiThreadWorker => BlockingStrategy::BlockInPlace,
            RuntimeContext::CurrentThread => BlockingStrategy::WouldDeadlock,
        }
    }

    /// Whether a thread in this context may wait at all (directly or through
    /// `block_in_place`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RuntimeContext;
    ///
    /// assert!(RuntimeContext::BlockingThread.can_block());
    /// assert!(!RuntimeContext::CurrentThread.can_block());
    /// ```
    pub fn can_block(self) -> bool {
        self.blocking_strategy() != BlockingStrategy::WouldDeadlock
    }

    /// Whether the calling thread is inside a runtime's context, so that tokio
    /// resources (timers, sockets, `Handle::current`) can be used directly.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RuntimeContext;
    ///
    /// assert!(!RuntimeContext::NoRuntime.has_runtime());
    /// assert!(RuntimeContext::BlockingThread.has_runtime());
    /// ```
    pub fn has_runtime(self) -> bool {
        self != RuntimeContext::NoRuntime
    }

    /// Runs the blocking closure `f` the way the calling thread's context
    /// allows: directly, inside [`tokio::task::block_in_place`], or not at
    /// all, returning [`WouldDeadlock`] at once.
    ///
    /// Inside `f` the thread may park, wait on a condition variable or do
    /// slow sync I/O. On a multi-thread worker it may also call
    /// [`Handle::block_on`](tokio::runtime::Handle::block_on).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use async_patterns_core::{RuntimeContext, WouldDeadlock};
    ///
    /// # fn main() {
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// rt.block_on(async {
    ///     let (tx, rx) = mpsc::channel();
    ///     tokio::spawn(async move { tx.send(7).unwrap() });
    ///     // On a worker: other tasks keep running while this one waits.
    ///     let got = tokio::spawn(async move {
    ///         RuntimeContext::run_blocking(|| rx.recv().unwrap())
    ///     })
    ///     .await
    ///     .unwrap();
    ///     assert_eq!(got, Ok(7));
    /// });
    ///
    /// let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let refused = current.block_on(async { RuntimeContext::run_blocking(|| ()) });
    /// assert_eq!(refused, Err(WouldDeadlock));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Inside a [`LocalSet`](tokio::task::LocalSet) polled by a multi-thread
    /// worker, tokio's `block_in_place` panics; see the limits on
    /// [`RuntimeContext`]. Panics raised by `f` propagate.
    ///
    /// # Errors
    ///
    /// [`WouldDeadlock`] at once, without running `f`, on a thread that
    /// drives a current-thread runtime.
    #[cfg(feature = "rt-multi-thread")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rt-multi-thread")))]
    pub fn run_blocking<R>(f: impl FnOnce() -> R) -> Result<R, WouldDeadlock> {
        match RuntimeContext::current().blocking_strategy() {
            BlockingStrategy::Direct => Ok(f()),
            BlockingStrategy::BlockInPlace => Ok(tokio::task::block_in_place(f)),
            BlockingStrategy::WouldDeadlock => Err(WouldDeadlock),
        }
    }
}

impl fmt::Display for RuntimeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeContext::NoRuntime => "outside any tokio runtime",
            RuntimeContext::CurrentThread => "on a current-thread tokio runtime",
            RuntimeContext::MultiThreadWorker => "on a multi-thread tokio worker",
            RuntimeContext::BlockingThread => "on a tokio blocking-pool thread",
        })
    }
}

/// Runs `future` to completion on the calling thread, parking the thread
/// between polls, and returns its output.
///
/// It needs no runtime and enters none, so it never panics with "Cannot start
/// a runtime from within a runtime". It does block the thread, so call it
/// only where blocking is safe — inside [`RuntimeContext::run_blocking`], or
/// where [`RuntimeContext::can_block`] said so — and only for a future that
/// other threads complete (a channel, a task on another runtime's worker):
/// nothing else runs on this thread while it waits. Timers and sockets in
/// `future` need the current thread's runtime context, as on a
/// `spawn_blocking` thread of a running runtime.
///
/// # Examples
///
/// ```
/// use async_patterns_core::{RuntimeContext, park_on};
///
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// rt.spawn(async move { tx.send(42).unwrap() });
///
/// // A plain thread waits for a result that a runtime's task produces.
/// let got = RuntimeContext::run_blocking(|| park_on(rx)).unwrap();
/// assert_eq!(got, Ok(42));
/// ```
///
/// # Panics
///
/// Panics of `future` propagate.
pub fn park_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // A wake between the poll and here leaves a token, so `park` returns
        // at once; a spurious return only costs one more poll.
        thread::park();
    }
}
