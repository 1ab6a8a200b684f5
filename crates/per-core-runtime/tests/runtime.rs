//! Spawning, placement, joining, aborting and errors of `PerCoreRuntime`.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_patterns_core::RuntimeContext;
use async_patterns_per_core_runtime::{
    BlockOnWorkerError, Handle, JoinBlockingError, JoinHandle, PerCoreRuntime, Placement,
    SpawnErrorKind, WorkerId,
};
use tokio::sync::oneshot;

/// Fails a test that would otherwise hang.
const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 30 });

fn runtime(workers: usize) -> PerCoreRuntime {
    PerCoreRuntime::builder()
        .workers(workers)
        .build()
        .expect("runtime")
}

/// Joins from a plain thread, failing the test instead of hanging.
fn join_within<T: Send + 'static>(
    handle: JoinHandle<T>,
) -> Result<T, async_patterns_per_core_runtime::JoinError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    match rx.recv_timeout(LIMIT).expect("task did not end in time") {
        Ok(value) => Ok(value),
        Err(JoinBlockingError::Task(err)) => Err(err),
        Err(other) => panic!("joined from a plain thread: {other}"),
    }
}

#[test]
fn spawn_on_runs_each_task_on_the_worker_asked_for() {
    let rt = runtime(3);
    for worker in 0..3 {
        let handle = rt
            .spawn_on(worker, || async {
                (
                    PerCoreRuntime::current_worker(),
                    std::thread::current().name().map(String::from),
                )
            })
            .unwrap();
        assert_eq!(handle.worker().index(), worker);
        let (id, name) = join_within(handle).unwrap();
        assert_eq!(id.map(WorkerId::index), Some(worker));
        assert_eq!(name, Some(format!("per-core-{worker}")));
    }
}

#[test]
fn every_task_of_a_worker_runs_on_one_thread() {
    let rt = runtime(2);
    let handles = rt
        .spawn_on_all(|id| async move {
            let mut threads = HashSet::new();
            for _ in 0..10 {
                threads.insert(std::thread::current().id());
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (id, threads.len(), PerCoreRuntime::current_worker())
        })
        .unwrap();
    for (i, handle) in handles.into_iter().enumerate() {
        let (id, threads, current) = join_within(handle).unwrap();
        assert_eq!(id.index(), i);
        assert_eq!(threads, 1);
        assert_eq!(current, Some(id));
    }
}

#[test]
fn current_worker_is_none_outside_the_workers() {
    assert_eq!(PerCoreRuntime::current_worker(), None);
    let rt = runtime(1);
    let on_blocking_thread = rt
        .block_on(0, || async {
            tokio::task::spawn_blocking(PerCoreRuntime::current_worker)
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(on_blocking_thread, None);
}

#[test]
fn not_send_futures_run_and_may_spawn_local_work() {
    let rt = runtime(2);
    let handle = rt
        .spawn_on(1, || {
            let log = Rc::new(RefCell::new(Vec::new()));
            async move {
                let child = {
                    let log = log.clone();
                    PerCoreRuntime::spawn_local(async move {
                        log.borrow_mut().push("child");
                    })
                    .unwrap()
                };
                let tokio_child = {
                    let log = log.clone();
                    tokio::task::spawn_local(async move {
                        log.borrow_mut().push("tokio child");
                    })
                };
                child.await.unwrap();
                tokio_child.await.unwrap();
                log.borrow_mut().push("parent");
                Rc::try_unwrap(log).unwrap().into_inner()
            }
        })
        .unwrap();
    assert_eq!(
        join_within(handle).unwrap(),
        ["child", "tokio child", "parent"]
    );
}

#[test]
fn results_and_panics_come_back_to_a_plain_thread() {
    let rt = runtime(2);
    assert_eq!(
        join_within(rt.spawn_on(0, || async { 5 }).unwrap()).unwrap(),
        5
    );
    let err = join_within(rt.spawn_on(1, || async { panic!("task failed") }).unwrap()).unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_cancelled());
    assert_eq!(err.to_string(), "task panicked: task failed");
    let payload = err.try_into_panic().unwrap();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"task failed"));
}

#[test]
fn a_panic_while_building_the_future_is_reported_too() {
    let rt = runtime(1);
    let handle = rt
        .spawn_on(0, || -> std::future::Ready<u8> { panic!("closure failed") })
        .unwrap();
    let err = join_within(handle).unwrap_err();
    assert_eq!(err.to_string(), "task panicked: closure failed");
    assert_eq!(rt.metrics().workers[0].panicked, 1);
}

