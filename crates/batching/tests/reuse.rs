//! Buffer reuse, for every batcher: a one-item batch does not reserve
//! `max_items`, and a consumed batch's buffer carries the next batch.

mod common;

use std::time::Duration;

use async_patterns_batching::BatchConfig;
use common::{KINDS, pair, paused_runtime};
use futures::StreamExt;

fn config(max_items: usize) -> BatchConfig<u64> {
    BatchConfig::builder()
        .max_items(max_items)
        .max_delay(Duration::from_millis(10))
        .build()
        .unwrap()
}

#[test]
fn a_one_item_batch_does_not_reserve_max_items() {
    for kind in KINDS {
        paused_runtime().block_on(async {
            let (tx, mut rx) = pair(kind, config(100_000));
            tx.send(1).await;
            let items = rx.next().await.unwrap().into_vec();
            assert_eq!(items, [1]);
            assert!(
                items.capacity() <= 32,
                "{kind:?}: {} reserved",
                items.capacity()
            );
        });
    }
}

#[test]
fn a_dropped_batch_buffer_carries_the_next_batch() {
    for kind in KINDS {
        paused_runtime().block_on(async {
            let (tx, mut rx) = pair(kind, config(8));
            tx.send_many((0..8).collect()).await;
            let first = rx.next().await.unwrap();
            let buffer = first.as_ptr();
            drop(first);
            tx.send_many((8..16).collect()).await;
            let second = rx.next().await.unwrap();
            assert_eq!(&*second, (8..16).collect::<Vec<_>>(), "{kind:?}");
            assert_eq!(second.as_ptr(), buffer, "{kind:?}: buffer not reused");
        });
    }
}

#[test]
fn a_drained_batch_keeps_its_buffer_for_reuse() {
    for kind in KINDS {
        paused_runtime().block_on(async {
            let (tx, mut rx) = pair(kind, config(4));
            tx.send_many((0..4).collect()).await;
            let mut first = rx.next().await.unwrap();
            let buffer = first.as_ptr();
            let owned: Vec<u64> = first.drain().collect();
            assert_eq!(owned, [0, 1, 2, 3]);
            drop(first);
            tx.send_many((4..8).collect()).await;
            assert_eq!(rx.next().await.unwrap().as_ptr(), buffer, "{kind:?}");
        });
    }
}

#[test]
fn a_foreign_oversized_buffer_is_not_kept() {
    paused_runtime().block_on(async {
        let (tx, mut rx) = async_patterns_batching::ChannelBuilder::new()
            .batch_config(config(4))
            .build()
            .unwrap();
        rx.recycle(Vec::with_capacity(1_000));
        tx.send(1).await.unwrap();
        drop(tx);
        let batch = rx.recv().await.unwrap().into_vec();
        assert!(
            batch.capacity() < 1_000,
            "kept a buffer far bigger than a batch"
        );
    });
}
