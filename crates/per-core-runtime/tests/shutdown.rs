//! Shutdown: intake stops, accepted tasks finish until the deadline, the rest
//! are cancelled on their own workers, every `Drop` runs, and the report
//! counts every task exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_per_core_runtime::{
    JoinBlockingError, JoinError, JoinHandle, PerCoreRuntime, ShutdownReport, SpawnErrorKind,
    WorkerId,
};

const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 30 });

/// A shutdown deadline that tasks which end on their own meet even on a
/// loaded machine (or under miri), while a stuck task holds the shutdown
/// until it passes.
const GRACE: Duration = Duration::from_secs(if cfg!(miri) { 30 } else { 2 });

/// Counts its drops and records the worker it was dropped on.
#[derive(Clone)]
struct Drops {
    count: Arc<AtomicUsize>,
    on: Arc<Mutex<Vec<Option<WorkerId>>>>,
}

impl Drops {
    fn new() -> Self {
        Drops {
            count: Arc::new(AtomicUsize::new(0)),
            on: Arc::default(),
        }
    }

    fn guard(&self) -> DropGuard {
        DropGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn workers(&self) -> Vec<Option<WorkerId>> {
        self.on.lock().unwrap().clone()
    }
}

struct DropGuard(Drops);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0
            .on
            .lock()
            .unwrap()
            .push(PerCoreRuntime::current_worker());
        self.0.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// A runtime whose workers' clocks are paused: a sleeping task's timer fires
/// as soon as its worker has nothing else to do, so no test waits for real.
fn paused_runtime(workers: usize) -> PerCoreRuntime {
    PerCoreRuntime::builder()
        .workers(workers)
        .configure_runtime(|_, b| {
            b.start_paused(true);
        })
        .build()
        .unwrap()
}

/// Runs `shutdown` on another thread, failing the test instead of hanging.
fn shutdown_within(rt: PerCoreRuntime, timeout: Duration) -> ShutdownReport {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rt.shutdown(timeout));
    });
    rx.recv_timeout(LIMIT)
        .expect("shutdown did not return in time")
}

fn join_within<T: Send + 'static>(handle: JoinHandle<T>) -> Result<T, JoinError> {
    let (tx, rx) = mpsc::channel();
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
fn shutdown_lets_running_sleeping_and_panicking_tasks_end_and_cancels_the_rest() {
    let rt = paused_runtime(2);
    let drops = Drops::new();

    let handle = rt.handle().clone();
    // Each of these starts its last stretch of work when shutdown begins.
    let sleeping = {
        let guard = drops.guard();
        let handle = handle.clone();
        rt.spawn_on(0, move || async move {
            let _guard = guard;
            handle.shutting_down().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "slept"
        })
        .unwrap()
    };
    let running = {
        let guard = drops.guard();
        let handle = handle.clone();
        rt.spawn_on(1, move || async move {
            let _guard = guard;
            handle.shutting_down().await;
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            "ran"
        })
        .unwrap()
    };
    let panicking = {
        let guard = drops.guard();
        let handle = handle.clone();
        rt.spawn_on(1, move || async move {
            let _guard = guard;
            handle.shutting_down().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            panic!("failed while draining");
        })
        .unwrap()
    };
    let stuck = {
        let guard = drops.guard();
        rt.spawn_on(0, move || async move {
            let _guard = guard;
            std::future::pending::<&str>().await
        })
        .unwrap()
    };

    // Generous: the finishing tasks need only a few polls, but the machine
    // may be loaded; the stuck task holds the shutdown until the deadline.
    let report = shutdown_within(rt, GRACE);

    assert!(report.deadline_reached);
    assert_eq!(report.completed(), 2);
    assert_eq!(report.panicked(), 1);
    assert_eq!(report.cancelled(), 1);
    assert_eq!(report.aborted(), 0);
    assert_eq!(
        (report.workers[0].completed, report.workers[0].cancelled),
        (1, 1)
    );
    assert_eq!(
        (report.workers[1].completed, report.workers[1].panicked),
        (1, 1)
    );
    assert!(report.workers.iter().all(|w| w.alive_tasks == 0));

    assert_eq!(join_within(sleeping).unwrap(), "slept");
    assert_eq!(join_within(running).unwrap(), "ran");
    assert!(join_within(panicking).unwrap_err().is_panic());
    let err = join_within(stuck).unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(
        err.to_string(),
        "task was cancelled because the runtime shut down"
    );

    assert_eq!(drops.count(), 4);
    assert!(
        drops.workers().iter().all(Option::is_some),
        "{:?}",
        drops.workers()
    );
}