#[test]
fn a_panicking_task_does_not_take_its_worker_down() {
    let rt = runtime(1);
    let survivor = rt
        .spawn_on(0, || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            "survived"
        })
        .unwrap();
    for _ in 0..10 {
        let err = join_within(rt.spawn_on(0, || async { panic!("boom") }).unwrap()).unwrap_err();
        assert!(err.is_panic());
    }
    assert_eq!(join_within(survivor).unwrap(), "survived");
    assert_eq!(rt.block_on(0, || async { 1 }).unwrap(), 1);
    let m = &rt.metrics().workers[0];
    assert_eq!((m.panicked, m.completed, m.alive_tasks), (10, 2, 0));
}

#[test]
fn results_and_panics_come_back_to_another_runtime() {
    let rt = runtime(2);
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for other in [&current_thread, &multi_thread] {
        let ok = rt
            .spawn_on(0, || async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                "ok"
            })
            .unwrap();
        let failed = rt.spawn_on(1, || async { panic!("nope") }).unwrap();
        let (ok, failed) = other.block_on(async {
            tokio::time::timeout(LIMIT, async { (ok.await, failed.await) })
                .await
                .expect("in time")
        });
        assert_eq!(ok.unwrap(), "ok");
        assert!(failed.unwrap_err().is_panic());
    }
}

#[test]
fn a_task_on_one_worker_awaits_a_task_on_another() {
    let rt = runtime(2);
    let handle = rt.handle().clone();
    let result = rt
        .block_on(0, move || async move {
            let remote = handle
                .spawn_on(1, || async {
                    PerCoreRuntime::current_worker().unwrap().index()
                })
                .unwrap();
            remote.await.unwrap() + 10
        })
        .unwrap();
    assert_eq!(result, 11);
}

