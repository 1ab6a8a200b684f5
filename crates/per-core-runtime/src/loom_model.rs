//! Loom models of a worker's state machines — the inbox with its parking
//! slot and shutdown phases, and a task's state word, cell and join waker —
//! run by `cargo xtask ci` with `--cfg async_patterns_loom`. One worker's
//! inbox and task machinery (the crate's own code) is driven by the model's
//! threads instead of a worker thread and its tokio runtime.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use crate::loom::Arc;
use crate::runtime::submit;
use crate::task::Stage;
use crate::worker::{WorkerLoop, WorkerShared};
use crate::{JoinHandle, WorkerMetrics};

/// What spawners and shutdown see of a worker.
#[derive(Clone)]
pub(crate) struct ModelInbox(Arc<WorkerShared>);

/// The worker's side: takes tasks from the inbox and runs them.
pub(crate) struct ModelWorker(WorkerLoop);

/// A worker with no thread: its inbox and its loop.
pub(crate) fn worker() -> (ModelInbox, ModelWorker) {
    let shared = Arc::new(WorkerShared::new(0));
    (
        ModelInbox(shared.clone()),
        ModelWorker(WorkerLoop::new(shared, std::time::Duration::ZERO, false)),
    )
}

impl ModelInbox {
    /// Spawns a task, or `None` once the worker refuses new tasks.
    pub(crate) fn spawn<F, Fut>(&self, f: F) -> Option<JoinHandle<Fut::Output>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        submit(&self.0, Stage::Closure(f)).ok()
    }

    /// The shutdown deadline: cancel everything.
    pub(crate) fn cancel_all(&self) {
        self.0.cancel_all();
    }

    /// The worker's counters.
    pub(crate) fn metrics(&self) -> WorkerMetrics {
        self.0.metrics()
    }

    /// What a spinning worker looks at: whether a take would find news.
    pub(crate) fn has_pending(&self) -> bool {
        self.0.inbox.has_pending()
    }
}

impl ModelWorker {
    /// Waits for work: `Ready(true)` with tasks to run, `Ready(false)` when
    /// the worker must stop.
    pub(crate) fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.0.poll_take(cx)
    }

    /// Runs the tasks taken.
    pub(crate) fn tick(&mut self) {
        while self.0.tick() {}
    }

    /// Stops the worker, cancelling what is left.
    pub(crate) fn stop(&mut self) {
        self.0.stop();
    }
}

impl fmt::Debug for ModelInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelInbox")
    }
}

impl fmt::Debug for ModelWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelWorker")
    }
}

mod models {
    use super::*;

    use std::future::poll_fn;
    use std::task::Poll;

    use loom::future::{AtomicWaker, block_on};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;

    /// Parks until the inbox has work; false if the worker must stop.
    fn take(worker: &mut ModelWorker) -> bool {
        block_on(poll_fn(|cx| worker.poll_take(cx)))
    }

    #[test]
    fn a_task_submitted_while_the_worker_parks_is_never_lost() {
        loom::model(|| {
            let (inbox, mut worker) = worker();
            let spawner = thread::spawn(move || inbox.spawn(|| async { 7 }).unwrap());
            // Parks if the task is not there yet: the spawn must wake it.
            assert!(take(&mut worker));
            worker.tick();
            let handle = spawner.join().unwrap();
            assert_eq!(block_on(handle).unwrap(), 7);
        });
    }

    #[test]
    fn a_task_submitted_while_the_worker_spins_is_never_lost() {
        loom::model(|| {
            let (inbox, mut worker) = worker();
            let spawner = {
                let inbox = inbox.clone();
                thread::spawn(move || inbox.spawn(|| async { 7 }).unwrap())
            };
            // A spin that looks once and sees nothing, then parks: the flag
            // is only a hint, the take (which registers the waker under the
            // lock) decides, so the spawn is seen either way.
            let _looked = inbox.has_pending();
            assert!(take(&mut worker));
            worker.tick();
            let handle = spawner.join().unwrap();
            assert_eq!(block_on(handle).unwrap(), 7);
            // Taken and run: the hint is down again.
            assert!(!inbox.has_pending());
        });
    }

    #[test]
    fn the_joiner_gets_the_output_whichever_side_goes_first() {
        loom::model(|| {
            let (inbox, mut worker) = worker();
            let handle = inbox.spawn(|| async { String::from("out") }).unwrap();
            let joiner = thread::spawn(move || block_on(handle).unwrap());
            assert!(take(&mut worker));
            worker.tick();
            assert_eq!(joiner.join().unwrap(), "out");
            assert_eq!(inbox.metrics().completed, 1);
        });
    }

    #[test]
    fn abort_racing_with_completion_ends_the_task_exactly_once() {
        loom::model(|| {
            let (inbox, mut worker) = worker();
            let handle = inbox.spawn(|| async { 1 }).unwrap();
            let aborter = thread::spawn(move || {
                handle.abort();
                handle
            });
            assert!(take(&mut worker));
            worker.tick();
            let handle = aborter.join().unwrap();
            // The abort may have queued the task again after it completed.
            if !handle.is_finished() {
                assert!(take(&mut worker));
                worker.tick();
            }
            let result = block_on(handle);
            let m = inbox.metrics();
            match result {
                Ok(1) => assert_eq!((m.completed, m.aborted), (1, 0)),
                Err(e) if e.is_cancelled() => assert_eq!((m.completed, m.aborted), (0, 1)),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(m.alive_tasks, 0);
        });
    }

    /// Spawns a task that waits for a flag; returns its handle and the function
    /// that sets the flag and wakes the task, for another thread to call.
    fn spawn_waiting(inbox: &ModelInbox) -> (JoinHandle<()>, impl FnOnce() + Send + 'static) {
        let flag = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(AtomicWaker::new());
        let handle = {
            let (flag, waker) = (flag.clone(), waker.clone());
            inbox
                .spawn(move || {
                    poll_fn(move |cx| {
                        if flag.load(Ordering::Acquire) {
                            return Poll::Ready(());
                        }
                        waker.register_by_ref(cx.waker());
                        if flag.load(Ordering::Acquire) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    })
                })
                .unwrap()
        };
        let set = move || {
            flag.store(true, Ordering::Release);
            waker.wake();
        };
        (handle, set)
    }

    #[test]
    fn a_wake_from_another_thread_runs_the_task_again() {
        loom::model(|| {
            let (inbox, mut worker) = worker();
            let (handle, set) = spawn_waiting(&inbox);
            let setter = thread::spawn(set);
            while !handle.is_finished() {
                assert!(take(&mut worker));
                worker.tick();
            }
            setter.join().unwrap();
            block_on(handle).unwrap();
            assert_eq!(inbox.metrics().completed, 1);
        });
    }

    #[test]
    fn cancelling_at_shutdown_while_a_wake_arrives_ends_the_task_once() {
        loom::model(|| {
            let (inbox, mut worker) = worker();
            let (handle, set) = spawn_waiting(&inbox);
            assert!(take(&mut worker));
            worker.tick();
            let setter = thread::spawn(set);
            inbox.cancel_all();
            // The loop sees the deadline and stops; the task ends once, either
            // way, and a late wake is dropped, not queued.
            while take(&mut worker) {
                worker.tick();
            }
            worker.stop();
            setter.join().unwrap();
            let result = block_on(handle);
            let m = inbox.metrics();
            match result {
                Ok(()) => assert_eq!((m.completed, m.cancelled), (1, 0)),
                Err(e) if e.is_cancelled() => assert_eq!((m.completed, m.cancelled), (0, 1)),
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(inbox.spawn(|| async {}).is_none());
        });
    }
}
