//! `bridge`: handing items from a plain thread to an async consumer
//! (`async-patterns-bridge`'s channel beside async-channel, flume, kanal and
//! tokio's mpsc), and the round trip of a sync → async call (its `service`
//! beside a hand-written tokio mpsc + oneshot).

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_patterns_benches::{Better, Metric, record_metric, test_mode};
use async_patterns_bridge::{channel, service};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

/// Items per throughput iteration (fewer in criterion's `--test` pass).
fn items() -> u64 {
    if test_mode() { 100_000 } else { 5_000_000 }
}

/// The same bound for every channel.
const CAPACITY: usize = 1024;

/// The consumer's runtime: one worker thread, as in the target.
fn one_worker() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime")
}

fn throughput(c: &mut Criterion) {
    let rt = one_worker();
    let n = items();
    let expected = n * (n - 1) / 2;
    let mut group = c.benchmark_group("bridge/throughput_5m_u64");
    group
        .throughput(Throughput::Elements(n))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // Each iteration: the bench thread (a plain thread, outside any runtime)
    // sends `n` integers with the channel's blocking send; a task on the
    // one-worker runtime receives and sums them.
    group.bench_function("ours", |b| {
        b.iter(|| {
            let (tx, mut rx) = channel::<u64>(CAPACITY);
            let consumer = rt.spawn(async move {
                let mut sum = 0u64;
                while let Some(v) = rx.recv().await {
                    sum += v;
                }
                sum
            });
            for i in 0..n {
                tx.send_blocking(i).unwrap();
            }
            drop(tx);
            assert_eq!(rt.block_on(consumer).unwrap(), expected);
        })
    });

    group.bench_function("async-channel", |b| {
        b.iter(|| {
            let (tx, rx) = async_channel::bounded::<u64>(CAPACITY);
            let consumer = rt.spawn(async move {
                let mut sum = 0u64;
                while let Ok(v) = rx.recv().await {
                    sum += v;
                }
                sum
            });
            for i in 0..n {
                tx.send_blocking(i).unwrap();
            }
            drop(tx);
            assert_eq!(rt.block_on(consumer).unwrap(), expected);
        })
    });

    group.bench_function("flume", |b| {
        b.iter(|| {
            let (tx, rx) = flume::bounded::<u64>(CAPACITY);
            let consumer = rt.spawn(async move {
                let mut sum = 0u64;
                while let Ok(v) = rx.recv_async().await {
                    sum += v;
                }
                sum
            });
            for i in 0..n {
                tx.send(i).unwrap();
            }
            drop(tx);
            assert_eq!(rt.block_on(consumer).unwrap(), expected);
        })
    });

    group.bench_function("kanal", |b| {
        b.iter(|| {
            let (tx, rx) = kanal::bounded::<u64>(CAPACITY);
            let rx = rx.to_async();
            let consumer = rt.spawn(async move {
                let mut sum = 0u64;
                while let Ok(v) = rx.recv().await {
                    sum += v;
                }
                sum
            });
            for i in 0..n {
                tx.send(i).unwrap();
            }
            drop(tx);
            assert_eq!(rt.block_on(consumer).unwrap(), expected);
        })
    });

    group.bench_function("tokio-mpsc", |b| {
        b.iter(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
            let consumer = rt.spawn(async move {
                let mut sum = 0u64;
                while let Some(v) = rx.recv().await {
                    sum += v;
                }
                sum
            });
            for i in 0..n {
                tx.blocking_send(i).unwrap();
            }
            drop(tx);
            assert_eq!(rt.block_on(consumer).unwrap(), expected);
        })
    });
    group.finish();
}

fn call_round_trip(c: &mut Criterion) {
    let rt = one_worker();
    let mut group = c.benchmark_group("bridge/call_round_trip");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // A plain thread calls an async service on the one-worker runtime and
    // waits for the answer.
    let (client, server) = service::<u64, u64>(CAPACITY);
    let served = rt.spawn(server.serve(|v| async move { v + 1 }));
    group.bench_function("ours", |b| b.iter(|| client.call(black_box(1)).unwrap()));
    record_latency("ours", || client.call(black_box(1)).unwrap());
    drop(client);
    rt.block_on(served).unwrap();

    // The hand-written recipe: a tokio mpsc of (request, oneshot sender).
    type Reply = tokio::sync::oneshot::Sender<u64>;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Reply)>(CAPACITY);
    let served = rt.spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            let _ = reply.send(v + 1);
        }
    });
    let call = |v: u64| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.blocking_send((v, reply)).unwrap();
        answer.blocking_recv().unwrap()
    };
    group.bench_function("tokio-mpsc+oneshot", |b| b.iter(|| call(black_box(1))));
    record_latency("tokio-mpsc+oneshot", || call(black_box(1)));
    drop(tx);
    rt.block_on(served).unwrap();
    group.finish();
}

/// p50 and p99 of single calls, beside criterion's mean-based figure.
fn record_latency(implementation: &str, mut call: impl FnMut() -> u64) {
    let rounds = if test_mode() { 100 } else { 20_000 };
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            black_box(call());
            start.elapsed()
        })
        .collect();
    samples.sort();
    for (metric, q) in [("p50 latency", 0.50), ("p99 latency", 0.99)] {
        let at = ((samples.len() - 1) as f64 * q) as usize;
        record_metric(Metric {
            group: "bridge/call_round_trip",
            implementation,
            metric,
            value: samples[at].as_nanos() as f64,
            unit: "ns",
            better: Better::Lower,
        });
    }
}

criterion_group!(benches, throughput, call_round_trip);
criterion_main!(benches);
