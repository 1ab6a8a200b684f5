//! Loom models of the lease hand-over: a stream polled and dropped on one
//! thread, a new lease taken on another, a revocation or an acknowledgement
//! on a third, in every interleaving. Run by `cargo xtask ci` with
//! `RUSTFLAGS="--cfg async_patterns_loom"`.
#![cfg(async_patterns_loom)]

use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Wake, Waker};

use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, ReusableStream};
use futures::{Stream, StreamExt};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use tokio::sync::mpsc;

fn poll_with<S: Stream + Unpin>(stream: &mut S, waker: &Waker) -> Poll<Option<S::Item>> {
    stream.poll_next_unpin(&mut Context::from_waker(waker))
}

/// Polls up to `n` times with a no-op waker, keeping what was yielded.
fn pull(stream: &mut ReusableStream<u32>, n: usize) -> Vec<u32> {
    let mut got = Vec::new();
    for _ in 0..n {
        if let Poll::Ready(Some(item)) = poll_with(stream, Waker::noop()) {
            got.push(item);
        }
    }
    got
}

/// A closed channel holding `0..n`; every send happens before the model's
/// threads start, so the channel itself is only touched under the lock.
fn closed_channel(n: u32) -> mpsc::Receiver<u32> {
    let (tx, rx) = mpsc::channel(n.max(1) as usize);
    for i in 0..n {
        tx.try_send(i).unwrap();
    }
    rx
}

/// The old stream takes items and is dropped on one thread while the next
/// lease starts on another: whatever the interleaving, the old stream took
/// a prefix and the new one the rest (what the old one took and did not
/// yield goes back), no item twice, none skipped.
#[test]
fn stale_stream_dropped_while_a_new_lease_starts_never_shares_an_item() {
    loom::model(|| {
        let mut reusable = ReusableReceiver::new(closed_channel(3));
        let mut old = reusable.stream();
        let old_lease = old.lease();
        let old_thread = thread::spawn(move || {
            let got = pull(&mut old, 2);
            drop(old); // dropped whenever this thread gets here: late, or not
            got
        });
        let mut new = reusable.stream();
        let new_lease = new.lease();
        let got_new = pull(&mut new, 3);
        let got_old = old_thread.join().unwrap();

        let mut all = got_old.clone();
        all.extend(&got_new);
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(old_lease.metrics().delivered, got_old.len() as u64);
        assert!(new_lease.is_current());
        assert_eq!(reusable.metrics().lost, got_old.len() as u64);
        assert_eq!(new_lease.metrics().delivered, got_new.len() as u64);
    });
}

/// The same old stream, revoked through its lease on another thread while
/// it takes items and is dropped: the revocation's final count is exactly
/// what the stream yielded, and the next lease gets the rest.
#[test]
fn stale_stream_dropped_while_revoked_never_shares_an_item() {
    loom::model(|| {
        let mut reusable = ReusableReceiver::new(closed_channel(3));
        let mut old = reusable.stream();
        let old_lease = old.lease();
        let old_thread = thread::spawn(move || {
            let got = pull(&mut old, 2);
            drop(old);
            got
        });
        let old_final = old_lease.revoke();
        let got_old = old_thread.join().unwrap();
        let got_new = pull(&mut reusable.stream(), 3);

        let mut all = got_old.clone();
        all.extend(&got_new);
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(old_final.delivered, got_old.len() as u64);
        assert_eq!(reusable.metrics().lost, got_old.len() as u64);
    });
}

/// All three at once: the stream taking items and dropped, a revocation
/// through its lease, and the next lease starting. Three threads make the
/// unbounded exploration impractically long; this one is bounded to three
/// preemptions, as `cargo xtask ci` runs every model (the two-thread models
/// above are exhaustive).
#[test]
fn stale_stream_dropped_or_revoked_concurrently_never_shares_an_item() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(3).min(3));
    builder.check(|| {
        let mut reusable = ReusableReceiver::new(closed_channel(3));
        let mut old = reusable.stream();
        let old_lease = old.lease();

        let old_thread = thread::spawn(move || {
            let got = pull(&mut old, 2);
            drop(old); // dropped whenever this thread gets here: late, or not
            got
        });
        let revoker = thread::spawn(move || old_lease.revoke());

        let mut new = reusable.stream();
        let new_lease = new.lease();
        let got_new = pull(&mut new, 3);
        let got_old = old_thread.join().unwrap();
        let old_final = revoker.join().unwrap();

        // The old stream took a prefix, the new one the rest: no item twice,
        // none skipped, each in order.
        let mut all = got_old.clone();
        all.extend(&got_new);
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(old_final.delivered, got_old.len() as u64);
        // Revoking the old lease never touches the new one.
        assert!(new_lease.is_current());
        assert_eq!(reusable.metrics().lost, got_old.len() as u64);
        assert_eq!(new_lease.metrics().delivered, got_new.len() as u64);
    });
}