#[test]
fn shutdown_without_stragglers_returns_before_the_deadline() {
    let rt = paused_runtime(2);
    let handles: Vec<_> = (0..20)
        .map(|i| {
            rt.spawn(move || async move {
                tokio::time::sleep(Duration::from_secs(i)).await;
                i
            })
            .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let report = shutdown_within(rt, Duration::from_secs(3600));
    assert!(started.elapsed() < LIMIT);
    assert!(!report.deadline_reached);
    assert_eq!(report.completed(), 20);
    let results: Vec<u64> = handles
        .into_iter()
        .map(|h| join_within(h).unwrap())
        .collect();
    assert_eq!(results, (0..20).collect::<Vec<u64>>());
}

#[test]
fn dropping_the_runtime_cancels_every_task_on_its_own_worker() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let drops = Drops::new();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let guard = drops.guard();
            rt.spawn_on(i % 2, move || async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })
            .unwrap()
        })
        .collect();
    // Let every task start, so each one's future exists on its worker.
    rt.block_on(0, || async {}).unwrap();
    rt.block_on(1, || async {}).unwrap();
    drop(rt);
    assert_eq!(drops.count(), 6);
    let mut on: Vec<usize> = drops
        .workers()
        .into_iter()
        .map(|w| w.unwrap().index())
        .collect();
    on.sort_unstable();
    assert_eq!(on, [0, 0, 0, 1, 1, 1]);
    for handle in handles {
        assert!(join_within(handle).unwrap_err().is_cancelled());
    }
}

#[test]
fn tasks_still_queued_at_the_deadline_never_start() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let drops = Drops::new();
    let started = Arc::new(AtomicUsize::new(0));

    // Worker 0 is blocked (a blocking call inside a task: exactly what this
    // runtime must not be used for, and what shutdown has to survive).
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
    let blocker = rt
        .spawn_on(0, move || async move {
            blocked_tx.send(()).unwrap();
            release_rx.recv_timeout(LIMIT).unwrap();
        })
        .unwrap();
    blocked_rx.recv_timeout(LIMIT).unwrap();
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let guard = drops.guard();
            let started = started.clone();
            rt.spawn_on(0, move || {
                started.fetch_add(1, Ordering::SeqCst);
                async move { drop(guard) }
            })
            .unwrap()
        })
        .collect();
    // Worker 1's task is cancelled at the deadline, after worker 0 was told
    // to cancel: its `Drop` says the deadline has passed.
    let (deadline_tx, deadline_rx) = mpsc::channel::<()>();
    struct SignalOnDrop(mpsc::Sender<()>);
    impl Drop for SignalOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let _marker = rt
        .spawn_on(1, move || async move {
            let _signal = SignalOnDrop(deadline_tx);
            std::future::pending::<()>().await
        })
        .unwrap();

    let (report_tx, report_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = report_tx.send(rt.shutdown(Duration::from_millis(50)));
    });
    deadline_rx.recv_timeout(LIMIT).unwrap();
    release_tx.send(()).unwrap();
    let report = report_rx.recv_timeout(LIMIT).unwrap();

    assert!(report.deadline_reached);
    join_within(blocker).unwrap();
    for handle in queued {
        assert!(join_within(handle).unwrap_err().is_cancelled());
    }
    assert_eq!(started.load(Ordering::SeqCst), 0);
    assert_eq!(drops.count(), 10);
    assert_eq!(report.workers[0].completed, 1);
    assert_eq!(report.workers[0].cancelled, 10);
    assert_eq!(report.workers[1].cancelled, 1);
}

#[test]
fn a_panic_in_a_drop_during_cancellation_does_not_stop_the_shutdown() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop failed");
        }
    }
    let rt = PerCoreRuntime::builder().workers(1).build().unwrap();
    let drops = Drops::new();
    let bad = rt
        .spawn_on(0, || async {
            let _bad = PanicOnDrop;
            std::future::pending::<()>().await
        })
        .unwrap();
    let good = {
        let guard = drops.guard();
        rt.spawn_on(0, move || async move {
            let _guard = guard;
            std::future::pending::<()>().await
        })
        .unwrap()
    };
    rt.block_on(0, || async {}).unwrap();
    let report = shutdown_within(rt, Duration::ZERO);
    assert_eq!(report.cancelled(), 2);
    assert!(join_within(bad).unwrap_err().is_cancelled());
    assert!(join_within(good).unwrap_err().is_cancelled());
    assert_eq!(drops.count(), 1);
}

