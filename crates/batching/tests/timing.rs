//! Timing and flush reasons, on paused time, for every batcher: a batch
//! never waits longer than `max_delay` after its first item, and each batch
//! says truly why it closed.

mod common;

use std::time::Duration;

use async_patterns_batching::{BatchConfig, FlushReason};
use common::{KINDS, Kind, pair, paused_runtime};
use futures::StreamExt;
use tokio::time::{Instant, sleep};

const DELAY: Duration = Duration::from_millis(10);

fn config(max_items: usize) -> BatchConfig<u32> {
    BatchConfig::builder()
        .max_items(max_items)
        .max_delay(DELAY)
        .build()
        .unwrap()
}

fn for_each_kind(test: impl Fn(Kind) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
    for kind in KINDS {
        let rt = paused_runtime();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(3600), test(kind))
                .await
                .unwrap_or_else(|_| panic!("{kind:?}: hung"));
        });
    }
}

#[test]
fn partial_batch_goes_out_exactly_max_delay_after_its_first_item() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(100));
            let start = Instant::now();
            tokio::spawn(async move {
                tx.send(1).await;
                sleep(Duration::from_millis(3)).await;
                tx.send(2).await;
                std::future::pending::<()>().await;
            });
            let batch = rx.next().await.unwrap();
            assert_eq!(&*batch, [1, 2], "{kind:?}");
            assert_eq!(batch.reason(), FlushReason::Deadline, "{kind:?}");
            assert_eq!(batch.oldest(), start, "{kind:?}");
            assert_eq!(start.elapsed(), DELAY, "{kind:?}");
            assert_eq!(batch.age(), DELAY, "{kind:?}");
        })
    });
}

#[test]
fn no_batch_waits_longer_than_max_delay_under_an_irregular_trickle() {
    // Gaps in ms between items: bursts, pauses shorter and longer than the delay.
    let gaps: Vec<u64> = vec![
        0, 1, 1, 4, 9, 0, 0, 12, 3, 3, 3, 3, 25, 1, 0, 7, 11, 2, 2, 30,
    ];
    for_each_kind(move |kind| {
        let gaps = gaps.clone();
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(4));
            let start = Instant::now();
            let n = gaps.len() as u32;
            let producer = tokio::spawn(async move {
                let mut sent_at = Vec::new();
                for (i, gap) in gaps.into_iter().enumerate() {
                    sleep(Duration::from_millis(gap)).await;
                    sent_at.push(Instant::now());
                    tx.send(i as u32).await;
                }
                sent_at
            });
            let mut seen = Vec::new();
            while let Some(batch) = rx.next().await {
                let now = Instant::now();
                assert!(
                    now - batch.oldest() <= DELAY,
                    "{kind:?}: {batch:?} waited too long"
                );
                match batch.reason() {
                    FlushReason::Deadline => assert_eq!(now - batch.oldest(), DELAY),
                    FlushReason::Full => assert_eq!(batch.len(), 4),
                    FlushReason::Closed => {}
                    other => panic!("{kind:?}: unexpected {other:?}"),
                }
                seen.push((batch.oldest(), batch.to_vec()));
            }
            let sent_at = producer.await.unwrap();
            // Each batch's `oldest` is when its first item was sent.
            for (oldest, items) in &seen {
                assert_eq!(*oldest, sent_at[items[0] as usize], "{kind:?}");
            }
            let all: Vec<u32> = seen.into_iter().flat_map(|(_, items)| items).collect();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "{kind:?}");
            assert!(start.elapsed() >= Duration::from_millis(100));
        })
    });
}

#[test]
fn full_batch_goes_out_at_once() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(3));
            let start = Instant::now();
            tx.send_many(vec![1, 2, 3, 4]).await;
            let batch = rx.next().await.unwrap();
            assert_eq!(
                (&*batch, batch.reason()),
                (&[1, 2, 3][..], FlushReason::Full)
            );
            assert_eq!(start.elapsed(), Duration::ZERO, "{kind:?}");
            drop(tx);
        })
    });
}

#[test]
fn tail_goes_out_with_closed_at_once_when_the_input_ends() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(10));
            let start = Instant::now();
            tx.send_many(vec![1, 2]).await;
            drop(tx);
            let batch = rx.next().await.unwrap();
            assert_eq!(
                (&*batch, batch.reason()),
                (&[1, 2][..], FlushReason::Closed)
            );
            assert_eq!(
                start.elapsed(),
                Duration::ZERO,
                "{kind:?}: waited for the timer"
            );
            assert!(rx.next().await.is_none());
            assert!(rx.next().await.is_none(), "{kind:?}: not fused");
        })
    });
}

#[test]
fn flush_closes_the_partial_batch_at_once() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(10));
            let start = Instant::now();
            tx.send_many(vec![1, 2]).await;
            rx.flusher().flush();
            let batch = rx.next().await.unwrap();
            assert_eq!((&*batch, batch.reason()), (&[1, 2][..], FlushReason::Flush));
            assert_eq!(start.elapsed(), Duration::ZERO, "{kind:?}");
            assert_eq!(rx.metrics().batches.flush, 1);
            drop(tx);
        })
    });
}

