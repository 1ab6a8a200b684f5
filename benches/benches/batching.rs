//! `batching`: batching a bounded channel with `async-patterns-batching`,
//! beside the usual recipes.
//!
//! - `saturated_*`: 5M `u64` through a bounded channel (1,024 slots), in
//!   batches of at most 512 closed after 10 ms, on a current-thread runtime
//!   and on a 2-worker runtime. The producer sends item by item; the
//!   consumer sums each batch. Ours: the batching channel (`ours:channel`),
//!   the `mpsc::Receiver` adapter (`ours:mpsc`), the generic stream adapter
//!   over a `ReceiverStream` (`ours:stream`). Anchors: tokio-stream
//!   `chunks_timeout` and futures `ready_chunks` over a `ReceiverStream`,
//!   futures-batch `ChunksTimeout`, and a hand-written `recv_many` loop
//!   (no deadline, the floor of what a tokio channel allows).
//! - `many_producers_*`: 4 producer tasks on a 2-worker runtime feed one
//!   consumer, 500,000 items each (`u64`, or `String`s made with
//!   `to_string()`), batches of at most 64 or 512 closed after 5 ms, in a
//!   channel of 1,024 slots (and, for small capacities, 64 and 128 slots
//!   with batches of 64). Ours: the batching channel. Anchors: tokio-stream
//!   `chunks_timeout` over a `ReceiverStream`, and the loop a user writes by
//!   hand — `recv_many(&mut buf, max_items - buf.len())` with the same
//!   deadline (a partial batch goes out 5 ms after its first item), the
//!   `recv_many` wrapped in `timeout_at` while a batch is open. Every
//!   comparison is also run as paired rounds (ours and the anchor back to
//!   back, alternating which goes first; `record_paired`).
//! - `trickle`: 2,000 items, one every 20 ms, with `max_items` 100,000 and a
//!   10 ms delay, so that every batch holds one item. Paused time keeps the
//!   wall time small. The figure is the total bytes allocated from the
//!   channel's creation to the end, counted by a counting global allocator
//!   (fresh allocations plus growth of reallocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_patterns_batching::{Batch, BatchConfig, BatchExt, ChannelBuilder};
use async_patterns_benches::{
    Better, MIN_ROUNDS, Metric, paired, record_metric, record_paired, time,
};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

// ---------------------------------------------------------------------------
// Counting allocator (used by `trickle` only; a relaxed load otherwise).

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn note(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the arguments it was given,
// so `System`'s guarantees are ours; counting only touches atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size.saturating_sub(layout.size()));
        // SAFETY: `ptr` and `layout` come from this allocator, i.e. `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, i.e. `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes and allocations made while `f` runs.
fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    BYTES.store(0, Ordering::Relaxed);
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    (
        out,
        BYTES.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    )
}

// ---------------------------------------------------------------------------
// The pipelines: a producer task sending 0..items one by one, a consumer task
// summing batches; the result is (items received, their sum).

const ITEMS: u64 = 5_000_000;
const MAX_ITEMS: usize = 512;
const DELAY: Duration = Duration::from_millis(10);
const CAPACITY: usize = 1024;

type Tally = (u64, u64);

fn tally_of<'a>(tally: &mut Tally, batch: impl IntoIterator<Item = &'a u64>) {
    for &item in batch {
        tally.0 += 1;
        tally.1 = tally.1.wrapping_add(item);
    }
}

fn config(max_items: usize, delay: Duration) -> BatchConfig<u64> {
    BatchConfig::builder()
        .max_items(max_items)
        .max_delay(delay)
        .build()
        .expect("valid config")
}

/// Sends `0..items` into a tokio channel, sleeping `gap` before each item
/// if it is not zero.
fn mpsc_producer(items: u64, gap: Duration) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let producer = tokio::spawn(async move {
        for i in 0..items {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            tx.send(i).await.expect("consumer alive");
        }
    });
    (producer, rx)
}

/// Runs `consume` on the receiving end of a tokio channel fed by
/// [`mpsc_producer`].
async fn over_mpsc<F, Fut>(items: u64, gap: Duration, consume: F) -> Tally
where
    F: FnOnce(mpsc::Receiver<u64>) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let (producer, rx) = mpsc_producer(items, gap);
    let consumer = tokio::spawn(consume(rx));
    producer.await.expect("producer");
    consumer.await.expect("consumer")
}

#[derive(Clone, Copy)]
struct Case {
    items: u64,
    max_items: usize,
    gap: Duration,
}

