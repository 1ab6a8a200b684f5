//! Poison items: after `max_attempts` deliveries without a commit an item
//! goes to the dead-letter destination with its attempt count, and the queue
//! moves on; it is never dropped silently.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, Receiver, channel};
use futures::FutureExt;
use tokio::time::{Instant, timeout};

const HANG: Duration = Duration::from_secs(30);

type Letters = Arc<Mutex<Vec<(u32, u32)>>>;

fn with_callback(max_attempts: u32, items: Vec<u32>) -> (Receiver<u32>, Letters) {
    let letters = Letters::default();
    let sink = Arc::clone(&letters);
    let rx = ChannelBuilder::new()
        .max_attempts(max_attempts)
        .on_dead_letter(move |d: DeadLetter<u32>| {
            sink.lock().unwrap().push((d.attempts(), d.into_inner()))
        })
        .build_from_stream(futures::stream::iter(items))
        .unwrap();
    (rx, letters)
}

#[tokio::test]
async fn an_item_is_dead_lettered_after_exactly_max_attempts_failures() {
    let (mut rx, letters) = with_callback(3, vec![1, 2]);
    for attempt in 1..=3 {
        let delivery = rx.begin().await.unwrap();
        assert_eq!((*delivery, delivery.attempt()), (1, attempt));
        assert!(letters.lock().unwrap().is_empty());
    }
    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (2, 1));
    assert_eq!(*letters.lock().unwrap(), [(3, 1)]);
}

#[tokio::test]
async fn a_commit_on_the_last_attempt_keeps_the_item_out_of_the_dead_letters() {
    let (mut rx, letters) = with_callback(2, vec![1]);
    rx.begin().await.unwrap().rollback();
    assert_eq!(rx.begin().await.unwrap().commit(), 1);
    assert!(rx.begin().await.is_none());
    assert!(letters.lock().unwrap().is_empty());
}

#[tokio::test]
async fn peeking_with_recv_counts_toward_the_limit() {
    let (mut rx, letters) = with_callback(2, vec![1, 2]);
    assert_eq!(rx.recv().await, Some(&1));
    assert_eq!(rx.recv().await, Some(&1));
    assert_eq!(rx.recv().await, Some(&2)); // 1 was dead-lettered
    assert_eq!(rx.commit(), Some(2));
    assert_eq!(*letters.lock().unwrap(), [(2, 1)]);
}

#[tokio::test]
async fn batch_items_that_used_their_attempts_are_dead_lettered_in_order() {
    let (mut rx, letters) = with_callback(2, vec![1, 2, 3, 4]);
    rx.begin_batch(2).await.unwrap().rollback();
    rx.begin_batch(3).await.unwrap().rollback();
    // 1 and 2 have used both attempts; 3 one.
    let batch = rx.begin_batch(4).await.unwrap();
    assert_eq!(&*batch, [3, 4]);
    assert_eq!(batch.attempt(0), Some(2));
    assert_eq!(*letters.lock().unwrap(), [(2, 1), (2, 2)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_the_last_attempt_dead_letters_without_waiting() {
    let (mut rx, letters) = with_callback(1, vec![1, 2]);
    rx.begin()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(60));
    let start = Instant::now();
    assert_eq!(rx.begin().await.unwrap().commit(), 2);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(*letters.lock().unwrap(), [(1, 1)]);
}

#[tokio::test]
async fn dead_letters_go_to_a_channel_with_their_attempt_counts() {
    let (dead_tx, mut dead_rx) = channel(8);
    let (tx, mut rx) = ChannelBuilder::new()
        .capacity(8)
        .max_attempts(2)
        .dead_letter(dead_tx)
        .build()
        .unwrap();
    for i in 0..6_u32 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut committed = Vec::new();
    while let Some(delivery) = rx.begin().await {
        if *delivery % 2 == 1 {
            continue; // odd items always fail
        }
        committed.push(delivery.commit());
    }
    drop(rx);
    assert_eq!(committed, [0, 2, 4]);
    let mut dead = Vec::new();
    while let Some(delivery) = dead_rx.begin().await {
        let letter: DeadLetter<u32> = delivery.commit();
        dead.push((letter.attempts(), letter.into_inner()));
    }
    assert_eq!(dead, [(2, 1), (2, 3), (2, 5)]);
}

#[tokio::test]
async fn dead_lettering_frees_the_items_slot() {
    let (dead_tx, _dead_rx) = channel(8);
    let (tx, mut rx) = ChannelBuilder::new()
        .capacity(1)
        .max_attempts(1)
        .dead_letter(dead_tx)
        .build()
        .unwrap();
    tx.send(1).await.unwrap();
    rx.begin().await.unwrap().rollback();
    assert!(tx.try_send(2).is_err()); // 1 is still in the channel
    let waiting = tokio::spawn(async move { tx.send(2).await });
    // Dead-lettering 1 makes room for 2, which is then delivered.
    let delivery = timeout(HANG, rx.begin()).await.unwrap().unwrap();
    assert_eq!(*delivery, 2);
    waiting.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_closed_dead_letter_channel_means_redelivery_not_loss() {
    let (dead_tx, dead_rx) = channel(8);
    let (tx, mut rx) = ChannelBuilder::new()
        .max_attempts(1)
        .dead_letter(dead_tx)
        .build()
        .unwrap();
    tx.send(1).await.unwrap();
    drop(dead_rx);
    rx.begin().await.unwrap().rollback();
    // Nowhere to put it: delivered again, with the attempt above the limit.
    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (1, 2));
    assert_eq!(delivery.commit(), 1);
}

#[tokio::test]
async fn a_full_dead_letter_channel_holds_delivery_back_cancel_safely() {
    let (dead_tx, mut dead_rx) = channel(1);
    let (tx, mut rx) = ChannelBuilder::new()
        .max_attempts(1)
        .dead_letter(dead_tx)
        .build()
        .unwrap();
    for i in 1..=3 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    rx.begin().await.unwrap().rollback(); // 1 goes to the dead letters...
    rx.begin().await.unwrap().rollback(); // ...then 2 is exhausted too
    // The dead-letter channel holds 1 and has no room for 2: waiting, and
    // cancelling the wait, loses nothing.
    for _ in 0..3 {
        assert!(rx.begin().now_or_never().is_none());
    }
    let dead = dead_rx.begin().await.unwrap().commit();
    assert_eq!(dead.into_inner(), 1);
    let delivery = timeout(HANG, rx.begin()).await.unwrap().unwrap();
    assert_eq!((*delivery, delivery.attempt()), (3, 1));
    delivery.commit();
    assert!(rx.begin().await.is_none());
    let dead = dead_rx.begin().await.unwrap().commit();
    assert_eq!((dead.attempts(), dead.into_inner()), (1, 2));
}

#[tokio::test]
async fn a_panicking_dead_letter_callback_leaves_the_receiver_consistent() {
    let mut rx = ChannelBuilder::new()
        .max_attempts(1)
        .on_dead_letter(|d: DeadLetter<u32>| {
            if *d.item() == 1 {
                panic!("the dead-letter store is down");
            }
        })
        .build_from_stream(futures::stream::iter([1, 2]))
        .unwrap();
    rx.begin().await.unwrap().rollback();
    let result = std::panic::AssertUnwindSafe(rx.begin())
        .catch_unwind()
        .await
        .map(|d| d.map(|d| *d));
    assert!(result.is_err());
    // The callback owned item 1 when it panicked; item 2 is next.
    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (2, 1));
}
