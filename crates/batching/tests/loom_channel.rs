//! Loom models of the batching channel's send / take / close: every
//! interleaving of senders, the receiver and a flusher delivers each sent
//! item exactly once, in per-sender order, and every waiting side is woken.
//! Under loom a channel has two lanes: the first sender stages on lane 0,
//! its clones alternate between lanes 1 and 0, so senders on two threads
//! exercise the receiver's wake-up threshold across lanes. A lost wake-up
//! shows as a deadlock (every thread blocked), which loom reports.
//!
//! Run by `cargo xtask ci` with `--cfg async_patterns_loom`; under loom the
//! deadline timer never fires, so batches close by count, weight, flush and
//! close only.
#![cfg(async_patterns_loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use async_patterns_batching::{ChannelBuilder, FlushReason, Receiver, Sender};
use loom::future::block_on;
use loom::thread;

fn channel(max_items: usize, capacity: usize) -> (Sender<u32>, Receiver<u32>) {
    ChannelBuilder::new()
        .max_items(max_items)
        .max_delay(Duration::from_secs(3600))
        .capacity(capacity)
        .build()
        .unwrap()
}

/// Models with three threads and backpressure (two senders, one of them
/// waiting, and the receiver): explored with at most two preemptions, so
/// that each stays well under two minutes (`cargo xtask ci` asks for three;
/// the two-thread models get them).
fn three_threads(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(2).min(2));
    builder.check(f);
}

#[test]
fn two_senders_under_backpressure_deliver_everything_once_in_order() {
    three_threads(|| {
        let (tx, mut rx) = channel(2, 2);
        let tx2 = tx.clone();
        let a = thread::spawn(move || {
            block_on(async {
                tx.send(1).await.unwrap();
                tx.send(2).await.unwrap();
            })
        });
        let b = thread::spawn(move || block_on(tx2.send(10)).unwrap());
        let mut got = Vec::new();
        block_on(async {
            while let Some(batch) = rx.recv().await {
                assert!(!batch.is_empty() && batch.len() <= 2);
                got.extend(batch.iter().copied());
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 10]);
        let one = got.iter().position(|&i| i == 1).unwrap();
        let two = got.iter().position(|&i| i == 2).unwrap();
        assert!(one < two, "per-sender order broken: {got:?}");
    });
}

#[test]
fn close_races_a_waiting_sender_and_nothing_is_lost() {
    loom::model(|| {
        let (tx, mut rx) = channel(1, 1);
        block_on(tx.send(1)).unwrap();
        let sender = thread::spawn(move || block_on(tx.send(2)).map_err(|e| e.into_inner()));
        let mut got = Vec::new();
        block_on(async {
            got.extend(rx.recv().await.unwrap().iter().copied());
            rx.close();
            while let Some(batch) = rx.recv().await {
                got.extend(batch.iter().copied());
            }
        });
        match sender.join().unwrap() {
            Ok(()) => assert_eq!(got, [1, 2]),
            Err(back) => {
                assert_eq!(back, 2);
                assert_eq!(got, [1]);
            }
        }
    });
}

#[test]
fn dropping_the_receiver_wakes_a_waiting_sender_with_its_item() {
    loom::model(|| {
        let (tx, rx) = channel(1, 1);
        block_on(tx.send(1)).unwrap();
        let sender = thread::spawn(move || block_on(tx.send(2)).map_err(|e| e.into_inner()));
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err(2));
    });
}

#[test]
fn a_flush_from_another_thread_wakes_the_receiver_with_the_partial_batch() {
    loom::model(|| {
        let (tx, mut rx) = channel(4, 4);
        let flusher = rx.flusher();
        block_on(tx.send(1)).unwrap();
        let t = thread::spawn(move || flusher.flush());
        let batch = block_on(rx.recv()).unwrap();
        assert_eq!((&*batch, batch.reason()), (&[1][..], FlushReason::Flush));
        t.join().unwrap();
        drop(tx);
    });
}

#[test]
fn the_last_sender_dropping_on_another_thread_closes_the_tail() {
    loom::model(|| {
        let (tx, mut rx) = channel(4, 4);
        let t = thread::spawn(move || {
            block_on(tx.send(1)).unwrap();
            drop(tx);
        });
        let batch = block_on(rx.recv()).unwrap();
        assert_eq!((&*batch, batch.reason()), (&[1][..], FlushReason::Closed));
        assert!(block_on(rx.recv()).is_none());
        t.join().unwrap();
    });
}

