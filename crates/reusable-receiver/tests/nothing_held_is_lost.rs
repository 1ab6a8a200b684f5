//! Issue 13 §1 and its class: an item taken out of the channel and held
//! somewhere — set aside by the weight bound, staged in a batch — must be
//! yielded or handed back; a stream ends only when nothing is held anywhere.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_patterns_core::RetryPolicy;
use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, ReusableStream, retry};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

const OVERSIZED: &str = "fifteen-bytes!!";

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test timed out")
}

fn poll_once<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
    stream.poll_next_unpin(&mut Context::from_waker(Waker::noop()))
}

/// The issue's channel: "aaaa", "bbbb", a 15-byte item, then "c".
async fn issue_channel() -> (mpsc::Sender<String>, mpsc::Receiver<String>) {
    assert_eq!(OVERSIZED.len(), 15);
    let (tx, rx) = mpsc::channel(8);
    for item in ["aaaa", "bbbb", OVERSIZED, "c"] {
        tx.send(item.to_string()).await.unwrap();
    }
    (tx, rx)
}

fn weight_bound_10() -> ReplayConfig<String> {
    ReplayConfig::builder()
        .max_weight(10, String::len)
        .build()
        .unwrap()
}

/// A consumer whose far end confirms everything received so far whenever
/// the client pauses (a bidirectional call acknowledging progress): polls
/// until the stream ends, acknowledging all on every `Pending`.
fn consume_acknowledging_on_pause(stream: &mut ReusableStream<String>) -> Vec<String> {
    let lease = stream.lease();
    let mut got = Vec::new();
    loop {
        match poll_once(stream) {
            Poll::Ready(Some(item)) => got.push(item),
            Poll::Ready(None) => return got,
            Poll::Pending => {
                let newly = lease.ack_all().unwrap();
                assert!(newly > 0, "the stream waits with nothing to wait for");
            }
        }
    }
}

#[tokio::test]
async fn set_aside_item_of_a_channel_closed_before_the_first_stream_is_yielded() {
    let (tx, rx) = issue_channel().await;
    drop(tx); // closed before the first stream starts
    let mut reusable = ReusableReceiver::with_replay(rx, weight_bound_10());
    let mut stream = reusable.stream();
    let lease = stream.lease();
    let got = consume_acknowledging_on_pause(&mut stream);
    assert_eq!(got, ["aaaa", "bbbb", OVERSIZED, "c"]);
    lease.ack_all().unwrap();
    assert!(reusable.is_drained(), "nothing is held any more");
}

#[tokio::test]
async fn set_aside_item_is_yielded_when_the_receiver_closes_the_channel() {
    let (_tx, rx) = issue_channel().await;
    let mut reusable = ReusableReceiver::with_replay(rx, weight_bound_10());
    reusable.close();
    let mut stream = reusable.stream();
    let got = consume_acknowledging_on_pause(&mut stream);
    assert_eq!(got, ["aaaa", "bbbb", OVERSIZED, "c"]);
}

#[tokio::test(start_paused = true)]
async fn retry_run_succeeds_only_after_sending_the_set_aside_item() {
    within(async {
        let (tx, rx) = issue_channel().await;
        drop(tx);
        let mut reusable = ReusableReceiver::with_replay(rx, weight_bound_10());
        let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
        let sent = retry(&mut reusable, policy, |mut stream| async move {
            let lease = stream.lease();
            let mut sent = Vec::new();
            loop {
                match futures::poll!(stream.next()) {
                    Poll::Ready(Some(item)) => sent.push(item),
                    Poll::Ready(None) => return Ok::<_, ()>(sent),
                    // The server confirms what it has whenever the client pauses.
                    Poll::Pending => {
                        lease.ack_all().unwrap();
                        tokio::task::yield_now().await;
                    }
                }
            }
        })
        .await
        .map_err(|e| e.into_error())
        .unwrap();
        assert_eq!(sent, ["aaaa", "bbbb", OVERSIZED, "c"]);
        assert!(reusable.is_drained(), "nothing left to lose on drop");
    })
    .await;
}

/// A client-streaming call acknowledges only when its stream ended. It
/// filled the buffer and waits for room; when the last sender goes, the
/// channel is closed and drained, and the waiting stream must notice — no
/// acknowledgement will ever come to wake it.
#[tokio::test(start_paused = true)]
async fn stream_waiting_for_room_ends_when_the_last_sender_is_dropped() {
    within(async {
        let (tx, rx) = mpsc::channel(4);
        tx.send(0u64).await.unwrap();
        tx.send(1).await.unwrap();
        let config = ReplayConfig::builder().max_items(2).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(rx, config);
        let stream = reusable.stream();
        let lease = stream.lease();
        let call = tokio::spawn(stream.collect::<Vec<u64>>());
        tokio::task::yield_now().await;
        assert!(!call.is_finished(), "the full buffer makes the stream wait");
        drop(tx);
        assert_eq!(call.await.unwrap(), [0, 1]);
        lease.ack_all().unwrap();
        assert!(reusable.is_drained());
    })
    .await;
}

