//! [`block_on`] and [`block_on_local`]: run a future to completion from sync
//! code, in whatever tokio context the calling thread is in, without the
//! "Cannot start a runtime from within a runtime" panic.

use std::future::Future;
use std::sync::OnceLock;
use std::thread;

use async_patterns_core::{RuntimeContext, park_on};
use tokio::runtime::{Handle, Runtime};

use crate::error::BlockOnError;

/// Runs `future` to completion from sync code, in any context, and returns
/// its output.
///
/// | calling thread | how `future` runs |
/// |---|---|
/// | outside any runtime | on this thread, inside a small helper runtime (one worker, started on first use, all drivers enabled) |
/// | `spawn_blocking` thread, or another thread in a runtime's context that runs none of its tasks | on this thread, parked between polls, in the current runtime's context |
/// | multi-thread runtime worker | on this thread inside [`block_in_place`](tokio::task::block_in_place), so the worker's other tasks move to another thread |
/// | thread driving a current-thread runtime | on a new helper thread, in the helper runtime, while this thread waits |
///
/// The last row has a cost: one thread is started per call (tens of
/// microseconds), and the current-thread runtime's other tasks stand still
/// until `future` completes — so `future` must not depend on them or on
/// anything that runtime drives (its timers, its sockets, a channel fed by
/// one of its tasks), or the wait never ends. For `!Send` futures use
/// [`block_on_local`], which refuses that context instead.
///
/// In the second row the future's timers and sockets belong to the current
/// runtime, which must be running meanwhile: a multi-thread runtime always
/// is; a current-thread runtime only while its own thread is inside its
/// `block_on` (as it is while it awaits a `spawn_blocking` task).
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::block_on;
///
/// // A sync trait method that needs an async result.
/// fn answer() -> u32 {
///     block_on(async { 6 * 7 })
/// }
///
/// assert_eq!(answer(), 42); // outside any runtime
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(async { answer() }), 42); // no nesting panic
///
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let on_worker = rt.block_on(async { tokio::spawn(async { answer() }).await.unwrap() });
/// assert_eq!(on_worker, 42);
/// ```
///
/// # Panics
///
/// Panics of `future` propagate. Also panics inside a
/// [`LocalSet`](tokio::task::LocalSet) polled by a multi-thread worker (see
/// [`RuntimeContext`]'s limits), and if the helper runtime or thread cannot
/// be started (the OS refuses a thread).
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    match RuntimeContext::current() {
        RuntimeContext::NoRuntime => outside_runtime(future),
        RuntimeContext::BlockingThread => park_on(future),
        RuntimeContext::MultiThreadWorker => on_worker(future),
        _ => on_helper_thread(future),
    }
}

/// Runs a future that need not be `Send` to completion from sync code, in
/// every context where that is possible: as [`block_on`], except on a thread
/// that drives a current-thread runtime, where the future would have to move
/// to another thread — there it is handed back in a [`BlockOnError`], not
/// polled.
///
/// # Errors
///
/// [`BlockOnError`] with the future, on a thread driving a current-thread
/// runtime.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use async_patterns_bridge::block_on_local;
///
/// let shared = Rc::new(5); // not `Send`
/// let value = block_on_local(async { *shared + 1 }).ok();
/// assert_eq!(value, Some(6));
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let refused = rt.block_on(async { block_on_local(async { *shared }).is_err() });
/// assert!(refused);
/// ```
///
/// # Panics
///
/// As [`block_on`].
pub fn block_on_local<F: Future>(future: F) -> Result<F::Output, BlockOnError<F>> {
    match RuntimeContext::current() {
        RuntimeContext::NoRuntime => Ok(outside_runtime(future)),
        RuntimeContext::BlockingThread => Ok(park_on(future)),
        RuntimeContext::MultiThreadWorker => Ok(on_worker(future)),
        _ => Err(BlockOnError(future)),
    }
}

/// The helper runtime: one worker thread, started on first use, with every
/// driver the application's tokio features provide.
fn helper() -> &'static Runtime {
    static HELPER: OnceLock<Runtime> = OnceLock::new();
    HELPER.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bridge-helper")
            .enable_all()
            .build()
            .expect("async-patterns-bridge: cannot start the helper runtime")
    })
}

fn outside_runtime<F: Future>(future: F) -> F::Output {
    helper().handle().block_on(future)
}

fn on_worker<F: Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| Handle::current().block_on(future))
}

fn on_helper_thread<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = helper().handle().clone();
    thread::scope(|scope| {
        let runner = thread::Builder::new()
            .name("bridge-block-on".into())
            .spawn_scoped(scope, move || handle.block_on(future))
            .expect("async-patterns-bridge: cannot start a helper thread");
        runner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
