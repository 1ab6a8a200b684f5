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

// ---------------------------------------------------------------------------
// The batching channel with several producers at once: limits, a small
// capacity, sends cancelled in `select!`, `try_send`, flushes, a `close`
// in the middle, receives cancelled in `select!`, and an end by draining,
// `into_remainder` or dropping the receiver — drawn together.

mod many {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_patterns_batching::{ChannelBuilder, FlushReason, TryRecvError, TrySendError};
    use proptest::prelude::*;

    use super::paused_runtime;

    /// `(producer, sequence number, weight)`.
    type Item = (u8, u32, usize);

    #[derive(Debug, Clone)]
    enum P {
        Send(usize),
        SendMany(Vec<usize>),
        TrySend(usize),
        /// A send raced against a timer of this many ms, maybe cancelled.
        Cancel(usize, u64),
        /// A `send_many` raced against a timer, maybe cancelled part-way.
        CancelMany(Vec<usize>, u64),
        Pause(u64),
    }

    fn p_op() -> impl Strategy<Value = P> {
        prop_oneof![
            5 => (0usize..8).prop_map(P::Send),
            2 => prop::collection::vec(0usize..8, 0..8).prop_map(P::SendMany),
            2 => (0usize..8).prop_map(P::TrySend),
            2 => ((0usize..8), 0u64..4).prop_map(|(w, ms)| P::Cancel(w, ms)),
            1 => (prop::collection::vec(0usize..8, 0..8), 0u64..4)
                .prop_map(|(ws, ms)| P::CancelMany(ws, ms)),
            2 => (0u64..6).prop_map(P::Pause),
        ]
    }

    #[derive(Debug, Clone)]
    enum C {
        /// Receive, raced against a timer of this many ms.
        Recv(u64),
        TryRecv,
        Flush,
        Close,
        Pause(u64),
    }

    fn c_op() -> impl Strategy<Value = C> {
        prop_oneof![
            6 => (0u64..8).prop_map(C::Recv),
            2 => Just(C::TryRecv),
            1 => Just(C::Flush),
            1 => Just(C::Close),
            2 => (0u64..6).prop_map(C::Pause),
        ]
    }

    #[derive(Debug, Clone, Copy)]
    enum End {
        /// Receive until the channel ends (the producers finish and go).
        Drain,
        IntoRemainder,
        Drop,
    }

    #[derive(Debug, Clone)]
    struct Plan {
        max_items: usize,
        max_weight: Option<usize>,
        delay_ms: u64,
        /// Room beyond `max_items`.
        extra_capacity: usize,
        producers: Vec<Vec<P>>,
        consumer: Vec<C>,
        end: End,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        (
            1usize..6,
            prop::option::of(1usize..16),
            0u64..8,
            0usize..6,
            prop::collection::vec(prop::collection::vec(p_op(), 0..20), 1..5),
            prop::collection::vec(c_op(), 0..30),
            prop_oneof![Just(End::Drain), Just(End::IntoRemainder), Just(End::Drop)],
        )
            .prop_map(
                |(max_items, max_weight, delay_ms, extra_capacity, producers, consumer, end)| {
                    Plan {
                        max_items,
                        max_weight,
                        delay_ms,
                        extra_capacity,
                        producers,
                        consumer,
                        end,
                    }
                },
            )
    }

    /// What the producers saw.
    #[derive(Debug, Default)]
    struct Log {
        /// Items whose send succeeded.
        sent: Vec<Item>,
        /// Items handed back by a refused send (closed).
        refused: Vec<Item>,
        /// `try_send`s refused as full.
        full: u64,
        /// Items whose send was cancelled before it completed.
        cancelled: Vec<Item>,
    }