async fn ours_channel(case: Case) -> Tally {
    let (tx, mut rx) = ChannelBuilder::new()
        .batch_config(config(case.max_items, DELAY))
        .capacity(CAPACITY.max(case.max_items))
        .build()
        .expect("valid channel");
    let producer = tokio::spawn(async move {
        for i in 0..case.items {
            if !case.gap.is_zero() {
                tokio::time::sleep(case.gap).await;
            }
            tx.send(i).await.expect("consumer alive");
        }
    });
    let consumer = tokio::spawn(async move {
        let mut tally = (0, 0);
        while let Some(batch) = rx.recv().await {
            tally_of(&mut tally, &batch);
        }
        tally
    });
    producer.await.expect("producer");
    consumer.await.expect("consumer")
}

async fn ours_mpsc(case: Case) -> Tally {
    over_mpsc(case.items, case.gap, move |rx| async move {
        let mut batches = async_patterns_batching::batched(rx, config(case.max_items, DELAY));
        let mut tally = (0, 0);
        while let Some(batch) = batches.next().await {
            tally_of(&mut tally, &batch);
        }
        tally
    })
    .await
}

async fn ours_stream(case: Case) -> Tally {
    over_mpsc(case.items, case.gap, move |rx| async move {
        let mut batches = ReceiverStream::new(rx).batched(config(case.max_items, DELAY));
        let mut tally = (0, 0);
        while let Some(batch) = batches.next().await {
            let batch: Batch<u64> = batch;
            tally_of(&mut tally, &batch);
        }
        tally
    })
    .await
}

async fn chunks_timeout(case: Case) -> Tally {
    over_mpsc(case.items, case.gap, move |rx| async move {
        let chunks =
            tokio_stream::StreamExt::chunks_timeout(ReceiverStream::new(rx), case.max_items, DELAY);
        let mut chunks = std::pin::pin!(chunks);
        let mut tally = (0, 0);
        while let Some(chunk) = chunks.next().await {
            tally_of(&mut tally, &chunk);
        }
        tally
    })
    .await
}

async fn ready_chunks(case: Case) -> Tally {
    over_mpsc(case.items, case.gap, move |rx| async move {
        let mut chunks = ReceiverStream::new(rx).ready_chunks(case.max_items);
        let mut tally = (0, 0);
        while let Some(chunk) = chunks.next().await {
            tally_of(&mut tally, &chunk);
        }
        tally
    })
    .await
}

async fn futures_batch(case: Case) -> Tally {
    over_mpsc(case.items, case.gap, move |rx| async move {
        let mut chunks =
            futures_batch::ChunksTimeout::new(ReceiverStream::new(rx), case.max_items, DELAY);
        let mut tally = (0, 0);
        while let Some(chunk) = chunks.next().await {
            tally_of(&mut tally, &chunk);
        }
        tally
    })
    .await
}

async fn recv_many_loop(case: Case) -> Tally {
    over_mpsc(case.items, case.gap, move |mut rx| async move {
        let mut buf = Vec::with_capacity(case.max_items);
        let mut tally = (0, 0);
        while rx.recv_many(&mut buf, case.max_items).await > 0 {
            tally_of(&mut tally, &buf);
            buf.clear();
        }
        tally
    })
    .await
}

type Pipeline = fn(Case) -> std::pin::Pin<Box<dyn Future<Output = Tally> + Send>>;

/// Every implementation, by the name the report shows.
fn pipelines() -> Vec<(&'static str, Pipeline)> {
    vec![
        ("ours:channel", |c| Box::pin(ours_channel(c))),
        ("ours:mpsc", |c| Box::pin(ours_mpsc(c))),
        ("ours:stream", |c| Box::pin(ours_stream(c))),
        ("chunks_timeout", |c| Box::pin(chunks_timeout(c))),
        ("ready_chunks", |c| Box::pin(ready_chunks(c))),
        ("futures-batch", |c| Box::pin(futures_batch(c))),
        ("recv_many loop", |c| Box::pin(recv_many_loop(c))),
    ]
}

fn expected(items: u64) -> Tally {
    (items, items * (items.saturating_sub(1)) / 2)
}

// ---------------------------------------------------------------------------

fn saturated(c: &mut Criterion) {
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let two_workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let runtimes: [(&str, &Runtime); 2] = [
        ("batching/saturated_current_thread", &current_thread),
        ("batching/saturated_two_workers", &two_workers),
    ];
    let case = Case {
        items: ITEMS,
        max_items: MAX_ITEMS,
        gap: Duration::ZERO,
    };
    for (group_name, rt) in runtimes {
        let mut group = c.benchmark_group(group_name);
        group
            .throughput(Throughput::Elements(ITEMS))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for (name, pipeline) in pipelines() {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let tally = rt.block_on(pipeline(case));
                    assert_eq!(tally, expected(ITEMS), "{name} lost or duplicated items");
                    black_box(tally)
                })
            });
        }
        group.finish();

        let run = |pipeline: Pipeline| {
            time(|| {
                let tally = rt.block_on(pipeline(case));
                assert_eq!(tally, expected(ITEMS), "lost or duplicated items");
            })
        };
        let find = |wanted: &str| {
            pipelines()
                .into_iter()
                .find(|(name, _)| *name == wanted)
                .expect("a pipeline of that name")
                .1
        };
        let anchor = find("chunks_timeout");
        for ours in ["ours:channel", "ours:mpsc"] {
            let result = paired(ROUNDS, || run(find(ours)), || run(anchor));
            record_paired(group_name, ours, "chunks_timeout", &result);
        }
    }
}

