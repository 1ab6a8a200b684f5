//! Deliveries against a real nats-server: commit, rollback and its backoff,
//! retry_after's delay, fail and max_attempts into dead letters with their
//! reasons, drops and panics, leases kept alive, batches, ordering, and
//! shutdown with deliveries in flight.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_patterns_core::DeadLetterReason;
use async_patterns_txn_jetstream::{DeliveryError, Ordering, Receiver};
use common::*;
use tokio::time::{Instant, timeout};

/// Begins the next delivery, failing the test if none comes within `limit`.
async fn next(receiver: &Receiver, limit: Duration) -> async_patterns_txn_jetstream::Delivery {
    timeout(limit, receiver.begin())
        .await
        .expect("a delivery in time")
        .expect("no receive error")
        .expect("open")
}

/// Asserts that nothing is delivered within `window`.
async fn nothing_for(receiver: &Receiver, window: Duration) {
    if let Ok(got) = timeout(window, receiver.begin()).await {
        panic!(
            "expected nothing, got {:?}",
            got.map(|d| d.map(|d| d.stream_sequence()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_is_confirmed_and_the_message_is_not_delivered_again() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 3).await;
    let receiver = builder(&context, "c").build().await.expect("receiver");
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let delivery = next(&receiver, Duration::from_secs(5)).await;
        assert_eq!(delivery.attempt(), 1);
        assert_eq!(
            &delivery[..],
            delivery
                .stream_sequence()
                .saturating_sub(1)
                .to_string()
                .as_bytes()
        );
        seen.insert(delivery.stream_sequence());
        delivery.commit().await.expect("committed");
    }
    assert_eq!(seen, BTreeSet::from([1, 2, 3]));
    assert_eq!(settled(&context, "c", Duration::from_secs(2)).await, (0, 0));
    nothing_for(&receiver, Duration::from_millis(300)).await;
    let m = receiver.metrics();
    assert_eq!(
        (m.delivered, m.committed, m.redelivered, m.in_flight),
        (3, 3, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_not_before_and_yes_after() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let receiver = builder(&context, "c").build().await.expect("receiver");
    let delivery = next(&receiver, Duration::from_secs(5)).await;
    let delay = Duration::from_millis(1500);
    delivery.retry_after(delay).await.expect("naked");
    let naked = Instant::now();
    // The server holds it back for the whole delay...
    nothing_for(&receiver, delay.mul_f64(0.8)).await;
    // ...and delivers it after.
    let again = next(&receiver, Duration::from_secs(5)).await;
    assert!(
        naked.elapsed() >= delay.mul_f64(0.8),
        "came back after {:?}",
        naked.elapsed()
    );
    assert_eq!(again.attempt(), 2);
    assert_eq!(again.stream_sequence(), 1);
    again.commit().await.expect("committed");
    let m = receiver.metrics();
    assert_eq!(
        (m.delivered, m.redelivered, m.rolled_back, m.committed),
        (2, 1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_spaced_by_the_retry_policy() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let policy = async_patterns_txn_jetstream::RetryPolicy::builder()
        .initial_delay(Duration::from_millis(600))
        .multiplier(2.0)
        .max_delay(Duration::from_secs(5))
        .jitter(async_patterns_core::Jitter::None)
        .build()
        .expect("policy");
    let receiver = builder(&context, "c")
        .retry_policy(policy)
        .build()
        .await
        .expect("receiver");
    let mut gaps = Vec::new();
    let mut delivery = next(&receiver, Duration::from_secs(5)).await;
    for attempt in 1..=2 {
        assert_eq!(delivery.attempt(), attempt);
        delivery.rollback().await.expect("rolled back");
        let rolled = Instant::now();
        delivery = next(&receiver, Duration::from_secs(10)).await;
        gaps.push(rolled.elapsed());
    }
    delivery.commit().await.expect("committed");
    // 600 ms after the first attempt, 1200 ms after the second (not a bare nak).
    assert!(gaps[0] >= Duration::from_millis(480), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(960), "{gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_rollback_dead_letters_with_max_attempts_then_terminates() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let receiver = builder(&context, "c")
        .max_attempts(3)
        .build()
        .await
        .expect("receiver");
    for attempt in 1..=3 {
        let delivery = next(&receiver, Duration::from_secs(5)).await;
        assert_eq!(delivery.attempt(), attempt);
        delivery.rollback().await.expect("ended");
    }
    nothing_for(&receiver, Duration::from_millis(300)).await;
    let dead = dead_letters(&context).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason(), &DeadLetterReason::MaxAttempts);
    assert_eq!(dead[0].attempts(), 3);
    assert_eq!(dead[0].stream(), STREAM);
    assert_eq!(dead[0].consumer(), "c");
    assert_eq!(dead[0].stream_sequence(), 1);
    assert_eq!(dead[0].subject(), "orders.0");
    assert_eq!(&dead[0].payload()[..], b"0");
    assert!(dead[0].published() <= dead[0].dead_lettered());
    assert_eq!(settled(&context, "c", Duration::from_secs(2)).await, (0, 0));
    let m = receiver.metrics();
    assert_eq!((m.rolled_back, m.dead_lettered), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_dead_letters_at_once_with_the_handlers_reason() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 2).await;
    let receiver = builder(&context, "c").build().await.expect("receiver");
    let first = next(&receiver, Duration::from_secs(5)).await;
    first.fail("malformed order").await.expect("dead-lettered");
    let second = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(second.stream_sequence(), 2);
    second.commit().await.expect("committed");
    let dead = dead_letters(&context).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason(),
        &DeadLetterReason::Failed("malformed order".into())
    );
    assert_eq!(dead[0].attempts(), 1);
    assert_eq!(settled(&context, "c", Duration::from_secs(2)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_without_reaching_the_handler() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    context
        .publish("orders.x", "not a number".into())
        .await
        .unwrap()
        .await
        .unwrap();
    context
        .publish("orders.x", "42".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let receiver = builder(&context, "c")
        .decode(
            |m| -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
                Ok(std::str::from_utf8(&m.payload)?.parse()?)
            },
        )
        .build()
        .await
        .expect("receiver");
    let delivery = timeout(Duration::from_secs(5), receiver.begin())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(*delivery, 42);
    assert_eq!(delivery.stream_sequence(), 2);
    delivery.commit().await.expect("committed");
    assert_eq!(settled(&context, "c", Duration::from_secs(3)).await, (0, 0));
    let dead = dead_letters(&context).await;
    assert_eq!(dead.len(), 1);
    match dead[0].reason() {
        DeadLetterReason::Failed(why) => assert!(why.starts_with("cannot decode: "), "{why}"),
        other => panic!("unexpected reason {other:?}"),
    }
    assert_eq!(&dead[0].payload()[..], b"not a number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_is_rolled_back_and_comes_again() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let receiver = builder(&context, "c").build().await.expect("receiver");
    let delivery = next(&receiver, Duration::from_secs(5)).await;
    // A handler that bails out with `?` drops its delivery.
    let handler = async move {
        let _held = delivery;
        Err::<(), &str>("dependency down")?;
        Ok::<(), &str>(())
    };
    assert!(handler.await.is_err());
    let again = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(again.attempt(), 2);
    again.commit().await.expect("committed");
    assert_eq!(receiver.metrics().rolled_back, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_last_attempt_dead_letters_as_panicked() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let receiver = builder(&context, "c")
        .max_attempts(1)
        .build()
        .await
        .expect("receiver");
    let delivery = next(&receiver, Duration::from_secs(5)).await;
    let task = tokio::spawn(async move {
        let _held = delivery;
        panic!("handler bug");
    });
    assert!(task.await.unwrap_err().is_panic());
    let deadline = Instant::now() + Duration::from_secs(5);
    let dead = loop {
        let dead = dead_letters(&context).await;
        if !dead.is_empty() || Instant::now() >= deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason(), &DeadLetterReason::Panicked);
    assert_eq!(settled(&context, "c", Duration::from_secs(2)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_stops_a_slow_handlers_message_from_being_redelivered() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let lease = Duration::from_millis(1500);
    let slow = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    // A second process on the same consumer, hungry for work.
    let other = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    let delivery = next(&slow, Duration::from_secs(5)).await;
    // Work for almost three leases: the other process never gets the message.
    nothing_for(&other, lease * 8 / 3).await;
    assert!(delivery.lease_remaining() > Duration::ZERO);
    delivery.commit().await.expect("still ours");
    assert_eq!(settled(&context, "c", Duration::from_secs(2)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keep_alive_a_slow_handler_loses_the_message_and_is_told_so() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let lease = Duration::from_millis(800);
    let slow = builder(&context, "c")
        .lease(lease)
        .keep_alive(None)
        .max_in_flight(1)
        .build()
        .await
        .expect("receiver");
    let other = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    let delivery = next(&slow, Duration::from_secs(5)).await;
    // The server gives it to the other process once the lease is over.
    let taken = next(&other, Duration::from_secs(5)).await;
    assert_eq!(taken.stream_sequence(), delivery.stream_sequence());
    assert_eq!(taken.attempt(), 2);
    // The slow handler's commit is refused: it would ack the other's delivery.
    assert!(matches!(
        delivery.commit().await,
        Err(DeliveryError::LeaseExpired)
    ));
    assert_eq!(slow.metrics().expired, 1);
    taken.commit().await.expect("committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_last_lease_ran_out_is_dead_lettered_as_lease_expired() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 2).await;
    let receiver = builder(&context, "c")
        .lease(Duration::from_millis(600))
        .keep_alive(None)
        .max_attempts(1)
        // Nothing else is pulled while one is in flight (a prefetched
        // message's lease would run out in the queue too, using its attempt).
        .max_in_flight(1)
        .build()
        .await
        .expect("receiver");
    let held = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(held.stream_sequence(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(
        held.commit().await,
        Err(DeliveryError::LeaseExpired)
    ));
    // Its second delivery is one too many: dead-lettered, never handed out.
    let second = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(second.stream_sequence(), 2);
    second.commit().await.expect("committed");
    assert_eq!(settled(&context, "c", Duration::from_secs(3)).await, (0, 0));
    let dead = dead_letters(&context).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason(), &DeadLetterReason::LeaseExpired);
    assert_eq!(dead[0].attempts(), 2);
    assert_eq!(dead[0].stream_sequence(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_batch_takes_what_arrived_and_commit_first_returns_the_rest() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 10).await;
    let receiver = builder(&context, "c").build().await.expect("receiver");
    let mut taken = Vec::new();
    while taken.len() < 10 {
        let batch = timeout(
            Duration::from_secs(5),
            receiver.begin_batch(10 - taken.len()),
        )
        .await
        .expect("in time")
        .expect("no error")
        .expect("open");
        assert!(!batch.is_empty());
        taken.extend(batch.into_deliveries());
    }
    let sequences: Vec<u64> = taken.iter().map(|d| d.stream_sequence()).collect();
    assert_eq!(sequences, (1..=10).collect::<Vec<_>>(), "stream order");
    assert_eq!(receiver.metrics().in_flight, 10);
    // Commit the first four of a batch; the other six come back.
    let batch = async_patterns_txn_jetstream::BatchDelivery::from_deliveries(taken);
    batch.commit_first(4).await.expect("ended");
    let mut again = Vec::new();
    while again.len() < 6 {
        let batch = receiver.begin_batch(6).await.unwrap().unwrap();
        again.extend(batch.iter().map(|d| (d.stream_sequence(), d.attempt())));
        batch.commit_all().await.expect("committed");
    }
    again.sort_unstable();
    assert_eq!(again, (5..=10).map(|s| (s, 2)).collect::<Vec<_>>());
    assert_eq!(settled(&context, "c", Duration::from_secs(2)).await, (0, 0));
    let m = receiver.metrics();
    assert_eq!((m.committed, m.rolled_back, m.in_flight), (10, 6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_redelivers_a_rolled_back_message_before_the_next() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 3).await;
    let receiver = builder(&context, "c")
        .ordering(Ordering::Strict)
        .build()
        .await
        .expect("receiver");
    let mut order = Vec::new();
    let mut rolled_back = false;
    while order.len() < 4 {
        let delivery = next(&receiver, Duration::from_secs(5)).await;
        order.push(delivery.stream_sequence());
        if delivery.stream_sequence() == 2 && !rolled_back {
            rolled_back = true;
            delivery.rollback().await.expect("rolled back");
        } else {
            delivery.commit().await.expect("committed");
        }
    }
    assert_eq!(order, [1, 2, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_never_has_a_key_in_flight_twice_and_holds_it_for_a_rollback() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    // orders.0: seq 1, 4; orders.1: seq 2, 5; orders.2: seq 3.
    publish(&context, 5).await;
    let receiver = builder(&context, "c")
        .ordering(Ordering::per_key(|m: &async_nats::Message| {
            m.subject.to_string()
        }))
        .build()
        .await
        .expect("receiver");
    let mut first: Vec<_> = Vec::new();
    for _ in 0..3 {
        first.push(next(&receiver, Duration::from_secs(5)).await);
    }
    let sequences: Vec<u64> = first.iter().map(|d| d.stream_sequence()).collect();
    assert_eq!(sequences, [1, 2, 3], "one per key, in stream order");
    // Every key is busy: nothing else is handed out.
    nothing_for(&receiver, Duration::from_millis(300)).await;
    // orders.0's message is rolled back: seq 4 (same key) must wait for it.
    let mut first = first.into_iter();
    first
        .next()
        .unwrap()
        .retry_after(Duration::from_millis(300))
        .await
        .unwrap();
    first.next().unwrap().commit().await.unwrap();
    let d = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(d.stream_sequence(), 5, "orders.1 is free, orders.0 is held");
    d.commit().await.unwrap();
    let d = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(
        (d.stream_sequence(), d.attempt()),
        (1, 2),
        "the rolled-back message first"
    );
    d.commit().await.unwrap();
    let d = next(&receiver, Duration::from_secs(5)).await;
    assert_eq!(d.stream_sequence(), 4);
    d.commit().await.unwrap();
    first.next().unwrap().commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_deliveries_finish_until_the_deadline_then_hands_the_rest_back() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 6).await;
    // A lease far longer than the test: what comes back, came back by a nak.
    let lease = Duration::from_secs(60);
    let receiver = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    let quick = next(&receiver, Duration::from_secs(5)).await;
    let slow_a = next(&receiver, Duration::from_secs(5)).await;
    let slow_b = next(&receiver, Duration::from_secs(5)).await;
    // Let the other three arrive in the queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.metrics().queued < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        quick.commit().await
    });
    let started = Instant::now();
    let report = receiver.shutdown_async(Duration::from_millis(800)).await;
    assert!(started.elapsed() >= Duration::from_millis(700));
    finisher
        .await
        .unwrap()
        .expect("committed within the deadline");
    assert_eq!(report.committed, 1);
    assert_eq!(report.handed_back, 2);
    assert_eq!(report.returned, 3);
    assert_eq!(report.unconfirmed, 0);
    // The slow handlers are told their message is gone.
    assert!(matches!(
        slow_a.commit().await,
        Err(DeliveryError::ShutDown)
    ));
    assert!(matches!(
        slow_b.rollback().await,
        Err(DeliveryError::ShutDown)
    ));
    assert!(receiver.begin().await.unwrap().is_none(), "closed");
    // Another process takes the five at once (no lease to wait for).
    let other = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    let mut rest = Vec::new();
    for _ in 0..5 {
        let d = next(&other, Duration::from_secs(20)).await;
        rest.push(d.stream_sequence());
        d.commit().await.unwrap();
    }
    rest.sort_unstable();
    assert_eq!(rest, [2, 3, 4, 5, 6]);
    assert_eq!(receiver.metrics().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_receiver_hands_back_what_it_had_queued_at_once() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 4).await;
    let lease = Duration::from_secs(60);
    let first = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.metrics().queued < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(first.metrics().queued, 4);
    drop(first);
    // Not after the 60 s lease: at once.
    let second = builder(&context, "c")
        .lease(lease)
        .build()
        .await
        .expect("receiver");
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = next(&second, Duration::from_secs(20)).await;
        got.push((d.stream_sequence(), d.attempt()));
        d.commit().await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, [(1, 2), (2, 2), (3, 2), (4, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_pulling_and_what_was_queued_can_still_be_begun() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 3).await;
    let receiver = builder(&context, "c").build().await.expect("receiver");
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.metrics().queued < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.close();
    assert!(receiver.is_closed());
    let mut got = Vec::new();
    while let Some(d) = timeout(Duration::from_secs(5), receiver.begin())
        .await
        .unwrap()
        .unwrap()
    {
        got.push(d.stream_sequence());
        d.commit().await.unwrap();
    }
    assert_eq!(got, [1, 2, 3]);
    // `begin` said "closed and drained": nothing more is pulled.
    publish(&context, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.begin().await.unwrap().is_none());
    assert_eq!(
        consumer_state(&context, "c").await.0,
        2,
        "the later two wait for another consumer"
    );
}
