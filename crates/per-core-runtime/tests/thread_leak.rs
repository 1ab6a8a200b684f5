//! No thread outlives its runtime: worker threads and the threads their
//! tokio runtimes start (for `spawn_blocking`) are all joined, whether the
//! runtime is shut down, dropped, or fails to build. This file holds one
//! test so that no other test's threads come and go while it counts.
// Not under miri: it counts threads in `/proc`.
#![cfg(all(target_os = "linux", not(miri)))]

use std::time::{Duration, Instant};

use async_patterns_per_core_runtime::PerCoreRuntime;

/// The threads of this process, from `/proc/self/task`.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The thread count once it reaches `expected`, or the last count seen after
/// five seconds. A joined thread leaves `/proc/self/task` a moment after
/// `join` returns — the kernel wakes the joiner before it reaps the thread —
/// so a count taken at once can still include it; a thread that really
/// outlived its runtime stays (tokio keeps an idle blocking thread for ten
/// seconds), and the count never settles.
fn settled_threads(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = threads();
        if now == expected || Instant::now() >= deadline {
            return now;
        }
        std::thread::yield_now();
    }
}

#[test]
fn no_thread_outlives_its_runtime() {
    let before = threads();

    // Shut down gracefully, with tasks, blocking tasks and a timer running.
    let rt = PerCoreRuntime::builder().workers(3).build().unwrap();
    let handles = rt
        .spawn_on_all(|_| async {
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
        .unwrap();
    assert!(threads() >= before + 3);
    let report = rt.shutdown(Duration::from_millis(50));
    assert_eq!(report.cancelled(), 3);
    drop(handles);
    assert_eq!(settled_threads(before), before, "after shutdown");

    // Shut down from async code: the shutdown thread ends too.
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let waiting = rt
        .spawn_on(1, || tokio::time::sleep(Duration::from_secs(3600)))
        .unwrap();
    let report = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(rt.shutdown_async(Duration::from_millis(50)));
    assert_eq!(report.cancelled(), 1);
    drop(waiting);
    assert_eq!(settled_threads(before), before, "after shutdown_async");

    // Dropped without shutdown, pinned.
    let rt = PerCoreRuntime::builder()
        .workers(1)
        .pin(true)
        .build()
        .unwrap();
    rt.block_on(0, || async {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
    })
    .unwrap();
    drop(rt);
    assert_eq!(settled_threads(before), before, "after drop");

    // A build that fails on its second worker stops the first.
    let first = async_patterns_per_core_runtime::CpuBudget::detect().cpus()[0];
    let failed = PerCoreRuntime::builder()
        .pin_to_cpus([first, libc::CPU_SETSIZE as usize - 1])
        .build();
    assert!(failed.is_err());
    assert_eq!(settled_threads(before), before, "after a failed build");

    // A build whose start hook panics on one worker.
    let failed = PerCoreRuntime::builder()
        .workers(2)
        .on_worker_start(|id| assert_eq!(id.index(), 0, "refusing to start"))
        .build();
    assert!(failed.is_err());
    assert_eq!(settled_threads(before), before, "after a failed start hook");
}
