//! The batching channel: capacity and backpressure, close and drop from
//! either side, cancelled sends, many producers on a multi-thread runtime.

use std::time::Duration;

use async_patterns_batching::{
    Batch, ChannelBuilder, FlushReason, Flusher, Receiver, SendError, Sender, TryRecvError,
    TrySendError,
};
use tokio::time::timeout;

/// A channel of `u32` with these limits and a minute-long delay.
fn channel(max_items: usize, capacity: usize) -> (Sender<u32>, Receiver<u32>) {
    ChannelBuilder::new()
        .max_items(max_items)
        .max_delay(Duration::from_secs(60))
        .capacity(capacity)
        .build()
        .unwrap()
}

#[test]
fn handles_are_send_and_sync_where_it_matters() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Sender<String>>();
    send::<Receiver<String>>();
    send_sync::<Flusher>();
    send_sync::<Batch<String>>();
    send_sync::<SendError<String>>();
    send::<async_patterns_batching::BatchedMpsc<String>>();
    send::<async_patterns_batching::Batched<futures::stream::Iter<std::vec::IntoIter<String>>>>();
}

#[tokio::test(start_paused = true)]
async fn send_waits_for_room_and_resumes_when_a_batch_is_received() {
    let (tx, mut rx) = channel(2, 4);
    tx.send_many(&mut vec![1, 2, 3, 4]).await.unwrap();
    assert_eq!(tx.try_send(5), Err(TrySendError::Full(5)));
    let mut blocked = tokio::spawn(async move {
        tx.send(5).await.unwrap();
        tx
    });
    tokio::task::yield_now().await;
    assert!(
        futures::poll!(&mut blocked).is_pending(),
        "sent into a full channel"
    );
    assert_eq!(&*rx.recv().await.unwrap(), [1, 2]);
    let tx = timeout(Duration::from_secs(1), blocked)
        .await
        .expect("sender not woken")
        .unwrap();
    drop(tx);
    let rest: Vec<Vec<u32>> = collect(&mut rx).await;
    assert_eq!(rest, [vec![3, 4], vec![5]]);
}

#[tokio::test(start_paused = true)]
async fn waiting_senders_get_their_items_back_when_the_receiver_is_dropped() {
    let (tx, rx) = channel(1, 1);
    tx.send(1).await.unwrap();
    let mut waiting = Vec::new();
    for i in 2..6 {
        let tx = tx.clone();
        waiting.push(tokio::spawn(async move { tx.send(i).await }));
    }
    tokio::task::yield_now().await;
    drop(rx);
    for (i, task) in (2..6).zip(waiting) {
        let result = timeout(Duration::from_secs(1), task)
            .await
            .expect("hung")
            .unwrap();
        assert_eq!(result.unwrap_err().into_inner(), i);
    }
    assert!(tx.is_closed());
    assert_eq!(tx.metrics().dropped, 1);
    // The four refused sends handed their items back in the error.
    assert_eq!(tx.metrics().handed_back, 4);
}

#[tokio::test(start_paused = true)]
async fn close_fails_new_sends_but_delivers_what_was_sent() {
    let (tx, mut rx) = channel(2, 10);
    tx.send_many(&mut vec![1, 2, 3]).await.unwrap();
    rx.close();
    let mut more = vec![4, 5];
    assert_eq!(
        tx.send_many(&mut more).await.unwrap_err().into_inner(),
        [4, 5]
    );
    assert!(more.is_empty());
    assert_eq!(tx.try_send(6), Err(TrySendError::Closed(6)));
    let full = rx.recv().await.unwrap();
    assert_eq!((&*full, full.reason()), (&[1, 2][..], FlushReason::Full));
    let tail = rx.recv().await.unwrap();
    assert_eq!((&*tail, tail.reason()), (&[3][..], FlushReason::Closed));
    assert!(rx.recv().await.is_none());
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Disconnected);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_send_leaves_no_waiter_behind() {
    let (tx, mut rx) = channel(1, 1);
    tx.send(1).await.unwrap();
    for i in 0..100 {
        // Each attempt waits, is cancelled, and must clean up after itself.
        assert!(
            timeout(Duration::from_millis(1), tx.send(100 + i))
                .await
                .is_err()
        );
    }
    assert_eq!(&*rx.recv().await.unwrap(), [1]);
    tx.send(2).await.unwrap();
    assert_eq!(&*rx.recv().await.unwrap(), [2]);
    // Only the two successful sends went through.
    assert_eq!(rx.metrics().items.total(), 2);
}

