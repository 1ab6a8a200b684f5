//! `bridge`: handing items from a plain thread to an async consumer
//! (`async-patterns-bridge`'s channel beside async-channel, flume, kanal and
//! tokio's mpsc) — at the default capacity, and under heavy backpressure at
//! capacity 16, where the producer waits for room every few items — and the
//! round trip of a sync → async call (its `service` beside a hand-written
//! tokio mpsc + oneshot).
//!
//! Every target is judged on paired rounds (`async_patterns_benches::paired`):
//! ours and the anchor back to back, alternating which goes first, the median
//! of the per-round ratios recorded with its min–max.

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_patterns_benches::{
    Better, Metric, paired, record_metric, record_paired, secs, selected, test_mode, time,
};
use async_patterns_bridge::{channel, service};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

/// Items per throughput iteration (fewer in criterion's `--test` pass).
fn items() -> u64 {
    if test_mode() { 100_000 } else { 5_000_000 }
}

/// Items per backpressure iteration.
fn backpressure_items() -> u64 {
    if test_mode() { 20_000 } else { 500_000 }
}

/// Paired rounds per target.
const ROUNDS: usize = 11;

/// The same bound for every channel in the throughput group.
const CAPACITY: usize = 1024;

/// The bound of the backpressure group: small enough that a producer faster
/// than the hand-over waits for room every few items.
const SMALL_CAPACITY: usize = 16;

/// The consumer's runtime: one worker thread, as in the targets.
fn one_worker() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime")
}

/// An item type of the benches: made by the producer from its index, and
/// weighed by the consumer, which sums the weights (so nothing is optimised
/// away and every item is checked to arrive).
trait Item: Send + 'static {
    fn make(i: u64) -> Self;
    fn weight(&self) -> u64;
}

impl Item for u64 {
    #[inline]
    fn make(i: u64) -> Self {
        i
    }
    #[inline]
    fn weight(&self) -> u64 {
        *self
    }
}

/// A non-`Copy` item: a short owned string, allocated by the producer and
/// freed by the consumer, as a log line or an event would be.
impl Item for String {
    #[inline]
    fn make(i: u64) -> Self {
        let mut s = String::with_capacity(24);
        s.push_str("sensor event ");
        s.push(char::from(b'0' + (i % 10) as u8));
        s
    }
    #[inline]
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

fn expected<T: Item>(n: u64) -> u64 {
    (0..n).map(|i| T::make(i).weight()).sum()
}

/// One run of each implementation: the bench thread (a plain thread,
/// outside any runtime) sends `n` items with the channel's blocking send; a
/// task on the one-worker runtime receives and weighs them. Each returns the
/// sum of the weights, checked by the caller.
mod run {
    use super::*;

    pub(super) fn ours<T: Item>(rt: &Runtime, n: u64, capacity: usize) -> u64 {
        let (tx, mut rx) = channel::<T>(capacity);
        let consumer = rt.spawn(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum += v.weight();
            }
            sum
        });
        for i in 0..n {
            tx.send_blocking(T::make(i)).unwrap();
        }
        drop(tx);
        rt.block_on(consumer).unwrap()
    }

    pub(super) fn async_channel<T: Item>(rt: &Runtime, n: u64, capacity: usize) -> u64 {
        let (tx, rx) = async_channel::bounded::<T>(capacity);
        let consumer = rt.spawn(async move {
            let mut sum = 0u64;
            while let Ok(v) = rx.recv().await {
                sum += v.weight();
            }
            sum
        });
        for i in 0..n {
            tx.send_blocking(T::make(i)).unwrap();
        }
        drop(tx);
        rt.block_on(consumer).unwrap()
    }

    pub(super) fn flume<T: Item>(rt: &Runtime, n: u64, capacity: usize) -> u64 {
        let (tx, rx) = flume::bounded::<T>(capacity);
        let consumer = rt.spawn(async move {
            let mut sum = 0u64;
            while let Ok(v) = rx.recv_async().await {
                sum += v.weight();
            }
            sum
        });
        for i in 0..n {
            tx.send(T::make(i)).unwrap();
        }
        drop(tx);
        rt.block_on(consumer).unwrap()
    }

    pub(super) fn kanal<T: Item>(rt: &Runtime, n: u64, capacity: usize) -> u64 {
        let (tx, rx) = kanal::bounded::<T>(capacity);
        let rx = rx.to_async();
        let consumer = rt.spawn(async move {
            let mut sum = 0u64;
            while let Ok(v) = rx.recv().await {
                sum += v.weight();
            }
            sum
        });
        for i in 0..n {
            tx.send(T::make(i)).unwrap();
        }
        drop(tx);
        rt.block_on(consumer).unwrap()
    }

    pub(super) fn tokio_mpsc<T: Item>(rt: &Runtime, n: u64, capacity: usize) -> u64 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<T>(capacity);
        let consumer = rt.spawn(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum += v.weight();
            }
            sum
        });
        for i in 0..n {
            tx.blocking_send(T::make(i)).unwrap();
        }
        drop(tx);
        rt.block_on(consumer).unwrap()
    }
}