#[test]
fn flush_from_another_task_wakes_a_waiting_consumer() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(10));
            let flusher = rx.flusher();
            let start = Instant::now();
            tokio::spawn(async move {
                tx.send(7).await;
                sleep(Duration::from_millis(2)).await;
                flusher.flush();
                std::future::pending::<()>().await;
            });
            let batch = rx.next().await.unwrap();
            assert_eq!((&*batch, batch.reason()), (&[7][..], FlushReason::Flush));
            assert_eq!(start.elapsed(), Duration::from_millis(2), "{kind:?}");
        })
    });
}

#[test]
fn flush_of_an_empty_batch_does_nothing() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(10));
            rx.flusher().flush();
            // Nothing to flush: the next poll finds nothing and waits.
            assert!(futures::poll!(rx.next()).is_pending(), "{kind:?}");
            let start = Instant::now();
            tx.send(1).await;
            let batch = rx.next().await.unwrap();
            // The earlier request did not leak onto this batch.
            assert_eq!(batch.reason(), FlushReason::Deadline, "{kind:?}");
            assert_eq!(start.elapsed(), DELAY);
            assert_eq!(rx.metrics().batches.flush, 0);
        })
    });
}

#[test]
fn weight_closes_a_batch_before_it_goes_over_and_oversized_items_go_alone() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let config = BatchConfig::builder()
                .max_items(100)
                .max_delay(DELAY)
                .max_weight(10, |w: &u32| *w as usize)
                .build()
                .unwrap();
            let (tx, mut rx) = pair(kind, config);
            tx.send_many(vec![4, 4, 3, 6, 25, 5, 5, 1]).await;
            drop(tx);
            let mut got = Vec::new();
            while let Some(batch) = rx.next().await {
                got.push((batch.to_vec(), batch.weight(), batch.reason()));
            }
            assert_eq!(
                got,
                [
                    (vec![4, 4], 8, FlushReason::Weight),  // 3 would make 11
                    (vec![3, 6], 9, FlushReason::Weight),  // 25 is oversized: closes it
                    (vec![25], 25, FlushReason::Weight),   // alone
                    (vec![5, 5], 10, FlushReason::Weight), // exactly at the limit
                    (vec![1], 1, FlushReason::Closed),
                ],
                "{kind:?}"
            );
            let metrics = rx.metrics();
            assert_eq!(metrics.oversized, 1);
            assert_eq!(metrics.batches.weight, 4);
            assert_eq!(metrics.items.total(), 8);
        })
    });
}

#[test]
fn metrics_count_batches_items_sizes_and_ages_by_reason() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(2));
            let outcome = rx.outcome();
            tx.send_many(vec![1, 2, 3]).await;
            let full = rx.next().await.unwrap();
            assert_eq!(full.reason(), FlushReason::Full);
            let late = rx.next().await.unwrap();
            assert_eq!(late.reason(), FlushReason::Deadline);
            tx.send(4).await;
            drop(tx);
            let tail = rx.next().await.unwrap();
            assert_eq!(tail.reason(), FlushReason::Closed);
            assert!(rx.next().await.is_none());

            let summary = outcome.await.unwrap();
            assert!(summary.finished, "{kind:?}");
            let m = summary.value;
            assert_eq!(
                (m.batches.full, m.batches.deadline, m.batches.closed),
                (1, 1, 1)
            );
            assert_eq!((m.items.full, m.items.deadline, m.items.closed), (2, 1, 1));
            assert_eq!(
                (m.batch_size.min, m.batch_size.max, m.batch_size.total),
                (1, 2, 4)
            );
            assert_eq!(m.batch_age.max, DELAY);
            assert_eq!(m.batch_age.min, Duration::ZERO);
            assert_eq!((m.handed_back, m.dropped, m.rejected), (0, 0, 0));
            assert_eq!((m.sent, m.delivered, m.queued), (4, 4, 0), "{kind:?}");
        })
    });
}

#[test]
fn zero_delay_hands_out_whatever_was_ready() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let config = BatchConfig::builder()
                .max_items(10)
                .max_delay(Duration::ZERO)
                .build()
                .unwrap();
            let (tx, mut rx) = pair(kind, config);
            tx.send_many(vec![1, 2, 3]).await;
            let start = Instant::now();
            let batch = rx.next().await.unwrap();
            assert_eq!(&*batch, [1, 2, 3], "{kind:?}");
            assert_eq!(start.elapsed(), Duration::ZERO);
            drop(tx);
        })
    });
}

#[test]
fn a_batch_opening_while_an_earlier_timer_runs_still_closes_on_its_own_deadline() {
    for_each_kind(|kind| {
        Box::pin(async move {
            let (tx, mut rx) = pair(kind, config(2));
            let start = Instant::now();
            tokio::spawn(async move {
                tx.send(1).await;
                sleep(Duration::from_millis(1)).await;
                tx.send(2).await; // full: the timer armed for 1 is now early
                sleep(Duration::from_millis(4)).await;
                tx.send(3).await; // opens at 5 ms, due at 15 ms
                std::future::pending::<()>().await;
            });
            let full = rx.next().await.unwrap();
            assert_eq!((&*full, full.reason()), (&[1, 2][..], FlushReason::Full));
            assert_eq!(start.elapsed(), Duration::from_millis(1));
            let late = rx.next().await.unwrap();
            assert_eq!((&*late, late.reason()), (&[3][..], FlushReason::Deadline));
            assert_eq!(start.elapsed(), Duration::from_millis(15), "{kind:?}");
        })
    });
}
