//! `txn_channel`: 5M `u64` from a producer task to a consumer on one
//! current-thread runtime, each item received and committed, through
//! `async-patterns-txn-channel` (guard API, batch API, the seed's
//! `recv` + `commit` shape) beside a plain tokio mpsc `recv` loop and the
//! seed recipe's `Peekable<ReceiverStream>` peek + next.

use std::hint::black_box;
use std::pin::Pin;
use std::time::Duration;

use async_patterns_txn_channel::channel;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio_stream::wrappers::ReceiverStream;

const ITEMS: u64 = 5_000_000;
const CAPACITY: usize = 1024;
const BATCH: usize = 256;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime")
}

/// Runs `consume` against a producer task that sends `ITEMS` values through
/// our channel; returns the sum the consumer saw, so nothing is optimised
/// away.
fn ours<F, Fut>(rt: &Runtime, consume: F) -> u64
where
    F: FnOnce(async_patterns_txn_channel::Receiver<u64>) -> Fut,
    Fut: Future<Output = u64>,
{
    rt.block_on(async {
        let (tx, rx) = channel(CAPACITY);
        let producer = tokio::spawn(async move {
            for i in 0..ITEMS {
                tx.send(i).await.expect("receiver alive");
            }
        });
        let sum = consume(rx).await;
        producer.await.expect("producer");
        sum
    })
}

/// The same with a tokio mpsc channel.
fn tokio_mpsc<F, Fut>(rt: &Runtime, consume: F) -> u64
where
    F: FnOnce(tokio::sync::mpsc::Receiver<u64>) -> Fut,
    Fut: Future<Output = u64>,
{
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(CAPACITY);
        let producer = tokio::spawn(async move {
            for i in 0..ITEMS {
                tx.send(i).await.expect("receiver alive");
            }
        });
        let sum = consume(rx).await;
        producer.await.expect("producer");
        sum
    })
}

fn recv_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("txn_channel/recv_commit_5m");
    group.throughput(Throughput::Elements(ITEMS));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let rt = runtime();
    let expected = ITEMS * (ITEMS - 1) / 2;

    group.bench_function("ours", |b| {
        b.iter(|| {
            let sum = ours(&rt, |mut rx| async move {
                let mut sum = 0;
                while let Some(delivery) = rx.begin().await {
                    sum += delivery.commit();
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });

    group.bench_function("ours:batch", |b| {
        b.iter(|| {
            let sum = ours(&rt, |mut rx| async move {
                let mut sum = 0;
                while let Some(batch) = rx.begin_batch(BATCH).await {
                    sum += batch.commit_all().sum::<u64>();
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });

    group.bench_function("ours:recv_commit", |b| {
        b.iter(|| {
            let sum = ours(&rt, |mut rx| async move {
                let mut sum = 0;
                while let Some(value) = rx.recv().await {
                    black_box(value);
                    sum += rx.commit().expect("held");
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });

    group.bench_function("tokio-mpsc-recv", |b| {
        b.iter(|| {
            let sum = tokio_mpsc(&rt, |mut rx| async move {
                let mut sum = 0;
                while let Some(value) = rx.recv().await {
                    sum += value;
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });

    group.bench_function("peekable-receiver-stream", |b| {
        b.iter(|| {
            let sum = tokio_mpsc(&rt, |rx| async move {
                let mut stream = ReceiverStream::new(rx).peekable();
                let mut sum = 0;
                while let Some(value) = Pin::new(&mut stream).peek().await {
                    black_box(value);
                    sum += stream.next().await.expect("peeked");
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });

    group.finish();
}

criterion_group!(benches, recv_commit);
criterion_main!(benches);