type Run = fn(&Runtime, u64, usize) -> u64;

/// The criterion group of one case: every implementation, then ours against
/// async-channel in paired rounds.
fn hand_over_group<T: Item>(c: &mut Criterion, group_name: &str, n: u64, capacity: usize) {
    let rt = one_worker();
    let sum = expected::<T>(n);
    let implementations: [(&str, Run); 5] = [
        ("ours", run::ours::<T>),
        ("async-channel", run::async_channel::<T>),
        ("flume", run::flume::<T>),
        ("kanal", run::kanal::<T>),
        ("tokio-mpsc", run::tokio_mpsc::<T>),
    ];
    let mut group = c.benchmark_group(group_name);
    group
        .throughput(Throughput::Elements(n))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, run) in implementations {
        group.bench_function(name, |b| {
            b.iter(|| assert_eq!(run(&rt, n, capacity), sum));
        });
    }
    group.finish();

    if !selected(group_name) {
        return;
    }
    let result = paired(
        ROUNDS,
        || time(|| assert_eq!(run::ours::<T>(&rt, n, capacity), sum)),
        || time(|| assert_eq!(run::async_channel::<T>(&rt, n, capacity), sum)),
    );
    record_paired(group_name, "ours", "async-channel", &result);
}

fn throughput(c: &mut Criterion) {
    hand_over_group::<u64>(c, "bridge/throughput_5m_u64", items(), CAPACITY);
}

fn backpressure(c: &mut Criterion) {
    let n = backpressure_items();
    hand_over_group::<u64>(c, "bridge/backpressure_cap16_u64", n, SMALL_CAPACITY);
    hand_over_group::<String>(c, "bridge/backpressure_cap16_string", n, SMALL_CAPACITY);
}

fn call_round_trip(c: &mut Criterion) {
    const GROUP: &str = "bridge/call_round_trip";
    let rt = one_worker();
    let mut group = c.benchmark_group(GROUP);
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // A plain thread calls an async service on the one-worker runtime and
    // waits for the answer.
    let (client, server) = service::<u64, u64>(CAPACITY);
    let served = rt.spawn(server.serve(|v| async move { v + 1 }));
    let ours = || client.call(black_box(1)).unwrap();

    // The hand-written recipe: a tokio mpsc of (request, oneshot sender).
    type Reply = tokio::sync::oneshot::Sender<u64>;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Reply)>(CAPACITY);
    let recipe_served = rt.spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            let _ = reply.send(v + 1);
        }
    });
    let recipe = |v: u64| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.blocking_send((v, reply)).unwrap();
        answer.blocking_recv().unwrap()
    };

    group.bench_function("ours", |b| b.iter(ours));
    group.bench_function("tokio-mpsc+oneshot", |b| b.iter(|| recipe(black_box(1))));
    group.finish();

    // Paired rounds of many calls each, and the latency percentiles of the
    // same single calls.
    if !selected(GROUP) {
        return;
    }
    let calls = if test_mode() { 100 } else { 5_000 };
    let mut latencies = (Vec::new(), Vec::new());
    let result = paired(
        ROUNDS,
        || {
            secs(timed_calls(calls, &mut latencies.0, || {
                assert_eq!(ours(), 2)
            }))
        },
        || {
            secs(timed_calls(calls, &mut latencies.1, || {
                assert_eq!(recipe(black_box(1)), 2)
            }))
        },
    );
    record_paired(GROUP, "ours", "tokio-mpsc+oneshot", &result);
    record_latency(GROUP, "ours", latencies.0);
    record_latency(GROUP, "tokio-mpsc+oneshot", latencies.1);

    drop(client);
    rt.block_on(served).unwrap();
    drop(tx);
    rt.block_on(recipe_served).unwrap();
}

/// Makes `calls` calls, keeping each one's latency; returns the total.
fn timed_calls(calls: usize, samples: &mut Vec<Duration>, mut call: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..calls {
        let start = Instant::now();
        call();
        let took = start.elapsed();
        samples.push(took);
        total += took;
    }
    total
}

/// p50 and p99 of single calls, beside the paired ratio.
fn record_latency(group: &str, implementation: &str, mut samples: Vec<Duration>) {
    samples.sort();
    for (metric, q) in [("p50 latency", 0.50), ("p99 latency", 0.99)] {
        let at = ((samples.len() - 1) as f64 * q) as usize;
        record_metric(Metric {
            group,
            implementation,
            metric,
            value: samples[at].as_nanos() as f64,
            unit: "ns",
            better: Better::Lower,
        });
    }
}

criterion_group!(benches, throughput, backpressure, call_round_trip);
criterion_main!(benches);
