//! A spawned task: one allocation holding the closure that builds the future,
//! the future while it runs and its result until the [`JoinHandle`] takes it,
//! plus the state word that schedules, completes and aborts it.
//!
//! The rules that make the `unsafe` in this module sound:
//!
//! - The stage (closure, future, result) belongs to the task's worker thread
//!   until the worker sets `COMPLETE`, and to the task's one `JoinHandle`
//!   after that. The worker writes the result before setting `COMPLETE` with
//!   `Release`; the handle reads it after seeing `COMPLETE` with `Acquire`.
//! - The future, which need not be `Send`, is created, polled and dropped on
//!   the worker thread only. It is pinned inside the allocation and dropped in
//!   place (`clear_stage`), never moved.
//! - Every started, unfinished task is in its worker's [`Registry`] or being
//!   polled, so a worker cancels (drops) every future before it exits. If a
//!   running future is ever found in `Task::drop` on another thread, it is
//!   leaked rather than dropped there.
//!
//! [`JoinHandle`]: crate::JoinHandle

use std::future::Future;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr;
use std::task::{Context, Poll};

use futures_util::task::{ArcWake, waker_ref};

use crate::join::JoinError;
use crate::loom::{Arc, AtomicUsize, AtomicWaker, Ordering, UnsafeCell};
use crate::worker::WorkerShared;

/// The task is queued in its worker's inbox (or about to be).
const NOTIFIED: usize = 0b001;
/// The result is in the stage; terminal.
const COMPLETE: usize = 0b010;
/// `abort` was called; the worker cancels the task when it next runs it.
const ABORTED: usize = 0b100;

/// A task as its worker sees it, with its types erased.
pub(crate) type TaskRef = Arc<dyn RawTask>;

/// How a task ended, for the worker's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    Panicked,
    Aborted,
    Cancelled,
}

/// What the worker does with a task.
pub(crate) trait RawTask: Send + Sync {
    /// Starts, polls or (if aborted) cancels the task. Worker thread only.
    fn run(self: Arc<Self>, registry: &mut Registry) -> Option<Ended>;

    /// Cancels the task unless it has ended: the runtime is shutting down.
    /// Worker thread only; the task must not be in a registry any more.
    fn cancel(&self) -> Option<Ended>;
}

/// What a [`JoinHandle`](crate::JoinHandle) does with its task.
pub(crate) trait JoinTarget<T>: Send + Sync {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn abort(self: Arc<Self>);
    fn is_complete(&self) -> bool;
}

/// What a task holds, from spawn to join.
pub(crate) enum Stage<F, Fut: Future> {
    /// Spawned from another thread, not started: the closure builds the
    /// future on the worker.
    Closure(F),
    /// Started. `slot` is its place in the registry once it has returned
    /// `Pending`.
    Running { future: Fut, slot: Option<usize> },
    /// Ended, waiting for the join handle.
    Finished(Result<Fut::Output, JoinError>),
    /// The result was taken (or the stage is being torn down).
    Consumed,
}

impl<F, Fut: Future> Stage<F, Fut> {
    /// The closure of a task that was never started, handed back when the
    /// spawn is refused.
    pub(crate) fn into_closure(self) -> Option<F> {
        match self {
            Stage::Closure(f) => Some(f),
            _ => None,
        }
    }

    /// The future of a task that was never polled, handed back when a local
    /// spawn is refused.
    pub(crate) fn into_future(self) -> Option<Fut> {
        match self {
            Stage::Running { future, .. } => Some(future),
            _ => None,
        }
    }
}

pub(crate) struct Task<F, Fut: Future> {
    state: AtomicUsize,
    join_waker: AtomicWaker,
    worker: Arc<WorkerShared>,
    stage: UnsafeCell<Stage<F, Fut>>,
}

