//! Watched futures (`watch`, `watch_named`, `spawn`) on stable tokio: each
//! kind of blocking poll is reported with the right name, location and
//! duration, on current-thread and multi-thread runtimes; well-behaved code
//! is not; the test guard fails and passes as it should.

use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};

mod common;
use common::{spin_cpu, spin_for};

/// Generous: every blocking poll below lasts at least 2.5× this.
const THRESHOLD: Duration = Duration::from_millis(20);

fn detector() -> (BlockingDetector, Arc<Mutex<Vec<BlockingReport>>>) {
    detector_with(THRESHOLD)
}

fn detector_with(threshold: Duration) -> (BlockingDetector, Arc<Mutex<Vec<BlockingReport>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let detector = BlockingDetector::builder()
        .threshold(threshold)
        .report_interval(Duration::ZERO)
        .handler({
            let seen = seen.clone();
            move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
        })
        .build()
        .unwrap();
    (detector, seen)
}

fn runtimes() -> Vec<(&'static str, tokio::runtime::Runtime)> {
    vec![
        (
            "current-thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "multi-thread",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ]
}

/// Spawns `work` under `name` on each runtime and checks the one report.
fn assert_reported(name: &'static str, min: Duration, work: fn()) {
    for (flavor, rt) in runtimes() {
        let (detector, seen) = detector();
        let task = rt.block_on(async {
            let task = detector.spawn(name, async move { work() });
            let id = task.id();
            task.await.unwrap();
            id
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{flavor}: {seen:?}");
        let report = &seen[0];
        assert_eq!(report.kind(), ReportKind::Blocked, "{flavor}");
        assert_eq!(report.name(), Some(name), "{flavor}");
        assert_eq!(report.location().unwrap().file(), file!(), "{flavor}");
        assert_eq!(report.task_id(), Some(task.into()), "{flavor}");
        assert!(
            report.duration() >= min,
            "{flavor}: {:?}",
            report.duration()
        );
        assert_eq!(
            report.thread_id() == std::thread::current().id(),
            flavor == "current-thread"
        );
    }
}

#[test]
fn a_sleeping_task_is_reported_with_its_name_and_location() {
    assert_reported("sleeper", Duration::from_millis(45), || {
        std::thread::sleep(Duration::from_millis(50))
    });
}

#[test]
fn a_spinning_task_is_reported_with_its_name_and_location() {
    assert_reported("spinner", Duration::from_millis(55), || {
        spin_for(Duration::from_millis(60))
    });
}

#[test]
fn a_task_waiting_for_a_contended_std_mutex_is_reported() {
    static LOCK: Mutex<u32> = Mutex::new(0);
    assert_reported("locker", Duration::from_millis(40), || {
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let mut guard = LOCK.lock().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(80));
            *guard += 1;
        });
        rx.recv().unwrap();
        // The lock is held by another thread: this poll waits for it.
        *LOCK.lock().unwrap() += 1;
        holder.join().unwrap();
    });
}

#[test]
fn the_reported_location_is_the_spawn_call() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    let expected = rt.block_on(async {
        let here = Location::caller();
        let task = detector.spawn("x", async { std::thread::sleep(Duration::from_millis(50)) });
        task.await.unwrap();
        here
    });
    let location = seen.lock().unwrap()[0].location().unwrap();
    assert_eq!(location.file(), expected.file());
    assert_eq!(location.line(), expected.line() + 1);
}

#[test]
fn well_behaved_tasks_produce_no_report() {
    for (flavor, rt) in runtimes() {
        // Generous threshold: only an OS stall of 100 ms could trip it.
        let (detector, seen) = detector_with(Duration::from_millis(100));
        let guard = detector.fail_on_blocking();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..50 {
                tasks.push(detector.spawn("worker", async move {
                    for _ in 0..20 {
                        spin_for(Duration::from_micros(100));
                        tokio::task::yield_now().await;
                    }
                    tokio::time::sleep(Duration::from_millis(i % 5)).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        guard.check().unwrap_or_else(|f| panic!("{flavor}: {f}"));
        // On a loaded machine the OS may keep a worker off its CPU that
        // long: the handler hears of it, classified, and nothing else.
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().all(|r| r.class().is_descheduled()),
            "{flavor}: {seen:?}"
        );
        let counters = detector.metrics();
        assert_eq!(counters.blocked + counters.stuck, counters.descheduled);
    }
}

#[test]
fn only_slow_polls_are_reported_not_slow_futures() {
    // 10 polls of 10 ms each: 100 ms in total, but no poll over 20 ms.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    rt.block_on(detector.watch(async {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(10));
            tokio::task::yield_now().await;
        }
    }));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn nested_watched_futures_report_a_block_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    let inner_line = rt.block_on(detector.watch_named("outer", async {
        let line = line!() + 2;
        detector
            .watch_named("inner", async {
                std::thread::sleep(Duration::from_millis(50))
            })
            .await;
        line
    }));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].name(), Some("inner"));
    assert_eq!(seen[0].location().unwrap().line(), inner_line);
}

