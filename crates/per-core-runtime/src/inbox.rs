//! A worker's inbox: the one queue through which tasks reach the worker —
//! new tasks from any thread and wakes of its started tasks — together with
//! the worker's parking slot and its shutdown phase.
//!
//! The worker takes the whole queue at once, so producers and the worker
//! meet on the lock once per batch, not once per task, and a producer wakes
//! the worker only when it is parked: a burst of spawns costs one wakeup.
//! A worker that spins before it parks watches the `pending` flag instead of
//! the lock, so that a producer finds it awake and wakes nobody.

use std::collections::VecDeque;
use std::mem;
use std::task::Waker;

use async_patterns_core::__private::lock;

use crate::loom::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};
use crate::task::TaskRef;

/// Where a worker is in its life. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting new tasks.
    Open,
    /// Shutting down: no new tasks; started ones run to completion.
    Draining,
    /// Shutting down, deadline passed: cancel everything now.
    Cancelling,
    /// The worker has stopped; late wakes are dropped.
    Exited,
}

/// What the worker should do after [`Inbox::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The batch holds tasks to run.
    Work,
    /// Nothing to do: the waker is registered, wait for it.
    Park,
    /// Stop the worker.
    Stop,
}

pub(crate) struct Inbox {
    state: Mutex<State>,
    /// Whether something happened since the worker last took: a task was
    /// queued or the phase moved. Written under the lock; read without it
    /// by a spinning worker, as a hint to take.
    pending: AtomicBool,
    /// Tasks accepted since the worker started (new tasks, not wakes).
    accepted: AtomicU64,
}

struct State {
    queue: VecDeque<TaskRef>,
    phase: Phase,
    /// The worker's waker while it is parked.
    parked: Option<Waker>,
}

/// A queue that grew past this during a burst is shrunk back once drained,
/// so one burst does not pin its memory for the worker's lifetime.
const RETAINED_CAPACITY: usize = 4096;

impl Inbox {
    pub(crate) fn new() -> Self {
        Inbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                phase: Phase::Open,
                parked: None,
            }),
            pending: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; poisoning is ignored anyway.
        lock(&self.state)
    }

    /// Queues a new task, unless the worker no longer accepts new tasks: then
    /// the task is handed back.
    pub(crate) fn submit(&self, task: TaskRef) -> Result<(), TaskRef> {
        let mut state = self.lock();
        if state.phase != Phase::Open {
            return Err(task);
        }
        state.queue.push_back(task);
        self.pending.store(true, Ordering::Release);
        // Writers are serialized by the lock: a plain store is enough.
        let accepted = self.accepted.load(Ordering::Relaxed);
        self.accepted.store(accepted + 1, Ordering::Relaxed);
        let parked = state.parked.take();
        drop(state);
        if let Some(waker) = parked {
            waker.wake();
        }
        Ok(())
    }

    /// Queues a wake of a started task (or an abort). Accepted until the
    /// worker has exited; after that the task has been cancelled and the
    /// reference is simply dropped.
    pub(crate) fn schedule(&self, task: TaskRef) {
        let mut state = self.lock();
        if state.phase == Phase::Exited {
            drop(state);
            // Dropped outside the lock: a task's `Drop` may spawn.
            drop(task);
            return;
        }
        state.queue.push_back(task);
        self.pending.store(true, Ordering::Release);
        let parked = state.parked.take();
        drop(state);
        if let Some(waker) = parked {
            waker.wake();
        }
    }

    /// Whether a take would find something new (a hint, read without the
    /// lock): for a worker spinning before it parks.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The worker takes everything queued into `batch` (which must be empty),
    /// or parks with `waker`, or learns it must stop. `idle` says whether the
    /// worker has no started task left, which ends a drain.
    pub(crate) fn take(&self, batch: &mut VecDeque<TaskRef>, waker: &Waker, idle: bool) -> Take {
        debug_assert!(batch.is_empty());
        let mut state = self.lock();
        // Whatever is pending is seen now; later news sets the flag again.
        self.pending.store(false, Ordering::Relaxed);
        if state.phase >= Phase::Cancelling {
            return Take::Stop;
        }
        if !state.queue.is_empty() {
            mem::swap(&mut state.queue, batch);
            let stale_waker = state.parked.take();
            if state.queue.capacity() > RETAINED_CAPACITY {
                state.queue.shrink_to(RETAINED_CAPACITY);
            }
            drop(state);
            drop(stale_waker);
            return Take::Work;
        }
        if state.phase == Phase::Draining && idle {
            return Take::Stop;
        }
        if !state
            .parked
            .as_ref()
            .is_some_and(|parked| parked.will_wake(waker))
        {
            state.parked = Some(waker.clone());
        }
        Take::Park
    }

    /// Moves the worker to `phase` (if it is not there or beyond already)
    /// and wakes it so that it notices.
    pub(crate) fn close(&self, phase: Phase) {
        let mut state = self.lock();
        if state.phase >= phase {
            return;
        }
        state.phase = phase;
        self.pending.store(true, Ordering::Release);
        let parked = state.parked.take();
        drop(state);
        if let Some(waker) = parked {
            waker.wake();
        }
    }

    /// The worker is stopping: from now on nothing is queued. Returns what
    /// was still queued, for the worker to cancel.
    pub(crate) fn exit(&self) -> VecDeque<TaskRef> {
        let mut state = self.lock();
        state.phase = Phase::Exited;
        let parked = state.parked.take();
        let queue = mem::take(&mut state.queue);
        drop(state);
        drop(parked);
        queue
    }

    /// How many new tasks this inbox has accepted.
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}
