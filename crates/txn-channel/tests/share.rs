//! Sharing the work: several consumers (receiver clones), owned deliveries
//! ended in any order on other tasks, the three orders, `max_in_flight`,
//! and nothing lost when a consumer (or its wait) goes away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_txn_channel::{ChannelBuilder, Receiver, channel};
use futures::FutureExt;
use tokio::time::timeout;

/// Generous: only reached if something hangs.
const HANG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_consumers_share_the_work_and_each_item_is_committed_once() {
    let (tx, rx) = ChannelBuilder::<u32>::new()
        .unordered()
        .capacity(64)
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let mut rx = rx.clone();
        let seen = Arc::clone(&seen);
        consumers.push(tokio::spawn(async move {
            let mut mine = 0;
            while let Some(delivery) = rx.begin().await {
                // Every third first attempt fails: it goes to someone else.
                if *delivery % 3 == 0 && delivery.attempt() == 1 {
                    continue;
                }
                seen.lock().unwrap().push(delivery.commit());
                mine += 1;
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    drop(rx);
    for i in 0..2_000_u32 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut per_consumer = Vec::new();
    for consumer in consumers {
        per_consumer.push(timeout(HANG, consumer).await.unwrap().unwrap());
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..2_000).collect::<Vec<_>>());
    assert_eq!(per_consumer.iter().sum::<usize>(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_deliveries_end_in_any_order_on_other_tasks() {
    let (tx, mut rx) = ChannelBuilder::new()
        .unordered()
        .max_in_flight(16)
        .build()
        .unwrap();
    for i in 0..200_u64 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(delivery) = timeout(HANG, rx.begin_owned()).await.unwrap() {
        tasks.spawn(async move {
            // Later items end sooner: ends come in any order.
            tokio::time::sleep(Duration::from_micros(200 - *delivery)).await;
            let n = *delivery;
            match n % 4 {
                0 if delivery.attempt() == 1 => delivery.rollback().map(|()| None),
                1 if delivery.attempt() == 1 => delivery
                    .retry_after(Duration::from_millis(1))
                    .map(|()| None),
                _ => delivery.commit().map(Some),
            }
        });
    }
    let mut done = Vec::new();
    while let Some(ended) = tasks.join_next().await {
        done.extend(ended.unwrap().unwrap());
    }
    done.sort_unstable();
    assert_eq!(done, (0..200).collect::<Vec<_>>());
    let m = rx.metrics();
    assert_eq!(
        (m.committed, m.redelivered, m.in_flight, m.queued),
        (200, 100, 0, 0)
    );
}

#[tokio::test]
async fn max_in_flight_holds_the_next_delivery_until_one_ends() {
    let (tx, mut rx) = ChannelBuilder::new()
        .unordered()
        .max_in_flight(2)
        .build()
        .unwrap();
    for i in 0..3 {
        tx.send(i).await.unwrap();
    }
    let a = rx.begin_owned().await.unwrap();
    let b = rx.begin_owned().await.unwrap();
    assert!(
        rx.begin_owned().now_or_never().is_none(),
        "a third in flight"
    );
    let mut other = rx.clone();
    assert!(
        other.begin().now_or_never().is_none(),
        "over every consumer"
    );
    let waiting = tokio::spawn(async move { other.begin_owned().await.map(|d| *d) });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    b.commit().unwrap();
    assert_eq!(timeout(HANG, waiting).await.unwrap().unwrap(), Some(2));
    a.commit().unwrap();
}

#[tokio::test]
async fn strict_order_delivers_one_at_a_time_over_every_consumer() {
    let (tx, mut rx) = channel(8);
    for i in 0..3 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut other = rx.clone();
    let first = rx.begin_owned().await.unwrap();
    assert_eq!(*first, 0);
    assert!(
        other.begin().now_or_never().is_none(),
        "strict: one in flight"
    );
    drop(first); // rolled back: 0 comes first again
    let again = other.begin().await.unwrap();
    assert_eq!((*again, again.attempt()), (0, 2));
    again.commit();
    let mut got = Vec::new();
    while let Some(d) = rx.begin().await {
        got.push(d.commit());
    }
    assert_eq!(got, [1, 2]);
    assert!(other.begin().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_with_several_consumers_and_keys_run_in_parallel() {
    let (tx, rx) = ChannelBuilder::new()
        .order_by_key(|(key, _): &(u32, u32)| *key)
        .build()
        .unwrap();
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let log = Arc::new(Mutex::new(HashMap::<u32, Vec<u32>>::new()));
    let max_parallel = Arc::new(Mutex::new(0_usize));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let mut rx: Receiver<(u32, u32)> = rx.clone();
        let (in_flight, log, max_parallel) = (
            Arc::clone(&in_flight),
            Arc::clone(&log),
            Arc::clone(&max_parallel),
        );
        consumers.push(tokio::spawn(async move {
            while let Some(delivery) = rx.begin_owned().await {
                let (key, seq) = *delivery;
                {
                    let mut busy = in_flight.lock().unwrap();
                    assert!(busy.insert(key), "key {key} in flight twice");
                    let mut max = max_parallel.lock().unwrap();
                    *max = (*max).max(busy.len());
                }
                tokio::time::sleep(Duration::from_micros(50)).await;
                let fail = seq % 5 == 0 && delivery.attempt() == 1;
                // Out of flight before the end makes the next one takeable.
                in_flight.lock().unwrap().remove(&key);
                if fail {
                    drop(delivery);
                } else {
                    log.lock().unwrap().entry(key).or_default().push(seq);
                    delivery.commit().unwrap();
                }
            }
        }));
    }
    drop(rx);
    for seq in 0..100 {
        for key in 0..8 {
            tx.send((key, seq)).await.unwrap();
        }
    }
    drop(tx);
    for consumer in consumers {
        timeout(HANG, consumer).await.unwrap().unwrap();
    }
    for (key, seqs) in log.lock().unwrap().iter() {
        assert_eq!(
            *seqs,
            (0..100).collect::<Vec<_>>(),
            "key {key} out of order"
        );
    }
    assert!(
        *max_parallel.lock().unwrap() > 1,
        "different keys never ran together"
    );
}

#[tokio::test]
async fn a_dropped_consumer_gives_back_what_it_held() {
    let (tx, mut rx) = channel(8);
    for i in 0..4 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    // It is the only consumer: it takes all four into its own buffer.
    let first = rx.begin().await.unwrap();
    assert_eq!(*first, 0);
    first.rollback();
    let mut other = rx.clone(); // the buffer goes back to the channel
    drop(rx);
    let mut got = Vec::new();
    while let Some(d) = timeout(HANG, other.begin()).await.unwrap() {
        got.push((*d, d.attempt()));
        d.commit();
    }
    assert_eq!(got, [(0, 2), (1, 1), (2, 1), (3, 1)]);
}

#[tokio::test]
async fn owned_deliveries_outlive_their_consumer_and_come_back_to_the_others() {
    let (tx, rx) = ChannelBuilder::new().unordered().build().unwrap();
    tx.send("a").await.unwrap();
    drop(tx);
    let mut keeper = rx.clone();
    let mut taker = rx;
    let held = taker.begin_owned().await.unwrap();
    drop(taker);
    assert!(keeper.begin().now_or_never().is_none(), "still in flight");
    drop(held);
    let again = keeper.begin().await.unwrap();
    assert_eq!((*again, again.attempt()), ("a", 2));
    again.commit();
    assert!(keeper.begin().await.is_none());
}

#[tokio::test]
async fn when_the_last_consumer_goes_the_rest_is_dropped_and_counted() {
    let (tx, mut rx) = ChannelBuilder::new().unordered().build().unwrap();
    for i in 0..3 {
        tx.send(i).await.unwrap();
    }
    let held = rx.begin_owned().await.unwrap();
    drop(rx);
    assert!(tx.is_closed());
    let m = tx.metrics();
    assert_eq!((m.dropped, m.in_flight, m.queued), (2, 1, 0));
    held.rollback().unwrap(); // nobody can take it again: dropped, counted
    let m = tx.metrics();
    assert_eq!((m.sent, m.dropped, m.in_flight), (3, 3, 0));
}

#[tokio::test]
async fn a_cancelled_wait_passes_its_wake_up_on() {
    let (tx, rx) = ChannelBuilder::new().unordered().build().unwrap();
    let mut a = rx.clone();
    let mut b = rx;
    // Both wait; `a` waited first, so a send wakes `a`...
    let mut wait_a = Box::pin(a.begin_owned());
    assert!((&mut wait_a).now_or_never().is_none());
    let waiting_b = tokio::spawn(async move { b.begin_owned().await.map(|d| *d) });
    tokio::task::yield_now().await;
    tx.send(1).await.unwrap();
    // ...which is cancelled before it looks: `b` must get the item.
    drop(wait_a);
    assert_eq!(timeout(HANG, waiting_b).await.unwrap().unwrap(), Some(1));
}

#[tokio::test]
async fn every_consumer_sees_the_end() {
    let (tx, rx) = ChannelBuilder::<u8>::new().unordered().build().unwrap();
    let mut waiters = Vec::new();
    for _ in 0..40 {
        // More waiters than one wake-up round holds.
        let mut rx = rx.clone();
        waiters.push(tokio::spawn(
            async move { rx.begin_owned().await.is_none() },
        ));
    }
    tokio::task::yield_now().await;
    drop(tx);
    for waiter in waiters {
        assert!(timeout(HANG, waiter).await.unwrap().unwrap());
    }
    drop(rx);
}

#[tokio::test]
async fn a_batch_takes_one_item_per_key() {
    let (tx, mut rx) = ChannelBuilder::new()
        .order_by_key(|n: &u32| n % 2)
        .build()
        .unwrap();
    for i in 0..6 {
        tx.send(i).await.unwrap();
    }
    let batch = rx.begin_batch(10).await.unwrap();
    assert_eq!(&*batch, [0, 1]);
    let committed: Vec<_> = batch.commit_first(1).collect(); // 1 comes back
    assert_eq!(committed, [0]);
    let batch = rx.begin_batch(10).await.unwrap();
    let mut got = batch.to_vec();
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    assert_eq!(
        batch.attempt(batch.iter().position(|&n| n == 1).unwrap()),
        Some(2)
    );
}

#[tokio::test]
async fn items_a_busy_consumer_took_ahead_go_to_an_idle_one() {
    // Owned deliveries, unordered, no lease and no in-flight limit: a
    // consumer takes what is ready ahead of handing it out. One that then
    // sits on its first delivery must not hold the rest from the others.
    let (tx, rx) = ChannelBuilder::new().unordered().build().unwrap();
    for i in 0..10 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut busy = rx.clone();
    let mut idle = rx;
    let held = busy.begin_owned().await.unwrap();
    // The rest count as queued, not in flight, wherever they wait.
    let m = idle.metrics();
    assert_eq!((m.delivered, m.in_flight, m.queued), (1, 1, 9));
    let mut got = Vec::new();
    while got.len() < 9 {
        let d = timeout(HANG, idle.begin_owned())
            .await
            .expect("the idle consumer takes what the busy one holds")
            .unwrap();
        got.push(d.commit().unwrap());
    }
    got.push(held.commit().unwrap());
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(busy.begin_owned().await.is_none());
    assert!(idle.begin_owned().await.is_none());
    let m = idle.metrics();
    assert_eq!((m.delivered, m.committed, m.redelivered), (10, 10, 0));
}

#[tokio::test]
async fn items_taken_ahead_go_back_untouched_when_their_consumer_goes_or_borrows() {
    let (tx, rx) = ChannelBuilder::new()
        .order_by_key(|n: &u32| u64::from(n % 2))
        .build()
        .unwrap();
    for i in 0..6 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut first = rx.clone();
    let mut other = rx;
    // One item per key is ready: `first` takes both ahead, hands out 0.
    let zero = first.begin_owned().await.unwrap();
    assert_eq!(*zero, 0);
    // A borrowing delivery may wait: the item taken ahead (1) goes back
    // before it looks, and it is then next in line, its attempt untouched.
    let one = timeout(HANG, first.begin())
        .await
        .expect("what it took ahead is not stuck behind its own wait")
        .unwrap();
    assert_eq!((*one, one.attempt()), (1, 1));
    one.commit();
    // Dropping a consumer gives back what it took ahead, too.
    let two_or_three = first.begin_owned().await.unwrap();
    drop(first);
    zero.commit().unwrap();
    let mut got = vec![0, 1, two_or_three.commit().unwrap()];
    while let Some(d) = timeout(HANG, other.begin_owned()).await.unwrap() {
        assert_eq!(d.attempt(), 1, "{} was never handed out before", *d);
        got.push(d.commit().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    let m = other.metrics();
    assert_eq!(
        (m.delivered, m.committed, m.in_flight, m.queued),
        (6, 6, 0, 0)
    );
}

/// Per key, a consumer takes a key's next items with it (a chain) and hands
/// each out only when the one before it ended: never two of a key out at
/// once, and a rolled-back or failed one comes back before the rest.
#[tokio::test]
async fn a_keys_items_taken_together_go_out_one_at_a_time_and_in_order() {
    let (tx, mut rx) = ChannelBuilder::<(u8, u32)>::new()
        .order_by_key(|item: &(u8, u32)| u64::from(item.0))
        .capacity(16)
        .build()
        .unwrap();
    for i in 0..4 {
        tx.send((0, i)).await.unwrap();
    }
    tx.send((1, 0)).await.unwrap();
    // Key 0's first item out: its next ones wait; key 1 may go.
    let first = rx.begin_owned().await.unwrap();
    assert_eq!(*first, (0, 0));
    let other = rx.begin_owned().await.unwrap();
    assert_eq!(*other, (1, 0));
    assert!(rx.begin_owned().now_or_never().is_none(), "key 0 is out");
    // Rolled back: it comes back before the rest of its chain.
    first.rollback().unwrap();
    let again = rx.begin_owned().await.unwrap();
    assert_eq!((*again, again.attempt()), ((0, 0), 2));
    assert!(rx.begin_owned().now_or_never().is_none(), "key 0 is out");
    assert_eq!(again.commit(), Ok((0, 0)));
    // Committed: the next of the chain, handed out by this consumer.
    let second = rx.begin_owned().await.unwrap();
    assert_eq!(*second, (0, 1));
    // Failed (dead-lettered): the next goes.
    second.fail("bad").unwrap();
    let third = rx.begin_owned().await.unwrap();
    assert_eq!((*third, third.attempt()), ((0, 2), 1));
    // Another consumer may not take key 0 meanwhile, and steals nothing of it.
    let mut thief = rx.clone();
    assert!(thief.begin_owned().now_or_never().is_none(), "key 0 is out");
    drop(third); // rolled back
    assert_eq!(*thief.begin_owned().await.unwrap(), (0, 2));
    assert_eq!(other.commit(), Ok((1, 0)));
}