#[test]
fn an_outer_future_blocking_on_its_own_is_reported_beside_the_inner_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    rt.block_on(detector.watch_named("outer", async {
        std::thread::sleep(Duration::from_millis(50));
        detector
            .watch_named("inner", async {
                std::thread::sleep(Duration::from_millis(50))
            })
            .await;
    }));
    let names: Vec<_> = seen.lock().unwrap().iter().map(|r| r.name()).collect();
    assert_eq!(names, [Some("inner"), Some("outer")]);
}

#[test]
fn rate_limiting_keeps_reports_from_the_handler_but_not_from_guards() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let detector = BlockingDetector::builder()
        .threshold(THRESHOLD)
        .report_interval(Duration::from_secs(3600))
        .handler({
            let seen = seen.clone();
            move |r: &BlockingReport| seen.lock().unwrap().push(r.clone())
        })
        .build()
        .unwrap();
    let guard = detector.fail_on_blocking();
    rt.block_on(async {
        for _ in 0..3 {
            detector
                .watch(async { std::thread::sleep(Duration::from_millis(30)) })
                .await;
        }
        // Another location is limited on its own.
        detector
            .watch(async { std::thread::sleep(Duration::from_millis(30)) })
            .await;
    });
    assert_eq!(seen.lock().unwrap().len(), 2);
    let counters = detector.metrics();
    assert_eq!((counters.blocked, counters.suppressed), (4, 2));
    assert_eq!(guard.check().unwrap_err().reports().len(), 4);
}

#[test]
fn a_delivered_report_says_how_many_were_suppressed_before_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let detector = BlockingDetector::builder()
        .threshold(THRESHOLD)
        .report_interval(Duration::from_millis(150))
        .handler({
            let seen = seen.clone();
            move |r: &BlockingReport| seen.lock().unwrap().push(r.suppressed())
        })
        .build()
        .unwrap();
    rt.block_on(async {
        // 5 × 40 ms: the first is delivered, the next ones within 150 ms
        // are suppressed, the one after 150 ms carries their count.
        for _ in 0..5 {
            detector
                .watch(async { std::thread::sleep(Duration::from_millis(40)) })
                .await;
        }
    });
    let seen = seen.lock().unwrap();
    let suppressed = detector.metrics().suppressed;
    assert_eq!(seen[0], 0);
    // Every report was either delivered or suppressed, and each delivered
    // report counts only suppressions that happened.
    assert_eq!(seen.len() as u64 + suppressed, 5, "{seen:?}");
    assert!(seen.iter().sum::<u64>() <= suppressed, "{seen:?}");
}

#[test]
fn a_disabled_detector_measures_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    detector.set_enabled(false);
    rt.block_on(detector.watch(async { std::thread::sleep(Duration::from_millis(50)) }));
    assert!(seen.lock().unwrap().is_empty());
    detector.set_enabled(true);
    rt.block_on(detector.watch(async { std::thread::sleep(Duration::from_millis(50)) }));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn a_panicking_handler_does_not_break_the_detector() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let detector = BlockingDetector::builder()
        .threshold(THRESHOLD)
        .report_interval(Duration::ZERO)
        .handler(|_: &BlockingReport| panic!("handler failed"))
        .build()
        .unwrap();
    let guard = detector.fail_on_blocking();
    for _ in 0..2 {
        rt.block_on(detector.watch(async { std::thread::sleep(Duration::from_millis(30)) }));
    }
    assert_eq!(detector.metrics().blocked, 2);
    assert_eq!(guard.check().unwrap_err().reports().len(), 2);
}

#[test]
fn a_watched_future_that_panics_propagates_the_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    let result = rt.block_on(async {
        detector
            .spawn("boom", async { panic!("inner panic") })
            .await
    });
    assert!(result.unwrap_err().is_panic());
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_slow_poll_that_panics_is_reported_all_the_same() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, _) = detector();
    let guard = detector.fail_on_blocking();
    let result = rt.block_on(async {
        detector
            .spawn("boom", async {
                std::thread::sleep(Duration::from_millis(50));
                panic!("after blocking");
            })
            .await
    });
    assert!(result.unwrap_err().is_panic());
    let failure = guard.check().unwrap_err();
    assert_eq!(failure.reports().len(), 1, "{failure}");
    assert_eq!(failure.reports()[0].name(), Some("boom"));
    assert!(failure.reports()[0].duration() >= Duration::from_millis(45));
}