#[tokio::test(start_paused = true)]
async fn send_many_cancelled_keeps_the_unsent_items_in_order() {
    let (tx, mut rx) = channel(3, 6);
    let mut items: Vec<u32> = (0..20).collect();
    let mut received = Vec::new();
    while !items.is_empty() {
        let _ = timeout(Duration::from_millis(1), tx.send_many(&mut items)).await;
        while let Ok(batch) = rx.try_recv() {
            received.extend(batch.iter().copied());
        }
    }
    drop(tx);
    while let Some(batch) = rx.recv().await {
        received.extend(batch.iter().copied());
    }
    assert_eq!(received, (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn recv_cancelled_in_select_takes_no_batch() {
    let (tx, mut rx) = channel(10, 100);
    let producer = tokio::spawn(async move {
        for i in 0..50u32 {
            tokio::time::sleep(Duration::from_millis(3)).await;
            tx.send(i).await.unwrap();
            if i % 7 == 0 {
                tx.flusher().flush();
            }
        }
    });
    let mut got = Vec::new();
    let mut cancelled = 0;
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => got.extend(batch.iter().copied()),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(2)) => cancelled += 1,
        }
    }
    producer.await.unwrap();
    assert!(cancelled > 10, "the race was not exercised");
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn try_recv_closes_an_expired_batch_without_a_timer() {
    let (tx, mut rx) = ChannelBuilder::new()
        .max_items(10)
        .max_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    tx.try_send(1).unwrap();
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    tokio::time::advance(Duration::from_millis(5)).await;
    let batch = rx.try_recv().unwrap();
    assert_eq!((&*batch, batch.reason()), (&[1][..], FlushReason::Deadline));
}

#[test]
fn many_producers_on_two_workers_deliver_everything_in_per_producer_order() {
    const PRODUCERS: u32 = 4;
    const PER_PRODUCER: u32 = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = ChannelBuilder::new()
            .max_items(64)
            .max_delay(Duration::from_millis(1))
            .capacity(128)
            .build()
            .unwrap();
        for p in 0..PRODUCERS {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut chunk = Vec::new();
                for i in 0..PER_PRODUCER {
                    let item = p * PER_PRODUCER + i;
                    if i % 3 == 0 {
                        tx.send_many(&mut chunk).await.unwrap();
                        tx.send(item).await.unwrap();
                    } else {
                        chunk.push(item);
                        if chunk.len() == 5 {
                            tx.send_many(&mut chunk).await.unwrap();
                        }
                    }
                }
                tx.send_many(&mut chunk).await.unwrap();
            });
        }
        drop(tx);
        let consumer = tokio::spawn(async move {
            let mut rx = rx;
            let mut last = vec![None::<u32>; PRODUCERS as usize];
            let mut count = 0;
            while let Some(batch) = rx.recv().await {
                assert!(!batch.is_empty() && batch.len() <= 64);
                for &item in batch.iter() {
                    let p = (item / PER_PRODUCER) as usize;
                    assert!(last[p].is_none_or(|prev| prev < item), "out of order");
                    last[p] = Some(item);
                    count += 1;
                }
            }
            count
        });
        let count = timeout(Duration::from_secs(120), consumer)
            .await
            .expect("hung")
            .unwrap();
        assert_eq!(count, PRODUCERS * PER_PRODUCER);
    });
}

#[tokio::test(start_paused = true)]
async fn receiver_outcome_reports_the_end() {
    let (tx, mut rx) = channel(2, 10);
    let outcome = rx.outcome();
    tx.send_many(&mut vec![1, 2, 3]).await.unwrap();
    drop(tx);
    while rx.recv().await.is_some() {}
    let summary = outcome.await.unwrap();
    assert!(summary.finished);
    assert_eq!(summary.value.items.total(), 3);
    // Asking after the end settles at once.
    assert!(rx.outcome().await.unwrap().finished);
}

