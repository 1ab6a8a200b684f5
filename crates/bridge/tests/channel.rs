//! The hand-off channel's behaviour: order, overflow policies and their
//! accounting, close and drop from either end, cancellation, waiting senders,
//! and no loss under concurrent producers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_patterns_bridge::{
    ChannelBuilder, Overflow, SendBlockingError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, channel,
};
use common::{multi_thread, within};
use futures::StreamExt;

#[test]
fn items_arrive_in_order_across_many_laps_of_the_ring() {
    let (tx, mut rx) = channel::<u32>(3);
    let mut next = 0;
    for round in 0..50u32 {
        for i in 0..(round % 3 + 1) {
            tx.try_send(round * 10 + i).unwrap();
        }
        while let Ok(v) = rx.try_recv() {
            assert_eq!(v, next_expected(&mut next, v));
        }
    }
    fn next_expected(next: &mut u32, v: u32) -> u32 {
        assert!(v >= *next);
        *next = v + 1;
        v
    }
}

#[test]
fn capacity_is_exact_and_a_full_channel_hands_the_value_back() {
    for capacity in [1, 2, 3, 7, 8, 9] {
        let (tx, mut rx) = channel::<usize>(capacity);
        for i in 0..capacity {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert_eq!(tx.len(), capacity);
        assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(tx.try_send(capacity), Ok(()));
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(rest, (1..=capacity).collect::<Vec<_>>());
        assert!(rx.is_empty());
    }
}

#[test]
fn builder_rejects_zero_and_oversized_capacities_with_the_range() {
    let err = ChannelBuilder::<u8>::new().capacity(0).build().unwrap_err();
    assert_eq!(err.field(), "capacity");
    assert_eq!(err.expected(), "1..=16777216");
    assert!(
        ChannelBuilder::<u8>::new()
            .capacity((1 << 24) + 1)
            .build()
            .is_err()
    );
    // The largest capacity allocates 2^24 slots: too slow to interpret.
    if !cfg!(miri) {
        assert!(
            ChannelBuilder::<u8>::new()
                .capacity(1 << 24)
                .build()
                .is_ok()
        );
    }
}

#[test]
#[should_panic(expected = "invalid `capacity`: got 0")]
fn channel_with_zero_capacity_panics_with_the_config_error() {
    let _ = channel::<u8>(0);
}

#[test]
fn drop_newest_discards_and_counts_the_new_items() {
    let (tx, mut rx) = ChannelBuilder::<u32>::new()
        .capacity(2)
        .overflow(Overflow::DropNewest)
        .build()
        .unwrap();
    for i in 0..5 {
        assert_eq!(tx.try_send(i), Ok(()));
    }
    assert_eq!(tx.send_blocking(5), Ok(()), "a lossy send never waits");
    assert_eq!(tx.metrics().dropped, 4);
    assert_eq!(rx.try_recv(), Ok(0));
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn drop_oldest_discards_and_counts_the_old_items() {
    let (tx, mut rx) = ChannelBuilder::<u32>::new()
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .build()
        .unwrap();
    for i in 0..10 {
        assert_eq!(tx.try_send(i), Ok(()));
    }
    assert_eq!(tx.send_timeout(10, Duration::ZERO), Ok(()));
    assert_eq!(rx.metrics().dropped, 8);
    let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got, [8, 9, 10]);
}

#[test]
fn lossy_policies_still_report_a_closed_channel() {
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let (tx, rx) = ChannelBuilder::<u32>::new()
            .capacity(1)
            .overflow(overflow)
            .build()
            .unwrap();
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
        assert_eq!(tx.metrics().dropped, 0);
    }
}

