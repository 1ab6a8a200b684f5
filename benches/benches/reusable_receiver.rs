//! `reusable_receiver`: the per-item cost of `ReusableReceiver::stream()`
//! (plain and replay mode) beside the loop it wraps — a hand-written
//! `recv_many(&mut buf, 32)` loop over the same tokio mpsc channel — and
//! beside `tokio_stream::wrappers::ReceiverStream`, for `u64` and `String`
//! items, on a current-thread runtime and on 2 workers; and the cost of
//! recovering the receiver for the next attempt beside the seed recipe (a
//! oneshot sent from `Drop`, recovered by spinning), with the previous stream
//! dropped promptly or late.
//!
//! Criterion times one pipeline of each implementation; the targets are
//! judged on paired rounds (`paired` + `record_paired`): ours and the anchor
//! back to back, alternating which goes first, the median of the per-round
//! ratios with their min–max. On the current-thread runtime a round's cost
//! is the CPU time of the thread that runs it (the whole pipeline runs
//! there), which descheduling on a shared machine does not inflate; on 2
//! workers it is the wall time. A filter given to the bench binary
//! (`cargo bench --bench reusable_receiver -- plain_`) also selects which
//! paired groups run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_patterns_benches::{
    Better, Metric, paired, record_metric, record_paired, secs, selected, test_mode, time,
};
use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver};
use async_patterns_testkit::{cpu, seed};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::{Stream, StreamExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Items per pipeline timed by criterion.
const ITEMS: u64 = 1_000_000;
/// Items per pipeline of a paired round: tens of milliseconds a side, long enough for the
/// clock and the runtime's warm-up, short enough that a round rarely
/// straddles a burst of load from elsewhere on a shared machine.
const ROUND_ITEMS: u64 = 500_000;
/// Paired rounds per target (odd, so the median is one round's ratio).
const ROUNDS: usize = 21;
const CAPACITY: usize = 1_024;
const ACK_EVERY: u64 = 1_024;
/// The batch size of the anchor loop, and of the stream's own batches.
const RECV_MANY: usize = 32;

/// An item type of the pipelines: `u64` (`Copy`), and `String`, whose
/// values are moved and dropped.
trait Item: Clone + Send + 'static {
    const NAME: &'static str;
    fn make(i: u64) -> Self;
    fn value(&self) -> u64;
}

impl Item for u64 {
    const NAME: &'static str = "u64";
    fn make(i: u64) -> Self {
        i
    }
    fn value(&self) -> u64 {
        *self
    }
}

impl Item for String {
    const NAME: &'static str = "string";
    fn make(i: u64) -> Self {
        // A short payload: one small allocation per item, as an id or a
        // key would be.
        let mut s = String::with_capacity(16);
        s.push_str("item-");
        s.push(char::from(b'0' + (i % 10) as u8));
        s
    }
    fn value(&self) -> u64 {
        self.len() as u64
    }
}

/// How a paired round is timed.
#[derive(Clone, Copy)]
enum Clock {
    /// The CPU time of this thread: for a current-thread runtime, which
    /// runs every task of the pipeline here.
    ThreadCpu,
    Wall,
}

impl Clock {
    fn cost(self, f: impl FnOnce() -> u64) -> f64 {
        match self {
            Clock::ThreadCpu => {
                let start = cpu::thread_time();
                black_box(f());
                secs(cpu::thread_time() - start)
            }
            Clock::Wall => time(f),
        }
    }
}

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

async fn produce<T: Item>(tx: mpsc::Sender<T>, items: u64) {
    for i in 0..items {
        if tx.send(T::make(i)).await.is_err() {
            return;
        }
    }
}

async fn sum<T: Item, S: Stream<Item = T> + Unpin>(mut stream: S) -> u64 {
    let mut sum = 0u64;
    while let Some(x) = stream.next().await {
        sum = sum.wrapping_add(x.value());
    }
    sum
}

/// ours: a plain-mode stream.
async fn ours_plain<T: Item>(rx: mpsc::Receiver<T>) -> u64 {
    let mut reusable = ReusableReceiver::new(rx);
    sum(reusable.stream()).await
}

/// The anchor the stream wraps: `recv_many` into a reused buffer, 32 at a
/// time, then the items one by one.
async fn recv_many_loop<T: Item>(mut rx: mpsc::Receiver<T>) -> u64 {
    let mut buf = Vec::with_capacity(RECV_MANY);
    let mut sum = 0u64;
    while rx.recv_many(&mut buf, RECV_MANY).await > 0 {
        for x in buf.drain(..) {
            sum = sum.wrapping_add(x.value());
        }
    }
    sum
}