// SAFETY: a `Task` is shared between its worker, its wakers and its join
// handle. The closure `F` moves from the spawning thread to the worker
// (`F: Send`), the output moves from the worker to the joiner
// (`Fut::Output: Send`), and the future, which need not be `Send`, never
// leaves the worker thread: see the module docs for the access protocol and
// `Drop` for the last-resort guard.
unsafe impl<F: Send, Fut: Future> Send for Task<F, Fut> where Fut::Output: Send {}
// SAFETY: as above; shared references only touch the atomics, the waker slot
// and `worker`, except on the thread that owns the stage at that moment.
unsafe impl<F: Send, Fut: Future> Sync for Task<F, Fut> where Fut::Output: Send {}

impl<F, Fut> Task<F, Fut>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    /// A task about to be queued on `worker` (hence `NOTIFIED`).
    pub(crate) fn new(worker: Arc<WorkerShared>, stage: Stage<F, Fut>) -> Self {
        Task {
            state: AtomicUsize::new(NOTIFIED),
            join_waker: AtomicWaker::new(),
            worker,
            stage: UnsafeCell::new(stage),
        }
    }

    /// A task that ended before it was queued (refused at shutdown), so
    /// that its handle reports `result`.
    pub(crate) fn finished(
        worker: Arc<WorkerShared>,
        result: Result<Fut::Output, JoinError>,
    ) -> Self {
        Task {
            state: AtomicUsize::new(COMPLETE),
            join_waker: AtomicWaker::new(),
            worker,
            stage: UnsafeCell::new(Stage::Finished(result)),
        }
    }

    /// Takes the stage back out of a task that was never queued.
    pub(crate) fn into_stage(self) -> Stage<F, Fut> {
        // SAFETY: `self` is owned: nobody else can reach the stage.
        self.stage
            .with_mut(|stage| unsafe { mem::replace(&mut *stage, Stage::Consumed) })
    }

    /// Sets `COMPLETE` (publishing the result written just before), counts
    /// the ending and wakes the joiner. The caller no longer touches the stage.
    fn publish(&self, ended: Ended) -> Ended {
        // Counted before `COMPLETE`, so a joiner that sees the result also
        // sees it counted.
        self.worker.counters.record(ended);
        self.state.fetch_or(COMPLETE, Ordering::AcqRel);
        self.join_waker.wake();
        ended
    }

    fn schedule(self: &Arc<Self>) {
        let prev = self.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        if prev & (NOTIFIED | COMPLETE) == 0 {
            self.worker.inbox.schedule(self.clone());
        }
    }
}

/// Drops whatever `stage` holds, in place (a running future is pinned: it
/// must not move before it is dropped), and leaves `Consumed` behind. A panic
/// raised by a `Drop` is caught and ignored: the task ends either way.
///
/// # Safety
///
/// The caller has exclusive access to an initialised stage.
unsafe fn clear_stage<F, Fut: Future>(stage: *mut Stage<F, Fut>) {
    // SAFETY: exclusive access to an initialised value (caller's contract).
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { ptr::drop_in_place(stage) }));
    drop(dropped);
    // SAFETY: the old value has been dropped (even if a field's `Drop`
    // panicked, the other fields were dropped while unwinding), so it is
    // overwritten without being dropped again.
    unsafe { ptr::write(stage, Stage::Consumed) };
}