    fn run(plan: &Plan) -> Result<(), TestCaseError> {
        let capacity = plan.max_items + plan.extra_capacity;
        let mut builder = ChannelBuilder::<Item>::new()
            .max_items(plan.max_items)
            .capacity(capacity)
            .max_delay(Duration::from_millis(plan.delay_ms));
        if let Some(limit) = plan.max_weight {
            builder = builder.max_weight(limit, |item: &Item| item.2);
        }
        let (tx, mut rx) = builder.build().unwrap();
        let rt = paused_runtime();
        let log = Arc::new(Mutex::new(Log::default()));
        let (batches, rest, dropped, metrics) = rt.block_on(async {
            let outcome = rx.outcome();
            let flusher = rx.flusher();
            let mut producers = Vec::new();
            for (p, ops) in plan.producers.iter().enumerate() {
                let tx = tx.clone();
                let ops = ops.clone();
                let log = log.clone();
                producers.push(tokio::spawn(async move {
                    let mut seq = 0u32;
                    let mut next = |w: usize| {
                        seq += 1;
                        (p as u8, seq, w)
                    };
                    for op in ops {
                        // No await between a send's end and its record.
                        match op {
                            P::Send(w) => {
                                let item = next(w);
                                match tx.send(item).await {
                                    Ok(()) => log.lock().unwrap().sent.push(item),
                                    Err(e) => log.lock().unwrap().refused.push(e.into_inner()),
                                }
                            }
                            P::SendMany(ws) => {
                                let mut items: Vec<Item> = ws.into_iter().map(&mut next).collect();
                                let all = items.clone();
                                match tx.send_many(&mut items).await {
                                    Ok(()) => log.lock().unwrap().sent.extend(all),
                                    Err(e) => {
                                        let back = e.into_inner();
                                        let n = all.len() - back.len();
                                        let mut log = log.lock().unwrap();
                                        log.sent.extend(&all[..n]);
                                        log.refused.extend(back);
                                    }
                                }
                            }
                            P::TrySend(w) => {
                                let item = next(w);
                                match tx.try_send(item) {
                                    Ok(()) => log.lock().unwrap().sent.push(item),
                                    Err(TrySendError::Full(_)) => log.lock().unwrap().full += 1,
                                    Err(TrySendError::Closed(back)) => {
                                        log.lock().unwrap().refused.push(back)
                                    }
                                    Err(other) => panic!("unexpected {other:?}"),
                                }
                            }
                            P::Cancel(w, ms) => {
                                let item = next(w);
                                tokio::select! {
                                    result = tx.send(item) => match result {
                                        Ok(()) => log.lock().unwrap().sent.push(item),
                                        Err(e) => log.lock().unwrap().refused.push(e.into_inner()),
                                    },
                                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                                        log.lock().unwrap().cancelled.push(item);
                                    }
                                }
                            }
                            P::CancelMany(ws, ms) => {
                                let mut items: Vec<Item> = ws.into_iter().map(&mut next).collect();
                                let all = items.clone();
                                let result = tokio::select! {
                                    result = tx.send_many(&mut items) => Some(result),
                                    _ = tokio::time::sleep(Duration::from_millis(ms)) => None,
                                };
                                let mut log = log.lock().unwrap();
                                match result {
                                    Some(Ok(())) => log.sent.extend(all),
                                    Some(Err(e)) => {
                                        let back = e.into_inner();
                                        log.sent.extend(&all[..all.len() - back.len()]);
                                        log.refused.extend(back);
                                    }
                                    None => {
                                        // What is left in the Vec was not sent.
                                        log.sent.extend(&all[..all.len() - items.len()]);
                                        log.cancelled.extend(items);
                                    }
                                }
                            }
                            P::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        }
                    }
                }));
            }
            // The test keeps one sender to read the metrics at the end,
            // except when the channel must end by itself.
            let probe = match plan.end {
                End::Drain => {
                    drop(tx);
                    None
                }
                _ => Some(tx),
            };
            let mut batches = Vec::new();
            let mut record = |batch: async_patterns_batching::Batch<Item>| {
                batches.push((batch.to_vec(), batch.weight(), batch.reason()));
            };
            // Whether `recv` said the end before the plan's end.
            let mut ended = false;
            for op in &plan.consumer {
                prop_assert!(
                    rx.len() <= capacity,
                    "{} items in a channel of {capacity}",
                    rx.len()
                );
                match op {
                    C::Recv(ms) => tokio::select! {
                        batch = rx.recv() => match batch {
                            Some(batch) => record(batch),
                            None => {
                                ended = true;
                                break;
                            }
                        },
                        _ = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                    },
                    C::TryRecv => match rx.try_recv() {
                        Ok(batch) => record(batch),
                        Err(TryRecvError::Disconnected) => ended = true,
                        Err(_) => {}
                    },
                    C::Flush => flusher.flush(),
                    C::Close => rx.close(),
                    C::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                }
            }
            let (rest, dropped, rx) = match plan.end {
                End::Drain => {
                    let drained = tokio::time::timeout(Duration::from_secs(3600), async {
                        while let Some(batch) = rx.recv().await {
                            record(batch);
                        }
                    })
                    .await;
                    prop_assert!(drained.is_ok(), "draining hung");
                    (Vec::new(), None, Some(rx))
                }
                End::IntoRemainder => (rx.into_remainder(), None, None),
                End::Drop => {
                    drop(rx);
                    (Vec::new(), Some(()), None)
                }
            };
            for producer in producers {
                let done = tokio::time::timeout(Duration::from_secs(3600), producer).await;
                prop_assert!(done.is_ok(), "a producer hung");
            }
            let summary = outcome.await.unwrap();
            prop_assert_eq!(summary.finished, ended || matches!(plan.end, End::Drain));
            prop_assert_eq!(summary.value.delivered, summary.value.items.total());
            prop_assert_eq!(summary.value.queued, 0);
            // Read after every producer is done: refused sends count too.
            let metrics = match (probe, rx) {
                (Some(probe), _) => probe.metrics(),
                (None, Some(rx)) => rx.metrics(),
                (None, None) => unreachable!("only a drained channel has no probe"),
            };
            Ok((batches, rest, dropped, metrics))
        })?;

