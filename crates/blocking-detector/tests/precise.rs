//! Precise mode (`RUSTFLAGS="--cfg tokio_unstable"`): every task poll of an
//! installed runtime is timed, so plain `tokio::spawn`ed tasks are reported
//! with their task id and spawn location — no wrapping. `cargo xtask ci`
//! runs this file in a target directory of its own with that flag.
#![cfg(tokio_unstable)]

use std::panic::Location;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind, TaskId};
use tokio::runtime::{Builder, Runtime};

const THRESHOLD: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(20);

fn installed(
    flavor: &str,
    threshold: Duration,
) -> (BlockingDetector, Runtime, Receiver<BlockingReport>) {
    let mut builder = match flavor {
        "current-thread" => Builder::new_current_thread(),
        _ => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let detector = BlockingDetector::builder()
        .threshold(threshold)
        .report_interval(Duration::ZERO)
        .handler(move |r: &BlockingReport| {
            let _ = tx.lock().unwrap().send(r.clone());
        })
        .install(builder.enable_all())
        .unwrap();
    (detector, builder.build().unwrap(), rx)
}

const FLAVORS: [&str; 2] = ["current-thread", "multi-thread"];

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Spawns `work` with plain `tokio::spawn` and returns the `Blocked` report
/// of its poll, the task's id and the spawn location.
fn blocked_report(
    flavor: &str,
    work: fn(),
) -> (BlockingReport, TaskId, &'static Location<'static>) {
    let (_detector, rt, rx) = installed(flavor, THRESHOLD);
    let (id, spawned_at) = rt.block_on(async {
        let spawned_at = Location::caller();
        let task = tokio::spawn(async move { work() });
        let id = TaskId::from(task.id());
        task.await.unwrap();
        (id, spawned_at)
    });
    // The watchdog may also have seen it stuck; the poll's own report is the
    // `Blocked` one.
    loop {
        let report = rx.recv_timeout(WAIT).expect("a report");
        if report.kind() == ReportKind::Blocked && report.task_id() == Some(id) {
            return (report, id, spawned_at);
        }
    }
}

fn assert_names_the_task(flavor: &str, min: Duration, work: fn()) {
    let (report, id, spawned_at) = blocked_report(flavor, work);
    assert_eq!(report.task_id(), Some(id), "{flavor}: {report}");
    let location = report.location().expect("the spawn location");
    assert_eq!(location.file(), spawned_at.file(), "{flavor}");
    assert_eq!(location.line(), spawned_at.line() + 1, "{flavor}");
    assert_eq!(report.name(), None);
    assert!(report.duration() >= min, "{flavor}: {report}");
    assert!(
        report.to_string().contains(&format!("(id {id})")),
        "{report}"
    );
}

#[test]
fn a_plain_spawned_task_that_sleeps_is_named_by_id_and_spawn_location() {
    for flavor in FLAVORS {
        assert_names_the_task(flavor, Duration::from_millis(45), || {
            std::thread::sleep(Duration::from_millis(50))
        });
    }
}

#[test]
fn a_plain_spawned_task_that_spins_is_named_by_id_and_spawn_location() {
    for flavor in FLAVORS {
        assert_names_the_task(flavor, Duration::from_millis(55), || {
            spin_for(Duration::from_millis(60))
        });
    }
}

#[test]
fn a_plain_spawned_task_waiting_for_a_contended_std_mutex_is_named() {
    static LOCK: Mutex<u32> = Mutex::new(0);
    for flavor in FLAVORS {
        assert_names_the_task(flavor, Duration::from_millis(40), || {
            let (tx, rx) = mpsc::channel();
            let holder = std::thread::spawn(move || {
                let mut guard = LOCK.lock().unwrap();
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(80));
                *guard += 1;
            });
            rx.recv().unwrap();
            *LOCK.lock().unwrap() += 1;
            holder.join().unwrap();
        });
    }
}

#[test]
fn a_stuck_plain_task_is_named_while_it_is_still_stuck() {
    for flavor in FLAVORS {
        let (detector, rt, rx) = installed(flavor, Duration::from_millis(100));
        let (id, line) = rt.block_on(async {
            let line = line!() + 1;
            let task = tokio::spawn(async { std::thread::sleep(Duration::from_millis(500)) });
            let id = TaskId::from(task.id());
            task.await.unwrap();
            (id, line)
        });
        let stuck = rx.recv_timeout(WAIT).expect("a stuck report");
        assert_eq!(stuck.kind(), ReportKind::Stuck, "{flavor}: {stuck}");
        assert_eq!(stuck.task_id(), Some(id), "{flavor}: {stuck}");
        assert_eq!(stuck.location().unwrap().line(), line, "{flavor}");
        // It was made while the task was stuck: its age was below the block.
        assert!(stuck.duration() < Duration::from_millis(500), "{stuck}");
        let blocked = rx.recv_timeout(WAIT).expect("the end report");
        assert_eq!(blocked.kind(), ReportKind::Blocked);
        assert_eq!(blocked.task_id(), Some(id));
        assert!(blocked.duration() >= Duration::from_millis(500));
        drop(detector);
    }
}

#[test]
fn a_watched_future_inside_a_tracked_task_is_reported_once_by_name() {
    for flavor in FLAVORS {
        let (detector, rt, rx) = installed(flavor, THRESHOLD);
        let guard = detector.fail_on_blocking();
        let id = rt.block_on(async {
            let detector = detector.clone();
            let task = tokio::spawn(async move {
                detector
                    .watch_named("inner", async {
                        std::thread::sleep(Duration::from_millis(50))
                    })
                    .await
            });
            let id = TaskId::from(task.id());
            task.await.unwrap();
            id
        });
        let failure = guard.check().unwrap_err();
        assert_eq!(failure.reports().len(), 1, "{flavor}: {failure}");
        let report = &failure.reports()[0];
        assert_eq!(report.name(), Some("inner"));
        assert_eq!(report.task_id(), Some(id));
        drop(rx);
    }
}

#[test]
fn well_behaved_plain_tasks_produce_no_report() {
    for flavor in FLAVORS {
        let (detector, rt, rx) = installed(flavor, Duration::from_millis(100));
        let guard = detector.fail_on_blocking();
        rt.block_on(async {
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    tokio::spawn(async move {
                        for _ in 0..20 {
                            spin_for(Duration::from_micros(100));
                            tokio::task::yield_now().await;
                        }
                        tokio::time::sleep(Duration::from_millis(i % 5)).await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        guard.check().unwrap_or_else(|f| panic!("{flavor}: {f}"));
        // On a loaded machine: descheduled stalls only.
        assert!(rx.try_iter().all(|r| r.class().is_descheduled()));
    }
}
