//! A stress test of the task cell (the `UnsafeCell` holding each task's
//! closure, future and result) on real threads, small enough for miri
//! (`cargo +nightly miri test -p async-patterns-per-core-runtime --lib
//! task_stress`, with `-Zmiri-many-seeds` to explore schedules): one thread
//! is the worker, driving its inbox and loop by hand, while others spawn,
//! wake, abort, join and detach tasks at the same time. Every access to a
//! stage then races with every other kind, and miri checks each for data
//! races and undefined behaviour.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use futures_util::task::AtomicWaker;

use crate::JoinHandle;
use crate::runtime::submit;
use crate::task::Stage;
use crate::worker::{WorkerLoop, WorkerShared};

/// Tasks per spawning thread.
const TASKS: usize = if cfg!(miri) { 16 } else { 300 };
/// Spawning threads.
const SPAWNERS: usize = 2;

/// Unparks the worker thread.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A gate that tasks wait behind and another thread opens: the wake then
/// comes from a thread that is not the worker.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waiters: Mutex<Vec<Arc<AtomicWaker>>>,
}

impl Gate {
    async fn wait(self: Arc<Self>) {
        let waker = Arc::new(AtomicWaker::new());
        self.waiters.lock().unwrap().push(waker.clone());
        poll_fn(|cx: &mut Context<'_>| {
            if self.open.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            waker.register(cx.waker());
            if self.open.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
        for waker in self.waiters.lock().unwrap().iter() {
            waker.wake();
        }
    }
}

/// What a task does, by its number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Returns at its first poll.
    Ready,
    /// Wakes itself a few times first (wakes from the worker thread).
    Yields,
    /// Waits behind the gate (a wake from another thread), and is aborted
    /// by yet another thread at about the same time.
    GatedAndAborted,
    /// Waits behind the gate; its handle is dropped unjoined, so the result
    /// is dropped by whoever lets go of the task last.
    GatedAndDetached,
}

fn kind(i: usize) -> Kind {
    match i % 4 {
        0 => Kind::Ready,
        1 => Kind::Yields,
        2 => Kind::GatedAndAborted,
        _ => Kind::GatedAndDetached,
    }
}

/// Returns `Pending` (after waking itself) `n` times, then `Ready`.
async fn yield_times(mut n: usize) {
    poll_fn(move |cx| {
        if n == 0 {
            return Poll::Ready(());
        }
        n -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

fn spawn(worker: &Arc<WorkerShared>, gate: &Arc<Gate>, i: usize) -> JoinHandle<String> {
    let gate = gate.clone();
    let built = submit(
        worker,
        Stage::Closure(move || async move {
            match kind(i) {
                Kind::Ready => {}
                Kind::Yields => yield_times(3).await,
                Kind::GatedAndAborted | Kind::GatedAndDetached => gate.wait().await,
            }
            // Heap data in the cell: moved in, read out by another thread.
            format!("task {i}")
        }),
    );
    match built {
        Ok(handle) => handle,
        Err(_) => panic!("the worker refused task {i}"),
    }
}

#[test]
fn the_task_cell_survives_spawners_wakers_aborters_joiners_and_the_worker_at_once() {
    let shared = Arc::new(WorkerShared::new(0));
    let gate = Arc::new(Gate::default());

    // The worker: takes what is queued, runs it, parks when there is
    // nothing, until it is told to drain and has nothing left.
    let worker = {
        let shared = shared.clone();
        thread::spawn(move || {
            shared.mark_current_thread();
            let mut worker = WorkerLoop::new(shared, std::time::Duration::ZERO, false);
            let waker = Waker::from(Arc::new(Unpark(thread::current())));
            let mut cx = Context::from_waker(&waker);
            loop {
                match worker.poll_take(&mut cx) {
                    Poll::Ready(true) => while worker.tick() {},
                    Poll::Ready(false) => break,
                    Poll::Pending => thread::park(),
                }
            }
            worker.stop();
        })
    };

    let start = Arc::new(Barrier::new(SPAWNERS + 1));
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|s| {
            let (shared, gate, start) = (shared.clone(), gate.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                (0..TASKS)
                    .map(|k| {
                        let i = s * TASKS + k;
                        (i, spawn(&shared, &gate, i))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    start.wait();
    let mut handles: Vec<(usize, JoinHandle<String>)> = spawners
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();

    // Detached handles go away now, while their tasks wait at the gate.
    handles.retain(|(i, _)| kind(*i) != Kind::GatedAndDetached);
    let (to_abort, to_join): (Vec<_>, Vec<_>) = handles
        .into_iter()
        .partition(|(i, _)| kind(*i) == Kind::GatedAndAborted);

    // At the same time: one thread opens the gate, one aborts, and two join.
    let opener = {
        let gate = gate.clone();
        thread::spawn(move || gate.open())
    };
    let aborter = thread::spawn(move || {
        for (_, handle) in &to_abort {
            handle.abort();
        }
        to_abort
    });
    let half = to_join.len() / 2;
    let mut to_join = to_join;
    let second: Vec<_> = to_join.split_off(half);
    let joiners: Vec<_> = [to_join, second]
        .into_iter()
        .map(|batch| {
            thread::spawn(move || {
                batch
                    .into_iter()
                    .map(|(i, handle)| (i, handle.join().map_err(|e| e.to_string())))
                    .collect::<Vec<_>>()
            })
        })
        .collect();

    for joiner in joiners {
        for (i, result) in joiner.join().unwrap() {
            assert_eq!(result.as_deref(), Ok(format!("task {i}").as_str()));
        }
    }
    opener.join().unwrap();
    let mut aborted = 0;
    for (i, handle) in aborter.join().unwrap() {
        // The abort raced with the gate: either may have won, never both.
        match handle.join() {
            Ok(value) => assert_eq!(value, format!("task {i}")),
            Err(err) => {
                assert!(err.is_cancelled(), "{err}");
                aborted += 1;
            }
        }
    }

    shared.drain();
    worker.join().unwrap();
    let m = shared.metrics();
    let total = (SPAWNERS * TASKS) as u64;
    assert_eq!(m.spawned, total);
    assert_eq!(m.aborted, aborted);
    assert_eq!(m.completed + m.aborted, total);
    assert_eq!((m.panicked, m.cancelled, m.alive_tasks), (0, 0, 0));
}
