//! `mutex`: `std::sync::Mutex`, `parking_lot::Mutex` and `tokio::sync::Mutex`
//! guarding a counter in async code — uncontended, contended from many tasks
//! on a multi-thread runtime with a short critical section, and with a long
//! one. The figures behind `docs/mutex.md`. No `ours` here: the cookbook page
//! is the project's contribution, and its advice (a sync lock unless the lock
//! must be held across an `.await`) is what the paired rounds check: each
//! sync lock against `tokio::sync::Mutex`, back to back in alternating order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_patterns_benches::{paired, record_paired, time};
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
/// Paired rounds per comparison (odd, so the median is one round's ratio).
const PAIRED_ROUNDS: usize = 9;

const STD: &str = "std::sync::Mutex";
const PARKING_LOT: &str = "parking_lot::Mutex";
const TOKIO: &str = "tokio::sync::Mutex";

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

/// One lock of each kind around a counter, shared by criterion and the
/// paired rounds.
struct Locks {
    std: Arc<std::sync::Mutex<u64>>,
    parking_lot: Arc<parking_lot::Mutex<u64>>,
    tokio: Arc<tokio::sync::Mutex<u64>>,
}

impl Locks {
    fn new() -> Locks {
        Locks {
            std: Arc::new(std::sync::Mutex::new(0)),
            parking_lot: Arc::new(parking_lot::Mutex::new(0)),
            tokio: Arc::new(tokio::sync::Mutex::new(0)),
        }
    }
}

/// One group: its name, the lock rounds one run does (for the throughput),
/// how many runs make one side of a paired round, and criterion's sample
/// size if not the default.
struct Case<'a> {
    name: &'a str,
    elements: u64,
    iterations: usize,
    sample_size: Option<usize>,
}

/// Criterion's figure for each lock, then paired rounds of each sync lock
/// against `tokio::sync::Mutex`, `case.iterations` runs per side.
fn compare(
    c: &mut Criterion,
    case: Case<'_>,
    run_std: impl Fn(),
    run_parking_lot: impl Fn(),
    run_tokio: impl Fn(),
) {
    let Case {
        name,
        elements,
        iterations,
        sample_size,
    } = case;
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(elements));
    if let Some(n) = sample_size {
        group.sample_size(n);
    }
    group.bench_function(STD, |b| b.iter(&run_std));
    group.bench_function(PARKING_LOT, |b| b.iter(&run_parking_lot));
    group.bench_function(TOKIO, |b| b.iter(&run_tokio));
    group.finish();

    let side = |run: &dyn Fn()| {
        time(|| {
            for _ in 0..iterations {
                run();
            }
        })
    };
    let result = paired(PAIRED_ROUNDS, || side(&run_std), || side(&run_tokio));
    record_paired(name, STD, TOKIO, &result);
    let result = paired(
        PAIRED_ROUNDS,
        || side(&run_parking_lot),
        || side(&run_tokio),
    );
    record_paired(name, PARKING_LOT, TOKIO, &result);
}

fn uncontended(c: &mut Criterion) {
    let rt = Builder::new_current_thread().build().expect("runtime");
    let locks = Locks::new();
    compare(
        c,
        Case {
            name: "mutex/uncontended",
            elements: ROUNDS,
            // About 5 ms a side with a sync lock, 30 ms with tokio's.
            iterations: 1_000,
            sample_size: None,
        },
        || {
            rt.block_on(async {
                for _ in 0..ROUNDS {
                    *locks.std.lock().unwrap() += 1;
                }
            })
        },
        || {
            rt.block_on(async {
                for _ in 0..ROUNDS {
                    *locks.parking_lot.lock() += 1;
                }
            })
        },
        || {
            rt.block_on(async {
                for _ in 0..ROUNDS {
                    *locks.tokio.lock().await += 1;
                }
            })
        },
    );
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

fn contended_group(
    c: &mut Criterion,
    name: &str,
    tasks: u64,
    rounds: u64,
    work: Duration,
    iterations: usize,
) {
    let rt = multi_thread();
    let locks = Locks::new();
    compare(
        c,
        Case {
            name,
            elements: tasks * rounds,
            iterations,
            sample_size: Some(10),
        },
        || {
            contended(&rt, locks.std.clone(), tasks, rounds, move |m| async move {
                let mut guard = m.lock().unwrap();
                work_for(work);
                *guard += 1;
            })
        },
        || {
            contended(
                &rt,
                locks.parking_lot.clone(),
                tasks,
                rounds,
                move |m| async move {
                    let mut guard = m.lock();
                    work_for(work);
                    *guard += 1;
                },
            )
        },
        || {
            contended(
                &rt,
                locks.tokio.clone(),
                tasks,
                rounds,
                move |m| async move {
                    let mut guard = m.lock().await;
                    work_for(work);
                    *guard += 1;
                },
            )
        },
    );
}

fn contended_short(c: &mut Criterion) {
    contended_group(
        c,
        "mutex/contended_short",
        SHORT_TASKS,
        SHORT_ROUNDS,
        Duration::ZERO,
        // About 10 ms a side with a sync lock.
        10,
    );
}

fn contended_long(c: &mut Criterion) {
    contended_group(
        c,
        "mutex/contended_long",
        LONG_TASKS,
        LONG_ROUNDS,
        LONG_WORK,
        // 32 ms of work inside the lock per run, whichever lock.
        2,
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
