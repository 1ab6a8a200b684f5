//! Time, under `tokio::time::pause()`: a lease runs out exactly at its
//! deadline (not before, yes after), `extend` moves it, a late end is told;
//! the retry policy spaces redeliveries by attempt (not before, yes after),
//! `retry_after` wins, and a delayed item holds back only what its order
//! says. Dead letters say why.

use std::time::Duration;

use async_patterns_core::{DeadLetterReason, Jitter, RetryPolicy};
use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, DeliveryError};
use futures::FutureExt;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::{Instant, advance, sleep};

const LEASE: Duration = Duration::from_secs(30);
const MS: Duration = Duration::from_millis(1);

fn policy(initial: Duration) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_delay(initial)
        .multiplier(2.0)
        .max_delay(Duration::from_secs(60))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn letters<T: Send + 'static>() -> (
    impl FnMut(DeadLetter<T>) + Send + 'static,
    UnboundedReceiver<DeadLetter<T>>,
) {
    let (tx, rx) = unbounded_channel();
    (move |letter| tx.send(letter).unwrap(), rx)
}

#[tokio::test(start_paused = true)]
async fn a_lease_runs_out_at_its_deadline_not_before() {
    let (tx, mut rx) = ChannelBuilder::new().lease(LEASE).build().unwrap();
    tx.send("job").await.unwrap();
    let start = Instant::now();
    let held = rx.begin_owned().await.unwrap();
    let mut other = rx.clone();

    advance(LEASE - MS).await;
    assert!(
        other.begin_owned().now_or_never().is_none(),
        "expired early"
    );
    assert_eq!(other.metrics().expired, 0);

    // A consumer waiting for work notices the deadline by itself.
    let again = other.begin_owned().await.unwrap();
    assert_eq!(Instant::now(), start + LEASE);
    assert_eq!((*again, again.attempt()), ("job", 2));
    assert_eq!(other.metrics().expired, 1);

    assert_eq!(held.commit(), Err(DeliveryError::LeaseExpired));
    assert_eq!(again.commit(), Ok("job"));
    assert_eq!(rx.metrics().committed, 1);
}