// ---------------------------------------------------------------------------
// Many producers: `PRODUCERS` tasks on a 2-worker runtime feed one consumer.

/// Producer tasks in the many-producer groups.
const PRODUCERS: u64 = 4;
/// Items each producer sends.
const PER_PRODUCER: u64 = 500_000;
/// `max_delay` of the many-producer groups.
const MANY_DELAY: Duration = Duration::from_millis(5);

/// An item type of the many-producer groups: made by the producer, folded
/// into the tally by the consumer.
trait Item: Send + 'static {
    fn make(i: u64) -> Self;
    fn value(&self) -> u64;
}

impl Item for u64 {
    fn make(i: u64) -> Self {
        i
    }
    fn value(&self) -> u64 {
        *self
    }
}

impl Item for String {
    fn make(i: u64) -> Self {
        i.to_string()
    }
    fn value(&self) -> u64 {
        self.len() as u64
    }
}

fn fold<'a, I: Item>(tally: &mut Tally, batch: impl IntoIterator<Item = &'a I>) {
    for item in batch {
        tally.0 += 1;
        tally.1 = tally.1.wrapping_add(item.value());
    }
}

#[derive(Clone, Copy)]
struct Many {
    max_items: usize,
    capacity: usize,
}

fn many_expected<I: Item>() -> Tally {
    let mut tally: Tally = (0, 0);
    for i in 0..PRODUCERS * PER_PRODUCER {
        tally.0 += 1;
        tally.1 = tally.1.wrapping_add(I::make(i).value());
    }
    tally
}

async fn many_ours<I: Item>(case: Many) -> Tally {
    let (tx, mut rx) = ChannelBuilder::new()
        .max_items(case.max_items)
        .max_delay(MANY_DELAY)
        .capacity(case.capacity)
        .build()
        .expect("valid channel");
    let consumer = tokio::spawn(async move {
        let mut tally = (0, 0);
        while let Some(batch) = rx.recv().await {
            fold::<I>(&mut tally, &*batch);
        }
        tally
    });
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in p * PER_PRODUCER..(p + 1) * PER_PRODUCER {
                    tx.send(I::make(i)).await.expect("consumer alive");
                }
            })
        })
        .collect();
    drop(tx);
    for p in producers {
        p.await.expect("producer");
    }
    consumer.await.expect("consumer")
}

/// `PRODUCERS` tasks sending into one tokio channel of `capacity`.
fn many_mpsc<I: Item>(capacity: usize) -> mpsc::Receiver<I> {
    let (tx, rx) = mpsc::channel(capacity);
    for p in 0..PRODUCERS {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in p * PER_PRODUCER..(p + 1) * PER_PRODUCER {
                tx.send(I::make(i)).await.expect("consumer alive");
            }
        });
    }
    rx
}

async fn many_chunks_timeout<I: Item>(case: Many) -> Tally {
    let rx = many_mpsc::<I>(case.capacity);
    tokio::spawn(async move {
        let chunks = tokio_stream::StreamExt::chunks_timeout(
            ReceiverStream::new(rx),
            case.max_items,
            MANY_DELAY,
        );
        let mut chunks = std::pin::pin!(chunks);
        let mut tally = (0, 0);
        while let Some(chunk) = chunks.next().await {
            fold::<I>(&mut tally, &chunk);
        }
        tally
    })
    .await
    .expect("consumer")
}

/// The anchor a user writes by hand: `recv_many` into a buffer, with the
/// same limits — at most `max_items` per batch, and a partial batch goes out
/// `max_delay` after its first item arrived.
async fn many_recv_many<I: Item>(case: Many) -> Tally {
    let mut rx = many_mpsc::<I>(case.capacity);
    tokio::spawn(async move {
        let mut buf: Vec<I> = Vec::with_capacity(case.max_items);
        let mut tally = (0, 0);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let room = case.max_items - buf.len();
            let n = match deadline {
                None => rx.recv_many(&mut buf, room).await,
                Some(at) => match tokio::time::timeout_at(at, rx.recv_many(&mut buf, room)).await {
                    Ok(n) => n,
                    Err(_elapsed) => {
                        fold::<I>(&mut tally, &buf);
                        buf.clear();
                        deadline = None;
                        continue;
                    }
                },
            };
            if n == 0 {
                break;
            }
            if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + MANY_DELAY);
            }
            if buf.len() >= case.max_items {
                fold::<I>(&mut tally, &buf);
                buf.clear();
                deadline = None;
            }
        }
        fold::<I>(&mut tally, &buf);
        tally
    })
    .await
    .expect("consumer")
}

