//! Loom models of sharing the work through the public API: owned
//! deliveries ended on other threads while consumers wait, and consumers on
//! several threads taking from one channel. In every interleaving each item
//! is committed exactly once and every consumer sees the end (loom reports
//! a deadlock if a wake-up goes missing).
#![cfg(async_patterns_loom)]

use async_patterns_txn_channel::{ChannelBuilder, channel};
use loom::future::block_on;
use loom::sync::{Arc, Mutex};

mod loom_support;
use loom_support::spawn;

/// The two-consumer model bounded to 5 preemptions: 16,738 interleavings,
/// seconds in release mode. Unbounded, loom explores 1.7 million of them
/// (three minutes); the races it looks for — both consumers waiting, the
/// end seen by each — need far fewer preemptions. The other models are
/// explored in full (32 interleavings each).
fn bounded(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(5);
    builder.check(f);
}

#[test]
fn an_owned_commit_on_another_thread_lets_the_waiting_consumer_take_the_next_item() {
    loom::model(|| {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        let first = block_on(rx.begin_owned()).unwrap();
        let worker = spawn(move || first.commit().unwrap());
        // Strict order: this waits until the commit, then takes 2.
        let second = block_on(rx.begin_owned()).unwrap();
        assert_eq!(*second, 2);
        assert_eq!(worker.join().unwrap(), 1);
        second.commit().unwrap();
        assert!(block_on(rx.begin_owned()).is_none());
    });
}

#[test]
fn a_rollback_on_another_thread_comes_back_to_the_waiting_consumer() {
    loom::model(|| {
        let (tx, mut rx) = ChannelBuilder::new().unordered().build().unwrap();
        tx.try_send(1).unwrap();
        drop(tx);
        let first = block_on(rx.begin_owned()).unwrap();
        let worker = spawn(move || drop(first));
        let again = block_on(rx.begin_owned()).unwrap();
        assert_eq!((*again, again.attempt()), (1, 2));
        worker.join().unwrap();
        again.commit().unwrap();
        assert!(block_on(rx.begin_owned()).is_none());
    });
}

#[test]
fn consumers_on_two_threads_commit_each_item_once_and_both_see_the_end() {
    bounded(|| {
        let (tx, rx) = ChannelBuilder::<u32>::new()
            .unordered()
            .capacity(2)
            .build()
            .unwrap();
        let committed = Arc::new(Mutex::new(Vec::new()));
        let mut other = rx.clone();
        let mut mine = rx;
        let seen = Arc::clone(&committed);
        let consumer = spawn(move || {
            block_on(async {
                while let Some(delivery) = other.begin().await {
                    seen.lock().unwrap().push(delivery.commit());
                }
            })
        });
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        block_on(async {
            while let Some(delivery) = mine.begin().await {
                committed.lock().unwrap().push(delivery.commit());
            }
        });
        consumer.join().unwrap();
        let mut all = committed.lock().unwrap().clone();
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
    });
}

#[test]
fn a_send_without_the_channel_lock_wakes_a_consumer_about_to_wait() {
    // The send takes a free slot and queues in the inbox without the
    // channel's lock; the consumer drains the inbox, finds nothing and
    // listens. Either it sees the value or the sender sees it listening.
    // The sender stays alive until the consumer has the value (its drop
    // would wake the consumer anyway, hiding a lost wake-up).
    loom::model(|| {
        let (tx, mut rx) = ChannelBuilder::<u32>::new()
            .unordered()
            .capacity(2)
            .build()
            .unwrap();
        let sender = spawn(move || {
            tx.try_send(7).unwrap();
            tx
        });
        let got = block_on(rx.begin_owned()).unwrap();
        assert_eq!(got.commit().unwrap(), 7);
        drop(sender.join().unwrap());
        assert!(block_on(rx.begin_owned()).is_none());
    });
}

