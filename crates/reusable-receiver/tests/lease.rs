//! Lease hand-over, replay, backpressure and the "nothing is lost" cases:
//! late drop, revocation, cancellation, panics, close.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_patterns_reusable_receiver::{
    AckError, ReplayConfig, ReusableReceiver, ReusableStream, WhenFull,
};
use futures::stream::FusedStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test timed out")
}

async fn filled(n: u64, capacity: usize) -> (mpsc::Sender<u64>, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel(capacity);
    for i in 0..n {
        tx.send(i).await.unwrap();
    }
    (tx, rx)
}

fn replay(max_items: usize) -> ReplayConfig<u64> {
    ReplayConfig::builder()
        .max_items(max_items)
        .build()
        .unwrap()
}

/// Polls once with a waker that does nothing.
fn poll_once<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
    stream.poll_next_unpin(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn stream_is_static_send_sync_and_unpin() {
    fn assert_bounds<S: Stream + Send + Sync + Unpin + 'static>(_: &S) {}
    fn assert_send_sync<X: Send + Sync>() {}
    let (_tx, rx) = mpsc::channel::<String>(1);
    let mut reusable = ReusableReceiver::new(rx);
    assert_bounds(&reusable.stream());
    assert_send_sync::<ReusableReceiver<String>>();
    assert_send_sync::<async_patterns_reusable_receiver::Lease<String>>();
}

#[tokio::test]
async fn late_dropped_stream_ends_and_never_takes_an_item() {
    within(async {
        let (tx, rx) = filled(10, 16).await;
        let mut reusable = ReusableReceiver::new(rx);
        let mut old = reusable.stream();
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(old.next().await.unwrap());
        }
        // The old stream stays alive (hyper holds the body) while the next
        // attempt starts.
        let mut new = reusable.stream();
        let mut second = vec![new.next().await.unwrap()];
        assert_eq!(old.next().await, None, "a revoked stream ends");
        drop(tx);
        while let Some(item) = new.next().await {
            second.push(item);
            assert_eq!(poll_once(&mut old), Poll::Ready(None));
        }
        drop(old); // very late
        assert_eq!(first, [0, 1, 2]);
        assert_eq!(second, (3..10).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_stream_polled_concurrently_shares_no_item_with_the_new_one() {
    within(async {
        // Sized down under miri, which runs it to check the chunk hand-over
        // for data races on real threads.
        let (rounds, items) = if cfg!(miri) { (2, 40) } else { (50, 200) };
        for round in 0..rounds {
            let (tx, rx) = mpsc::channel(64);
            let mut reusable = ReusableReceiver::new(rx);
            let old = reusable.stream();
            let producer = tokio::spawn(async move {
                for i in 0..items {
                    tx.send(i).await.unwrap();
                }
            });
            let old_task = tokio::spawn(old.collect::<Vec<u64>>());
            tokio::task::yield_now().await;
            let new: Vec<u64> = reusable.stream().collect().await;
            let old = old_task.await.unwrap();
            producer.await.unwrap();
            let mut all = old.clone();
            all.extend(&new);
            all.sort_unstable();
            assert_eq!(all, (0..items).collect::<Vec<_>>(), "round {round}");
            assert!(old.windows(2).all(|w| w[0] < w[1]));
            assert!(new.windows(2).all(|w| w[0] < w[1]));
        }
    })
    .await;
}

#[tokio::test]
async fn revoked_stream_waiting_for_an_item_is_woken_and_ends() {
    within(async {
        let (tx, rx) = mpsc::channel::<u64>(4);
        let mut reusable = ReusableReceiver::new(rx);
        let mut old = reusable.stream();
        let waiting = tokio::spawn(async move { old.next().await });
        tokio::task::yield_now().await; // the old stream now waits
        let mut new = reusable.stream();
        assert_eq!(waiting.await.unwrap(), None);
        tx.send(1).await.unwrap();
        assert_eq!(new.next().await, Some(1));
    })
    .await;
}

#[tokio::test]
async fn dropped_stream_leaves_the_receiver_ready_at_once() {
    let (_tx, rx) = filled(3, 4).await;
    let mut reusable = ReusableReceiver::new(rx);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    assert_eq!(poll_once(&mut stream), Poll::Ready(Some(0)));
    drop(stream);
    assert!(lease.metrics().released);
    // No waiting of any kind: the next stream is served on its first poll.
    let mut next = reusable.stream();
    assert_eq!(poll_once(&mut next), Poll::Ready(Some(1)));
}

#[tokio::test]
async fn lease_reports_a_late_release_after_it_was_revoked() {
    let (_tx, rx) = filled(1, 4).await;
    let mut reusable = ReusableReceiver::new(rx);
    let stream = reusable.stream();
    let lease = stream.lease();
    let retired = reusable.revoke().unwrap();
    assert!(!retired.released);
    drop(stream);
    assert!(lease.metrics().released);
}

#[tokio::test]
async fn stale_lease_cannot_acknowledge_and_overcounting_is_rejected() {
    let (_tx, rx) = filled(2, 4).await;
    let mut reusable = ReusableReceiver::with_replay(rx, replay(8));
    let mut stream = reusable.stream();
    let lease = stream.lease();
    stream.next().await;
    assert_eq!(
        lease.ack(2),
        Err(AckError::NotYielded {
            requested: 2,
            yielded: 1
        })
    );
    reusable.stream();
    assert_eq!(
        lease.ack_all(),
        Err(AckError::Revoked {
            generation: lease.generation()
        })
    );
    assert_eq!(
        reusable.metrics().unacked as usize,
        1,
        "the stale ack removed nothing"
    );
    assert_eq!(lease.ack(1).unwrap_err().to_string(), "lease 1 was revoked");
}

#[tokio::test]
async fn replay_yields_unacknowledged_items_first_in_order_then_new_ones() {
    within(async {
        let (tx, rx) = filled(6, 8).await;
        drop(tx);
        let mut reusable = ReusableReceiver::with_replay(rx, replay(16));

        let mut first = reusable.stream();
        let lease = first.lease();
        let taken: Vec<u64> = (&mut first).take(4).collect().await;
        assert_eq!(taken, [0, 1, 2, 3]);
        lease.ack(2).unwrap(); // the server confirmed 0 and 1

        let mut second = reusable.stream();
        let lease = second.lease();
        assert_eq!(second.next().await, Some(2));
        drop(second); // failed again, after one item, nothing confirmed

        let third: Vec<u64> = reusable.stream().collect().await;
        assert_eq!(third, [2, 3, 4, 5]);
        assert_eq!(lease.metrics().unacked, 1);
        let metrics = reusable.metrics();
        assert_eq!(metrics.redelivered, 1 + 2);
        assert_eq!(metrics.lost, 0);
        assert_eq!(metrics.acked, 2);
    })
    .await;
}

#[tokio::test]
async fn full_replay_buffer_stops_pulling_until_an_ack_makes_room() {
    within(async {
        let (tx, rx) = filled(6, 8).await;
        let mut reusable = ReusableReceiver::with_replay(rx, replay(3));
        let mut stream = reusable.stream();
        let lease = stream.lease();
        for expected in 0..3 {
            assert_eq!(stream.next().await, Some(expected));
        }
        // Full: the stream waits, and the channel keeps the rest but the
        // one item the waiting stream watches the channel with (so that it
        // notices the channel's end).
        assert_eq!(poll_once(&mut stream), Poll::Pending);
        assert_eq!(tx.capacity(), 8 - 2);
        assert_eq!(poll_once(&mut stream), Poll::Pending);
        assert_eq!(tx.capacity(), 8 - 2, "never more than one");
        let waiting = tokio::spawn(async move { stream.next().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        lease.ack(1).unwrap();
        assert_eq!(waiting.await.unwrap(), Some(3));
        assert_eq!(reusable.metrics().unacked as usize, 3);
    })
    .await;
}

#[tokio::test]
async fn full_replay_buffer_ends_the_stream_with_end_stream() {
    within(async {
        let (tx, rx) = filled(5, 8).await;
        drop(tx);
        let config = ReplayConfig::builder()
            .max_items(2)
            .when_full(WhenFull::EndStream)
            .build()
            .unwrap();
        let mut reusable = ReusableReceiver::with_replay(rx, config);
        let mut batches = Vec::new();
        while !reusable.is_drained() {
            let mut stream = reusable.stream();
            let lease = stream.lease();
            batches.push((&mut stream).collect::<Vec<u64>>().await);
            assert!(stream.is_terminated());
            lease.ack_all().unwrap();
        }
        assert_eq!(batches, [vec![0, 1], vec![2, 3], vec![4]]);
    })
    .await;
}

#[tokio::test]
async fn weight_bound_holds_back_the_item_that_does_not_fit() {
    within(async {
        let (tx, rx) = mpsc::channel(8);
        for w in [3usize, 3, 5, 20, 1] {
            tx.send(vec![0u8; w]).await.unwrap();
        }
        drop(tx);
        let config = ReplayConfig::builder()
            .max_items(100)
            .max_weight(8, |v: &Vec<u8>| v.len())
            .when_full(WhenFull::EndStream)
            .build()
            .unwrap();
        let mut reusable = ReusableReceiver::with_replay(rx, config);
        let mut batches = Vec::new();
        while !reusable.is_drained() {
            let mut stream = reusable.stream();
            let lease = stream.lease();
            let batch: Vec<usize> = (&mut stream).map(|v| v.len()).collect().await;
            lease.ack_all().unwrap();
            batches.push(batch);
        }
        // 3+3 fit in 8; 5 would not. 20 is too heavy for any buffer, so it
        // goes alone into an empty one.
        assert_eq!(batches, [vec![3, 3], vec![5], vec![20], vec![1]]);
    })
    .await;
}

#[tokio::test]
async fn parked_item_stays_next_in_line_after_take_unacked_and_into_inner_hands_it_back() {
    let (tx, rx) = mpsc::channel(8);
    for s in ["aa", "bbbbbb", "c"] {
        tx.send(s.to_string()).await.unwrap();
    }
    let config = ReplayConfig::builder()
        .max_weight(4, |s: &String| s.len())
        .build()
        .unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut stream = reusable.stream();
    assert_eq!(stream.next().await.as_deref(), Some("aa"));
    assert_eq!(poll_once(&mut stream), Poll::Pending); // "bbbbbb" is set aside
    assert_eq!(
        reusable.metrics().unacked as usize,
        1,
        "the set-aside item was not yielded"
    );
    assert_eq!(reusable.take_unacked(), ["aa"]);
    assert_eq!(poll_once(&mut stream), Poll::Ready(None));
    // The set-aside item was never yielded: it comes next, before "c".
    let mut next = reusable.stream();
    assert_eq!(next.next().await.as_deref(), Some("bbbbbb"));
    assert_eq!(poll_once(&mut next), Poll::Pending); // "c" set aside now
    let (_rx, taken) = reusable.into_inner();
    assert_eq!(taken, ["bbbbbb", "c"]);
}

#[tokio::test]
async fn close_wakes_a_waiting_stream_which_drains_then_ends() {
    within(async {
        let (tx, rx) = mpsc::channel::<u64>(4);
        let mut reusable = ReusableReceiver::new(rx);
        let stream = reusable.stream();
        let collecting = tokio::spawn(stream.collect::<Vec<u64>>());
        tx.send(1).await.unwrap();
        tokio::task::yield_now().await;
        reusable.close();
        assert!(tx.send(2).await.is_err());
        assert_eq!(collecting.await.unwrap(), [1]);
        assert!(reusable.is_drained());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn next_cancelled_in_select_loses_no_item() {
    let (tx, rx) = mpsc::channel(4);
    let mut reusable = ReusableReceiver::with_replay(rx, replay(64));
    let mut stream = reusable.stream();
    let lease = stream.lease();
    let producer = tokio::spawn(async move {
        for i in 0..20u64 {
            tokio::time::sleep(Duration::from_millis(if i % 3 == 0 { 7 } else { 1 })).await;
            tx.send(i).await.unwrap();
        }
    });
    let mut got = Vec::new();
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(item) => got.push(item),
                None => break,
            },
            // Often wins, dropping the `next()` future mid-wait.
            () = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    producer.await.unwrap();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert_eq!(lease.metrics().delivered, 20);
}

#[derive(Debug)]
struct FragileClone {
    id: u64,
    /// The id whose next clone panics, if any.
    panic_on: Arc<AtomicU64>,
}

impl Clone for FragileClone {
    fn clone(&self) -> Self {
        if self
            .panic_on
            .compare_exchange(self.id, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            panic!("clone failed for {}", self.id);
        }
        FragileClone {
            id: self.id,
            panic_on: Arc::clone(&self.panic_on),
        }
    }
}

async fn fragile_channel(panic_on: &Arc<AtomicU64>) -> mpsc::Receiver<FragileClone> {
    let (tx, rx) = mpsc::channel(4);
    for id in 0..3 {
        tx.send(FragileClone {
            id,
            panic_on: Arc::clone(panic_on),
        })
        .await
        .unwrap();
    }
    rx
}

#[tokio::test]
async fn panicking_clone_loses_nothing() {
    // The clone of item 1 panics: the poll that tried it panics, and the
    // stream goes on with everything, in order, each delivered once.
    let panic_on = Arc::new(AtomicU64::new(1));
    let rx = fragile_channel(&panic_on).await;
    let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build().unwrap());
    let mut stream = reusable.stream();
    let mut got = Vec::new();
    let mut panics = 0;
    loop {
        match std::panic::catch_unwind(AssertUnwindSafe(|| poll_once(&mut stream))) {
            Ok(Poll::Ready(Some(item))) => got.push(item.id),
            Ok(Poll::Ready(None)) => break,
            Ok(Poll::Pending) => panic!("the channel is closed"),
            Err(_) => panics += 1,
        }
    }
    assert_eq!(panics, 1);
    assert_eq!(got, [0, 1, 2]);
    let metrics = reusable.metrics();
    assert_eq!(
        (metrics.delivered, metrics.redelivered, metrics.unacked),
        (3, 0, 3)
    );
}

#[tokio::test]
async fn panicking_clone_of_a_replay_loses_nothing() {
    let panic_on = Arc::new(AtomicU64::new(u64::MAX));
    let rx = fragile_channel(&panic_on).await;
    let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build().unwrap());
    let first: Vec<u64> = (&mut reusable.stream())
        .take(3)
        .map(|i| i.id)
        .collect()
        .await;
    assert_eq!(first, [0, 1, 2]);
    // The next attempt replays; the replay of item 0 panics once.
    panic_on.store(0, Ordering::SeqCst);
    let mut stream = reusable.stream();
    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| poll_once(&mut stream)));
    assert!(panicked.is_err());
    let rest: Vec<u64> = std::iter::from_fn(|| match poll_once(&mut stream) {
        Poll::Ready(Some(item)) => Some(item.id),
        _ => None,
    })
    .collect();
    assert_eq!(rest, [0, 1, 2]);
    assert_eq!(reusable.metrics().redelivered, 3);
}

#[tokio::test]
async fn consumer_task_that_panics_loses_nothing_in_replay_mode() {
    within(async {
        let (tx, rx) = filled(5, 8).await;
        drop(tx);
        let mut reusable = ReusableReceiver::with_replay(rx, replay(16));
        let stream = reusable.stream();
        let consumer = tokio::spawn(async move {
            let mut stream = stream;
            stream.next().await;
            stream.next().await;
            panic!("the consumer crashed");
        });
        assert!(consumer.await.unwrap_err().is_panic());
        let all: Vec<u64> = reusable.stream().collect().await;
        assert_eq!(all, [0, 1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test]
async fn plain_mode_counts_unconfirmed_items_of_ended_leases_as_lost() {
    let (tx, rx) = filled(6, 8).await;
    drop(tx);
    let mut reusable = ReusableReceiver::new(rx);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    for _ in 0..4 {
        stream.next().await;
    }
    lease.ack(3).unwrap(); // the consumer confirmed three
    let rest: Vec<u64> = reusable.stream().collect().await; // revokes the first lease
    assert_eq!(rest, [4, 5]);
    assert_eq!(reusable.metrics().lost, 1);
    reusable.revoke();
    assert_eq!(
        reusable.metrics().lost,
        3,
        "the second lease confirmed nothing"
    );
    assert_eq!(reusable.take_unacked(), Vec::<u64>::new());
}

#[tokio::test]
async fn into_inner_returns_the_receiver_and_every_item_taken_from_it_and_ends_streams() {
    let (tx, rx) = filled(4, 8).await;
    let mut reusable = ReusableReceiver::with_replay(rx, replay(8));
    let mut stream: ReusableStream<u64> = reusable.stream();
    stream.next().await;
    stream.next().await;
    let (mut rx, taken) = reusable.into_inner();
    // Unacknowledged 0 and 1, then 2 and 3, taken from the channel with them.
    assert_eq!(taken, [0, 1, 2, 3]);
    assert_eq!(poll_once(&mut stream), Poll::Ready(None));
    tx.send(4).await.unwrap();
    drop(tx);
    assert_eq!(rx.recv().await, Some(4));
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn dropping_the_reusable_receiver_leaves_its_stream_working() {
    let (tx, rx) = filled(2, 4).await;
    drop(tx);
    let stream = ReusableReceiver::new(rx).stream();
    assert_eq!(stream.collect::<Vec<u64>>().await, [0, 1]);
}

#[test]
fn builder_rejects_zero_bounds_with_the_field_name() {
    let err = ReplayConfig::<u8>::builder()
        .max_items(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_items");
    let err = ReplayConfig::<u8>::builder()
        .max_weight(0, |_| 1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_weight");
}

#[tokio::test]
async fn ack_after_the_channel_closed_empties_the_buffer() {
    let (tx, rx) = filled(3, 4).await;
    drop(tx);
    let mut reusable = ReusableReceiver::with_replay(rx, replay(4));
    let mut stream = reusable.stream();
    let lease = stream.lease();
    let all: Vec<u64> = (&mut stream).collect().await;
    assert_eq!(all, [0, 1, 2]);
    assert!(!reusable.is_drained());
    assert_eq!(lease.ack_all(), Ok(3));
    assert!(reusable.is_drained());
    assert!(stream.next().now_or_never().flatten().is_none());
}

/// A consumer that acknowledges only when the stream ends (a client-streaming
/// call) and a buffer exactly as large as what was sent: once the channel is
/// closed and drained, the full buffer must not make the stream wait.
#[tokio::test]
async fn full_replay_buffer_ends_the_stream_when_the_channel_is_closed_and_drained() {
    within(async {
        let (tx, rx) = filled(4, 4).await;
        drop(tx);
        let mut reusable = ReusableReceiver::with_replay(rx, replay(4));
        let stream = reusable.stream();
        let lease = stream.lease();
        assert_eq!(stream.collect::<Vec<_>>().await, [0, 1, 2, 3]);
        lease.ack_all().unwrap();
        assert!(reusable.is_drained());

        // The same after a failed attempt: the replay ends the same way.
        let (tx, rx) = filled(3, 3).await;
        drop(tx);
        let mut reusable = ReusableReceiver::with_replay(rx, replay(3));
        let mut first = reusable.stream();
        assert_eq!(first.next().await, Some(0));
        drop(first); // failed, unconfirmed
        assert_eq!(reusable.stream().collect::<Vec<_>>().await, [0, 1, 2]);
    })
    .await;
}
