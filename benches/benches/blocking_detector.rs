//! `blocking_detector`: what watching costs. The per-poll overhead of a
//! watched future (a plain and a watched future polled the same number of
//! times in paired rounds; judged against the plain future plus 50 ns per
//! poll, and recorded in nanoseconds), a spawn-heavy workload with
//! `detector.spawn` against `tokio::spawn`, and the same workload on a
//! runtime with the watchdog installed against one without. Every target is
//! judged on paired, interleaved rounds (`async_patterns_benches::paired`).

use std::cell::RefCell;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_patterns_benches::{Better, Metric, Paired, paired, record_metric, record_paired, time};
use async_patterns_blocking_detector::BlockingDetector;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::{Builder, Runtime};

/// Polls per measured future.
const POLLS: u64 = 10_000;
/// Tasks per spawn-heavy iteration.
const TASKS: u64 = 10_000;

/// The anchor of the per-poll targets: the plain future, plus the 50 ns
/// per poll a watched poll may cost more.
const PLAIN_PLUS_BUDGET: &str = "plain + 50 ns per poll";

/// Returns `Pending` `n` times (waking itself), then `Ready`.
struct CountDown(u64);

impl Future for CountDown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if black_box(self.0) == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls `future` to completion with a no-op waker; returns the poll count.
fn poll_to_end(future: impl Future<Output = ()>) -> u64 {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 1;
    while future.as_mut().poll(&mut cx).is_pending() {
        polls += 1;
    }
    polls
}

fn quiet_detector() -> BlockingDetector {
    // The default threshold (100 ms): nothing here comes close (on a loaded
    // machine the OS may still stall a thread that long; that is no error).
    BlockingDetector::builder()
        .handler(|_: &_| {})
        .build()
        .expect("valid detector")
}

fn multi_thread() -> Builder {
    let mut b = Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    b
}

/// The per-poll budget of a watched poll.
const BUDGET_NS: f64 = 50.0;

/// Paired rounds of a watched and a plain run of `polls` polls each: the
/// judged ratio is (plain + 50 ns per poll) ÷ watched, at least 1 when a
/// watched poll costs at most 50 ns more; also returns the median overhead
/// per poll, in nanoseconds, of the same rounds.
fn paired_overhead(
    rounds: usize,
    polls: u64,
    mut plain: impl FnMut(),
    mut watched: impl FnMut(),
) -> (Paired, f64) {
    let costs = RefCell::new((Vec::new(), Vec::new()));
    let per_poll = |f: &mut dyn FnMut()| time(f) * 1e9 / polls as f64;
    let result = paired(
        rounds,
        || {
            let ns = per_poll(&mut watched);
            costs.borrow_mut().0.push(ns);
            ns
        },
        || {
            let ns = per_poll(&mut plain);
            costs.borrow_mut().1.push(ns);
            ns + BUDGET_NS
        },
    );
    let (ours, anchor) = costs.into_inner();
    let mut overheads: Vec<f64> = ours.iter().zip(&anchor).map(|(o, a)| o - a).collect();
    overheads.sort_by(f64::total_cmp);
    (result, overheads[overheads.len() / 2])
}

fn poll_overhead(c: &mut Criterion) {
    let detector = quiet_detector();
    let mut group = c.benchmark_group("blocking_detector/poll");
    group.throughput(Throughput::Elements(POLLS + 1));
    group.bench_function("plain future", |b| b.iter(|| poll_to_end(CountDown(POLLS))));
    group.bench_function("ours", |b| {
        b.iter(|| poll_to_end(detector.watch(CountDown(POLLS))))
    });
    group.bench_function("ours:disabled", |b| {
        let off = quiet_detector();
        off.set_enabled(false);
        b.iter(|| poll_to_end(off.watch(CountDown(POLLS))))
    });
    group.finish();

    let (result, overhead) = paired_overhead(
        401,
        POLLS + 1,
        || {
            poll_to_end(CountDown(POLLS));
        },
        || {
            poll_to_end(detector.watch(CountDown(POLLS)));
        },
    );
    record_paired("blocking_detector/poll", "ours", PLAIN_PLUS_BUDGET, &result);
    record_metric(Metric {
        group: "blocking_detector/poll",
        implementation: "ours",
        metric: "overhead per poll",
        value: overhead,
        unit: "ns",
        better: Better::Lower,
    });
}