#[test]
fn intake_stops_at_shutdown_and_refused_closures_come_back() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let handle = rt.handle().clone();
    shutdown_within(rt, Duration::ZERO);

    let err = handle.spawn_on(0, || async { 1 }).unwrap_err();
    assert_eq!(err.kind(), SpawnErrorKind::ShutDown);
    assert_eq!(err.to_string(), "the runtime is shut down");
    let closure = err.into_inner();
    assert_eq!(futures::FutureExt::now_or_never(closure()), Some(1));

    assert_eq!(
        handle.spawn(|| async {}).unwrap_err().kind(),
        SpawnErrorKind::ShutDown
    );
    assert_eq!(
        handle.spawn_on_all(|_| async {}).unwrap_err().kind(),
        SpawnErrorKind::ShutDown
    );
    let refused = handle.block_on(1, || async { 2 }).unwrap_err();
    assert_eq!(refused.to_string(), "the runtime is shut down");
    assert!(refused.into_inner().is_some());
    assert!(handle.metrics().workers.iter().all(|m| m.spawned == 0));
}

#[test]
fn children_spawned_locally_are_waited_for_and_new_ones_refused_while_draining() {
    let rt = paused_runtime(1);
    let parent = rt
        .spawn_on(0, || async {
            let handle = async_patterns_per_core_runtime::Handle::current().unwrap();
            let children: Vec<_> = (0..5_u64)
                .map(|i| {
                    let handle = handle.clone();
                    PerCoreRuntime::spawn_local(async move {
                        // Still running when the drain begins.
                        handle.shutting_down().await;
                        tokio::time::sleep(Duration::from_secs(10 * (i + 1))).await;
                        i
                    })
                    .unwrap()
                })
                .collect();
            handle.shutting_down().await;
            let late = PerCoreRuntime::spawn_local(async {})
                .map(|_| ())
                .map_err(|e| e.kind());
            let mut sum = 0;
            for child in children {
                sum += child.await.unwrap();
            }
            (sum, late)
        })
        .unwrap();
    // Make sure the parent has spawned its children before shutting down.
    rt.block_on(0, || async {}).unwrap();
    let report = shutdown_within(rt, Duration::from_secs(3600));
    assert!(!report.deadline_reached);
    assert_eq!(
        join_within(parent).unwrap(),
        (10, Err(SpawnErrorKind::ShutDown))
    );
    // Parent, five children and the `block_on` probe.
    assert_eq!(report.completed(), 7);
}

#[test]
fn tokio_tasks_started_on_a_worker_are_dropped_when_it_stops() {
    let rt = PerCoreRuntime::builder().workers(1).build().unwrap();
    let drops = Drops::new();
    let (a, b) = (drops.guard(), drops.guard());
    rt.block_on(0, move || async move {
        tokio::spawn(async move {
            let _a = a;
            std::future::pending::<()>().await
        });
        tokio::task::spawn_local(async move {
            let _b = b;
            std::future::pending::<()>().await
        });
        tokio::task::yield_now().await;
    })
    .unwrap();
    let report = shutdown_within(rt, Duration::ZERO);
    assert_eq!(drops.count(), 2);
    // Not counted: they are tokio's tasks, not this runtime's.
    assert_eq!(report.completed(), 1);
    assert_eq!(report.cancelled(), 0);
}

/// A current-thread tokio runtime, like `#[tokio::main(flavor = "current_thread")]`.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn shutdown_async_from_another_runtime_drains_cancels_and_reports() {
    let rt = paused_runtime(2);
    let drops = Drops::new();
    let handle = rt.handle().clone();
    let finishing = {
        let handle = handle.clone();
        rt.spawn_on(0, move || async move {
            handle.shutting_down().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            "finished"
        })
        .unwrap()
    };
    let stuck = {
        let guard = drops.guard();
        rt.spawn_on(1, move || async move {
            let _guard = guard;
            std::future::pending::<()>().await
        })
        .unwrap()
    };
    let report = current_thread().block_on(async move {
        let shutdown = rt.shutdown_async(GRACE);
        // Intake stopped when `shutdown_async` was called, before any poll.
        assert!(handle.is_shutting_down());
        tokio::time::timeout(LIMIT, shutdown)
            .await
            .expect("in time")
    });
    assert!(report.deadline_reached);
    assert_eq!((report.completed(), report.cancelled()), (1, 1));
    assert_eq!(
        (report.workers[0].completed, report.workers[1].cancelled),
        (1, 1)
    );
    assert_eq!(join_within(finishing).unwrap(), "finished");
    assert!(join_within(stuck).unwrap_err().is_cancelled());
    // Dropped on worker 1, its own.
    assert_eq!(drops.workers(), [Some(report.workers[1].worker)]);
}

