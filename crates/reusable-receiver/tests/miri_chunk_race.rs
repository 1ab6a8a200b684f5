//! A stream yields its chunk without the lock while another thread ends
//! its lease: real threads racing, many rounds (a few under miri, which
//! checks the `unsafe` slot hand-over for data races and double moves).
//! The loom models in `loom_lease.rs` explore the same races exhaustively
//! on smaller inputs.

use std::task::{Context, Poll, Waker};
use std::thread;

use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, ReusableStream};
use futures::StreamExt;
use tokio::sync::mpsc;

const ROUNDS: usize = if cfg!(miri) { 8 } else { 2_000 };
const ITEMS: u64 = if cfg!(miri) { 12 } else { 80 };

fn poll_once<T>(stream: &mut ReusableStream<T>) -> Poll<Option<T>> {
    stream.poll_next_unpin(&mut Context::from_waker(Waker::noop()))
}

/// A closed channel holding `0..ITEMS`, as `String`s (so that a double drop
/// or a leak of an item would show under miri).
fn closed_channel() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(ITEMS as usize);
    for i in 0..ITEMS {
        tx.try_send(i.to_string()).unwrap();
    }
    rx
}

fn ids(items: &[String]) -> Vec<u64> {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

/// Polls until the stream ends or waits.
fn pull_all(stream: &mut ReusableStream<String>) -> Vec<String> {
    let mut got = Vec::new();
    while let Poll::Ready(Some(item)) = poll_once(stream) {
        got.push(item);
    }
    got
}

#[test]
fn plain_stream_claiming_while_its_lease_is_revoked_shares_no_item() {
    for round in 0..ROUNDS {
        let mut reusable = ReusableReceiver::new(closed_channel());
        let mut old = reusable.stream();
        let lease = old.lease();
        // The first poll fills a chunk; the rest of it is claimed lock-free.
        let Poll::Ready(Some(first)) = poll_once(&mut old) else {
            panic!("an item is ready");
        };
        let old_thread = thread::spawn(move || {
            let mut got = vec![first];
            got.extend(pull_all(&mut old));
            got
        });
        let mut new = reusable.stream(); // revokes `old`, racing its claims
        let got_new = pull_all(&mut new);
        let got_old = old_thread.join().unwrap();
        // The old stream yielded a prefix, the new one the rest, once each.
        let mut all = ids(&got_old);
        all.extend(ids(&got_new));
        assert_eq!(all, (0..ITEMS).collect::<Vec<_>>(), "round {round}");
        assert_eq!(lease.metrics().delivered, got_old.len() as u64);
        assert_eq!(reusable.metrics().lost, got_old.len() as u64);
    }
}

#[test]
fn replay_stream_claiming_while_its_lease_is_revoked_is_counted_exactly() {
    for round in 0..ROUNDS {
        let config = ReplayConfig::builder().max_items(1_000).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(closed_channel(), config);
        let mut old = reusable.stream();
        let lease = old.lease();
        let Poll::Ready(Some(first)) = poll_once(&mut old) else {
            panic!("an item is ready");
        };
        let old_thread = thread::spawn(move || {
            let mut got = vec![first];
            got.extend(pull_all(&mut old));
            got
        });
        let mut new = reusable.stream();
        let got_new = pull_all(&mut new);
        let got_old = old_thread.join().unwrap();
        // Nothing was acknowledged: the new lease replays everything.
        assert_eq!(
            ids(&got_new),
            (0..ITEMS).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(ids(&got_old), (0..got_old.len() as u64).collect::<Vec<_>>());
        let old_metrics = lease.metrics();
        assert_eq!(old_metrics.delivered, got_old.len() as u64);
        let metrics = reusable.metrics();
        assert_eq!(metrics.redelivered, got_old.len() as u64, "round {round}");
        assert_eq!(metrics.delivered, got_old.len() as u64 + ITEMS);
    }
}

#[test]
fn stream_dropped_while_its_lease_is_revoked_hands_back_exactly_once() {
    for round in 0..ROUNDS {
        let mut reusable = ReusableReceiver::new(closed_channel());
        let mut old = reusable.stream();
        let Poll::Ready(Some(first)) = poll_once(&mut old) else {
            panic!("an item is ready");
        };
        let claims = round % 4;
        let old_thread = thread::spawn(move || {
            let mut got = vec![first];
            for _ in 0..claims {
                if let Poll::Ready(Some(item)) = poll_once(&mut old) {
                    got.push(item);
                }
            }
            drop(old); // hands back the rest of its chunk, or finds it taken
            got
        });
        let lease = reusable.lease().unwrap();
        lease.revoke(); // racing the drop
        let got_old = old_thread.join().unwrap();
        let got_new = pull_all(&mut reusable.stream());
        let mut all = ids(&got_old);
        all.extend(ids(&got_new));
        assert_eq!(all, (0..ITEMS).collect::<Vec<_>>(), "round {round}");
    }
}