#[tokio::test(start_paused = true)]
async fn an_end_just_before_the_deadline_counts_and_just_after_does_not() {
    let (tx, mut rx) = ChannelBuilder::new().lease(LEASE).build().unwrap();
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let first = rx.begin_owned().await.unwrap();
    advance(LEASE - MS).await;
    assert_eq!(first.commit(), Ok(1));

    let second = rx.begin_owned().await.unwrap();
    advance(LEASE).await;
    // Nobody noticed the expiry yet: the late end finds it itself.
    assert_eq!(second.rollback(), Err(DeliveryError::LeaseExpired));
    let m = rx.metrics();
    assert_eq!((m.expired, m.queued, m.in_flight), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn extend_keeps_a_delivery_past_its_first_deadline() {
    let (tx, mut rx) = ChannelBuilder::new().lease(LEASE).build().unwrap();
    tx.send("long").await.unwrap();
    let start = Instant::now();
    let held = rx.begin_owned().await.unwrap();
    advance(LEASE - MS).await;
    held.extend(LEASE).unwrap();
    assert_eq!(held.lease_deadline(), Some(start + LEASE - MS + LEASE));
    let mut other = rx.clone();
    advance(LEASE - MS).await; // past the first deadline, before the new one
    assert!(other.begin_owned().now_or_never().is_none());
    // A shorter extension never shortens the lease.
    held.extend(MS).unwrap();
    assert_eq!(held.lease_deadline(), Some(start + LEASE - MS + LEASE));
    assert_eq!(held.commit(), Ok("long"));

    tx.send("late").await.unwrap();
    let late = rx.begin_owned().await.unwrap();
    advance(LEASE).await;
    assert_eq!(late.extend(LEASE), Err(DeliveryError::LeaseExpired));
}

#[tokio::test(start_paused = true)]
async fn a_stuck_holder_does_not_hold_the_strict_queue_forever() {
    let (tx, mut rx) = ChannelBuilder::new().lease(LEASE).build().unwrap();
    for job in ["stuck", "next"] {
        tx.send(job).await.unwrap();
    }
    drop(tx);
    let stuck = rx.begin_owned().await.unwrap();
    let parked = tokio::spawn(async move {
        let _held = stuck;
        std::future::pending::<()>().await;
    });
    let mut got = Vec::new();
    while let Some(delivery) = rx.begin_owned().await {
        got.push((*delivery, delivery.attempt()));
        delivery.commit().unwrap();
    }
    assert_eq!(got, [("stuck", 2), ("next", 1)]);
    parked.abort();
}

#[tokio::test(start_paused = true)]
async fn an_expiry_on_the_last_attempt_is_a_dead_letter_that_says_so() {
    let (sink, mut dead) = letters();
    let (tx, mut rx) = ChannelBuilder::new()
        .lease(LEASE)
        .max_attempts(1)
        .on_dead_letter(sink)
        .build()
        .unwrap();
    tx.send("slow").await.unwrap();
    drop(tx);
    let start = Instant::now();
    let held = rx.begin_owned().await.unwrap();
    assert!(rx.begin_owned().await.is_none()); // waits out the lease, then ends
    let letter = dead.recv().await.unwrap();
    assert_eq!(letter.reason(), &DeadLetterReason::LeaseExpired);
    assert_eq!((letter.attempts(), letter.first_delivered()), (1, start));
    assert_eq!(held.commit(), Err(DeliveryError::LeaseExpired));
}

#[tokio::test(start_paused = true)]
async fn a_panic_on_the_last_attempt_is_a_dead_letter_that_says_so() {
    let (sink, mut dead) = letters();
    let (tx, mut rx) = ChannelBuilder::new()
        .unordered()
        .max_attempts(2)
        .on_dead_letter(sink)
        .build()
        .unwrap();
    tx.send(7_u32).await.unwrap();
    drop(tx);
    while let Some(delivery) = rx.begin_owned().await {
        let task = tokio::spawn(async move {
            let _held = delivery;
            panic!("handler crashed");
        });
        assert!(task.await.unwrap_err().is_panic());
    }
    let letter = dead.recv().await.unwrap();
    assert_eq!(
        (letter.attempts(), letter.reason()),
        (2, &DeadLetterReason::Panicked)
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_policy_spaces_redeliveries_by_attempt() {
    let (tx, mut rx) = ChannelBuilder::new()
        .retry_policy(policy(Duration::from_secs(1)))
        .build()
        .unwrap();
    tx.send("flaky").await.unwrap();
    let mut delivered_at = Vec::new();
    let start = Instant::now();
    for _ in 0..4 {
        let delivery = rx.begin().await.unwrap();
        delivered_at.push(start.elapsed());
        delivery.rollback();
    }
    // 1 s after the first failure, 2 s after the second, 4 s after the third.
    assert_eq!(delivered_at, [0, 1, 3, 7].map(Duration::from_secs));
}

#[tokio::test(start_paused = true)]
async fn backoff_is_not_before_its_time_and_yes_after_for_owned_deliveries() {
    let (tx, mut rx) = ChannelBuilder::new()
        .unordered()
        .retry_policy(policy(Duration::from_secs(2)))
        .build()
        .unwrap();
    tx.send("x").await.unwrap();
    rx.begin_owned().await.unwrap().rollback().unwrap();
    advance(Duration::from_secs(2) - MS).await;
    assert!(
        rx.begin_owned().now_or_never().is_none(),
        "redelivered early"
    );
    advance(MS).await;
    let again = rx.begin_owned().now_or_never().flatten().unwrap();
    assert_eq!(again.attempt(), 2);
    // Dropped (a rollback too): attempt 2 failed, so 4 s now.
    drop(again);
    advance(Duration::from_secs(4) - MS).await;
    assert!(rx.begin_owned().now_or_never().is_none());
    advance(MS).await;
    assert_eq!(rx.begin_owned().await.unwrap().attempt(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_wins_over_the_policy() {
    let (tx, mut rx) = ChannelBuilder::new()
        .retry_policy(policy(Duration::from_secs(10)))
        .build()
        .unwrap();
    tx.send(1).await.unwrap();
    let start = Instant::now();
    rx.begin()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(1));
    let again = rx.begin().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(again.attempt(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_item_does_not_hold_other_keys() {
    let (tx, mut rx) = ChannelBuilder::new()
        .order_by_key(|(key, _): &(char, u8)| *key)
        .build()
        .unwrap();
    for item in [('a', 1), ('a', 2), ('b', 1)] {
        tx.send(item).await.unwrap();
    }
    let start = Instant::now();
    rx.begin_owned()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(5))
        .unwrap();
    // 'b' goes at once; 'a' waits, its second item behind its first.
    assert_eq!(rx.begin_owned().await.unwrap().commit(), Ok(('b', 1)));
    assert!(rx.begin_owned().now_or_never().is_none());
    let a1 = rx.begin_owned().await.unwrap();
    assert_eq!((*a1, start.elapsed()), (('a', 1), Duration::from_secs(5)));
    a1.commit().unwrap();
    assert_eq!(*rx.begin_owned().await.unwrap(), ('a', 2));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_item_does_not_hold_others_when_unordered() {
    let (tx, mut rx) = ChannelBuilder::new().unordered().build().unwrap();
    for i in 0..3 {
        tx.send(i).await.unwrap();
    }
    let start = Instant::now();
    let first = rx.begin_owned().await.unwrap();
    first.retry_after(Duration::from_secs(5)).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = rx.begin_owned().await.unwrap();
        got.push((*d, start.elapsed()));
        d.commit().unwrap();
    }
    assert_eq!(
        got,
        [
            (1, Duration::ZERO),
            (2, Duration::ZERO),
            (0, Duration::from_secs(5))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn in_strict_order_a_delayed_head_holds_the_queue() {
    let (tx, mut rx) = ChannelBuilder::new().build().unwrap();
    tx.send(0).await.unwrap();
    tx.send(1).await.unwrap();
    let start = Instant::now();
    rx.begin_owned()
        .await
        .unwrap()
        .retry_after(Duration::from_secs(3))
        .unwrap();
    let mut other = rx.clone();
    assert!(other.begin().now_or_never().is_none());
    let head = other.begin().await.unwrap();
    assert_eq!((*head, start.elapsed()), (0, Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_item_is_dead_lettered_at_once_with_its_reason_and_times() {
    let (sink, mut dead) = letters();
    let (tx, mut rx) = ChannelBuilder::new()
        .max_attempts(5)
        .on_dead_letter(sink)
        .build()
        .unwrap();
    tx.send("bad").await.unwrap();
    tx.send("good").await.unwrap();
    drop(tx);
    let start = Instant::now();
    rx.begin().await.unwrap().rollback();
    sleep(Duration::from_secs(2)).await;
    rx.begin().await.unwrap().fail("malformed");
    assert_eq!(rx.begin().await.unwrap().commit(), "good");
    assert!(rx.begin().await.is_none());
    let letter = dead.recv().await.unwrap();
    assert_eq!(
        letter.reason(),
        &DeadLetterReason::Failed("malformed".into())
    );
    assert_eq!(letter.attempts(), 2);
    assert_eq!(letter.first_delivered(), start);
    assert_eq!(letter.last_delivered(), start + Duration::from_secs(2));
    let m = rx.metrics();
    assert_eq!((m.sent, m.committed, m.dead_lettered), (2, 1, 1));
}
