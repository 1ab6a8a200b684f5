//! proptest over every batcher: for any sequence of sends, weights, flushes
//! and pauses, the concatenated batches are the input (order kept, nothing
//! lost, nothing duplicated), no batch is empty or over `max_items`, and no
//! batch is over `max_weight` unless it is a single oversized item.

mod common;

use std::time::Duration;

use async_patterns_batching::{BatchConfig, FlushReason};
use common::{KINDS, Kind, pair, paused_runtime};
use futures::StreamExt;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Send one item of this weight.
    Send(usize),
    /// Send these weights in one `send_many` (item by item for the
    /// adapters).
    SendMany(Vec<usize>),
    Flush,
    /// Let time pass, in ms.
    Pause(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..12).prop_map(Op::Send),
        2 => prop::collection::vec(0usize..12, 0..12).prop_map(Op::SendMany),
        1 => Just(Op::Flush),
        2 => (0u64..15).prop_map(Op::Pause),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    max_items: usize,
    max_weight: Option<usize>,
    delay_ms: u64,
    ops: Vec<Op>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..8,
        prop::option::of(1usize..25),
        0u64..12,
        prop::collection::vec(op(), 0..60),
    )
        .prop_map(|(max_items, max_weight, delay_ms, ops)| Setup {
            max_items,
            max_weight,
            delay_ms,
            ops,
        })
}

/// Items are `(id, weight)`.
type Item = (u32, usize);

fn run(kind: Kind, setup: &Setup) -> Result<(), TestCaseError> {
    let mut builder = BatchConfig::<Item>::builder()
        .max_items(setup.max_items)
        .max_delay(Duration::from_millis(setup.delay_ms));
    if let Some(limit) = setup.max_weight {
        builder = builder.max_weight(limit, |item: &Item| item.1);
    }
    let config = builder.build().unwrap();
    let rt = paused_runtime();
    let (sent, batches, metrics) = rt.block_on(async {
        let (tx, mut rx) = pair(kind, config);
        let flusher = rx.flusher();
        let outcome = rx.outcome();
        let consumer = tokio::spawn(async move {
            let mut batches = Vec::new();
            while let Some(batch) = rx.next().await {
                batches.push((batch.to_vec(), batch.weight(), batch.reason()));
            }
            batches
        });
        let mut sent = Vec::new();
        let mut next_id = 0u32;
        let mut item = |weight| {
            next_id += 1;
            (next_id, weight)
        };
        for op in &setup.ops {
            match op {
                Op::Send(w) => {
                    let it = item(*w);
                    assert!(tx.send(it).await);
                    sent.push(it);
                }
                Op::SendMany(ws) => {
                    let items: Vec<Item> = ws.iter().map(|w| item(*w)).collect();
                    sent.extend(&items);
                    assert!(tx.send_many(items).await);
                }
                Op::Flush => flusher.flush(),
                Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            }
        }
        drop(tx);
        let batches = tokio::time::timeout(Duration::from_secs(3600), consumer)
            .await
            .expect("consumer hung")
            .unwrap();
        let summary = outcome.await.unwrap();
        assert!(summary.finished);
        (sent, batches, summary.value)
    });

    let all: Vec<Item> = batches.iter().flat_map(|(b, _, _)| b.clone()).collect();
    prop_assert_eq!(
        &all,
        &sent,
        "{:?}: concatenation differs from the input",
        kind
    );
    for (items, weight, reason) in &batches {
        prop_assert!(!items.is_empty(), "{:?}: empty batch", kind);
        prop_assert!(
            items.len() <= setup.max_items,
            "{:?}: {:?} over max_items",
            kind,
            items
        );
        let total: usize = items.iter().map(|i| i.1).sum();
        match setup.max_weight {
            Some(limit) => {
                prop_assert_eq!(*weight, total);
                let oversized_alone = items.len() == 1 && total > limit;
                prop_assert!(
                    total <= limit || oversized_alone,
                    "{:?}: {:?} over max_weight {}",
                    kind,
                    items,
                    limit
                );
                if oversized_alone {
                    prop_assert_eq!(*reason, FlushReason::Weight);
                }
            }
            None => prop_assert_eq!(*weight, items.len()),
        }
        if *reason == FlushReason::Full {
            prop_assert_eq!(items.len(), setup.max_items);
        }
    }
    // Only the last batch can be the tail.
    for (_, _, reason) in batches.iter().rev().skip(1) {
        prop_assert_ne!(*reason, FlushReason::Closed);
    }
    prop_assert_eq!(metrics.items.total(), sent.len() as u64);
    prop_assert_eq!(metrics.batches.total(), batches.len() as u64);
    for reason in [
        FlushReason::Full,
        FlushReason::Weight,
        FlushReason::Deadline,
        FlushReason::Flush,
        FlushReason::Closed,
    ] {
        let count = batches.iter().filter(|b| b.2 == reason).count() as u64;
        prop_assert_eq!(metrics.batches.get(reason), count);
    }
    if let Some(limit) = setup.max_weight {
        let oversized = sent.iter().filter(|i| i.1 > limit).count() as u64;
        prop_assert_eq!(metrics.oversized, oversized);
    }
    prop_assert_eq!(metrics.batch_size.total, sent.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn batches_concatenate_to_the_input_within_limits(setup in setup()) {
        for kind in KINDS {
            run(kind, &setup)?;
        }
    }
}