#[test]
fn shutdown_async_from_a_task_on_its_own_worker_reports_and_lets_that_worker_drain() {
    let rt = paused_runtime(2);
    let drops = Drops::new();
    let handle = rt.handle().clone();
    // Still draining on worker 0 after the report: it ends on its own.
    let draining = {
        let handle = handle.clone();
        rt.spawn_on(0, move || async move {
            handle.shutting_down().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            "own worker drained"
        })
        .unwrap()
    };
    // Never ends: cancelled at the deadline.
    let stuck = {
        let guard = drops.guard();
        rt.spawn_on(0, move || async move {
            let _guard = guard;
            std::future::pending::<()>().await
        })
        .unwrap()
    };
    let other = rt
        .spawn_on(1, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "other worker drained"
        })
        .unwrap();
    let slot = Arc::new(Mutex::new(Some(rt)));
    let inside = slot.clone();
    let shutter = handle
        .spawn_on(0, move || async move {
            let rt = inside.lock().unwrap().take().unwrap();
            let report = rt.shutdown_async(GRACE).await;
            (
                report.deadline_reached,
                report.workers[1].completed,
                report.workers[0].alive_tasks >= 2,
            )
        })
        .unwrap();
    assert_eq!(join_within(shutter).unwrap(), (false, 1, true));
    assert_eq!(join_within(other).unwrap(), "other worker drained");
    assert_eq!(join_within(draining).unwrap(), "own worker drained");
    assert!(join_within(stuck).unwrap_err().is_cancelled());
    assert_eq!(drops.count(), 1);
    assert!(handle.spawn(|| async {}).is_err());
}

#[test]
fn shutdown_async_on_its_own_worker_past_the_deadline_still_delivers_the_report() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let handle = rt.handle().clone();
    let stuck = rt.spawn_on(1, std::future::pending::<()>).unwrap();
    let slot = Arc::new(Mutex::new(Some(rt)));
    let shutter = handle
        .spawn_on(0, move || async move {
            let rt = slot.lock().unwrap().take().unwrap();
            let report = rt.shutdown_async(Duration::ZERO).await;
            (report.deadline_reached, report.workers[1].cancelled)
        })
        .unwrap();
    assert_eq!(join_within(shutter).unwrap(), (true, 1));
    assert!(join_within(stuck).unwrap_err().is_cancelled());
}

#[test]
fn a_dropped_shutdown_async_future_still_completes_the_shutdown() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let counter = stopped.clone();
    let rt = PerCoreRuntime::builder()
        .workers(2)
        .on_worker_stop(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let finishing = {
        let handle = handle.clone();
        rt.spawn_on(0, move || async move {
            handle.shutting_down().await;
            "finished"
        })
        .unwrap()
    };
    let stuck = rt.spawn_on(1, std::future::pending::<()>).unwrap();
    drop(rt.shutdown_async(Duration::from_millis(100)));
    assert_eq!(join_within(finishing).unwrap(), "finished");
    assert!(join_within(stuck).unwrap_err().is_cancelled());
    let deadline = std::time::Instant::now() + LIMIT;
    while stopped.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "workers did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
    let m = handle.metrics();
    assert_eq!((m.completed, m.cancelled, m.alive_tasks), (1, 1, 0));
}

#[test]
fn sync_shutdown_on_its_own_worker_panics_and_the_runtime_still_stops() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let handle = rt.handle().clone();
    let stuck = rt.spawn_on(1, std::future::pending::<()>).unwrap();
    let slot = Arc::new(Mutex::new(Some(rt)));
    let shutter = handle
        .spawn_on(0, move || async move {
            let rt = slot.lock().unwrap().take().unwrap();
            rt.shutdown(Duration::from_secs(3600));
        })
        .unwrap();
    let err = join_within(shutter).unwrap_err();
    assert!(err.is_panic());
    assert_eq!(
        err.to_string(),
        "task panicked: PerCoreRuntime::shutdown: blocking here would deadlock: this thread drives a current-thread tokio runtime; `.await` `shutdown_async` instead"
    );
    // The runtime, dropped by the panic, cancelled its tasks without waiting.
    assert!(join_within(stuck).unwrap_err().is_cancelled());
    assert!(handle.is_shutting_down());
}

#[test]
fn sync_shutdown_on_a_current_thread_runtime_panics_instead_of_stalling_it() {
    let rt = PerCoreRuntime::builder().workers(1).build().unwrap();
    let handle = rt.handle().clone();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        current_thread().block_on(async move { rt.shutdown(Duration::from_secs(3600)) })
    }));
    assert!(panicked.is_err());
    assert!(handle.is_shutting_down());
}

