//! Behaviours of the two stream adapters that the shared harness does not
//! reach: taking them apart mid-way with items read ahead, pinned inputs,
//! fused ends, outcome handles.

use std::time::Duration;

use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
use async_patterns_core::outcome::Dropped;
use futures::StreamExt;
use futures::stream::FusedStream;

fn weighed(max_items: usize, max_weight: usize) -> BatchConfig<u32> {
    BatchConfig::builder()
        .max_items(max_items)
        .max_delay(Duration::from_secs(60))
        .max_weight(max_weight, |w: &u32| *w as usize)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn weighed_mpsc_adapter_hands_back_items_read_ahead_in_order() {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for w in [1, 1, 1, 1, 1, 1, 1] {
        tx.send(w).await.unwrap();
    }
    let mut batches = async_patterns_batching::batched(rx, weighed(100, 2));
    // One bulk receive took all seven; the first two went out (by weight).
    assert_eq!(batches.next().await.unwrap().len(), 2);
    tx.send(9).await.unwrap();
    let (taken, mut rx) = batches.into_remainder();
    assert_eq!(taken, [1, 1, 1, 1, 1]);
    assert_eq!(rx.try_recv(), Ok(9));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_item_waiting_its_turn_is_handed_back_first() {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for w in [2, 3, 50, 4] {
        tx.send(w).await.unwrap();
    }
    let mut batches = async_patterns_batching::batched(rx, weighed(10, 10));
    let first = batches.next().await.unwrap();
    assert_eq!(
        (&*first, first.reason()),
        (&[2, 3][..], FlushReason::Weight)
    );
    // [50] is closed and waiting, 4 is read ahead.
    let (taken, _rx) = batches.into_remainder();
    assert_eq!(taken, [50, 4]);
}

#[tokio::test(start_paused = true)]
async fn stream_adapter_accepts_a_pinned_input_that_is_not_unpin() {
    let input = futures::stream::unfold(0u32, |n| async move {
        tokio::task::yield_now().await;
        (n < 5).then_some((n, n + 1))
    });
    let config = BatchConfig::new(2, Duration::from_millis(1)).unwrap();
    let mut batches = std::pin::pin!(input.batched(config));
    let mut all = Vec::new();
    while let Some(batch) = batches.next().await {
        all.extend(batch.iter().copied());
    }
    assert_eq!(all, [0, 1, 2, 3, 4]);
    assert!(batches.is_terminated());
}

#[tokio::test(start_paused = true)]
async fn adapters_are_fused_and_report_their_size() {
    let config = BatchConfig::new(2, Duration::from_millis(1)).unwrap();
    let mut batches = futures::stream::iter(0..5).batched(config);
    assert_eq!(futures::Stream::size_hint(&batches), (1, Some(5)));
    while batches.next().await.is_some() {}
    assert!(batches.is_terminated());
    assert_eq!(futures::Stream::size_hint(&batches), (0, Some(0)));
    assert!(batches.next().await.is_none());

    let (tx, rx) = tokio::sync::mpsc::channel::<u8>(4);
    let mut batches = async_patterns_batching::batched(
        rx,
        BatchConfig::new(2, Duration::from_millis(1)).unwrap(),
    );
    drop(tx);
    assert!(batches.next().await.is_none());
    assert!(batches.is_terminated());
    assert!(batches.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_replaced_outcome_reports_dropped_and_a_late_one_settles_at_once() {
    let config = BatchConfig::new(2, Duration::from_millis(1)).unwrap();
    let mut batches = futures::stream::iter(0..3).batched(config);
    let replaced = batches.outcome();
    let current = batches.outcome();
    assert_eq!(replaced.await, Err(Dropped));
    while batches.next().await.is_some() {}
    let summary = current.await.unwrap();
    assert!(summary.finished);
    assert_eq!(summary.value.items.total(), 3);
    let late = batches.outcome().await.unwrap();
    assert_eq!(late, summary);
}

#[tokio::test(start_paused = true)]
async fn items_pulled_before_a_cancelled_poll_go_out_in_the_next_batch() {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let config = BatchConfig::new(3, Duration::from_millis(50)).unwrap();
    let mut batches = async_patterns_batching::batched(rx, config);
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    // The poll takes 1 and 2 out of the channel, then is cancelled.
    tokio::select! {
        _ = batches.next() => panic!("not due"),
        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
    }
    assert!(batches.get_ref().is_empty(), "the items left the channel");
    tx.send(3).await.unwrap();
    let batch = batches.next().await.unwrap();
    assert_eq!(
        (&*batch, batch.reason()),
        (&[1, 2, 3][..], FlushReason::Full)
    );
}