#[test]
fn a_watched_future_keeps_its_detector_alive() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    let watched = detector.watch_named("orphan", async {
        std::thread::sleep(Duration::from_millis(50))
    });
    drop(detector);
    // Another detector made meanwhile does not take its place.
    let (other, other_seen) = self::detector();
    rt.block_on(watched);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].name(), Some("orphan"));
    assert!(other_seen.lock().unwrap().is_empty());
    assert_eq!(other.metrics().blocked, 0);
}

#[test]
fn a_detector_is_dropped_with_its_last_handle_and_watched_future() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let alive = Arc::new(());
    let detector = BlockingDetector::builder()
        .threshold(THRESHOLD)
        .handler({
            let alive = alive.clone();
            move |_: &BlockingReport| {
                let _ = &alive;
            }
        })
        .build()
        .unwrap();
    let futures: Vec<_> = (0..3).map(|_| detector.watch(async {})).collect();
    let spawned = {
        let _in_runtime = rt.enter();
        detector.spawn("later", async {})
    };
    drop(detector);
    // The handler (and so the detector) lives while futures do.
    assert_eq!(Arc::strong_count(&alive), 2);
    for f in futures {
        rt.block_on(f);
    }
    assert_eq!(Arc::strong_count(&alive), 2);
    rt.block_on(spawned).unwrap();
    // The last handle went with the task. The watchdog thread holds the
    // detector only while it scans (microseconds), so it may outlive the
    // handle by that much: wait for it, but not forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&alive) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(Arc::strong_count(&alive), 1);
}

#[test]
fn a_watched_future_dropped_mid_way_is_fine() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (detector, seen) = detector();
    rt.block_on(async {
        tokio::select! {
            _ = detector.watch(std::future::pending::<()>()) => unreachable!(),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    });
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_guard_passes_a_test_that_does_not_block() {
    let (detector, _) = detector();
    let _guard = detector.fail_on_blocking();
    detector
        .spawn("polite", async {
            tokio::task::yield_now().await;
        })
        .await
        .unwrap();
}

#[tokio::test]
#[should_panic(expected = "2 blocks over 20ms of a runtime thread")]
async fn the_guard_fails_a_test_that_blocks_listing_every_poll() {
    let (detector, _) = detector();
    let _guard = detector.fail_on_blocking();
    detector
        .spawn("first", async {
            std::thread::sleep(Duration::from_millis(50))
        })
        .await
        .unwrap();
    detector
        .spawn("second", async {
            std::thread::sleep(Duration::from_millis(50))
        })
        .await
        .unwrap();
}

#[test]
fn the_guard_failure_names_each_offending_poll() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, _) = detector();
    let guard = detector.fail_on_blocking();
    rt.block_on(async {
        detector
            .spawn("first", async {
                std::thread::sleep(Duration::from_millis(50))
            })
            .await
            .unwrap();
        detector
            .spawn("second", async { spin_cpu(Duration::from_millis(50)) })
            .await
            .unwrap();
    });
    let failure = guard.check().unwrap_err();
    let text = failure.to_string();
    assert!(text.contains("task \"first\""), "{text}");
    assert!(text.contains("task \"second\""), "{text}");
    assert!(text.contains(file!()), "{text}");
    assert_eq!(failure.omitted(), 0);
}

#[test]
fn guards_only_see_reports_made_while_they_live() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, _) = detector();
    rt.block_on(detector.watch(async { std::thread::sleep(Duration::from_millis(30)) }));
    let guard = detector.fail_on_blocking();
    assert!(guard.reports().is_empty());
    rt.block_on(detector.watch(async { std::thread::sleep(Duration::from_millis(30)) }));
    assert_eq!(guard.reports().len(), 1);
    let _ = guard.check();
}

#[test]
fn a_guard_keeps_at_most_256_reports_and_counts_the_rest() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (detector, _) = detector_with(Duration::from_millis(1));
    let guard = detector.fail_on_blocking();
    rt.block_on(async {
        for _ in 0..260 {
            detector
                .watch(async { std::thread::sleep(Duration::from_millis(2)) })
                .await;
        }
    });
    let failure = guard.check().unwrap_err();
    assert_eq!(failure.reports().len(), 256);
    assert_eq!(failure.omitted(), 4);
    assert!(failure.to_string().ends_with("(and 4 more)"));
}