impl<F, Fut> RawTask for Task<F, Fut>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    fn run(self: Arc<Self>, registry: &mut Registry) -> Option<Ended> {
        let prev = self.state.fetch_and(!NOTIFIED, Ordering::AcqRel);
        if prev & COMPLETE != 0 {
            // A wake that arrived after the task ended.
            return None;
        }
        let aborted = prev & ABORTED != 0;
        let ended = self.stage.with_mut(|stage| {
            // SAFETY: `COMPLETE` is not set and this is the worker thread, so
            // the stage is ours (module docs).
            let stage = unsafe { &mut *stage };
            if aborted {
                if let Stage::Running {
                    slot: Some(slot), ..
                } = stage
                {
                    registry.remove(*slot);
                }
                // SAFETY: exclusive access, as above.
                unsafe { clear_stage(stage) };
                *stage = Stage::Finished(Err(JoinError::aborted()));
                return Some(Ended::Aborted);
            }
            if matches!(stage, Stage::Closure(_)) {
                let Stage::Closure(build) = mem::replace(stage, Stage::Consumed) else {
                    unreachable!("checked above");
                };
                match catch_unwind(AssertUnwindSafe(build)) {
                    Ok(future) => *stage = Stage::Running { future, slot: None },
                    Err(payload) => {
                        *stage = Stage::Finished(Err(JoinError::panicked(payload)));
                        return Some(Ended::Panicked);
                    }
                }
            }
            let Stage::Running { future, slot } = stage else {
                unreachable!("a task that has not completed is running or about to");
            };
            let waker = waker_ref(&self);
            let mut cx = Context::from_waker(&waker);
            // SAFETY: the future stays where it is, inside the task's
            // allocation, until `clear_stage` drops it in place.
            let future = unsafe { Pin::new_unchecked(future) };
            let (result, ended) = match catch_unwind(AssertUnwindSafe(|| future.poll(&mut cx))) {
                Ok(Poll::Pending) => {
                    if slot.is_none() {
                        *slot = Some(registry.insert(self.clone()));
                    }
                    return None;
                }
                Ok(Poll::Ready(output)) => (Ok(output), Ended::Completed),
                Err(payload) => (Err(JoinError::panicked(payload)), Ended::Panicked),
            };
            if let Stage::Running {
                slot: Some(slot), ..
            } = stage
            {
                registry.remove(*slot);
            }
            // SAFETY: exclusive access, as above.
            unsafe { clear_stage(stage) };
            *stage = Stage::Finished(result);
            Some(ended)
        })?;
        Some(self.publish(ended))
    }

    fn cancel(&self) -> Option<Ended> {
        let prev = self.state.load(Ordering::Acquire);
        if prev & COMPLETE != 0 {
            return None;
        }
        let (error, ended) = if prev & ABORTED != 0 {
            (JoinError::aborted(), Ended::Aborted)
        } else {
            (JoinError::shut_down(), Ended::Cancelled)
        };
        self.stage.with_mut(|stage| {
            // SAFETY: not `COMPLETE`, on the worker thread: the stage is ours.
            unsafe { clear_stage(stage) };
            // SAFETY: as above; `Consumed` needs no drop.
            unsafe { ptr::write(stage, Stage::Finished(Err(error))) };
        });
        Some(self.publish(ended))
    }
}

impl<F, Fut> JoinTarget<Fut::Output> for Task<F, Fut>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<Fut::Output, JoinError>> {
        if self.state.load(Ordering::Acquire) & COMPLETE == 0 {
            self.join_waker.register(cx.waker());
            if self.state.load(Ordering::Acquire) & COMPLETE == 0 {
                return Poll::Pending;
            }
        }
        // SAFETY: `COMPLETE` was seen with `Acquire`: the worker is done with
        // the stage, and only the one join handle (which holds `&mut` to
        // itself while polling) reads it now.
        let stage = self
            .stage
            .with_mut(|stage| unsafe { mem::replace(&mut *stage, Stage::Consumed) });
        match stage {
            Stage::Finished(result) => Poll::Ready(result),
            _ => panic!("`JoinHandle` polled again after it returned the task's result"),
        }
    }

    fn abort(self: Arc<Self>) {
        let prev = self.state.fetch_or(ABORTED | NOTIFIED, Ordering::AcqRel);
        if prev & (NOTIFIED | COMPLETE) == 0 {
            let worker = self.worker.clone();
            worker.inbox.schedule(self);
        }
    }

    fn is_complete(&self) -> bool {
        self.state.load(Ordering::Acquire) & COMPLETE != 0
    }
}

impl<F, Fut> ArcWake for Task<F, Fut>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.schedule();
    }
}