/// The same wait, ended by an item that arrives instead: the stream stays
/// waiting for room, and the item is yielded after the acknowledgement.
#[tokio::test(start_paused = true)]
async fn stream_waiting_for_room_keeps_waiting_when_an_item_arrives() {
    within(async {
        let (tx, rx) = mpsc::channel(4);
        tx.send(0u64).await.unwrap();
        let config = ReplayConfig::builder().max_items(1).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(rx, config);
        let mut stream = reusable.stream();
        let lease = stream.lease();
        assert_eq!(poll_once(&mut stream), Poll::Ready(Some(0)));
        assert_eq!(poll_once(&mut stream), Poll::Pending);
        tx.send(1).await.unwrap();
        drop(tx);
        assert_eq!(poll_once(&mut stream), Poll::Pending, "still full");
        lease.ack(1).unwrap();
        assert_eq!(poll_once(&mut stream), Poll::Ready(Some(1)));
        assert_eq!(poll_once(&mut stream), Poll::Ready(None));
    })
    .await;
}

/// Counts the drops of its values, to see what a drop discarded.
#[derive(Debug, Clone)]
struct Tracked(u64, std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn into_unacked_hands_back_every_item_not_acknowledged_and_closes_the_channel() {
    let (tx, rx) = mpsc::channel(64);
    for i in 0..10u64 {
        tx.send(i).await.unwrap();
    }
    let config = ReplayConfig::builder()
        .max_items(16)
        .max_weight(5, |i: &u64| *i as usize)
        .build()
        .unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    // 0, 1, 2 fit (weight 3); 3 does not and is set aside; the rest staged.
    for expected in 0..3 {
        assert_eq!(poll_once(&mut stream), Poll::Ready(Some(expected)));
    }
    assert_eq!(poll_once(&mut stream), Poll::Pending);
    lease.ack(1).unwrap();
    let all = reusable.into_unacked();
    assert_eq!(all, (1..10).collect::<Vec<_>>());
    assert!(
        tx.send(10).await.is_err(),
        "closed: the sender keeps its value"
    );
    assert_eq!(poll_once(&mut stream), Poll::Ready(None));
    assert_eq!(lease.receiver_metrics().handed_back, 9);
    assert_eq!(lease.receiver_metrics().dropped, 0);
}

#[tokio::test]
async fn dropping_the_receiver_with_no_lease_in_force_drops_and_counts_everything_held() {
    let drops = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx, rx) = mpsc::channel(64);
    for i in 0..40u64 {
        tx.send(Tracked(i, drops.clone())).await.unwrap();
    }
    let config = ReplayConfig::builder()
        .max_weight(10, |t: &Tracked| t.0 as usize)
        .build()
        .unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    // 0..=4 fit (weight 10), 5 is set aside, the rest staged or queued.
    for expected in 0..5 {
        match poll_once(&mut stream) {
            Poll::Ready(Some(t)) => assert_eq!(t.0, expected),
            other => panic!(
                "expected item {expected}, got {:?}",
                other.map(|o| o.map(|t| t.0))
            ),
        }
    }
    assert!(poll_once(&mut stream).is_pending());
    lease.ack(2).unwrap();
    lease.revoke();
    // The 5 clones the consumer dropped, and the originals of 0 and 1,
    // dropped when acknowledged.
    assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 5 + 2);
    drop(reusable);
    assert_eq!(
        drops.load(std::sync::atomic::Ordering::SeqCst),
        5 + 40,
        "every original is gone"
    );
    assert_eq!(lease.receiver_metrics().dropped, 38);
    assert!(tx.is_closed(), "senders learn that nobody receives");
    drop(stream);
}

#[tokio::test]
async fn dropping_the_receiver_lets_the_stream_in_force_finish_then_counts_what_is_left() {
    let (tx, rx) = mpsc::channel(64);
    for i in 0..6u64 {
        tx.send(i).await.unwrap();
    }
    let config = ReplayConfig::builder().max_items(64).build().unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut stream = reusable.stream();
    let lease = stream.lease();
    drop(reusable);
    assert!(!tx.is_closed(), "the stream in force still receives");
    for expected in 0..4 {
        assert_eq!(poll_once(&mut stream), Poll::Ready(Some(expected)));
    }
    assert_eq!(lease.ack_all(), Ok(4));
    assert_eq!(lease.receiver_metrics().dropped, 0);
    let metrics = lease.revoke();
    assert_eq!(metrics.acked, 4);
    // 4 and 5, staged, can no longer be delivered.
    assert_eq!(lease.receiver_metrics().dropped, 2);
    assert!(tx.is_closed());
    assert_eq!(poll_once(&mut stream), Poll::Ready(None));
}

#[tokio::test]
async fn dropping_a_stream_or_a_lease_drops_nothing() {
    let (tx, rx) = mpsc::channel(8);
    for i in 0..4u64 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build().unwrap());
    let mut stream = reusable.stream();
    assert_eq!(poll_once(&mut stream), Poll::Ready(Some(0)));
    drop(stream.lease());
    drop(stream);
    let all: Vec<u64> = reusable.stream().collect().await;
    assert_eq!(all, [0, 1, 2, 3]);
    assert_eq!(reusable.metrics().dropped, 0);
}
