//! Cancellation: every batcher polled inside `select!` against a timer and
//! abandoned at a random point. Every item whose send succeeded is either in
//! a batch that came out or handed back by `into_remainder` — in order,
//! exactly once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_batching::BatchConfig;
use common::{KINDS, Kind, pair, paused_runtime};
use futures::StreamExt;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Plan {
    max_items: usize,
    delay_ms: u64,
    /// Pause before each send, in ms.
    gaps: Vec<u64>,
    /// How long each `select!` round lets `next()` run before the timer wins.
    timers: Vec<u64>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        1usize..6,
        1u64..20,
        prop::collection::vec(0u64..8, 0..80),
        prop::collection::vec(0u64..10, 1..60),
    )
        .prop_map(|(max_items, delay_ms, gaps, timers)| Plan {
            max_items,
            delay_ms,
            gaps,
            timers,
        })
}

fn run(kind: Kind, plan: &Plan) -> Result<(), TestCaseError> {
    let config = BatchConfig::builder()
        .max_items(plan.max_items)
        .max_delay(Duration::from_millis(plan.delay_ms))
        .build()
        .unwrap();
    let rt = paused_runtime();
    let (sent, received, remainder, cancelled, metrics) = rt.block_on(async {
        let (tx, mut rx) = pair(kind, config);
        let outcome = rx.outcome();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let producer = tokio::spawn({
            let sent = sent.clone();
            let gaps = plan.gaps.clone();
            async move {
                for (i, gap) in gaps.into_iter().enumerate() {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    if tx.send(i as u32).await {
                        // No await between a successful send and the record,
                        // so aborting the task cannot split them.
                        sent.lock().unwrap().push(i as u32);
                    }
                }
                std::future::pending::<()>().await;
            }
        });
        let mut received = Vec::new();
        let mut cancelled = 0;
        for timer in &plan.timers {
            tokio::select! {
                batch = rx.next() => match batch {
                    Some(batch) => received.extend(batch.iter().copied()),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(*timer)) => cancelled += 1,
            }
        }
        // Stop here: no more sends, then take the batcher apart.
        producer.abort();
        let _ = producer.await;
        let remainder = rx.into_remainder();
        let sent = sent.lock().unwrap().clone();
        let metrics = outcome.await.unwrap().value;
        (sent, received, remainder, cancelled, metrics)
    });
    let mut all = received.clone();
    all.extend(&remainder);
    prop_assert_eq!(
        &all,
        &sent,
        "{:?}: received {:?} + remainder {:?} after {} cancelled polls",
        kind,
        received,
        remainder,
        cancelled
    );
    // The metrics account for every item the batcher took in.
    prop_assert_eq!(metrics.items.total(), received.len() as u64);
    prop_assert_eq!(metrics.dropped, 0);
    if kind == Kind::Channel {
        prop_assert_eq!(metrics.handed_back, remainder.len() as u64);
    } else {
        // The adapters hand back what they had pulled; the rest was still
        // in their input.
        prop_assert!(metrics.handed_back <= remainder.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn next_cancelled_in_select_then_into_remainder_loses_nothing(plan in plan()) {
        for kind in KINDS {
            run(kind, &plan)?;
        }
    }
}

#[test]
fn dropping_an_adapter_counts_its_buffered_items_as_dropped() {
    for kind in KINDS {
        let rt = paused_runtime();
        rt.block_on(async {
            let config = BatchConfig::builder()
                .max_items(10)
                .max_delay(Duration::from_secs(1))
                .build()
                .unwrap();
            let (tx, mut rx) = pair(kind, config);
            let outcome = rx.outcome();
            tx.send_many(vec![1, 2, 3]).await;
            tokio::select! {
                _ = rx.next() => panic!("{kind:?}: nothing is due"),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            drop(rx);
            let summary = tokio::time::timeout(Duration::from_secs(10), outcome)
                .await
                .expect("outcome hung")
                .unwrap();
            assert!(!summary.finished, "{kind:?}");
            assert_eq!(summary.value.dropped, 3, "{kind:?}");
            assert_eq!(summary.value.items.total(), 0, "{kind:?}");
        });
    }
}

#[test]
fn into_remainder_counts_items_as_handed_back() {
    for kind in KINDS {
        let rt = paused_runtime();
        rt.block_on(async {
            let config = BatchConfig::builder()
                .max_items(2)
                .max_delay(Duration::from_secs(1))
                .build()
                .unwrap();
            let (tx, mut rx) = pair(kind, config);
            let outcome = rx.outcome();
            tx.send_many(vec![1, 2, 3]).await;
            assert_eq!(&*rx.next().await.unwrap(), [1, 2]);
            let _ = futures::poll!(rx.next());
            assert_eq!(rx.into_remainder(), [3], "{kind:?}");
            let summary = outcome.await.unwrap();
            assert!(!summary.finished);
            // The poll took 3 from the input (or, for the channel, it was queued).
            assert_eq!(summary.value.handed_back, 1, "{kind:?}");
            assert_eq!(summary.value.dropped, 0, "{kind:?}");
            drop(tx);
        });
    }
}

#[test]
fn a_consumer_that_panics_reports_its_buffered_items_as_dropped() {
    for kind in KINDS {
        let rt = paused_runtime();
        rt.block_on(async {
            let config = BatchConfig::builder()
                .max_items(2)
                .max_delay(Duration::from_secs(1))
                .build()
                .unwrap();
            let (tx, mut rx) = pair(kind, config);
            let outcome = rx.outcome();
            tx.send_many(vec![1, 2, 3]).await;
            let consumer = tokio::spawn(async move {
                let first = rx.next().await.unwrap();
                assert_eq!(&*first, [1, 2]);
                // Poll once more so that 3 is buffered, then fail.
                let _ = futures::poll!(rx.next());
                panic!("injected: the consumer fails");
            });
            assert!(consumer.await.unwrap_err().is_panic(), "{kind:?}");
            let summary = outcome.await.unwrap();
            assert!(!summary.finished, "{kind:?}");
            assert_eq!(summary.value.items.total(), 2, "{kind:?}");
            assert_eq!(summary.value.dropped, 1, "{kind:?}");
            drop(tx);
        });
    }
}
