//! `txn_channel`: items sent by a producer task and received and committed
//! one by one through `async-patterns-txn-channel`, beside the recipes a
//! user would otherwise write.
//!
//! - `recv_commit_5m` (one current-thread runtime) and
//!   `recv_commit_two_workers` (a 2-worker runtime, producer and consumer
//!   spawned as tasks): one consumer — the guard API, the batch API, the
//!   seed's `recv` + `commit` shape — beside a plain tokio mpsc `recv` loop,
//!   a `recv_many(256)` loop (issue 19 §3's fair anchor: it also drains
//!   the queue in one go) and the seed recipe's `Peekable<ReceiverStream>`.
//! - `share_4_consumers` (a 2-worker runtime): four consumer tasks share one
//!   channel, each item committed on its own — owned deliveries, unordered
//!   and ordered by key (64 keys) — beside the common recipe (a tokio mpsc
//!   receiver behind `Arc<tokio::sync::Mutex<_>>`) and async-channel's MPMC
//!   `recv` loop (no acknowledgement at all).
//!
//! Criterion times every implementation; each target is then judged on
//! paired rounds (`paired` + `record_paired`): ours and its anchor back to
//! back, alternating which goes first, wall time, median with min–max.

use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_patterns_benches::{paired, record_paired, selected, test_mode, time};
use async_patterns_txn_channel::{ChannelBuilder, channel};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio_stream::wrappers::ReceiverStream;

/// Items per criterion iteration of the one-consumer groups.
const ITEMS: u64 = 5_000_000;
/// Items per criterion iteration of the shared group (issue 15: 2M).
const SHARE_ITEMS: u64 = 2_000_000;
/// Items per side of a paired round: tens of milliseconds a side.
const ROUND_ITEMS: u64 = 1_000_000;
/// Paired rounds per target.
const ROUNDS: usize = 9;
const CAPACITY: usize = 1024;
const BATCH: usize = 256;
const CONSUMERS: usize = 4;
const KEYS: u64 = 64;

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

fn two_workers() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("2-worker runtime")
}

/// One consumer of a pipeline: a producer task sends `0..items`, a consumer
/// task receives (and, for ours, commits) every item.
#[derive(Clone, Copy)]
enum One {
    /// `begin().await` + `Delivery::commit`.
    Guard,
    /// `begin_batch(256)` + `commit_all`.
    Batch,
    /// The seed's shape: `recv().await` + `commit()`.
    RecvCommit,
    /// A plain tokio mpsc `recv` loop (no transaction).
    TokioRecv,
    /// A tokio mpsc `recv_many(&mut buf, 256)` loop (no transaction).
    TokioRecvMany,
    /// The seed recipe: `Peekable<ReceiverStream>` `peek` + `next`.
    Peekable,
}

impl One {
    fn name(self) -> &'static str {
        match self {
            One::Guard => "ours",
            One::Batch => "ours:batch",
            One::RecvCommit => "ours:recv_commit",
            One::TokioRecv => "tokio-mpsc-recv",
            One::TokioRecvMany => "tokio-mpsc-recv_many(256)",
            One::Peekable => "peekable-receiver-stream",
        }
    }

    /// Runs one pipeline of `items` on `rt`; returns the sum the consumer saw.
    fn run(self, rt: &Runtime, items: u64) -> u64 {
        let sum = rt.block_on(async move {
            match self {
                One::Guard | One::Batch | One::RecvCommit => {
                    let (tx, mut rx) = channel(CAPACITY);
                    let producer = tokio::spawn(async move {
                        for i in 0..items {
                            tx.send(i).await.expect("receiver alive");
                        }
                    });
                    let consumer = tokio::spawn(async move {
                        let mut sum = 0u64;
                        match self {
                            One::Guard => {
                                while let Some(delivery) = rx.begin().await {
                                    sum += delivery.commit();
                                }
                            }
                            One::Batch => {
                                while let Some(batch) = rx.begin_batch(BATCH).await {
                                    sum += batch.commit_all().sum::<u64>();
                                }
                            }
                            _ => {
                                while let Some(value) = rx.recv().await {
                                    black_box(value);
                                    sum += rx.commit().expect("held");
                                }
                            }
                        }
                        sum
                    });
                    producer.await.expect("producer");
                    consumer.await.expect("consumer")
                }
                One::TokioRecv | One::TokioRecvMany | One::Peekable => {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(CAPACITY);
                    let producer = tokio::spawn(async move {
                        for i in 0..items {
                            tx.send(i).await.expect("receiver alive");
                        }
                    });
                    let consumer = tokio::spawn(async move {
                        let mut sum = 0u64;
                        match self {
                            One::TokioRecv => {
                                while let Some(value) = rx.recv().await {
                                    sum += value;
                                }
                            }
                            One::TokioRecvMany => {
                                let mut buf = Vec::with_capacity(BATCH);
                                while rx.recv_many(&mut buf, BATCH).await > 0 {
                                    sum += buf.drain(..).sum::<u64>();
                                }
                            }
                            _ => {
                                let mut stream = ReceiverStream::new(rx).peekable();
                                while let Some(value) = Pin::new(&mut stream).peek().await {
                                    black_box(value);
                                    sum += stream.next().await.expect("peeked");
                                }
                            }
                        }
                        sum
                    });
                    producer.await.expect("producer");
                    consumer.await.expect("consumer")
                }
            }
        });
        assert_eq!(sum, items * (items - 1) / 2, "{}", self.name());
        sum
    }
}

/// Several consumers sharing one channel, each item committed on its own.
#[derive(Clone, Copy)]
enum Share {
    /// Owned deliveries from cloned receivers, unordered.
    Unordered,
    /// Owned deliveries, ordered by key (64 keys).
    PerKey,
    /// The common recipe: `Arc<tokio::sync::Mutex<mpsc::Receiver>>`.
    MutexMpsc,
    /// async-channel's MPMC `recv` loop (no acknowledgement).
    AsyncChannel,
}