#[test]
fn dropping_the_runtime_on_a_current_thread_runtime_never_blocks_it() {
    let rt = PerCoreRuntime::builder().workers(1).build().unwrap();
    // Worker 0 is stuck in a blocking call (what a task must not do) until
    // the dropping thread, after the drop, releases it: a drop that waited
    // for the worker would never return.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
    let blocker = rt
        .spawn_on(0, move || async move {
            blocked_tx.send(()).unwrap();
            release_rx.recv_timeout(LIMIT).unwrap();
            "released"
        })
        .unwrap();
    blocked_rx.recv_timeout(LIMIT).unwrap();
    let queued = rt.spawn_on(0, || async {}).unwrap();
    let (dropped_tx, dropped_rx) = mpsc::channel();
    std::thread::spawn(move || {
        current_thread().block_on(async move {
            drop(rt);
            let _ = dropped_tx.send(());
            release_tx.send(()).unwrap();
        })
    });
    dropped_rx
        .recv_timeout(LIMIT)
        .expect("the drop blocked the runtime thread");
    assert_eq!(join_within(blocker).unwrap(), "released");
    // Cancelled by the drop: it never started.
    assert!(join_within(queued).unwrap_err().is_cancelled());
}

#[test]
fn dropping_the_runtime_inside_one_of_its_tasks_does_not_hang() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let handle = rt.handle().clone();
    let dropper = handle
        .spawn_on(1, move || async move {
            drop(rt);
            "dropped"
        })
        .unwrap();
    assert_eq!(join_within(dropper).unwrap(), "dropped");
    assert_eq!(
        handle.spawn(|| async {}).unwrap_err().kind(),
        SpawnErrorKind::ShutDown
    );
}

#[test]
fn on_worker_stop_runs_after_the_workers_tasks_have_ended() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let rt = PerCoreRuntime::builder()
        .workers(2)
        .on_worker_stop(move |id| {
            let live = async_patterns_per_core_runtime::Handle::current()
                .map(|h| h.metrics().workers[id.index()].alive_tasks);
            record.lock().unwrap().push((id.index(), live));
        })
        .build()
        .unwrap();
    let _stuck = rt.spawn_on(0, std::future::pending::<()>).unwrap();
    shutdown_within(rt, Duration::ZERO);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, [(0, Some(0)), (1, Some(0))]);
}

#[test]
fn a_handle_awaited_on_another_runtime_wakes_when_shutdown_cancels_its_task() {
    let rt = PerCoreRuntime::builder().workers(1).build().unwrap();
    let handle = rt.spawn_on(0, std::future::pending::<u8>).unwrap();
    let waiter = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(LIMIT, handle).await })
    });
    rt.block_on(0, || async {}).unwrap();
    shutdown_within(rt, Duration::ZERO);
    let result = waiter.join().unwrap().expect("woken before the limit");
    assert!(result.unwrap_err().is_cancelled());
}

#[test]
fn stopped_completes_once_every_worker_has_stopped_even_after_an_early_report() {
    let stopped_hooks = Arc::new(AtomicUsize::new(0));
    let counter = stopped_hooks.clone();
    let rt = PerCoreRuntime::builder()
        .workers(2)
        .on_worker_stop(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    assert!(!handle.is_stopped());
    // Worker 0 keeps draining after the report: this task ends only when
    // the report has been handed to the caller.
    let (reported_tx, reported_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = rt
        .spawn_on(0, move || async move {
            let _ = reported_rx.await;
            "drained after the report"
        })
        .unwrap();
    let slot = Arc::new(Mutex::new(Some(rt)));
    let admin = handle
        .spawn_on(0, move || async move {
            let rt = slot.lock().unwrap().take().unwrap();
            let report = rt.shutdown_async(LIMIT).await;
            let _ = reported_tx.send(());
            report.workers[0].alive_tasks
        })
        .unwrap();
    // The caller and the draining task were both alive at the report.
    assert_eq!(join_within(admin).unwrap(), 2);
    let (tx, rx) = mpsc::channel();
    let waiter = handle.clone();
    std::thread::spawn(move || {
        async_patterns_core::park_on(waiter.stopped());
        let _ = tx.send(());
    });
    rx.recv_timeout(LIMIT).expect("the workers stopped");
    assert!(handle.is_stopped());
    assert_eq!(stopped_hooks.load(Ordering::SeqCst), 2);
    assert_eq!(join_within(draining).unwrap(), "drained after the report");
}
