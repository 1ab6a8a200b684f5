//! Loom models of the batching channel's send / take / close: every
//! interleaving of senders, the receiver and a flusher delivers each sent
//! item exactly once, in per-sender order, and every waiting side is woken.
//! Run by `cargo xtask ci` with `--cfg async_patterns_loom`; under loom the deadline timer
//! never fires, so batches close by count, flush and close only.
#![cfg(async_patterns_loom)]

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

#[test]
fn two_senders_under_backpressure_deliver_everything_once_in_order() {
    loom::model(|| {
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
