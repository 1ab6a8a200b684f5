//! Streams that end with a return value: outcomes at the end, on early drop,
//! under cancellation, and the fold invariant under proptest.

use std::time::Duration;

use async_patterns_core::outcome::{self, Dropped, Summary};
use futures::StreamExt;
use proptest::prelude::*;

#[tokio::test]
async fn producer_outcome_arrives_after_the_last_item() {
    let (items, mut outcome) = outcome::stream(|tx| async move {
        for i in 0..5u32 {
            tx.send(i).await.unwrap();
        }
        "summary"
    });
    assert_eq!(outcome.try_take(), None, "settled before the stream ran");
    let got: Vec<u32> = items.collect().await;
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(outcome.await, Ok("summary"));
}

#[tokio::test]
async fn producer_can_end_with_an_error_value() {
    let (items, outcome) = outcome::stream(|tx| async move {
        tx.send(1).await.unwrap();
        Err::<(), _>("upstream reset")
    });
    assert_eq!(items.collect::<Vec<_>>().await, [1]);
    assert_eq!(outcome.await, Ok(Err("upstream reset")));
}

#[tokio::test]
async fn dropping_the_stream_early_reports_dropped_and_never_hangs() {
    let (mut items, outcome) = outcome::stream(|tx| async move {
        loop {
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    items.next().await;
    drop(items);
    let settled = tokio::time::timeout(Duration::from_secs(10), outcome).await;
    assert_eq!(settled.expect("outcome hung"), Err(Dropped));
}

#[tokio::test]
async fn a_never_polled_stream_dropped_reports_dropped() {
    let (items, outcome) = outcome::stream(|tx: outcome::Yielder<u8>| async move {
        drop(tx);
        7
    });
    drop(items);
    assert_eq!(outcome.await, Err(Dropped));
}

#[tokio::test(start_paused = true)]
async fn next_cancelled_in_select_loses_no_item() {
    let (mut items, outcome) = outcome::stream(|tx| async move {
        for i in 0..20u32 {
            // A slow producer: every other item comes after a delay.
            if i % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            tx.send(i).await.unwrap();
        }
        20u32
    });
    let mut got = Vec::new();
    let mut timeouts = 0;
    loop {
        tokio::select! {
            item = items.next() => match item {
                Some(i) => got.push(i),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(10)) => timeouts += 1,
        }
    }
    assert!(timeouts > 0, "the select never cancelled a next()");
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert_eq!(outcome.await, Ok(20));
}

#[tokio::test]
async fn yielder_moved_to_another_task_still_delivers() {
    let (items, outcome) = outcome::stream(|tx| async move {
        let worker = tokio::spawn(async move {
            for i in 0..3 {
                tx.send(i).await.unwrap();
            }
        });
        worker.await.unwrap();
    });
    assert_eq!(items.collect::<Vec<_>>().await, [0, 1, 2]);
    assert_eq!(outcome.await, Ok(()));
}

#[tokio::test]
async fn send_after_the_stream_is_gone_hands_the_item_back() {
    let (leak_tx, leak_rx) = tokio::sync::oneshot::channel();
    let (mut items, outcome) = outcome::stream(|tx: outcome::Yielder<u8>| async move {
        // Smuggle the yielder out of the producer, then return.
        leak_tx.send(tx).unwrap();
    });
    // The producer returns on the first poll, but the stream cannot end while
    // a yielder lives: it might still send.
    assert!(futures::poll!(items.next()).is_pending());
    assert_eq!(outcome.await, Ok(()));
    let tx = leak_rx.await.unwrap();
    drop(items);
    assert_eq!(tx.send(9).await.unwrap_err().into_inner(), 9);
}

#[tokio::test]
async fn summarize_reports_finished_at_the_end() {
    let (items, outcome) = outcome::summarize(futures::stream::iter(1..=4u64), 0u64, |sum, x| {
        *sum += *x;
    });
    assert_eq!(items.count().await, 4);
    assert_eq!(
        outcome.await,
        Ok(Summary {
            value: 10,
            finished: true
        })
    );
}

proptest! {
    /// Whatever point the consumer stops at, the summary is the fold of
    /// exactly the items it received, and `finished` tells whether it saw
    /// the end.
    #[test]
    fn summary_is_the_fold_of_received_items(len in 0usize..50, take in 0usize..60) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            let (mut items, outcome) =
                outcome::summarize(futures::stream::iter(0..len), Vec::new(), |seen, x| seen.push(*x));
            let mut received = Vec::new();
            let mut ended = false;
            for _ in 0..take {
                match items.next().await {
                    Some(x) => received.push(x),
                    None => { ended = true; break; }
                }
            }
            drop(items);
            let summary = outcome.await.unwrap();
            prop_assert_eq!(summary.value, received);
            prop_assert_eq!(summary.finished, ended);
            Ok(())
        })?;
    }

    /// The producer's items arrive complete and in order; its return value
    /// arrives if the consumer drained the stream (or stopped at most one item
    /// short, the producer having already returned), `Dropped` otherwise.
    #[test]
    fn producer_items_arrive_in_order(len in 0u32..40, take in 0usize..50) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            let (mut items, outcome) = outcome::stream(|tx| async move {
                for i in 0..len {
                    tx.send(i).await.unwrap();
                }
                len
            });
            let mut received = Vec::new();
            let mut ended = false;
            for _ in 0..take {
                match items.next().await {
                    Some(x) => received.push(x),
                    None => { ended = true; break; }
                }
            }
            drop(items);
            prop_assert_eq!(&received, &(0..received.len() as u32).collect::<Vec<_>>());
            let got = outcome.await;
            if ended {
                prop_assert_eq!(got, Ok(len));
            } else if got.is_ok() {
                // The producer may finish one item ahead of its consumer.
                prop_assert_eq!(got, Ok(len));
                prop_assert!(received.len() + 1 >= len as usize);
            } else {
                prop_assert_eq!(got, Err(Dropped));
            }
            Ok(())
        })?;
    }
}