        let log = log.lock().unwrap();
        let received: Vec<Item> = batches.iter().flat_map(|b| b.0.clone()).collect();
        let mut out = received.clone();
        out.extend(&rest);
        // Nothing duplicated, nothing refused or cancelled delivered.
        let mut sorted = out.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), out.len(), "duplicated: {:?}", out);
        for item in log.refused.iter().chain(&log.cancelled) {
            prop_assert!(!out.contains(item), "{:?} was not sent but came out", item);
        }
        let mut sent = log.sent.clone();
        sent.sort_unstable();
        if dropped.is_none() {
            // Nothing lost.
            prop_assert_eq!(&sorted, &sent);
        } else {
            prop_assert!(sorted.iter().all(|i| sent.binary_search(i).is_ok()));
        }
        // Per-producer order, batches then the remainder.
        for p in 0..plan.producers.len() as u8 {
            let seqs: Vec<u32> = out.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
            prop_assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "producer {} out of order: {:?}",
                p,
                seqs
            );
        }
        // Limits.
        for (items, weight, reason) in &batches {
            prop_assert!(!items.is_empty());
            prop_assert!(items.len() <= plan.max_items);
            let total: usize = items.iter().map(|i| i.2).sum();
            match plan.max_weight {
                Some(limit) => {
                    prop_assert_eq!(*weight, total);
                    prop_assert!(
                        total <= limit || items.len() == 1,
                        "{:?} over {}",
                        items,
                        limit
                    );
                }
                None => prop_assert_eq!(*weight, items.len()),
            }
            if *reason == FlushReason::Full {
                prop_assert_eq!(items.len(), plan.max_items);
            }
        }
        // The metrics account for every item, exactly.
        prop_assert_eq!(metrics.sent, log.sent.len() as u64);
        prop_assert_eq!(metrics.delivered, received.len() as u64);
        prop_assert_eq!(metrics.batches.total(), batches.len() as u64);
        prop_assert_eq!(
            metrics.handed_back,
            rest.len() as u64 + log.refused.len() as u64
        );
        prop_assert_eq!(metrics.rejected, log.full);
        let lost = log.sent.len() as u64 - received.len() as u64 - rest.len() as u64;
        prop_assert_eq!(metrics.dropped, lost);
        if dropped.is_none() {
            prop_assert_eq!(lost, 0);
        }
        prop_assert_eq!(metrics.queued, 0);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

        #[test]
        fn several_producers_with_limits_close_and_cancel_lose_nothing(plan in plan()) {
            run(&plan)?;
        }
    }
}