impl Share {
    fn name(self) -> &'static str {
        match self {
            Share::Unordered => "ours:owned_unordered",
            Share::PerKey => "ours:owned_per_key_64",
            Share::MutexMpsc => "tokio-mpsc-behind-mutex",
            Share::AsyncChannel => "async-channel",
        }
    }

    fn run(self, rt: &Runtime, items: u64) -> u64 {
        let sum = rt.block_on(async move {
            let mut consumers = Vec::with_capacity(CONSUMERS);
            let producer;
            match self {
                Share::Unordered | Share::PerKey => {
                    let builder = ChannelBuilder::new().capacity(CAPACITY);
                    let builder = if let Share::PerKey = self {
                        builder.order_by_key(|item: &u64| item % KEYS)
                    } else {
                        builder.unordered()
                    };
                    let (tx, rx) = builder.build().expect("valid configuration");
                    producer = tokio::spawn(async move {
                        for i in 0..items {
                            tx.send(i).await.expect("receiver alive");
                        }
                    });
                    for _ in 0..CONSUMERS {
                        let mut rx = rx.clone();
                        consumers.push(tokio::spawn(async move {
                            let mut sum = 0u64;
                            while let Some(delivery) = rx.begin_owned().await {
                                sum += delivery.commit().expect("within its lease");
                            }
                            sum
                        }));
                    }
                }
                Share::MutexMpsc => {
                    let (tx, rx) = tokio::sync::mpsc::channel(CAPACITY);
                    producer = tokio::spawn(async move {
                        for i in 0..items {
                            tx.send(i).await.expect("receiver alive");
                        }
                    });
                    let rx = Arc::new(tokio::sync::Mutex::new(rx));
                    for _ in 0..CONSUMERS {
                        let rx = Arc::clone(&rx);
                        consumers.push(tokio::spawn(async move {
                            let mut sum = 0u64;
                            loop {
                                let next = rx.lock().await.recv().await;
                                match next {
                                    Some(value) => sum += value,
                                    None => break sum,
                                }
                            }
                        }));
                    }
                }
                Share::AsyncChannel => {
                    let (tx, rx) = async_channel::bounded(CAPACITY);
                    producer = tokio::spawn(async move {
                        for i in 0..items {
                            tx.send(i).await.expect("receiver alive");
                        }
                    });
                    for _ in 0..CONSUMERS {
                        let rx = rx.clone();
                        consumers.push(tokio::spawn(async move {
                            let mut sum = 0u64;
                            while let Ok(value) = rx.recv().await {
                                sum += value;
                            }
                            sum
                        }));
                    }
                }
            }
            producer.await.expect("producer");
            let mut sum = 0;
            for consumer in consumers {
                sum += consumer.await.expect("consumer");
            }
            sum
        });
        assert_eq!(sum, items * (items - 1) / 2, "{}", self.name());
        sum
    }
}

fn criterion_group_of<'a>(
    c: &'a mut Criterion,
    name: &str,
    items: u64,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(items));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group
}

fn one_consumer(c: &mut Criterion, name: &str, rt: &Runtime, targets: &[(One, One)]) {
    let mut group = criterion_group_of(c, name, ITEMS);
    for one in [
        One::Guard,
        One::Batch,
        One::RecvCommit,
        One::TokioRecv,
        One::TokioRecvMany,
        One::Peekable,
    ] {
        group.bench_function(one.name(), |b| b.iter(|| one.run(rt, ITEMS)));
    }
    group.finish();

    if !selected(name) {
        return;
    }
    let items = if test_mode() { 10_000 } else { ROUND_ITEMS };
    for &(ours, anchor) in targets {
        let result = paired(
            ROUNDS,
            || time(|| ours.run(rt, items)),
            || time(|| anchor.run(rt, items)),
        );
        record_paired(name, ours.name(), anchor.name(), &result);
    }
}

fn recv_commit(c: &mut Criterion) {
    use One::*;
    one_consumer(
        c,
        "txn_channel/recv_commit_5m",
        &current_thread(),
        &[
            (Guard, TokioRecv),
            (Batch, TokioRecv),
            (Guard, TokioRecvMany),
            (Batch, TokioRecvMany),
            (RecvCommit, Peekable),
        ],
    );
    one_consumer(
        c,
        "txn_channel/recv_commit_two_workers",
        &two_workers(),
        &[
            (Guard, TokioRecvMany),
            (Batch, TokioRecvMany),
            (Guard, TokioRecv),
        ],
    );
}

fn share(c: &mut Criterion) {
    let name = "txn_channel/share_4_consumers";
    let rt = two_workers();
    let mut group = criterion_group_of(c, name, SHARE_ITEMS);
    for share in [
        Share::Unordered,
        Share::PerKey,
        Share::MutexMpsc,
        Share::AsyncChannel,
    ] {
        group.bench_function(share.name(), |b| b.iter(|| share.run(&rt, SHARE_ITEMS)));
    }
    group.finish();

    if !selected(name) {
        return;
    }
    let items = if test_mode() { 10_000 } else { ROUND_ITEMS };
    for (ours, anchor) in [
        (Share::Unordered, Share::MutexMpsc),
        (Share::Unordered, Share::AsyncChannel),
        (Share::PerKey, Share::Unordered),
    ] {
        let result = paired(
            ROUNDS,
            || time(|| ours.run(&rt, items)),
            || time(|| anchor.run(&rt, items)),
        );
        record_paired(name, ours.name(), anchor.name(), &result);
    }
}

criterion_group!(benches, recv_commit, share);
criterion_main!(benches);