#[test]
fn a_light_commit_on_another_thread_wakes_the_consumer_waiting_for_the_end() {
    // Unordered, no lease: the commit is counted in the consumer's cell,
    // not under the channel's lock. The consumer waits for the end (intake
    // closed, one item in flight), so it arms the cells: the commit either
    // sees that or is seen by it.
    loom::model(|| {
        let (tx, mut rx) = ChannelBuilder::<u32>::new().unordered().build().unwrap();
        tx.try_send(1).unwrap();
        drop(tx);
        let first = block_on(rx.begin_owned()).unwrap();
        let worker = spawn(move || first.commit().unwrap());
        assert!(block_on(rx.begin_owned()).is_none());
        assert_eq!(worker.join().unwrap(), 1);
        let m = rx.metrics();
        assert_eq!((m.committed, m.in_flight, m.queued), (1, 0, 0));
    });
}

#[test]
fn a_light_commit_on_another_thread_frees_its_key_for_the_waiting_consumer() {
    // Per key: the second item waits behind the first's key; the commit
    // that frees the key is counted without the channel's lock.
    loom::model(|| {
        let (tx, mut rx) = ChannelBuilder::<u32>::new()
            .order_by_key(|_| 0)
            .build()
            .unwrap();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        let first = block_on(rx.begin_owned()).unwrap();
        let worker = spawn(move || first.commit().unwrap());
        let second = block_on(rx.begin_owned()).unwrap();
        assert_eq!(*second, 2);
        assert_eq!(worker.join().unwrap(), 1);
        second.commit().unwrap();
        assert!(block_on(rx.begin_owned()).is_none());
    });
}

#[test]
fn consumers_taking_ahead_and_stealing_on_two_threads_commit_each_item_once() {
    // Owned deliveries, unordered: each consumer takes what is ready ahead
    // of handing it out, and one that finds the table empty steals half of
    // the other's before it waits.
    bounded(|| {
        let (tx, rx) = ChannelBuilder::<u32>::new()
            .unordered()
            .capacity(3)
            .build()
            .unwrap();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        tx.try_send(3).unwrap();
        drop(tx);
        let committed = Arc::new(Mutex::new(Vec::new()));
        let mut other = rx.clone();
        let mut mine = rx;
        let seen = Arc::clone(&committed);
        let consumer = spawn(move || {
            block_on(async {
                while let Some(delivery) = other.begin_owned().await {
                    seen.lock().unwrap().push(delivery.commit().unwrap());
                }
            })
        });
        block_on(async {
            while let Some(delivery) = mine.begin_owned().await {
                committed.lock().unwrap().push(delivery.commit().unwrap());
            }
        });
        consumer.join().unwrap();
        let mut all = committed.lock().unwrap().clone();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
    });
}

#[test]
fn per_key_chains_on_two_threads_keep_each_keys_order() {
    // Per key, a consumer takes a key's items together (a chain) and hands
    // each out after the one before it ended; the other consumer steals
    // only whole chains whose key is not out, and a rollback puts its item
    // back before the rest of its chain. Each key's items are committed
    // once, in order, whoever commits them.
    bounded(|| {
        let (tx, rx) = ChannelBuilder::<(u32, u32)>::new()
            .order_by_key(|item: &(u32, u32)| u64::from(item.0))
            .capacity(3)
            .build()
            .unwrap();
        tx.try_send((0, 1)).unwrap();
        tx.try_send((0, 2)).unwrap();
        tx.try_send((1, 1)).unwrap();
        drop(tx);
        let committed = Arc::new(Mutex::new(Vec::new()));
        let mut other = rx.clone();
        let mut mine = rx;
        let seen = Arc::clone(&committed);
        let consumer = spawn(move || {
            block_on(async {
                while let Some(delivery) = other.begin_owned().await {
                    let item = *delivery;
                    // Key 0's first item fails its first attempt here.
                    if item == (0, 1) && delivery.attempt() == 1 {
                        delivery.rollback().unwrap();
                        continue;
                    }
                    seen.lock().unwrap().push(delivery.commit().unwrap());
                }
            })
        });
        block_on(async {
            while let Some(delivery) = mine.begin_owned().await {
                committed.lock().unwrap().push(delivery.commit().unwrap());
            }
        });
        consumer.join().unwrap();
        let all = committed.lock().unwrap().clone();
        let key0: Vec<_> = all.iter().filter(|(k, _)| *k == 0).collect();
        assert_eq!(key0, [&(0, 1), &(0, 2)], "{all:?}");
        assert_eq!(all.len(), 3, "{all:?}");
    });
}