impl<F, Fut: Future> Drop for Task<F, Fut> {
    // Under loom the guard is left out: the last reference is ordered after
    // every other access by `Arc` (std's, which loom does not see), and the
    // models never reach the guarded path.
    #[cfg(not(async_patterns_loom))]
    fn drop(&mut self) {
        let worker = &self.worker;
        self.stage.with_mut(|stage| {
            // SAFETY: `drop` has exclusive access.
            let running = matches!(unsafe { &*stage }, Stage::Running { .. });
            if running && !worker.is_current_thread() {
                // Only reachable if a worker thread died without cancelling
                // its tasks. The future may not be `Send`: dropping it here
                // could be unsound, so it is leaked.
                // SAFETY: exclusive access; overwriting without dropping
                // leaks the future, which is safe.
                unsafe { ptr::write(stage, Stage::Consumed) };
            }
        });
    }

    #[cfg(async_patterns_loom)]
    fn drop(&mut self) {}
}

/// The started, unfinished tasks of one worker: what shutdown cancels.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<TaskRef>>,
    free: Vec<usize>,
    len: usize,
}

impl Registry {
    fn insert(&mut self, task: TaskRef) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(task);
                slot
            }
            None => {
                self.slots.push(Some(task));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if let Some(task) = self.slots.get_mut(slot).and_then(Option::take) {
            self.len -= 1;
            self.free.push(slot);
            // The caller holds another reference: this never frees the task
            // while its stage is borrowed.
            drop(task);
        }
    }

    /// How many started tasks have not ended.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Takes every task out, leaving the registry empty.
    pub(crate) fn take_all(&mut self) -> Vec<TaskRef> {
        self.len = 0;
        self.free.clear();
        mem::take(&mut self.slots).into_iter().flatten().collect()
    }
}

#[cfg(all(test, not(async_patterns_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Sets its flag when dropped. It owns no heap memory, so that leaking
    /// it (on purpose, below) leaks nothing miri would report.
    struct SetOnDrop(&'static AtomicBool);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A task whose future was started on this thread (as its worker) and
    /// left running in a registry that is then emptied without cancelling.
    fn started_and_abandoned(dropped: &'static AtomicBool) -> TaskRef {
        let worker = Arc::new(WorkerShared::new(0));
        worker.mark_current_thread();
        let guard = SetOnDrop(dropped);
        let task = Arc::new(Task::new(
            worker,
            Stage::Closure(move || async move {
                let _guard = guard;
                std::future::pending::<()>().await
            }),
        ));
        let mut registry = Registry::default();
        assert_eq!(task.clone().run(&mut registry), None);
        assert_eq!(registry.len(), 1);
        drop(registry.take_all());
        task
    }

    #[test]
    fn running_future_found_on_another_thread_is_leaked_not_dropped() {
        static DROPPED: AtomicBool = AtomicBool::new(false);
        let task = started_and_abandoned(&DROPPED);
        // The last reference goes away on a thread that does not own the
        // future: `Drop` must not run the future's destructor there.
        std::thread::spawn(move || drop(task)).join().unwrap();
        assert!(!DROPPED.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn running_future_found_on_its_own_thread_is_dropped() {
        static DROPPED: AtomicBool = AtomicBool::new(false);
        let task = started_and_abandoned(&DROPPED);
        drop(task);
        assert!(DROPPED.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn registry_reuses_freed_slots() {
        let worker = Arc::new(WorkerShared::new(0));
        let task: TaskRef = Arc::new(Task::new(worker, Stage::Closure(|| std::future::ready(()))));
        let mut registry = Registry::default();
        let a = registry.insert(task.clone());
        let b = registry.insert(task.clone());
        registry.remove(a);
        assert_eq!(registry.insert(task.clone()), a);
        assert_eq!(registry.len(), 2);
        registry.remove(b);
        registry.remove(b);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.take_all().len(), 1);
        assert_eq!(registry.len(), 0);
    }
}
