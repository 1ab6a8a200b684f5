//! The guard API: a `Delivery` or `BatchDelivery` rolls back unless
//! committed — when dropped, when a panic unwinds through it, when the
//! future holding it is cancelled — and `retry_after` waits on tokio's clock.

use std::time::Duration;

use async_patterns_txn_channel::{Receiver, channel};
use futures::FutureExt;
use tokio::time::{Instant, timeout};

async fn channel_with(items: impl IntoIterator<Item = u32>) -> Receiver<u32> {
    let (tx, rx) = channel(64);
    for item in items {
        tx.send(item).await.unwrap();
    }
    rx
}

#[tokio::test]
async fn dropped_delivery_is_delivered_again_with_the_next_attempt() {
    let mut rx = channel_with([1, 2]).await;
    for attempt in 1..=3 {
        let delivery = rx.begin().await.unwrap();
        assert_eq!((*delivery, delivery.attempt()), (1, attempt));
    }
    assert_eq!(rx.begin().await.unwrap().commit(), 1);
    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (2, 1));
}

#[tokio::test]
async fn panic_while_holding_a_delivery_rolls_it_back() {
    let mut rx = channel_with([7, 8]).await;
    let crashed = async {
        let delivery = rx.begin().await.unwrap();
        assert_eq!(*delivery, 7);
        panic!("processing failed while holding the delivery");
    };
    let result = std::panic::AssertUnwindSafe(crashed).catch_unwind().await;
    assert!(result.is_err());

    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (7, 2));
    assert_eq!(delivery.commit(), 7);
    assert_eq!(rx.begin().await.unwrap().commit(), 8);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_future_that_holds_a_delivery_rolls_it_back() {
    let mut rx = channel_with([1, 2]).await;
    let mut committed = Vec::new();
    // The first processing is slower than its deadline and is cancelled.
    let slow = async {
        let delivery = rx.begin().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        committed.push(delivery.commit());
    };
    tokio::select! {
        () = slow => panic!("the slow processing should have been cancelled"),
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    assert!(committed.is_empty());

    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (1, 2));
}

#[tokio::test]
async fn begin_cancelled_in_select_loses_nothing() {
    let (tx, mut rx) = channel::<u32>(8);
    let mut got = Vec::new();
    let mut sent = 0;
    // A begin is polled first; when nothing is queued it is pending and is
    // dropped as the other branch wins. Nothing is lost or delivered twice.
    for round in 0..60 {
        tokio::select! {
            biased;
            delivery = rx.begin() => got.push(delivery.unwrap().commit()),
            () = std::future::ready(()) => {}
        }
        if round % 3 != 0 {
            tx.send(sent).await.unwrap();
            sent += 1;
        }
    }
    drop(tx);
    while let Some(delivery) = rx.begin().await {
        got.push(delivery.commit());
    }
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn recv_and_begin_cancelled_while_waiting_lose_nothing() {
    let (tx, mut rx) = channel(8);
    // Nothing to receive: both time out, i.e. are dropped while pending.
    assert!(timeout(Duration::from_millis(10), rx.recv()).await.is_err());
    assert!(
        timeout(Duration::from_millis(10), rx.begin())
            .await
            .is_err()
    );
    assert!(
        timeout(Duration::from_millis(10), rx.begin_batch(4))
            .await
            .is_err()
    );
    tx.send(5).await.unwrap();
    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (5, 1));
}

#[tokio::test(start_paused = true)]
async fn retry_after_redelivers_not_before_its_time_and_then_at_once() {
    let mut rx = channel_with([1, 2]).await;
    let start = Instant::now();
    rx.begin()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(10));

    // Just before the deadline, nothing is delivered — not even the next
    // item, which must not pass the one waiting.
    assert!(
        timeout(Duration::from_millis(9_999), rx.begin())
            .await
            .is_err()
    );
    let delivery = rx.begin().await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_001),
        "{waited:?}"
    );
    assert_eq!((*delivery, delivery.attempt()), (1, 2));
    delivery.commit();

    // The next item is not delayed.
    let before = Instant::now();
    assert_eq!(rx.begin().await.unwrap().commit(), 2);
    assert_eq!(before.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_survives_a_cancelled_wait() {
    let mut rx = channel_with([1]).await;
    let start = Instant::now();
    rx.begin()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(3));
    for _ in 0..2 {
        assert!(timeout(Duration::from_secs(1), rx.begin()).await.is_err());
    }
    let delivery = rx.begin().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(delivery.attempt(), 2);
}