type ManyPipeline = fn(Many) -> std::pin::Pin<Box<dyn Future<Output = Tally> + Send>>;

fn many_pipelines<I: Item>() -> [(&'static str, ManyPipeline); 3] {
    [
        ("ours:channel", |c| Box::pin(many_ours::<I>(c))),
        ("chunks_timeout", |c| Box::pin(many_chunks_timeout::<I>(c))),
        ("recv_many loop", |c| Box::pin(many_recv_many::<I>(c))),
    ]
}

/// Rounds of each paired comparison: more than the minimum, because the
/// machine may be shared and the median of more rounds moves less.
const ROUNDS: usize = MIN_ROUNDS + 2;

fn many_group<I: Item>(c: &mut Criterion, rt: &Runtime, group_name: &str, case: Many) {
    let expected = many_expected::<I>();
    let pipelines = many_pipelines::<I>();
    {
        let mut group = c.benchmark_group(group_name);
        group
            .throughput(Throughput::Elements(PRODUCERS * PER_PRODUCER))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for (name, pipeline) in pipelines {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let tally = rt.block_on(pipeline(case));
                    assert_eq!(tally, expected, "{name} lost or duplicated items");
                    black_box(tally)
                })
            });
        }
        group.finish();
    }
    let run = |pipeline: ManyPipeline| {
        time(|| {
            let tally = rt.block_on(pipeline(case));
            assert_eq!(tally, expected, "lost or duplicated items");
        })
    };
    let (ours, anchors) = pipelines.split_first().expect("ours first");
    for (anchor, pipeline) in anchors {
        let result = paired(ROUNDS, || run(ours.1), || run(*pipeline));
        record_paired(group_name, ours.0, anchor, &result);
    }
}

fn many_producers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let cases: [(&str, Many, bool); 6] = [
        (
            "batching/many_producers_u64_64",
            Many {
                max_items: 64,
                capacity: CAPACITY,
            },
            false,
        ),
        (
            "batching/many_producers_u64_512",
            Many {
                max_items: 512,
                capacity: CAPACITY,
            },
            false,
        ),
        (
            "batching/many_producers_string_64",
            Many {
                max_items: 64,
                capacity: CAPACITY,
            },
            true,
        ),
        (
            "batching/many_producers_string_512",
            Many {
                max_items: 512,
                capacity: CAPACITY,
            },
            true,
        ),
        (
            "batching/many_producers_u64_64_capacity_128",
            Many {
                max_items: 64,
                capacity: 128,
            },
            false,
        ),
        (
            "batching/many_producers_u64_64_capacity_64",
            Many {
                max_items: 64,
                capacity: 64,
            },
            false,
        ),
    ];
    for (name, case, strings) in cases {
        if strings {
            many_group::<String>(c, &rt, name, case);
        } else {
            many_group::<u64>(c, &rt, name, case);
        }
    }
}

const TRICKLE_ITEMS: u64 = 2_000;
const TRICKLE_MAX_ITEMS: usize = 100_000;
const TRICKLE_GAP: Duration = Duration::from_millis(20);

fn trickle(_: &mut Criterion) {
    let case = Case {
        items: TRICKLE_ITEMS,
        max_items: TRICKLE_MAX_ITEMS,
        gap: TRICKLE_GAP,
    };
    for (name, pipeline) in pipelines() {
        if name == "futures-batch" {
            // Its timer (futures-timer) runs on real time, which paused
            // time cannot drive: 2,000 × 20 ms would take 40 s.
            continue;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let (tally, bytes, allocations) = count_allocations(|| rt.block_on(pipeline(case)));
        assert_eq!(
            tally,
            expected(TRICKLE_ITEMS),
            "{name} lost or duplicated items"
        );
        for (metric, value, unit) in [
            ("bytes allocated", bytes, "bytes"),
            ("allocations", allocations, ""),
        ] {
            record_metric(Metric {
                group: "batching/trickle",
                implementation: name,
                metric,
                value: value as f64,
                unit,
                better: Better::Lower,
            });
        }
    }
}

criterion_group!(benches, many_producers, saturated, trickle);
criterion_main!(benches);
