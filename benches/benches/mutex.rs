//! `mutex`: `std::sync::Mutex`, `parking_lot::Mutex` and `tokio::sync::Mutex`
//! guarding a counter in async code — uncontended, contended from many tasks
//! on a multi-thread runtime with a short critical section, and with a long
//! one. The figures behind `docs/mutex.md`. No `ours` here: the cookbook page
//! is the project's contribution.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::{Builder, Runtime};

/// Lock-increment-unlock rounds of the uncontended case.
const ROUNDS: u64 = 1_000;
/// Tasks contending for one lock, short critical section.
const SHORT_TASKS: u64 = 64;
/// Rounds per task, short critical section.
const SHORT_ROUNDS: u64 = 200;
/// Tasks contending for one lock, long critical section.
const LONG_TASKS: u64 = 16;
/// Rounds per task, long critical section.
const LONG_ROUNDS: u64 = 10;
/// The long critical section: sync work done while holding the lock (a
/// compression, a sync write, a slow computation).
const LONG_WORK: Duration = Duration::from_micros(200);

fn work_for(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn multi_thread() -> Runtime {
    // One worker per core (2 on the reference machine), as `#[tokio::main]`.
    Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn uncontended(c: &mut Criterion) {
    let rt = Builder::new_current_thread().build().expect("runtime");
    let mut group = c.benchmark_group("mutex/uncontended");
    group.throughput(Throughput::Elements(ROUNDS));
    group.bench_function("std::sync::Mutex", |b| {
        let m = std::sync::Mutex::new(0_u64);
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..ROUNDS {
                    *m.lock().unwrap() += 1;
                }
            })
        })
    });
    group.bench_function("parking_lot::Mutex", |b| {
        let m = parking_lot::Mutex::new(0_u64);
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..ROUNDS {
                    *m.lock() += 1;
                }
            })
        })
    });
    group.bench_function("tokio::sync::Mutex", |b| {
        let m = tokio::sync::Mutex::new(0_u64);
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..ROUNDS {
                    *m.lock().await += 1;
                }
            })
        })
    });
    group.finish();
}

/// `tasks` tasks, each doing `rounds` rounds of `round` (which locks, works
/// inside the critical section, unlocks) with a yield between rounds so that
/// tasks interleave on the workers.
fn contended<L, F, Fut>(rt: &Runtime, lock: Arc<L>, tasks: u64, rounds: u64, round: F)
where
    L: Send + Sync + 'static,
    F: Fn(Arc<L>) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let tasks: Vec<_> = (0..tasks)
            .map(|_| {
                let lock = lock.clone();
                tokio::spawn(async move {
                    for _ in 0..rounds {
                        round(lock.clone()).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
}

fn contended_group(c: &mut Criterion, name: &str, tasks: u64, rounds: u64, work: Duration) {
    let rt = multi_thread();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(tasks * rounds));
    group.sample_size(10);
    group.bench_function("std::sync::Mutex", |b| {
        let m = Arc::new(std::sync::Mutex::new(0_u64));
        b.iter(|| {
            contended(&rt, m.clone(), tasks, rounds, move |m| async move {
                let mut guard = m.lock().unwrap();
                work_for(work);
                *guard += 1;
            })
        })
    });
    group.bench_function("parking_lot::Mutex", |b| {
        let m = Arc::new(parking_lot::Mutex::new(0_u64));
        b.iter(|| {
            contended(&rt, m.clone(), tasks, rounds, move |m| async move {
                let mut guard = m.lock();
                work_for(work);
                *guard += 1;
            })
        })
    });
    group.bench_function("tokio::sync::Mutex", |b| {
        let m = Arc::new(tokio::sync::Mutex::new(0_u64));
        b.iter(|| {
            contended(&rt, m.clone(), tasks, rounds, move |m| async move {
                let mut guard = m.lock().await;
                work_for(work);
                *guard += 1;
            })
        })
    });
    group.finish();
}

fn contended_short(c: &mut Criterion) {
    contended_group(
        c,
        "mutex/contended_short",
        SHORT_TASKS,
        SHORT_ROUNDS,
        Duration::ZERO,
    );
}

fn contended_long(c: &mut Criterion) {
    contended_group(
        c,
        "mutex/contended_long",
        LONG_TASKS,
        LONG_ROUNDS,
        LONG_WORK,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = uncontended, contended_short, contended_long
}
criterion_main!(benches);