#[tokio::test(start_paused = true)]
async fn a_second_outcome_replaces_the_first() {
    let (_tx, mut rx) = channel(2, 10);
    let first = rx.outcome();
    let second = rx.outcome();
    assert_eq!(first.await, Err(async_patterns_core::outcome::Dropped));
    drop(rx);
    assert!(!second.await.unwrap().finished);
}

async fn collect(rx: &mut Receiver<u32>) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    while let Some(batch) = rx.recv().await {
        out.push(batch.to_vec());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_panics_closes_the_channel_and_senders_get_their_items_back() {
    let (tx, mut rx) = channel(2, 6);
    let outcome = rx.outcome();
    let consumer = tokio::spawn(async move {
        let first = rx.recv().await.unwrap();
        assert_eq!(&*first, [1, 2]);
        panic!("injected: the consumer fails while holding a batch");
    });
    tx.send_many(&mut vec![1, 2, 3, 4, 5, 6]).await.unwrap();
    // The consumer panicked: its receiver was dropped while unwinding.
    assert!(consumer.await.unwrap_err().is_panic());
    assert!(tx.is_closed());
    assert_eq!(tx.send(7).await.unwrap_err().into_inner(), 7);
    let summary = outcome.await.unwrap();
    assert!(!summary.finished);
    // 1 and 2 were delivered (the consumer held them when it failed); 3..6
    // were queued and are counted, not silently lost.
    assert_eq!(summary.value.items.total(), 2);
    assert_eq!(summary.value.dropped, 4);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_weigher_leaves_the_channel_consistent() {
    let (tx, mut rx) = ChannelBuilder::new()
        .max_items(10)
        .max_delay(Duration::from_millis(5))
        .max_weight(100, |item: &u32| {
            assert_ne!(*item, 13, "injected: the weigher fails on 13");
            *item as usize
        })
        .build()
        .unwrap();
    tx.send(1).await.unwrap();
    let failed = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(13).await }
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    // Weighing happens before the lock: the panic left no trace inside.
    tx.send(2).await.unwrap();
    drop(tx);
    let batch = rx.recv().await.unwrap();
    assert_eq!((&*batch, batch.weight()), (&[1, 2][..], 3));
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn many_waiting_senders_are_all_woken_and_all_get_through() {
    let (tx, mut rx) = channel(1, 1);
    tx.send(0).await.unwrap();
    let mut senders = Vec::new();
    for i in 1..=40 {
        let tx = tx.clone();
        senders.push(tokio::spawn(async move { tx.send(i).await.unwrap() }));
    }
    drop(tx);
    let mut got = Vec::new();
    while let Some(batch) = timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("hung")
    {
        got.extend(batch.iter().copied());
    }
    for sender in senders {
        sender.await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, (0..=40).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_producer_that_never_waits_still_yields_to_its_runtime() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const ITEMS: u32 = 100_000;
    let (tx, _rx) = channel(1_000, ITEMS as usize);
    let ticked = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let ticked = ticked.clone();
        async move { ticked.store(true, Ordering::SeqCst) }
    });
    // The channel never fills, so no send waits: only the cooperative
    // budget can make this task give the ticker a turn.
    let mut first_seen = None;
    for i in 0..ITEMS {
        tx.send(i).await.unwrap();
        if first_seen.is_none() && ticked.load(Ordering::SeqCst) {
            first_seen = Some(i);
        }
    }
    let seen = first_seen.expect("the producer never yielded");
    assert!(seen < 10_000, "yielded only after {seen} sends");
}

#[tokio::test(start_paused = true)]
async fn a_batch_filled_by_many_senders_goes_out_at_once() {
    // Each clone may stage on a lane of its own: the receiver must still be
    // woken the moment the lanes together hold a full batch.
    let (tx, mut rx) = channel(8, 64);
    let start = tokio::time::Instant::now();
    let senders: Vec<_> = (0..8).map(|_| tx.clone()).collect();
    drop(tx);
    let mut tasks = Vec::new();
    for (i, tx) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            tx.send(i as u32).await.unwrap();
            // Stay alive: the batch must go out by count, not as the tail.
            std::future::pending::<()>().await;
        }));
    }
    let batch = rx.recv().await.unwrap();
    assert_eq!((batch.len(), batch.reason()), (8, FlushReason::Full));
    assert_eq!(start.elapsed(), Duration::ZERO, "waited for the timer");
    let mut items = batch.to_vec();
    items.sort_unstable();
    assert_eq!(items, (0..8).collect::<Vec<_>>());
    for task in tasks {
        task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn idle_senders_holding_reserved_room_never_stall_a_full_batch() {
    // Senders reserve room a few items at a time. Twenty of them send one
    // item and go idle with room reserved; a twenty-first then sends far
    // more than the capacity. Nothing may wait forever (on paused time, a
    // stall ends in the timeout below).
    const MAX_ITEMS: usize = 32;
    let (tx, mut rx) = ChannelBuilder::new()
        .max_items(MAX_ITEMS)
        .capacity(64)
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let run = async move {
        let mut idle = Vec::new();
        for i in 0..20u32 {
            let tx = tx.clone();
            tx.send(i).await.unwrap();
            idle.push(tx);
        }
        let busy = tokio::spawn(async move {
            for i in 100..400u32 {
                tx.send(i).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < 320 {
            let batch = rx.recv().await.unwrap();
            assert_eq!(
                (batch.len(), batch.reason()),
                (MAX_ITEMS, FlushReason::Full)
            );
            got.extend(batch.iter().copied());
        }
        busy.await.unwrap();
        let mine: Vec<u32> = got.iter().copied().filter(|&i| i >= 100).collect();
        assert_eq!(mine, (100..400).collect::<Vec<_>>());
        drop(idle);
        assert!(rx.recv().await.is_none());
    };
    timeout(Duration::from_secs(60), run)
        .await
        .expect("stalled: reserved room kept the channel from filling a batch");
}

#[test]
fn many_more_senders_than_lanes_keep_per_sender_order_and_exact_metrics() {
    const SENDERS: u32 = 100;
    const PER_SENDER: u32 = 300;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = ChannelBuilder::new()
            .max_items(16)
            .max_delay(Duration::from_millis(1))
            .capacity(32)
            .build()
            .unwrap();
        let outcome = rx.outcome();
        let mut producers = Vec::new();
        for s in 0..SENDERS {
            let tx = tx.clone();
            producers.push(tokio::spawn(async move {
                let mut i = 0;
                let mut full = 0u64;
                while i < PER_SENDER {
                    let item = s * PER_SENDER + i;
                    match i % 4 {
                        0 => tx.send(item).await.unwrap(),
                        1 => {
                            let mut items: Vec<u32> = (item..item + 2).collect();
                            tx.send_many(&mut items).await.unwrap();
                            i += 1;
                        }
                        _ => loop {
                            match tx.try_send(item) {
                                Ok(()) => break,
                                Err(TrySendError::Full(_)) => {
                                    full += 1;
                                    tokio::task::yield_now().await;
                                }
                                Err(e) => panic!("{e}"),
                            }
                        },
                    }
                    i += 1;
                }
                full
            }));
        }
        drop(tx);
        let consumer = tokio::spawn(async move {
            let mut last = vec![None::<u32>; SENDERS as usize];
            let mut count = 0u64;
            while let Some(batch) = rx.recv().await {
                assert!(!batch.is_empty() && batch.len() <= 16);
                for &item in batch.iter() {
                    let s = (item / PER_SENDER) as usize;
                    assert!(
                        last[s].is_none_or(|prev| prev < item),
                        "sender {s} out of order"
                    );
                    last[s] = Some(item);
                    count += 1;
                }
            }
            count
        });
        let mut full = 0;
        for producer in producers {
            full += timeout(Duration::from_secs(120), producer)
                .await
                .expect("a producer hung")
                .unwrap();
        }
        let count = timeout(Duration::from_secs(120), consumer)
            .await
            .expect("hung")
            .unwrap();
        let total = u64::from(SENDERS * PER_SENDER);
        assert_eq!(count, total);
        let summary = outcome.await.unwrap();
        assert!(summary.finished);
        let m = summary.value;
        assert_eq!(
            (m.sent, m.delivered, m.items.total()),
            (total, total, total)
        );
        assert_eq!((m.handed_back, m.dropped, m.queued), (0, 0, 0));
        assert_eq!(m.rejected, full);
    });
}