async fn receiver_stream<T: Item>(rx: mpsc::Receiver<T>) -> u64 {
    sum(ReceiverStream::new(rx)).await
}

/// The same loop as [`sum`] in replay mode, acknowledging everything every
/// `ACK_EVERY` items.
async fn ours_replay<T: Item>(rx: mpsc::Receiver<T>) -> u64 {
    let config = ReplayConfig::builder()
        .max_items(4 * ACK_EVERY as usize)
        .build()
        .expect("valid config");
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    let (mut sum, mut n) = (0u64, 0u64);
    while let Some(x) = stream.next().await {
        sum = sum.wrapping_add(x.value());
        n += 1;
        if n % ACK_EVERY == 0 {
            lease.ack_all().expect("the lease is in force");
        }
    }
    lease.ack_all().expect("the lease is in force");
    sum
}

/// One pipeline: a producer task sending `items` item by item into a
/// bounded channel, and a consumer task running `consume` on the receiver.
fn pipeline<T, F, Fut>(rt: &Runtime, items: u64, consume: F) -> u64
where
    T: Item,
    F: FnOnce(mpsc::Receiver<T>) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    rt.block_on(async {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let producer = tokio::spawn(produce::<T>(tx, items));
        let consumer = tokio::spawn(consume(rx));
        let sum = consumer.await.expect("consumer");
        producer.await.expect("producer");
        sum
    })
}

/// How one consumer is run, by name.
#[derive(Clone, Copy)]
enum Consumer {
    Plain,
    Replay,
    RecvMany,
    ReceiverStream,
}

impl Consumer {
    fn name(self) -> &'static str {
        match self {
            Consumer::Plain => "ours",
            Consumer::Replay => "ours:replay",
            Consumer::RecvMany => "recv_many(32) loop",
            Consumer::ReceiverStream => "ReceiverStream",
        }
    }

    fn run<T: Item>(self, rt: &Runtime, items: u64) -> u64 {
        match self {
            Consumer::Plain => pipeline(rt, items, ours_plain::<T>),
            Consumer::Replay => pipeline(rt, items, ours_replay::<T>),
            Consumer::RecvMany => pipeline(rt, items, recv_many_loop::<T>),
            Consumer::ReceiverStream => pipeline(rt, items, receiver_stream::<T>),
        }
    }
}

/// One group: criterion times each consumer once per iteration; then each
/// `(ours, anchor)` pair is judged on paired rounds.
fn group<T: Item>(
    c: &mut Criterion,
    name: &str,
    (rt, clock): (&Runtime, Clock),
    consumers: &[Consumer],
    targets: &[(Consumer, Consumer)],
) {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(ITEMS))
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for consumer in consumers {
        group.bench_function(consumer.name(), |b| b.iter(|| consumer.run::<T>(rt, ITEMS)));
    }
    group.finish();

    if !selected(name) {
        return;
    }
    for (ours, anchor) in targets {
        let result = paired(
            ROUNDS,
            || clock.cost(|| ours.run::<T>(rt, ROUND_ITEMS)),
            || clock.cost(|| anchor.run::<T>(rt, ROUND_ITEMS)),
        );
        record_paired(name, ours.name(), anchor.name(), &result);
    }
}

fn per_item_of<T: Item>(c: &mut Criterion) {
    use Consumer::*;
    for (runtime, rt, clock) in [
        ("current_thread", current_thread(), Clock::ThreadCpu),
        ("two_workers", two_workers(), Clock::Wall),
    ] {
        let suffix = if T::NAME == "u64" {
            runtime.to_string()
        } else {
            format!("{}_{runtime}", T::NAME)
        };
        group::<T>(
            c,
            &format!("reusable_receiver/plain_{suffix}"),
            (&rt, clock),
            &[Plain, RecvMany, ReceiverStream],
            &[(Plain, RecvMany), (Plain, ReceiverStream)],
        );
        group::<T>(
            c,
            &format!("reusable_receiver/replay_{suffix}"),
            (&rt, clock),
            &[Replay, RecvMany, ReceiverStream],
            &[(Replay, RecvMany), (Replay, ReceiverStream)],
        );
    }
}

fn per_item(c: &mut Criterion) {
    per_item_of::<u64>(c);
    per_item_of::<String>(c);
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
    let group = "reusable_receiver/recovery_late_drop";
    if !selected(group) {
        return;
    }
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
