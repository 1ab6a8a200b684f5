//! Loom models of the channel's ends meeting: the receiver sleeping while a
//! sender writes or the last sender leaves, a sender sleeping on a full
//! channel while the receiver reads, closes or goes away, and the receiver
//! dropped while a sender is mid-write. Each model checks that nothing hangs
//! (loom reports a deadlock) and that every item is received, handed back or
//! counted as dropped.
#![cfg(async_patterns_loom)]

use async_patterns_bridge::{ChannelBuilder, Overflow, SendBlockingError, TrySendError, channel};
use loom::future::block_on;
use loom::thread;

async fn drain(rx: &mut async_patterns_bridge::Receiver<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    while let Some(v) = rx.recv().await {
        got.push(v);
    }
    got
}

#[test]
fn sleeping_receiver_gets_every_item_then_the_close() {
    loom::model(|| {
        let (tx, mut rx) = channel::<u32>(2);
        let producer = thread::spawn(move || {
            tx.try_send(1).unwrap();
            tx.try_send(2).unwrap();
            // Dropping the last sender closes the channel.
        });
        assert_eq!(block_on(drain(&mut rx)), [1, 2]);
        producer.join().unwrap();
    });
}

#[test]
fn two_senders_racing_for_slots_lose_nothing() {
    loom::model(|| {
        let (tx, mut rx) = channel::<u32>(2);
        let tx2 = tx.clone();
        let a = thread::spawn(move || tx.try_send(1).map_err(TrySendError::into_inner));
        let b = thread::spawn(move || tx2.try_send(2).map_err(TrySendError::into_inner));
        let first = rx.try_recv().ok();
        let mut got: Vec<u32> = first.into_iter().collect();
        for rejected in [a.join().unwrap(), b.join().unwrap()] {
            if let Err(v) = rejected {
                got.push(v);
            }
        }
        got.extend(std::iter::from_fn(|| rx.try_recv().ok()));
        got.sort();
        assert_eq!(got, [1, 2]);
    });
}

#[test]
fn blocked_sender_is_woken_by_the_reader_that_frees_its_slot() {
    loom::model(|| {
        let (tx, mut rx) = channel::<u32>(1);
        let producer = thread::spawn(move || {
            tx.send_blocking(1).unwrap();
            tx.send_blocking(2).unwrap(); // waits until 1 is read
        });
        assert_eq!(block_on(drain(&mut rx)), [1, 2]);
        producer.join().unwrap();
    });
}

#[test]
fn blocked_sender_is_woken_by_close_and_gets_its_value_back() {
    loom::model(|| {
        let (tx, mut rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let producer = thread::spawn(move || tx.send_blocking(2));
        rx.close();
        let got = block_on(drain(&mut rx));
        let result = producer.join().unwrap();
        // Either 2 got in before the close, or it came back.
        match result {
            Ok(()) => assert_eq!(got, [1, 2]),
            Err(e) => {
                assert_eq!(e, SendBlockingError::Closed(2));
                assert_eq!(got, [1]);
            }
        }
    });
}

#[test]
fn receiver_dropped_mid_write_accounts_for_every_item() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(2);
        let counter = tx.clone();
        let producer = thread::spawn(move || {
            let first = tx.try_send(1).is_ok();
            let second = tx.try_send(2).is_ok();
            u64::from(first) + u64::from(second)
        });
        drop(rx);
        let accepted = producer.join().unwrap();
        // Whatever was accepted was buffered when the receiver left, so it
        // was dropped and counted; the rest was handed back — including a
        // value whose slot was claimed just before the receiver left.
        let m = counter.metrics();
        assert_eq!(m.dropped, accepted);
        assert_eq!(m.sent, accepted);
        assert_eq!(m.handed_back, 2 - accepted);
        assert_eq!((m.delivered, m.queued), (0, 0));
    });
}

#[test]
fn drop_oldest_sender_and_receiver_race_without_loss_or_duplicates() {
    loom::model(|| {
        let (tx, mut rx) = ChannelBuilder::<u32>::new()
            .capacity(1)
            .overflow(Overflow::DropOldest)
            .build()
            .unwrap();
        let counter = tx.clone();
        tx.try_send(1).unwrap();
        let producer = thread::spawn(move || tx.try_send(2).unwrap());
        let first = rx.try_recv().ok();
        producer.join().unwrap();
        drop(counter);
        let mut got: Vec<u32> = first.into_iter().collect();
        got.extend(block_on(drain(&mut rx)));
        // Each item is received once or counted as dropped, in order.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert_eq!(got.len() as u64 + rx.metrics().dropped, 2);
    });
}

#[test]
fn blocked_sender_waiting_on_a_slot_another_sender_is_writing_is_not_forgotten() {
    // Three threads: explored with two preemptions so the model stays small.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(|| {
        let (tx, mut rx) = channel::<u32>(1);
        let tx2 = tx.clone();
        let a = thread::spawn(move || tx.try_send(1).is_ok());
        let b = thread::spawn(move || tx2.send_blocking(2).unwrap());
        // Receive until 2 arrives: if B's wake-up were lost, this would hang.
        let mut got = Vec::new();
        while got.last() != Some(&2) {
            got.push(block_on(rx.recv()).unwrap());
        }
        b.join().unwrap();
        let a_sent = a.join().unwrap();
        assert_eq!(
            got,
            if a_sent && got.len() == 2 {
                vec![1, 2]
            } else {
                vec![2]
            }
        );
    });
}
