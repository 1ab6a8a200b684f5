//! `reusable_receiver`: the per-item cost of `ReusableReceiver::stream()`
//! (plain and replay mode) beside `tokio_stream::wrappers::ReceiverStream`
//! over the same channel, and the cost of recovering the receiver for the
//! next attempt beside the seed recipe (a oneshot sent from `Drop`,
//! recovered by spinning), with the previous stream dropped promptly or
//! late.

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_patterns_benches::{Better, Metric, record_metric, test_mode};
use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
use async_patterns_testkit::{cpu, seed};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::{Stream, StreamExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const ITEMS: u64 = 5_000_000;
const CAPACITY: usize = 1_024;
const ACK_EVERY: u64 = 1_024;

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn two_workers() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn produce(tx: mpsc::Sender<u64>) {
    for i in 0..ITEMS {
        if tx.send(i).await.is_err() {
            return;
        }
    }
}

async fn sum<S: Stream<Item = u64> + Unpin>(mut stream: S) -> u64 {
    let mut sum = 0u64;
    while let Some(x) = stream.next().await {
        sum = sum.wrapping_add(x);
    }
    sum
}

/// The same loop as [`sum`], acknowledging everything every `ACK_EVERY` items.
async fn sum_replay(rx: mpsc::Receiver<u64>) -> u64 {
    let config = ReplayConfig::builder()
        .max_items(4 * ACK_EVERY as usize)
        .build()
        .expect("valid config");
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    let (mut sum, mut n) = (0u64, 0u64);
    while let Some(x) = stream.next().await {
        sum = sum.wrapping_add(x);
        n += 1;
        if n % ACK_EVERY == 0 {
            lease.ack_all().expect("the lease is in force");
        }
    }
    lease.ack_all().expect("the lease is in force");
    sum
}

/// One 5M-item pipeline: a producer task sending item by item into a
/// bounded channel, and a consumer task running `consume` on the receiver.
fn pipeline<F, Fut>(rt: &Runtime, consume: F) -> u64
where
    F: FnOnce(mpsc::Receiver<u64>) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    rt.block_on(async {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let producer = tokio::spawn(produce(tx));
        let consumer = tokio::spawn(consume(rx));
        let sum = consumer.await.expect("consumer");
        producer.await.expect("producer");
        sum
    })
}

fn per_item(c: &mut Criterion) {
    for (runtime, rt) in [
        ("current_thread", current_thread()),
        ("two_workers", two_workers()),
    ] {
        let mut group = c.benchmark_group(format!("reusable_receiver/plain_{runtime}"));
        group
            .throughput(Throughput::Elements(ITEMS))
            .sample_size(10)
            .measurement_time(Duration::from_secs(8));
        group.bench_function("ours", |b| {
            b.iter(|| {
                pipeline(&rt, |rx| async move {
                    let mut reusable = ReusableReceiver::new(rx);
                    sum(reusable.stream()).await
                })
            })
        });
        group.bench_function("ReceiverStream", |b| {
            b.iter(|| pipeline(&rt, |rx| sum(ReceiverStream::new(rx))))
        });
        group.finish();

        let mut group = c.benchmark_group(format!("reusable_receiver/replay_{runtime}"));
        group
            .throughput(Throughput::Elements(ITEMS))
            .sample_size(10)
            .measurement_time(Duration::from_secs(8));
        group.bench_function("ours:replay", |b| b.iter(|| pipeline(&rt, sum_replay)));
        group.bench_function("ReceiverStream", |b| {
            b.iter(|| pipeline(&rt, |rx| sum(ReceiverStream::new(rx))))
        });
        group.finish();
    }
}

/// A failed attempt whose stream was dropped at once, then the next
/// attempt's first item: the whole cost of handing the receiver over.
fn prompt_recovery(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("reusable_receiver/recovery_prompt_drop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ours", |b| {
        let (tx, rx) = mpsc::channel(4);
        let mut reusable = ReusableReceiver::new(rx);
        b.iter(|| {
            rt.block_on(async {
                tx.try_send(1u64).expect("room");
                tx.try_send(2u64).expect("room");
                let mut failed = reusable.stream();
                black_box(failed.next().await);
                drop(failed);
                let mut next = reusable.stream();
                black_box(next.next().await)
            })
        })
    });
    group.bench_function("seed recipe", |b| {
        let (tx, rx) = mpsc::channel(4);
        let mut recipe = seed::ReusableReceiver::new(rx);
        b.iter(|| {
            rt.block_on(async {
                tx.try_send(1u64).expect("room");
                tx.try_send(2u64).expect("room");
                let mut failed = recipe.stream();
                black_box(failed.next().await);
                drop(failed);
                let mut next = recipe.stream();
                black_box(next.next().await)
            })
        })
    });
    group.finish();
}

/// The failed attempt's stream is dropped `LATE` after the failure, by
/// another task (as hyper may drop a request body): how long until the next
/// attempt has its first item, and how much CPU the waiting thread burns
/// meanwhile. Medians over a few runs (the machine is shared: a mean would
/// follow the worst descheduling), reported with `record_metric`.
fn late_recovery(_c: &mut Criterion) {
    const LATE: Duration = Duration::from_millis(20);
    let runs = if test_mode() { 1 } else { 20 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let (mut ours_wall, mut ours_cpu) = (Vec::new(), Vec::new());
    let (mut seed_wall, mut seed_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (wall, cpu) = rt.block_on(async {
            let (tx, rx) = mpsc::channel(4);
            tx.send(1u64).await.expect("room");
            tx.send(2u64).await.expect("room");
            let mut reusable = ReusableReceiver::new(rx);
            let mut failed = reusable.stream();
            failed.next().await;
            let holder = tokio::spawn(async move {
                tokio::time::sleep(LATE).await;
                drop(failed);
            });
            let (start, cpu_start) = (Instant::now(), cpu::thread_time());
            let mut next = reusable.stream();
            black_box(next.next().await);
            let measured = (start.elapsed(), cpu::thread_time() - cpu_start);
            holder.await.expect("holder");
            measured
        });
        ours_wall.push(wall);
        ours_cpu.push(cpu);

        let (wall, cpu) = rt.block_on(async {
            let (tx, rx) = mpsc::channel(4);
            tx.send(1u64).await.expect("room");
            tx.send(2u64).await.expect("room");
            let mut recipe = seed::ReusableReceiver::new(rx);
            let mut failed = recipe.stream();
            failed.next().await;
            let holder = tokio::spawn(async move {
                tokio::time::sleep(LATE).await;
                drop(failed);
            });
            let (start, cpu_start) = (Instant::now(), cpu::thread_time());
            let mut next = recipe.stream(); // spins until the drop
            black_box(next.next().await);
            let measured = (start.elapsed(), cpu::thread_time() - cpu_start);
            holder.await.expect("holder");
            measured
        });
        seed_wall.push(wall);
        seed_cpu.push(cpu);
    }

    let group = "reusable_receiver/recovery_late_drop";
    let median = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_nanos() as f64
    };
    for (implementation, wall, cpu) in [
        ("ours", ours_wall, ours_cpu),
        ("seed recipe", seed_wall, seed_cpu),
    ] {
        record_metric(Metric {
            group,
            implementation,
            metric: "time to the next attempt's first item",
            value: median(wall),
            unit: "ns",
            better: Better::Lower,
        });
        record_metric(Metric {
            group,
            implementation,
            metric: "CPU time of the waiting thread",
            value: median(cpu),
            unit: "ns",
            better: Better::Lower,
        });
    }
}

criterion_group!(benches, per_item, prompt_recovery, late_recovery);
criterion_main!(benches);