#[test]
fn dropping_the_receiver_drops_and_counts_buffered_items() {
    let item = Arc::new(());
    let (tx, rx) = channel::<Arc<()>>(4);
    for _ in 0..3 {
        tx.try_send(item.clone()).unwrap();
    }
    assert_eq!(Arc::strong_count(&item), 4);
    drop(rx);
    assert_eq!(
        Arc::strong_count(&item),
        1,
        "buffered items were not dropped"
    );
    assert_eq!(tx.metrics().dropped, 3);
    assert!(tx.is_closed());
    let err = tx.try_send(item.clone()).unwrap_err();
    assert!(matches!(err, TrySendError::Closed(_)));
}

#[test]
fn items_left_when_everything_is_dropped_are_dropped_once() {
    let item = Arc::new(());
    let (tx, rx) = channel::<Arc<()>>(4);
    tx.try_send(item.clone()).unwrap();
    tx.try_send(item.clone()).unwrap();
    drop(tx);
    drop(rx);
    assert_eq!(Arc::strong_count(&item), 1);
}

#[tokio::test]
async fn close_refuses_new_sends_but_delivers_what_is_buffered() {
    let (tx, mut rx) = channel::<u32>(4);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    rx.close();
    assert!(tx.is_closed() && rx.is_closed());
    assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    assert_eq!(tx.send(4).await, Err(SendError(4)));
    assert_eq!(tx.send_blocking(5), Err(SendBlockingError::Closed(5)));
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, None);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[tokio::test]
async fn receiver_ends_only_when_the_last_sender_is_dropped() {
    let (tx, mut rx) = channel::<u32>(4);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    drop(tx);
    assert_eq!(rx.recv().await, Some(1));
    assert!(!rx.is_closed());
    tx2.try_send(2).unwrap();
    drop(tx2);
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_recv_cancelled_in_select_loses_nothing() {
    let (tx, mut rx) = channel::<u32>(64);
    let (mut received, mut cancelled) = (Vec::new(), 0);
    for i in 0..50u32 {
        // The item and the timer are due at the same instant: sometimes the
        // recv wins, sometimes it is dropped — with or without the item
        // already in the channel.
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.try_send(i).unwrap();
        });
        tokio::select! {
            got = rx.recv() => received.push(got.unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(1)) => cancelled += 1,
        }
    }
    drop(tx);
    while let Some(v) = rx.recv().await {
        received.push(v);
    }
    assert_eq!(received, (0..50).collect::<Vec<_>>());
    assert!(
        cancelled > 0,
        "no recv was cancelled: the test proved nothing"
    );
}