#[test]
fn acknowledgement_racing_a_new_lease_is_applied_or_refused_never_half() {
    loom::model(|| {
        let config = ReplayConfig::builder().max_items(4).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(closed_channel(3), config);
        let mut old = reusable.stream();
        let old_lease = old.lease();
        let got_old = pull(&mut old, 2);
        assert_eq!(got_old, [0, 1]);

        let acker = thread::spawn(move || old_lease.ack(1).is_ok());
        let dropper = thread::spawn(move || drop(old));

        let mut new = reusable.stream();
        let got_new = pull(&mut new, 3);
        let acked = acker.join().unwrap();
        dropper.join().unwrap();

        // Acknowledged before the hand-over: item 0 is gone. Refused after
        // it: item 0 is replayed. Either way in order, nothing lost.
        let first = u32::from(acked);
        assert_eq!(got_new, (first..3).collect::<Vec<_>>());
        assert_eq!(reusable.metrics().unacked as usize, got_new.len());
    });
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: StdArc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn revocation_wakes_a_stream_that_waits() {
    loom::model(|| {
        let (tx, rx) = mpsc::channel::<u32>(1);
        let mut reusable = ReusableReceiver::new(rx);
        let mut old = reusable.stream();
        let woken = StdArc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(StdArc::clone(&woken));

        let old_thread = thread::spawn(move || {
            let first = poll_with(&mut old, &waker);
            (first, old)
        });
        let mut new = reusable.stream();
        let (first, mut old) = old_thread.join().unwrap();

        match first {
            // Polled before the hand-over: it waits, so it must be woken.
            Poll::Pending => assert!(woken.0.load(Ordering::SeqCst), "lost wake-up"),
            // Polled after: it saw the revocation at once.
            Poll::Ready(item) => assert_eq!(item, None),
        }
        assert_eq!(poll_with(&mut old, Waker::noop()), Poll::Ready(None));
        tx.try_send(7).unwrap();
        assert_eq!(poll_with(&mut new, Waker::noop()), Poll::Ready(Some(7)));
    });
}

/// The stream claims items of its chunk without the lock while the next
/// stream's start ends its lease: every item goes to exactly one of them,
/// in order, and the old lease's count is exactly what its stream yielded.
#[test]
fn lock_free_claims_racing_a_revocation_share_no_item_and_count_exactly() {
    loom::model(|| {
        let mut reusable = ReusableReceiver::new(closed_channel(3));
        let mut old = reusable.stream();
        let old_lease = old.lease();
        // The first poll takes all three into the stream's chunk, under the
        // lock; the next two claims run without it, racing the new lease.
        let first = poll_with(&mut old, Waker::noop());
        assert_eq!(first, Poll::Ready(Some(0)));
        let old_thread = thread::spawn(move || {
            let mut got = vec![0];
            got.extend(pull(&mut old, 2));
            got
        });
        let mut new = reusable.stream();
        let got_new = pull(&mut new, 3);
        let got_old = old_thread.join().unwrap();

        let mut all = got_old.clone();
        all.extend(&got_new);
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(old_lease.metrics().delivered, got_old.len() as u64);
        assert_eq!(reusable.metrics().lost, got_old.len() as u64);
    });
}

/// The same race in replay mode: the old stream yields copies, the new
/// lease replays every unacknowledged item, and the redelivery count is
/// exactly what the old stream yielded.
#[test]
fn lock_free_claims_racing_a_revocation_in_replay_mode_are_counted_exactly() {
    loom::model(|| {
        let config = ReplayConfig::builder().max_items(4).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(closed_channel(3), config);
        let mut old = reusable.stream();
        let old_lease = old.lease();
        assert_eq!(poll_with(&mut old, Waker::noop()), Poll::Ready(Some(0)));
        let old_thread = thread::spawn(move || {
            let mut got = vec![0];
            got.extend(pull(&mut old, 2));
            got
        });
        let mut new = reusable.stream();
        let got_new = pull(&mut new, 3);
        let got_old = old_thread.join().unwrap();

        assert_eq!(got_new, [0, 1, 2]);
        assert_eq!(got_old, (0..got_old.len() as u32).collect::<Vec<_>>());
        assert_eq!(old_lease.metrics().delivered, got_old.len() as u64);
        let metrics = reusable.metrics();
        assert_eq!(metrics.redelivered, got_old.len() as u64);
        assert_eq!(metrics.delivered, got_old.len() as u64 + 3);
    });
}