#[tokio::test(start_paused = true)]
async fn rollback_after_a_retry_delivers_at_once() {
    let mut rx = channel_with([1]).await;
    rx.begin()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(1));
    rx.begin().await.unwrap().rollback();
    let before = Instant::now();
    let delivery = rx.begin().await.unwrap();
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert_eq!(delivery.attempt(), 3);
}

#[tokio::test]
async fn batch_commit_first_brings_the_rest_back_in_order() {
    let mut rx = channel_with(1..=6).await;
    let batch = rx.begin_batch(4).await.unwrap();
    assert_eq!(&*batch, [1, 2, 3, 4]);
    assert_eq!(batch.commit_first(1).collect::<Vec<_>>(), [1]);

    let batch = rx.begin_batch(10).await.unwrap();
    assert_eq!(&*batch, [2, 3, 4, 5, 6]);
    let attempts: Vec<_> = (0..batch.len())
        .map(|i| batch.attempt(i).unwrap())
        .collect();
    assert_eq!(attempts, [2, 2, 2, 1, 1]);
    drop(batch); // rolled back

    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (2, 3));
}

#[tokio::test]
async fn batch_takes_only_what_is_available_without_waiting() {
    let (tx, mut rx) = channel(16);
    tx.send(1).await.unwrap();
    let batch = rx.begin_batch(8).await.unwrap();
    assert_eq!(&*batch, [1]);
    batch.commit_all();

    // Rolled-back items and newly queued ones are delivered together.
    tx.send(2).await.unwrap();
    rx.begin().await.unwrap().rollback();
    tx.send(3).await.unwrap();
    tx.send(4).await.unwrap();
    let batch = rx.begin_batch(3).await.unwrap();
    assert_eq!(&*batch, [2, 3, 4]);
    assert_eq!(batch.commit_all().collect::<Vec<_>>(), [2, 3, 4]);
}

#[tokio::test]
async fn panic_in_commit_first_beyond_the_batch_loses_nothing() {
    let mut rx = channel_with([1, 2]).await;
    let result = std::panic::AssertUnwindSafe(async {
        let batch = rx.begin_batch(2).await.unwrap();
        let _ = batch.commit_first(3);
    })
    .catch_unwind()
    .await;
    let message = result.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert_eq!(
        message,
        "commit_first: k = 3 is more than the 2 items of the batch"
    );
    let batch = rx.begin_batch(2).await.unwrap();
    assert_eq!((&*batch, batch.attempt(0)), (&[1, 2][..], Some(2)));
}

#[tokio::test]
#[should_panic(expected = "begin_batch: `max` must be at least 1")]
async fn begin_batch_of_zero_panics() {
    let mut rx = channel_with([1]).await;
    let _ = rx.begin_batch(0).await;
}

#[tokio::test]
async fn peek_and_guard_apis_share_one_attempt_count() {
    let mut rx = channel_with([1, 2]).await;
    assert_eq!(rx.recv().await, Some(&1));
    let delivery = rx.begin().await.unwrap(); // the peek is rolled back
    assert_eq!(delivery.attempt(), 2);
    drop(delivery);
    assert_eq!(rx.commit(), None); // `begin` ended the peek
    assert_eq!(rx.recv().await, Some(&1));
    assert_eq!(rx.commit(), Some(1));
    let batch = rx.begin_batch(4).await.unwrap();
    assert_eq!((&*batch, batch.attempt(0)), (&[2][..], Some(1)));
}

#[tokio::test]
async fn delivery_held_when_the_senders_go_away_comes_back_before_the_end() {
    let (tx, mut rx) = channel(4);
    tx.send(1).await.unwrap();
    let delivery = rx.begin().await.unwrap();
    drop(tx);
    drop(delivery);
    let delivery = rx.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), (1, 2));
    delivery.commit();
    assert!(rx.begin().await.is_none());
    assert!(rx.recv().await.is_none());
    assert!(rx.begin_batch(4).await.is_none());
}

#[tokio::test]
async fn a_consumer_that_never_runs_dry_still_yields_to_other_tasks() {
    // An endless stream is always ready; without spending tokio's budget
    // the loop would never let the other task run. Run it on a thread of
    // its own so that a regression fails instead of hanging the suite.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let setter = std::sync::Arc::clone(&flag);
            tokio::spawn(async move { setter.store(true, std::sync::atomic::Ordering::SeqCst) });
            let mut rx = Receiver::from_stream(futures::stream::repeat(1_u8));
            let mut deliveries = 0_u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                rx.begin().await.unwrap().commit();
                deliveries += 1;
            }
            done_tx.send(deliveries).unwrap();
        });
    });
    let deliveries = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the consumer loop never yielded");
    assert!(deliveries <= 1_000, "{deliveries}");
}