#[test]
fn abort_before_start_never_runs_the_task() {
    let rt = runtime(1);
    let ran = Arc::new(AtomicUsize::new(0));
    // Keep the worker busy so the next task is still queued when aborted.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = rt
        .spawn_on(0, move || async move {
            release_rx.recv_timeout(LIMIT).ok();
        })
        .unwrap();
    let counter = ran.clone();
    let queued = rt
        .spawn_on(0, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    queued.abort();
    release_tx.send(()).unwrap();
    let err = join_within(queued).unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(err.to_string(), "task was aborted");
    join_within(blocker).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(rt.metrics().workers[0].aborted, 1);
}

struct Flag(Arc<AtomicUsize>);

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn abort_of_a_waiting_task_drops_its_future_on_its_worker() {
    let rt = runtime(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let (dropped_on_tx, dropped_on_rx) = std::sync::mpsc::channel();
    let (started_tx, started_rx) = oneshot::channel();
    let flag = Flag(drops.clone());
    let handle = rt
        .spawn_on(1, move || async move {
            struct Report(std::sync::mpsc::Sender<Option<WorkerId>>);
            impl Drop for Report {
                fn drop(&mut self) {
                    let _ = self.0.send(PerCoreRuntime::current_worker());
                }
            }
            let _flag = flag;
            let _report = Report(dropped_on_tx);
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        })
        .unwrap();
    started_rx.blocking_recv().unwrap();
    handle.abort();
    assert!(join_within(handle).unwrap_err().is_cancelled());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let dropped_on = dropped_on_rx.recv_timeout(LIMIT).unwrap();
    assert_eq!(dropped_on.map(WorkerId::index), Some(1));
}

#[test]
fn abort_after_completion_keeps_the_result() {
    let rt = runtime(1);
    let handle = rt.spawn_on(0, || async { 3 }).unwrap();
    rt.block_on(0, || async {}).unwrap();
    assert!(handle.is_finished());
    handle.abort();
    assert_eq!(join_within(handle).unwrap(), 3);
    assert_eq!(rt.metrics().workers[0].aborted, 0);
}

struct SendOnDrop(std::sync::mpsc::Sender<()>);

impl Drop for SendOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn a_task_may_abort_itself() {
    let rt = runtime(1);
    let (handle_tx, handle_rx) = oneshot::channel::<JoinHandle<()>>();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let handle = rt
        .spawn_on(0, move || async move {
            let _report = SendOnDrop(dropped_tx);
            let me = handle_rx.await.unwrap();
            me.abort();
            tokio::task::yield_now().await;
            unreachable!("cancelled before its next poll");
        })
        .unwrap();
    // The task holds its own handle: aborting breaks the cycle.
    handle_tx.send(handle).unwrap();
    dropped_rx.recv_timeout(LIMIT).unwrap();
    // The worker finishes the abort before it polls the next task.
    rt.block_on(0, || async {}).unwrap();
    let m = &rt.metrics().workers[0];
    assert_eq!((m.aborted, m.completed, m.alive_tasks), (1, 1, 0));
}

#[test]
fn out_of_range_worker_is_an_error_that_hands_the_closure_back() {
    let rt = runtime(2);
    let err = rt.spawn_on(2, || async { 9 }).unwrap_err();
    assert_eq!(
        err.kind(),
        SpawnErrorKind::NoSuchWorker {
            index: 2,
            workers: 2
        }
    );
    assert_eq!(err.to_string(), "no worker 2: the runtime has 2 workers");
    assert_eq!(rt.block_on(1, err.into_inner()).unwrap(), 9);

    match rt.block_on(usize::MAX, || async {}) {
        Err(BlockOnWorkerError::Spawn(err)) => {
            assert!(matches!(err.kind(), SpawnErrorKind::NoSuchWorker { .. }))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        rt.metrics().workers.iter().map(|m| m.spawned).sum::<u64>(),
        1
    );
}

#[test]
fn block_on_from_a_worker_is_refused_not_deadlocked() {
    let rt = runtime(1);
    let handle = rt.handle().clone();
    let refused = rt
        .block_on(0, move || async move {
            match handle.block_on(0, || async { 1 }) {
                Err(BlockOnWorkerError::WouldDeadlock(f)) => Some(f),
                _ => None,
            }
        })
        .unwrap();
    // The closure came back unrun; it still works elsewhere.
    assert_eq!(rt.block_on(0, refused.unwrap()).unwrap(), 1);
}

#[test]
fn join_from_a_worker_is_refused_and_hands_the_handle_back() {
    let rt = runtime(2);
    let handle = rt.handle().clone();
    let (refused, ran) = rt
        .block_on(0, move || async move {
            let other = handle.spawn_on(1, || async { 7 }).unwrap();
            assert_eq!(RuntimeContext::current(), RuntimeContext::CurrentThread);
            match other.join() {
                Err(refused @ JoinBlockingError::WouldDeadlock(_)) => {
                    let message = refused.to_string();
                    let other = refused.into_inner().expect("the handle comes back");
                    (message, other.await.unwrap())
                }
                Ok(_) => panic!("joined on a worker thread"),
                Err(err) => panic!("unexpected {err:?}"),
            }
        })
        .unwrap();
    assert_eq!(ran, 7);
    assert_eq!(
        refused,
        "blocking here would deadlock: this thread drives a current-thread tokio runtime"
    );
}

#[test]
fn join_of_a_finished_task_is_refused_too_on_a_current_thread_runtime() {
    let rt = runtime(1);
    let done = rt.spawn_on(0, || async { "early" }).unwrap();
    rt.block_on(0, || async {}).unwrap();
    assert!(done.is_finished());
    let client = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let handed_back = client.block_on(async move { done.join().unwrap_err().into_inner() });
    // Refused every time, not only when it would have had to wait; the
    // result is still there for a thread that may block.
    assert_eq!(handed_back.expect("the handle").join().unwrap(), "early");
}

#[test]
fn block_on_from_a_multi_thread_worker_blocks_in_place() {
    let rt = runtime(1);
    let handle = rt.handle().clone();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let got = tokio_rt.block_on(async move {
        tokio::spawn(async move { handle.block_on(0, || async { 8 }).unwrap() })
            .await
            .unwrap()
    });
    assert_eq!(got, 8);
}

#[test]
fn round_robin_cycles_through_the_workers() {
    let rt = runtime(3);
    let placed: Vec<usize> = (0..6)
        .map(|_| rt.spawn(|| async {}).unwrap().worker().index())
        .collect();
    assert_eq!(placed, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn least_loaded_picks_the_worker_with_fewest_live_tasks() {
    let rt = PerCoreRuntime::builder()
        .workers(3)
        .placement(Placement::LeastLoaded)
        .build()
        .unwrap();
    let mut waiting = Vec::new();
    for worker in [0, 0, 1] {
        waiting.push(rt.spawn_on(worker, std::future::pending::<()>).unwrap());
    }
    // 0 has two live tasks, 1 has one, 2 none.
    let first = rt.spawn(std::future::pending::<()>).unwrap();
    assert_eq!(first.worker().index(), 2);
    // Now 1 and 2 tie with one each: the lower index wins.
    assert_eq!(
        rt.spawn(std::future::pending::<()>)
            .unwrap()
            .worker()
            .index(),
        1
    );
    drop(first);
    drop(waiting);
    let live: Vec<u64> = rt.metrics().workers.iter().map(|m| m.alive_tasks).collect();
    assert_eq!(live, [2, 2, 1]);
}

#[test]
fn by_key_sends_a_key_to_the_same_worker_every_time() {
    let rt = runtime(4);
    for key in ["alpha", "beta", "gamma", "delta", "epsilon"] {
        let placement = Placement::by_key(key);
        let workers: HashSet<usize> = (0..8)
            .map(|_| {
                rt.spawn_with(placement, || async {})
                    .unwrap()
                    .worker()
                    .index()
            })
            .collect();
        assert_eq!(workers.len(), 1, "key {key} went to {workers:?}");
    }
    assert_eq!(
        rt.spawn_with(Placement::ByKey(9), || async {})
            .unwrap()
            .worker()
            .index(),
        1
    );
}

#[test]
fn handle_current_spawns_on_the_runtime_of_the_calling_worker() {
    let rt = runtime(2);
    let got = rt
        .block_on(1, || async {
            let handle = Handle::current().unwrap();
            let sibling = handle
                .spawn_on(0, || async {
                    PerCoreRuntime::current_worker().unwrap().index()
                })
                .unwrap();
            sibling.await.unwrap()
        })
        .unwrap();
    assert_eq!(got, 0);
}

#[test]
fn metrics_count_spawned_completed_live_and_busy_time() {
    let rt = runtime(2);
    for _ in 0..5 {
        rt.block_on(1, || async {}).unwrap();
    }
    let spin = rt
        .spawn_on(1, || async {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
        })
        .unwrap();
    join_within(spin).unwrap();
    let waiting = rt.spawn_on(1, std::future::pending::<()>).unwrap();
    // A task submitted after the spin ends runs in a later tick, after the
    // spin's busy time was added.
    rt.block_on(1, || async {}).unwrap();
    let m = rt.metrics().workers;
    assert_eq!(m[0].spawned, 0);
    assert_eq!(m[1].worker.index(), 1);
    assert_eq!(m[1].spawned, 8);
    assert_eq!(m[1].completed, 7);
    assert_eq!(m[1].alive_tasks, 1);
    assert!(
        m[1].busy_time >= Duration::from_millis(20),
        "{:?}",
        m[1].busy_time
    );
    waiting.abort();
}

#[test]
fn a_join_handle_dropped_in_select_detaches_the_task_which_still_runs() {
    let rt = runtime(1);
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let handle = rt
        .spawn_on(0, move || async move {
            go_rx.await.unwrap();
            done_tx.send(()).unwrap();
            "result dropped with the task"
        })
        .unwrap();
    // The handle is dropped inside `select!` when the other branch wins.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    client.block_on(async {
        tokio::select! {
            _ = handle => unreachable!("the task waits for `go`"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    });
    go_tx.send(()).unwrap();
    done_rx.recv_timeout(LIMIT).unwrap();
    rt.block_on(0, || async {}).unwrap();
    let m = &rt.metrics().workers[0];
    assert_eq!((m.completed, m.alive_tasks), (2, 0));
}

#[test]
fn a_not_send_task_that_yields_many_times_keeps_its_state() {
    const YIELDS: u32 = if cfg!(miri) { 50 } else { 1000 };
    let rt = runtime(1);
    let handle = rt
        .spawn_on(0, || {
            let counter = Rc::new(Cell::new(0_u32));
            async move {
                for _ in 0..YIELDS {
                    counter.set(counter.get() + 1);
                    tokio::task::yield_now().await;
                }
                counter.get()
            }
        })
        .unwrap();
    assert_eq!(join_within(handle).unwrap(), YIELDS);
}
