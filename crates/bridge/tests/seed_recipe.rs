//! The seed recipe, as an integration test: a sync callback, called by a
//! library from inside an async task, `try_send`s into the bridge, and an
//! async consumer drains it (as a `Stream`, in batches, as the seed did with
//! `ReceiverStream` and `chunks_timeout`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_patterns_bridge::{ChannelBuilder, Overflow, Sender, TrySendError, channel};
use common::{current_thread, multi_thread, within};
use futures::StreamExt;

/// A sync callback interface of a library we do not control.
trait Callback: Send + Sync {
    fn on_record(&self, record: u64);
}

/// "The library": async code that calls the sync callback for each record.
async fn library_run(callback: &dyn Callback, records: u64) {
    for record in 0..records {
        callback.on_record(record);
        if record % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// The seed's callback: a sender stored where the sync function can reach
/// it, `try_send`, and a decision for the error case.
struct Forward {
    sender: Sender<u64>,
    full: AtomicU64,
}

impl Callback for Forward {
    fn on_record(&self, record: u64) {
        match self.sender.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(record)) => {
                // The seed leaves this case to the reader. On a multi-thread
                // runtime the callback may wait for room: `send_blocking`
                // does so through `block_in_place`.
                self.full.fetch_add(1, Ordering::Relaxed);
                self.sender.send_blocking(record).expect("consumer gone");
            }
            Err(e) => panic!("consumer gone: {e}"),
        }
    }
}

#[test]
fn sync_callback_in_a_task_try_sends_and_an_async_consumer_drains_it() {
    const RECORDS: u64 = if cfg!(miri) { 500 } else { 10_000 };
    within(|| {
        multi_thread(2).block_on(async {
            let (sender, receiver) = channel::<u64>(1000);
            let consumer = tokio::spawn(async move {
                // Batches, as the seed did with `chunks_timeout`.
                let mut total = 0u64;
                let mut batches = receiver.ready_chunks(100);
                let mut next = 0u64;
                while let Some(batch) = batches.next().await {
                    for record in batch {
                        assert_eq!(record, next, "out of order");
                        next += 1;
                        total += record;
                    }
                }
                total
            });
            let producer = tokio::spawn(async move {
                let callback = Forward {
                    sender,
                    full: AtomicU64::new(0),
                };
                library_run(&callback, RECORDS).await;
            });
            producer.await.unwrap();
            assert_eq!(consumer.await.unwrap(), RECORDS * (RECORDS - 1) / 2);
        });
    });
}

#[test]
fn on_a_current_thread_runtime_a_lossy_bridge_never_waits_and_counts_losses() {
    // On a current-thread runtime the consumer cannot run while the callback
    // does: with `DropOldest` the callback never waits, the newest records
    // survive, and the losses are counted.
    within(|| {
        current_thread().block_on(async {
            let (sender, mut receiver) = ChannelBuilder::<u64>::new()
                .capacity(100)
                .overflow(Overflow::DropOldest)
                .build()
                .unwrap();
            struct Lossy(Sender<u64>);
            impl Callback for Lossy {
                fn on_record(&self, record: u64) {
                    self.0.try_send(record).unwrap();
                }
            }
            let callback = Lossy(sender.clone());
            let producer = tokio::spawn(async move {
                for record in 0..1_000 {
                    callback.on_record(record); // no yield: the consumer is starved
                }
            });
            producer.await.unwrap();
            drop(sender);
            let mut got = Vec::new();
            let lost = receiver.metrics().dropped;
            while let Some(r) = receiver.recv().await {
                got.push(r);
            }
            assert_eq!(got, (900..1_000).collect::<Vec<_>>());
            assert_eq!(lost, 900);
        });
    });
}

#[test]
fn the_seed_recipe_with_a_timeout_bounded_blocking_send() {
    // A callback that may wait a little, on a multi-thread runtime.
    within(|| {
        multi_thread(2).block_on(async {
            let (sender, receiver) = channel::<u64>(8);
            let consumer = tokio::spawn(receiver.fold(0u64, |n, _| async move { n + 1 }));
            tokio::spawn(async move {
                for record in 0..1_000 {
                    sender
                        .send_timeout(record, Duration::from_secs(30))
                        .expect("the consumer keeps up within 30 s");
                }
            })
            .await
            .unwrap();
            assert_eq!(consumer.await.unwrap(), 1_000);
        });
    });
}
