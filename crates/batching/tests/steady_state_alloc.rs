//! Steady state allocates nothing per batch: once the first batches have
//! grown their buffers, consumed batches hand them back and the next ones
//! reuse them. Counted with a counting global allocator, on the test's own
//! thread (a current-thread runtime runs every task there).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use async_patterns_batching::{BatchConfig, BatchExt};
use futures::StreamExt;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the arguments it was given,
// so `System`'s guarantees are ours; counting touches only a thread-local
// `Cell` with a const initializer, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
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

const WARM_UP: usize = 100;
const MEASURED: usize = 1_000;
const MAX_ITEMS: usize = 64;

fn config() -> BatchConfig<u64> {
    BatchConfig::builder()
        .max_items(MAX_ITEMS)
        .max_delay(Duration::from_millis(10))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Allocations on this thread while `MEASURED` batches go through, after
/// `WARM_UP` batches.
async fn measure<S>(mut batches: S) -> u64
where
    S: futures::Stream<Item = async_patterns_batching::Batch<u64>> + Unpin,
{
    for _ in 0..WARM_UP {
        assert_eq!(batches.next().await.unwrap().len(), MAX_ITEMS);
    }
    let before = allocations();
    for _ in 0..MEASURED {
        let batch = batches.next().await.unwrap();
        assert_eq!(batch.len(), MAX_ITEMS);
    }
    allocations() - before
}

#[test]
fn steady_state_allocates_nothing_per_batch() {
    // The batching channel, fed by a task sending item by item.
    let channel = runtime().block_on(async {
        let (tx, rx) = async_patterns_batching::ChannelBuilder::new()
            .batch_config(config())
            .build()
            .unwrap();
        let producer = tokio::spawn(async move {
            let mut i = 0u64;
            while tx.send(i).await.is_ok() {
                i += 1;
            }
        });
        let n = measure(rx).await;
        producer.abort();
        n
    });
    assert_eq!(channel, 0, "batching channel");

    // The stream adapter over a stream that allocates nothing itself.
    let stream = runtime().block_on(measure(futures::stream::iter(0u64..).batched(config())));
    assert_eq!(stream, 0, "stream adapter");

    // The mpsc adapter: tokio's channel itself allocates a block now and
    // then; the adapter adds nothing to what a bare `recv_many` loop over
    // the same items costs.
    let adapter = runtime().block_on(async {
        let (tx, rx) = counting_producer();
        let n = measure(async_patterns_batching::batched(rx, config())).await;
        tx.abort();
        n
    });
    let bare = runtime().block_on(async {
        let (tx, mut rx) = counting_producer();
        let mut buf = Vec::with_capacity(MAX_ITEMS);
        let mut received = 0;
        while received < WARM_UP * MAX_ITEMS {
            buf.clear();
            received += rx.recv_many(&mut buf, MAX_ITEMS).await;
        }
        let before = allocations();
        while received < (WARM_UP + MEASURED) * MAX_ITEMS {
            buf.clear();
            received += rx.recv_many(&mut buf, MAX_ITEMS).await;
        }
        let n = allocations() - before;
        tx.abort();
        n
    });
    assert!(
        adapter <= bare + (MEASURED / 100) as u64,
        "mpsc adapter: {adapter} allocations for {MEASURED} batches, a bare recv_many loop {bare}"
    );
}

fn counting_producer() -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<u64>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(2 * MAX_ITEMS);
    let producer = tokio::spawn(async move {
        let mut i = 0u64;
        while tx.send(i).await.is_ok() {
            i += 1;
        }
    });
    (producer, rx)
}
