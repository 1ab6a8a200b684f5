//! Spinning before parking (`spin_before_park`): messages between workers
//! still arrive, what the workers spin is counted, an idle worker spins
//! once and then parks, tokio's timers and tasks keep running on a spinning
//! worker, and shutdown is not held up by it.

use std::time::{Duration, Instant};

use async_patterns_per_core_runtime::{BuildError, Handle, PerCoreRuntime};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 30 });

fn spinning(workers: usize, spin: Duration) -> PerCoreRuntime {
    PerCoreRuntime::builder()
        .workers(workers)
        .spin_before_park(spin)
        .build()
        .unwrap()
}

#[test]
fn a_ping_pong_between_spinning_workers_delivers_every_message_and_counts_the_spin() {
    let rt = spinning(2, Duration::from_micros(200));
    let (ping_tx, mut ping_rx) = mpsc::channel::<u32>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<u32>(1);
    let ponger = rt
        .spawn_on(1, move || async move {
            let mut n = 0;
            while let Some(i) = ping_rx.recv().await {
                pong_tx.send(i + 1).await.unwrap();
                n += 1;
            }
            n
        })
        .unwrap();
    let sum = rt
        .block_on(0, move || async move {
            let mut sum = 0;
            for i in 0..1_000 {
                ping_tx.send(i).await.unwrap();
                sum += pong_rx.recv().await.unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(sum, (1..=1_000).sum::<u32>());
    assert_eq!(ponger.join().unwrap(), 1_000);
    let spun: Duration = rt.metrics().workers.iter().map(|w| w.spin_time).sum();
    assert!(spun > Duration::ZERO);
}

#[test]
fn without_the_option_no_worker_spins() {
    let rt = PerCoreRuntime::builder().workers(2).build().unwrap();
    let handle = rt.handle().clone();
    rt.block_on(0, move || async move {
        for _ in 0..100 {
            handle.spawn_on(1, || async {}).unwrap().await.unwrap();
        }
    })
    .unwrap();
    assert!(
        rt.metrics()
            .workers
            .iter()
            .all(|w| w.spin_time == Duration::ZERO)
    );
}

#[test]
fn an_idle_worker_spins_once_then_parks() {
    let rt = spinning(1, Duration::from_millis(2));
    rt.block_on(0, || async {}).unwrap();
    let spin_time = || rt.metrics().workers[0].spin_time;
    // Each spin is counted when it ends: wait until the count stops moving
    // (a worker that never parked would spin again and again, and fail here).
    let deadline = Instant::now() + LIMIT;
    let mut last = spin_time();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = spin_time();
        if now == last && now > Duration::ZERO {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never settled: {now:?}"
        );
        last = now;
    }
    // Parked: nothing more is spun while nothing happens.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(spin_time(), last);
}

#[test]
fn timers_and_tokio_tasks_run_on_a_spinning_worker() {
    let rt = spinning(1, Duration::from_millis(10));
    let got = rt
        .block_on(0, || async {
            let tokio_task = tokio::task::spawn_local(async { "tokio task" });
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio_task.await.unwrap()
        })
        .unwrap();
    assert_eq!(got, "tokio task");
}

#[test]
fn a_spinning_runtime_shuts_down_without_waiting_for_the_spin() {
    let rt = spinning(2, Duration::from_millis(10));
    let waiting = {
        let handle = rt.handle().clone();
        rt.spawn_on(1, move || async move { handle.shutting_down().await })
            .unwrap()
    };
    rt.block_on(0, || async {}).unwrap();
    let report = rt.shutdown(LIMIT);
    assert!(!report.deadline_reached);
    assert_eq!(report.completed(), 2);
    waiting.join().unwrap();
    assert!(Handle::current().is_none());
}

#[test]
fn a_spin_longer_than_ten_milliseconds_is_a_config_error() {
    let err = PerCoreRuntime::builder()
        .spin_before_park(Duration::from_micros(10_001))
        .build()
        .unwrap_err();
    match err {
        BuildError::Config(err) => {
            assert_eq!(err.field(), "spin_before_park");
            assert_eq!(err.value(), "10.001ms");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        PerCoreRuntime::builder()
            .workers(1)
            .spin_before_park(Duration::from_millis(10))
            .build()
            .is_ok()
    );
}
