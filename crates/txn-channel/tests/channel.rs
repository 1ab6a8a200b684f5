//! The channel: capacity counts every uncommitted item, waiting senders are
//! served in order and woken by commits and by close, `send_blocking` obeys
//! the runtime context, and builders validate their settings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_txn_channel::{
    ChannelBuilder, SendBlockingError, SendError, Sender, TrySendError, channel,
};
use futures::FutureExt;
use tokio::time::timeout;

/// Generous: only reached if something hangs.
const HANG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn capacity_counts_held_and_rolled_back_items() {
    let (tx, mut rx) = channel(2);
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let delivery = rx.begin().await.unwrap();
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    drop(delivery);
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    rx.begin().await.unwrap().commit();
    tx.try_send(3).unwrap();
    assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
}

#[tokio::test]
async fn a_commit_wakes_a_sender_waiting_for_room() {
    let (tx, mut rx) = channel(1);
    tx.send(1).await.unwrap();
    let waiting = tokio::spawn(async move { tx.send(2).await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());

    let delivery = rx.begin().await.unwrap();
    // Still held: no room yet.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    delivery.commit();
    timeout(HANG, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(rx.begin().await.unwrap().commit(), 2);
}

#[tokio::test]
async fn waiting_senders_are_served_in_the_order_they_came() {
    let (tx, mut rx) = channel(1);
    tx.send(0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 1..=5 {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move { tx.send(i).await }));
        // Let each one start waiting before the next.
        tokio::task::yield_now().await;
    }
    drop(tx);
    let mut got = Vec::new();
    while let Some(delivery) = timeout(HANG, rx.begin()).await.unwrap() {
        got.push(delivery.commit());
    }
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn try_send_does_not_jump_ahead_of_waiting_senders() {
    let (tx, mut rx) = channel(1);
    tx.send(1).await.unwrap();
    let tx2 = tx.clone();
    let waiting = tokio::spawn(async move { tx2.send(2).await });
    tokio::task::yield_now().await;
    rx.begin().await.unwrap().commit();
    // The freed slot went to the waiting sender.
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    timeout(HANG, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(rx.begin().await.unwrap().commit(), 2);
}

#[tokio::test]
async fn a_cancelled_reserve_passes_its_granted_slot_on() {
    let (tx, mut rx) = channel(1);
    tx.send(1).await.unwrap();

    // First in line: a reservation that will be dropped after it is granted.
    let mut first = Box::pin(tx.reserve());
    assert!(first.as_mut().now_or_never().is_none());
    let tx2 = tx.clone();
    let second = tokio::spawn(async move { tx2.send(2).await });
    tokio::task::yield_now().await;

    rx.begin().await.unwrap().commit(); // the slot is granted to `first`
    drop(first); // ... which never takes it
    timeout(HANG, second).await.unwrap().unwrap().unwrap();
    assert_eq!(rx.begin().await.unwrap().commit(), 2);
}

#[tokio::test]
async fn a_cancelled_send_leaves_the_line_without_a_trace() {
    let (tx, mut rx) = channel(1);
    tx.send(1).await.unwrap();
    for i in 0..100 {
        // Each cancelled send registered as a waiter, then left.
        assert!(tx.send(i).now_or_never().is_none());
    }
    rx.begin().await.unwrap().commit();
    tx.try_send(2).unwrap();
}

#[tokio::test]
async fn a_dropped_permit_gives_its_slot_back() {
    let (tx, mut rx) = channel(1);
    let permit = tx.reserve().await.unwrap();
    let tx2 = tx.clone();
    let waiting = tokio::spawn(async move { tx2.send(5).await });
    tokio::task::yield_now().await;
    drop(permit);
    timeout(HANG, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(rx.begin().await.unwrap().commit(), 5);
}

#[tokio::test]
async fn closing_the_receiver_hands_waiting_senders_their_values_back() {
    let (tx, mut rx) = channel(1);
    tx.send(1).await.unwrap();
    let tx2 = tx.clone();
    let waiting = tokio::spawn(async move { tx2.send(2).await });
    let tx3 = tx.clone();
    let reserving = tokio::spawn(async move { tx3.reserve().await.map(drop) });
    tokio::task::yield_now().await;

    rx.close();
    assert_eq!(
        timeout(HANG, waiting).await.unwrap().unwrap(),
        Err(SendError(2))
    );
    assert_eq!(
        timeout(HANG, reserving).await.unwrap().unwrap(),
        Err(SendError(()))
    );
    assert!(tx.is_closed());
    assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    // What was sent before the close is still delivered.
    assert_eq!(rx.begin().await.unwrap().commit(), 1);
    assert!(rx.begin().await.is_none());
}

#[tokio::test]
async fn a_send_granted_a_slot_just_before_close_gets_its_value_back() {
    let (tx, mut rx) = channel(1);
    tx.send(1).await.unwrap();
    let mut waiting = Box::pin(tx.send(2));
    assert!(waiting.as_mut().now_or_never().is_none());
    rx.begin().await.unwrap().commit(); // granted to `waiting`...
    rx.close(); // ...which only learns of it after the close
    assert_eq!(waiting.await, Err(SendError(2)));
    assert!(rx.begin().await.is_none());
}

#[tokio::test]
async fn dropping_the_receiver_closes_the_channel() {
    let (tx, rx) = channel(4);
    tx.send(1).await.unwrap();
    drop(rx);
    assert_eq!(tx.send(2).await, Err(SendError(2)));
    assert!(tx.is_closed());
}

/// An item that sends on its own channel when dropped.
struct Boomerang(Option<Sender<Boomerang>>);

impl Drop for Boomerang {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.try_send(Boomerang(None));
        }
    }
}

#[test]
fn items_are_dropped_outside_the_channel_lock() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (tx, rx) = channel(4);
        tx.try_send(Boomerang(Some(tx.clone()))).unwrap();
        tx.try_send(Boomerang(Some(tx.clone()))).unwrap();
        drop(rx); // drops both items, which use the channel
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(HANG)
        .expect("dropping queued items deadlocked");
}

#[test]
fn send_blocking_from_a_plain_thread_waits_for_a_commit() {
    let (tx, mut rx) = channel(1);
    let producer = std::thread::spawn(move || {
        for i in 0..20 {
            tx.send_blocking(i).unwrap();
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while let Some(delivery) = timeout(HANG, rx.begin()).await.unwrap() {
            got.push(delivery.commit());
        }
        got
    });
    producer.join().unwrap();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn send_blocking_on_a_current_thread_runtime_sends_when_there_is_room() {
    let (tx, mut rx) = channel(2);
    // Room: no wait is needed, so the send succeeds even on the runtime's
    // own thread, and from a task of that runtime.
    tx.send_blocking(1).unwrap();
    let tx2 = tx.clone();
    let task = tokio::spawn(async move { tx2.send_blocking(2).map_err(|e| e.into_inner()) });
    assert_eq!(task.await.unwrap(), Ok(()));
    drop(tx);
    let mut got = Vec::new();
    while let Some(delivery) = rx.begin().await {
        got.push(delivery.commit());
    }
    assert_eq!(got, [1, 2]);
}

#[tokio::test]
async fn send_blocking_on_a_current_thread_runtime_refuses_to_wait_instead_of_hanging() {
    let (tx, mut rx) = channel(1);
    tx.send_blocking(1).unwrap();
    // Full: waiting here could never end (the consumer runs on this very
    // thread), so the value comes back at once.
    assert!(matches!(
        tx.send_blocking(2),
        Err(SendBlockingError::WouldDeadlock(2))
    ));
    let task = tokio::spawn(async move { tx.send_blocking(3).map_err(|e| e.into_inner()) });
    assert_eq!(task.await.unwrap(), Err(3));
    assert_eq!(rx.begin().await.unwrap().commit(), 1);
    assert!(rx.begin().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_blocking_on_a_multi_thread_worker_blocks_in_place() {
    let (tx, mut rx) = channel(1);
    let producer = tokio::spawn(async move {
        for i in 0..10 {
            tx.send_blocking(i).unwrap();
        }
    });
    let mut got = Vec::new();
    while let Some(delivery) = timeout(HANG, rx.begin()).await.unwrap() {
        got.push(delivery.commit());
    }
    producer.await.unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn send_blocking_from_spawn_blocking_and_after_close() {
    let (tx, mut rx) = channel(1);
    let tx2 = tx.clone();
    let sent = tokio::task::spawn_blocking(move || tx2.send_blocking(1));
    timeout(HANG, sent).await.unwrap().unwrap().unwrap();
    assert_eq!(rx.begin().await.unwrap().commit(), 1);

    rx.close();
    let refused = tokio::task::spawn_blocking(move || tx.send_blocking(2));
    let err = timeout(HANG, refused).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, SendBlockingError::Closed(2)));
    assert_eq!(err.to_string(), "channel closed");
}

#[test]
fn builder_names_the_rejected_setting() {
    let err = ChannelBuilder::<u8>::new().capacity(0).build().unwrap_err();
    assert_eq!(err.field(), "capacity");
    assert!(
        ChannelBuilder::<u8>::new()
            .capacity(usize::MAX)
            .build()
            .is_err()
    );
    // The largest capacity is 2^30: it builds (nothing is allocated for
    // it up front), one more does not.
    let err = ChannelBuilder::<u8>::new()
        .capacity((1 << 30) + 1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "capacity");
    let (tx, mut rx) = ChannelBuilder::<u8>::new()
        .capacity(1 << 30)
        .build()
        .unwrap();
    tx.try_send(1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.metrics().committed, 1);

    let err = ChannelBuilder::<u8>::new()
        .max_attempts(0)
        .on_dead_letter(|_| {})
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_attempts");

    let err = ChannelBuilder::<u8>::new()
        .max_attempts(2)
        .build_from_stream(futures::stream::empty())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `dead_letter`: got none, expected a dead-letter channel or callback when `max_attempts` is set"
    );
}

#[test]
#[should_panic(expected = "txn-channel: invalid `capacity`: got 0")]
fn new_with_zero_capacity_panics_with_the_config_error() {
    let _ = channel::<u8>(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_senders_on_many_threads_lose_and_duplicate_nothing() {
    let (tx, mut rx) = channel(8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut producers = Vec::new();
    for p in 0..4_u32 {
        let tx = tx.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..2_000 {
                tx.send(p * 10_000 + i).await.unwrap();
            }
        }));
    }
    drop(tx);
    let mut round = 0_u64;
    while let Some(batch) = timeout(HANG, rx.begin_batch(16)).await.unwrap() {
        round += 1;
        // Fail one batch in three, commit part of another.
        match round % 3 {
            0 => batch.rollback(),
            1 => {
                let k = batch.len() / 2;
                seen.lock().unwrap().extend(batch.commit_first(k));
            }
            _ => seen.lock().unwrap().extend(batch.commit_all()),
        }
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 8_000);
    for p in 0..4 {
        let from_p: Vec<_> = seen.iter().filter(|v| *v / 10_000 == p).copied().collect();
        assert_eq!(
            from_p,
            (0..2_000).map(|i| p * 10_000 + i).collect::<Vec<_>>(),
            "producer {p} out of order or incomplete"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_halves_and_their_futures_can_move_to_other_tasks() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Sync>(_: &T) {}

    let (tx, mut rx) = channel::<String>(4);
    assert_send(&tx);
    assert_sync(&tx);
    assert_send(&rx);
    assert_send(&tx.send(String::new()));
    assert_send(&rx.begin());
    assert_send(&rx.begin_batch(2));
    assert_send(&rx.recv());

    let producer = tokio::spawn(async move { tx.send("moved".to_string()).await });
    let consumer = tokio::spawn(async move {
        let delivery = rx.begin().await.unwrap();
        tokio::task::yield_now().await; // held across an await
        delivery.commit()
    });
    producer.await.unwrap().unwrap();
    assert_eq!(consumer.await.unwrap(), "moved");
}
