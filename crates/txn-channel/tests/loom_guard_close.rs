//! Loom models of the guard / close interplay: a delivery held, rolled back
//! or committed while senders wait, give up, drop or are refused by a close.
//! In every interleaving no item is lost or duplicated, every value a sender
//! got back was never delivered, and nobody waits forever (loom reports a
//! deadlock if a wakeup or a slot goes missing).
#![cfg(async_patterns_loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use async_patterns_txn_channel::{SendError, channel};
use loom::future::block_on;

mod loom_support;
use loom_support::spawn;

/// The two models with three threads or three sends are bounded to
/// `PREEMPTIONS` preemptions, so that each runs in seconds in release mode
/// (5 s for both here; unbounded, each ran for minutes): the lost wake-ups and slots they look
/// for need one or two preemptions. The other models are explored in full.
const PREEMPTIONS: usize = 3;

fn bounded(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(PREEMPTIONS);
    builder.check(f);
}

#[test]
fn a_rollback_after_the_senders_left_is_redelivered_before_the_end() {
    loom::model(|| {
        let (tx, mut rx) = channel(1);
        let producer = spawn(move || {
            block_on(tx.send(1)).unwrap();
            // `tx` is dropped here, racing the deliveries below.
        });
        block_on(async {
            let delivery = rx.begin().await.unwrap();
            assert_eq!((*delivery, delivery.attempt()), (1, 1));
            drop(delivery);
            let delivery = rx.begin().await.unwrap();
            assert_eq!((*delivery, delivery.attempt()), (1, 2));
            delivery.commit();
            assert!(rx.begin().await.is_none());
        });
        producer.join().unwrap();
    });
}

#[test]
fn a_commit_racing_a_close_either_delivers_the_waiting_value_or_hands_it_back() {
    loom::model(|| {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        let producer = spawn(move || block_on(tx.send(2)));
        let mut delivered = Vec::new();
        block_on(async {
            let delivery = rx.begin().await.unwrap();
            delivered.push(delivery.commit()); // frees the slot the sender waits for...
            rx.close(); // ...while the channel closes
            while let Some(delivery) = rx.begin().await {
                delivered.push(delivery.commit());
            }
        });
        match producer.join().unwrap() {
            Ok(()) => assert_eq!(delivered, [1, 2]),
            Err(SendError(value)) => {
                assert_eq!(value, 2);
                assert_eq!(delivered, [1]);
            }
        }
    });
}

#[test]
fn a_rolled_back_item_keeps_its_slot_and_survives_the_close() {
    loom::model(|| {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        let producer = spawn(move || block_on(tx.send(2)));
        block_on(async {
            rx.begin().await.unwrap().rollback();
            rx.close();
            let delivery = rx.begin().await.unwrap();
            assert_eq!((*delivery, delivery.attempt()), (1, 2));
            delivery.commit();
            assert!(rx.begin().await.is_none());
        });
        // The slot was never free before the close: the value comes back.
        assert_eq!(producer.join().unwrap(), Err(SendError(2)));
    });
}

#[test]
fn commits_wake_a_blocking_sender_every_time() {
    bounded(|| {
        let (tx, mut rx) = channel(1);
        let producer = spawn(move || {
            for i in 0..3 {
                tx.send_blocking(i).unwrap();
            }
        });
        let mut got = Vec::new();
        block_on(async {
            while let Some(delivery) = rx.begin().await {
                got.push(delivery.commit());
            }
        });
        producer.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
    });
}

#[test]
fn a_waiter_that_gives_up_passes_its_granted_slot_on() {
    bounded(|| {
        let (tx, mut rx) = channel(1);
        tx.try_send(0).unwrap();
        let quitter = {
            let tx = tx.clone();
            spawn(move || {
                // Polled once — waiting, or handed the slot at once — then dropped.
                let mut reserve = pin!(tx.reserve());
                let polled = reserve
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()));
                drop(polled);
            })
        };
        let sender = spawn(move || block_on(tx.send(2)));
        block_on(async {
            assert_eq!(rx.begin().await.unwrap().commit(), 0);
            // Only reachable if the slot freed above reaches `sender`, even
            // when it was granted to the quitter first.
            assert_eq!(rx.begin().await.unwrap().commit(), 2);
        });
        quitter.join().unwrap();
        sender.join().unwrap().unwrap();
    });
}

#[test]
fn a_commit_gives_its_slot_to_a_waiting_sender_before_the_next_begin() {
    // The only consumer's commits only count their slots until a sender
    // wants room: one that waits must get the slot of a commit made while
    // it waits, even if the consumer never looks at the channel again
    // before the sender is done (here it waits for the sender's thread).
    loom::model(|| {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        let producer = spawn(move || block_on(tx.send(2)).unwrap());
        let delivery = block_on(rx.begin()).unwrap();
        assert_eq!(delivery.commit(), 1);
        producer.join().unwrap();
        let delivery = block_on(rx.begin()).unwrap();
        assert_eq!(delivery.commit(), 2);
    });
}

#[test]
fn a_batch_commit_gives_its_slots_to_a_waiting_sender_before_the_next_begin() {
    loom::model(|| {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        let producer = spawn(move || block_on(tx.send(3)).unwrap());
        let batch = block_on(rx.begin_batch(2)).unwrap();
        assert_eq!(batch.commit_all().collect::<Vec<_>>(), [1, 2]);
        producer.join().unwrap();
        assert_eq!(block_on(rx.begin()).unwrap().commit(), 3);
    });
}