/// A task that yields `n` times, so each poll goes through the scheduler.
async fn yielder(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

fn poll_overhead_in_runtime(c: &mut Criterion) {
    // A current-thread runtime with the watchdog installed: the watched
    // polls also publish what they are polling for the watchdog.
    let mut builder = Builder::new_current_thread();
    let detector = BlockingDetector::builder()
        .handler(|_: &_| {})
        .install(builder.enable_all())
        .expect("valid detector");
    let rt = builder.build().expect("runtime");
    // Park once, so the runtime thread is watched.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });

    let plain_run = || rt.block_on(async { tokio::spawn(yielder(POLLS)).await.unwrap() });
    let watched_run =
        || rt.block_on(async { detector.spawn("yielder", yielder(POLLS)).await.unwrap() });

    let mut group = c.benchmark_group("blocking_detector/poll_installed");
    group.throughput(Throughput::Elements(POLLS + 1));
    group.bench_function("tokio::spawn", |b| b.iter(plain_run));
    group.bench_function("ours", |b| b.iter(watched_run));
    group.finish();

    let (result, overhead) = paired_overhead(201, POLLS + 1, plain_run, watched_run);
    record_paired(
        "blocking_detector/poll_installed",
        "ours",
        PLAIN_PLUS_BUDGET,
        &result,
    );
    record_metric(Metric {
        group: "blocking_detector/poll_installed",
        implementation: "ours",
        metric: "overhead per poll",
        value: overhead,
        unit: "ns",
        better: Better::Lower,
    });
}

/// Spawns `TASKS` tiny tasks with `spawn` and waits for all of them.
fn spawn_many<F>(rt: &Runtime, spawn: F)
where
    F: Fn(u64) -> tokio::task::JoinHandle<u64>,
{
    rt.block_on(async {
        let handles: Vec<_> = (0..TASKS).map(&spawn).collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        black_box(sum)
    });
}

async fn task(i: u64) -> u64 {
    tokio::task::yield_now().await;
    black_box(i)
}

fn spawn_heavy(c: &mut Criterion) {
    let detector = quiet_detector();
    let rt = multi_thread().build().expect("runtime");
    let mut group = c.benchmark_group("blocking_detector/spawn_many");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(10);
    group.bench_function("tokio::spawn", |b| {
        b.iter(|| spawn_many(&rt, |i| tokio::spawn(task(i))))
    });
    group.bench_function("ours", |b| {
        b.iter(|| spawn_many(&rt, |i| detector.spawn("task", task(i))))
    });
    group.finish();

    let result = paired(
        201,
        || time(|| spawn_many(&rt, |i| detector.spawn("task", task(i)))),
        || time(|| spawn_many(&rt, |i| tokio::spawn(task(i)))),
    );
    record_paired(
        "blocking_detector/spawn_many",
        "ours",
        "tokio::spawn",
        &result,
    );
}

fn watchdog_installed(c: &mut Criterion) {
    let plain = multi_thread().build().expect("runtime");
    let mut builder = multi_thread();
    let detector = BlockingDetector::builder()
        .handler(|_: &_| {})
        .install(&mut builder)
        .expect("valid detector");
    let watched = builder.build().expect("runtime");

    let mut group = c.benchmark_group("blocking_detector/watchdog");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(10);
    group.bench_function("no detector", |b| {
        b.iter(|| spawn_many(&plain, |i| tokio::spawn(task(i))))
    });
    group.bench_function("ours:watchdog", |b| {
        b.iter(|| spawn_many(&watched, |i| tokio::spawn(task(i))))
    });
    group.finish();

    let result = paired(
        201,
        || time(|| spawn_many(&watched, |i| tokio::spawn(task(i)))),
        || time(|| spawn_many(&plain, |i| tokio::spawn(task(i)))),
    );
    record_paired(
        "blocking_detector/watchdog",
        "ours:watchdog",
        "no detector",
        &result,
    );
    drop(detector);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = poll_overhead, poll_overhead_in_runtime, spawn_heavy, watchdog_installed
}
criterion_main!(benches);