#[tokio::test]
async fn receiver_is_a_stream() {
    let (tx, rx) = channel::<u32>(16);
    std::thread::spawn(move || {
        for i in 0..100 {
            tx.send_blocking(i).unwrap();
        }
    });
    let chunks: Vec<Vec<u32>> = rx.chunks(30).collect().await;
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks.concat(), (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn recv_many_takes_what_is_there_up_to_the_limit() {
    let (tx, mut rx) = channel::<u32>(8);
    let mut buf = Vec::new();
    assert_eq!(rx.recv_many(&mut buf, 0).await, 0);
    for i in 0..6 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(rx.recv_many(&mut buf, 4).await, 4);
    assert_eq!(rx.recv_many(&mut buf, 4).await, 2);
    assert_eq!(buf, [0, 1, 2, 3, 4, 5]);
    drop(tx);
    assert_eq!(rx.recv_many(&mut buf, 4).await, 0);
}

#[test]
fn send_timeout_gives_the_value_back_when_the_channel_stays_full() {
    within(|| {
        let (tx, _rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let err = tx.send_timeout(2, Duration::from_millis(20)).unwrap_err();
        assert_eq!(err, SendTimeoutError::Timeout(2));
        assert_eq!(
            tx.send_timeout(3, Duration::ZERO),
            Err(SendTimeoutError::Timeout(3))
        );
    });
}

#[test]
fn waiting_senders_wake_with_closed_when_the_receiver_goes_away() {
    within(|| {
        let (tx, rx) = channel::<u32>(1);
        tx.try_send(0).unwrap();
        let waiting: Vec<_> = (1..=3)
            .map(|i| {
                let tx = tx.clone();
                std::thread::spawn(move || tx.send_blocking(i))
            })
            .collect();
        // Let them block (or not: either way they must end with `Closed`).
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        for (i, w) in (1..=3).zip(waiting) {
            assert_eq!(w.join().unwrap(), Err(SendBlockingError::Closed(i)));
        }
        assert_eq!(tx.metrics().dropped, 1);
    });
}

#[tokio::test]
async fn async_send_waits_for_room_and_a_cancelled_send_keeps_nothing() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.send(1).await.unwrap();
    // Full: a send raced against a ready branch is cancelled, its value dropped.
    tokio::select! {
        biased;
        _ = tx.send(2) => unreachable!("the channel is full"),
        _ = async {} => {}
    }
    let waiting = {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(3).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(rx.recv().await, Some(1));
    waiting.await.unwrap().unwrap();
    assert_eq!(rx.recv().await, Some(3));
}

#[test]
fn blocked_senders_all_get_through_as_the_receiver_drains() {
    // Fewer under miri, which interprets every step.
    const PER_PRODUCER: u32 = if cfg!(miri) { 40 } else { 2_000 };
    within(|| {
        let rt = multi_thread(2);
        let (tx, mut rx) = channel::<(usize, u32)>(2);
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        tx.send_blocking((p, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let got = rt.block_on(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(got.len(), 4 * PER_PRODUCER as usize);
        for p in 0..4 {
            let mine: Vec<u32> = got
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(
                mine,
                (0..PER_PRODUCER).collect::<Vec<_>>(),
                "producer {p} out of order"
            );
        }
    });
}

#[test]
fn concurrent_producers_and_a_dropped_receiver_account_for_every_item() {
    // Senders race a receiver that stops mid-stream: each item must be
    // received, handed back, or counted in `dropped()` — exactly one of them.
    within(|| {
        for overflow in [Overflow::Reject, Overflow::DropNewest, Overflow::DropOldest] {
            for round in 0..if cfg!(miri) { 2 } else { 20 } {
                let rt = multi_thread(1);
                let (tx, mut rx) = ChannelBuilder::<u32>::new()
                    .capacity(4)
                    .overflow(overflow)
                    .build()
                    .unwrap();
                let handed_back = Arc::new(AtomicUsize::new(0));
                let producers: Vec<_> = (0..3)
                    .map(|_| {
                        let tx = tx.clone();
                        let handed_back = handed_back.clone();
                        std::thread::spawn(move || {
                            let mut sent = 0;
                            for i in 0..if cfg!(miri) { 60 } else { 500 } {
                                sent += 1;
                                let result = if i % 2 == 0 {
                                    tx.try_send(i).map_err(TrySendError::into_inner)
                                } else {
                                    tx.send_timeout(i, Duration::from_millis(5))
                                        .map_err(SendTimeoutError::into_inner)
                                };
                                if result.is_err() {
                                    handed_back.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            sent
                        })
                    })
                    .collect();
                let take = 100 + round * 37;
                let (done, mut producers_done) = tokio::sync::oneshot::channel::<()>();
                let consumer = rt.spawn(async move {
                    let mut n = 0;
                    while n < take {
                        tokio::select! {
                            got = rx.recv() => match got {
                                Some(_) => n += 1,
                                None => break,
                            },
                            _ = &mut producers_done => {
                                n += std::iter::from_fn(|| rx.try_recv().ok()).count();
                                break;
                            }
                        }
                    }
                    n
                    // `rx` is dropped here, often mid-stream.
                });
                let sent: usize = producers.into_iter().map(|p| p.join().unwrap()).sum();
                let _ = done.send(()); // the consumer may have stopped already
                let received = rt.block_on(consumer).unwrap();
                let handed_back = handed_back.load(Ordering::Relaxed);
                let m = tx.metrics();
                assert_eq!(
                    received + handed_back + m.dropped as usize,
                    sent,
                    "{overflow:?} round {round}"
                );
                // The metrics tell the same story.
                assert_eq!(m.delivered as usize, received, "{overflow:?} round {round}");
                assert_eq!(
                    m.handed_back as usize, handed_back,
                    "{overflow:?} round {round}"
                );
                assert_eq!(
                    m.sent,
                    m.delivered + m.dropped,
                    "{overflow:?} round {round}"
                );
                assert_eq!(m.queued, 0);
            }
        }
    });
}

#[test]
fn handles_are_send_sync_and_debug_without_t_debug() {
    struct Opaque;
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<async_patterns_bridge::Sender<Opaque>>();
    assert_send_sync::<async_patterns_bridge::Receiver<Opaque>>();
    let (tx, rx) = channel::<Opaque>(2);
    assert!(format!("{tx:?}").contains("capacity: 2"));
    assert!(format!("{rx:?}").contains("Receiver"));
    assert_eq!(format!("{:?}", TrySendError::Full(Opaque)), "Full(..)");
}

#[test]
fn a_consumer_that_always_finds_items_still_lets_other_tasks_run() {
    within(|| {
        common::current_thread().block_on(async {
            // Enough for tokio's budget (128 units of 8 items) to run out
            // several times; fewer under miri.
            const ITEMS: u32 = if cfg!(miri) { 4_096 } else { 20_000 };
            let (tx, mut rx) = channel::<u32>(ITEMS as usize);
            for i in 0..ITEMS {
                tx.try_send(i).unwrap();
            }
            drop(tx);
            let seen_by_other_task = Arc::new(AtomicUsize::new(usize::MAX));
            let received = Arc::new(AtomicUsize::new(0));
            let (seen, count) = (seen_by_other_task.clone(), received.clone());
            let other = tokio::spawn(async move {
                seen.store(count.load(Ordering::SeqCst), Ordering::SeqCst);
            });
            while rx.recv().await.is_some() {
                received.fetch_add(1, Ordering::SeqCst);
            }
            other.await.unwrap();
            // Tokio's budget made the consumer yield long before the end.
            let at = seen_by_other_task.load(Ordering::SeqCst);
            assert!(
                at < ITEMS as usize / 2,
                "the other task ran only after {at} items"
            );
        });
    });
}

/// CPU time (user + system) the calling thread has used, in clock ticks.
#[cfg(all(target_os = "linux", not(miri)))] // miri cannot read /proc
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which is in parentheses): utime is the
    // 12th and stime the 13th of them.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[cfg(all(target_os = "linux", not(miri)))] // miri cannot read /proc
#[test]
fn a_blocked_sender_sleeps_instead_of_spinning() {
    within(|| {
        let (tx, _rx) = channel::<u32>(1);
        tx.try_send(0).unwrap();
        let before = thread_cpu_ticks();
        let err = tx.send_timeout(1, Duration::from_millis(500)).unwrap_err();
        let used = thread_cpu_ticks() - before;
        assert_eq!(err, SendTimeoutError::Timeout(1));
        // A spinning thread would use ~50 ticks (10 ms each) in 500 ms.
        assert!(used < 20, "the blocked sender used {used} ticks of CPU");
    });
}

#[cfg(all(target_os = "linux", not(miri)))] // miri cannot read /proc
#[test]
fn a_waiting_receiver_sleeps_instead_of_spinning() {
    within(|| {
        let (_tx, mut rx) = channel::<u32>(1);
        let rt = common::current_thread();
        let before = thread_cpu_ticks();
        let got = rt
            .block_on(async { tokio::time::timeout(Duration::from_millis(500), rx.recv()).await });
        let used = thread_cpu_ticks() - before;
        assert!(got.is_err(), "nothing was sent");
        assert!(used < 20, "the waiting receiver used {used} ticks of CPU");
    });
}