#[test]
fn a_batch_filled_from_two_lanes_wakes_the_receiver() {
    loom::model(|| {
        let (tx, mut rx) = channel(2, 4);
        let tx2 = tx.clone();
        let a = thread::spawn(move || block_on(tx.send(1)).unwrap());
        let b = thread::spawn(move || block_on(tx2.send(2)).unwrap());
        // Both senders are alive until joined: only a full batch (or a lost
        // wake-up, a deadlock) can end this wait.
        let batch = block_on(rx.recv()).unwrap();
        assert_eq!(batch.reason(), FlushReason::Full);
        let mut got = batch.to_vec();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        a.join().unwrap();
        b.join().unwrap();
        assert!(block_on(rx.recv()).is_none());
    });
}

#[test]
fn weight_reaching_the_limit_on_two_lanes_wakes_the_receiver() {
    loom::model(|| {
        let (tx, mut rx) = ChannelBuilder::new()
            .max_items(10)
            .max_delay(Duration::from_secs(3600))
            .max_weight(4, |item: &u32| *item as usize)
            .build()
            .unwrap();
        let tx2 = tx.clone();
        let a = thread::spawn(move || block_on(tx.send(2)).unwrap());
        let b = thread::spawn(move || block_on(tx2.send(2)).unwrap());
        let batch = block_on(rx.recv()).unwrap();
        assert_eq!(
            (&*batch, batch.reason()),
            (&[2, 2][..], FlushReason::Weight)
        );
        a.join().unwrap();
        b.join().unwrap();
        assert!(block_on(rx.recv()).is_none());
        assert_eq!(rx.metrics().delivered, 2);
    });
}

#[test]
fn a_woken_sender_that_gives_up_passes_its_turn_on() {
    three_threads(|| {
        let (tx, mut rx) = channel(1, 1);
        block_on(tx.send(1)).unwrap();
        let quitter = tx.clone();
        let stayer = tx.clone();
        drop(tx);
        let a = thread::spawn(move || {
            // Polled once — waiting if the channel is still full — then
            // dropped, as a `select!` would.
            let mut send = pin!(quitter.send(2));
            let mut cx = Context::from_waker(Waker::noop());
            send.as_mut().poll(&mut cx).is_ready()
        });
        let b = thread::spawn(move || block_on(stayer.send(3)).unwrap());
        let mut got = Vec::new();
        // Ends only when both senders are gone: the stayer must get through
        // even if the room went to the quitter, who left without using it.
        block_on(async {
            while let Some(batch) = rx.recv().await {
                got.extend(batch.iter().copied());
            }
        });
        let quitter_sent = a.join().unwrap();
        b.join().unwrap();
        got.sort_unstable();
        let expected: &[u32] = if quitter_sent { &[1, 2, 3] } else { &[1, 3] };
        assert_eq!(got, expected);
    });
}

#[test]
fn send_many_from_two_lanes_under_backpressure_keeps_per_sender_order() {
    three_threads(|| {
        let (tx, mut rx) = channel(2, 2);
        let tx2 = tx.clone();
        // Three items for two slots: someone waits for room. (Two items in
        // the `send_many`, to keep the model well under two minutes.)
        let a = thread::spawn(move || {
            let mut items = vec![1, 2];
            block_on(tx.send_many(&mut items)).unwrap();
            assert!(items.is_empty());
        });
        let b = thread::spawn(move || block_on(tx2.send(10)).unwrap());
        let mut got = Vec::new();
        block_on(async {
            while let Some(batch) = rx.recv().await {
                assert!(batch.len() <= 2);
                got.extend(batch.iter().copied());
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        let mine: Vec<u32> = got.iter().copied().filter(|&i| i < 10).collect();
        assert_eq!(mine, [1, 2], "per-sender order broken: {got:?}");
        assert_eq!(got.len(), 3);
        let metrics = rx.metrics();
        assert_eq!((metrics.sent, metrics.delivered, metrics.queued), (3, 3, 0));
    });
}

#[test]
fn into_remainder_racing_a_sender_loses_nothing() {
    loom::model(|| {
        let (tx, rx) = channel(4, 4);
        block_on(tx.send(1)).unwrap();
        let sender = thread::spawn(move || {
            let result = block_on(tx.send(2)).map_err(|e| e.into_inner());
            (result, tx)
        });
        let rest = rx.into_remainder();
        let (result, tx) = sender.join().unwrap();
        let metrics = tx.metrics();
        match result {
            Ok(()) => {
                assert_eq!(rest, [1, 2]);
                assert_eq!((metrics.sent, metrics.handed_back), (2, 2));
            }
            Err(back) => {
                assert_eq!(back, 2);
                assert_eq!(rest, [1]);
                // The remainder and the refused send.
                assert_eq!((metrics.sent, metrics.handed_back), (1, 2));
            }
        }
        assert_eq!(metrics.queued, 0);
    });
}
