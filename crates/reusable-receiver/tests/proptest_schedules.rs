//! Property tests: any schedule of attempts, failures after random counts,
//! acknowledgements, revocations and late drops keeps the contract.
//!
//! Replay mode: every attempt yields the unacknowledged items first, in
//! order, then new ones, so its items are consecutive ids starting at the
//! oldest unacknowledged one; every item is delivered at least once and
//! acknowledged exactly once; the buffer never exceeds its bound; a stale
//! stream never yields. Plain mode: no item is yielded twice, and the lost
//! count is what ended leases yielded without acknowledging.

use std::task::{Context, Poll, Waker};

use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, ReusableStream, WhenFull};
use futures::{Stream, StreamExt};
use proptest::prelude::*;
use tokio::sync::mpsc;

fn poll_once<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
    stream.poll_next_unpin(&mut Context::from_waker(Waker::noop()))
}

#[derive(Debug, Clone, Copy)]
enum Ack {
    Nothing,
    /// Confirm the first `n` items (clamped to what was yielded).
    Prefix(u64),
    All,
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// The consumer drops the stream with the failed call.
    Drop,
    /// The attempt's lease is revoked; the stream lives on, stale.
    Revoke,
    /// The stream stays alive and is only superseded by the next one.
    KeepAlive,
}

#[derive(Debug, Clone)]
struct AttemptPlan {
    /// The attempt fails after this many items (or when its stream waits).
    pulls: usize,
    ack: Ack,
    end: End,
    /// Drop the oldest stale stream after this attempt (a late drop).
    late_drop: bool,
}

fn attempt_plan() -> impl Strategy<Value = AttemptPlan> {
    (
        0usize..12,
        prop_oneof![
            Just(Ack::Nothing),
            (0u64..12).prop_map(Ack::Prefix),
            Just(Ack::All)
        ],
        prop_oneof![Just(End::Drop), Just(End::Revoke), Just(End::KeepAlive)],
        any::<bool>(),
    )
        .prop_map(|(pulls, ack, end, late_drop)| AttemptPlan {
            pulls,
            ack,
            end,
            late_drop,
        })
}

/// A closed channel holding ids `0..n`.
fn channel_with(n: u64) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel(n.max(1) as usize);
    for i in 0..n {
        tx.try_send(i).unwrap();
    }
    rx
}

/// Pulls up to `pulls` items; stops early when the stream waits or ends.
fn pull(stream: &mut ReusableStream<u64>, pulls: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < pulls {
        match poll_once(stream) {
            Poll::Ready(Some(item)) => got.push(item),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    got
}

fn confirmed(ack: Ack, yielded: usize) -> u64 {
    match ack {
        Ack::Nothing => 0,
        Ack::Prefix(k) => k.min(yielded as u64),
        Ack::All => yielded as u64,
    }
}

fn end_attempt(
    plan: &AttemptPlan,
    stream: ReusableStream<u64>,
    stale: &mut Vec<ReusableStream<u64>>,
) {
    match plan.end {
        End::Drop => drop(stream),
        End::Revoke => {
            stream.lease().revoke();
            stale.push(stream);
        }
        End::KeepAlive => stale.push(stream),
    }
    if plan.late_drop && !stale.is_empty() {
        stale.remove(0);
    }
}

fn stale_streams_yield_nothing(stale: &mut [ReusableStream<u64>]) -> bool {
    stale
        .iter_mut()
        .all(|stream| poll_once(stream) == Poll::Ready(None))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn replay_mode_delivers_every_item_in_order_and_acknowledges_each_once(
        n in 0u64..40,
        max_items in 1usize..16,
        end_stream in any::<bool>(),
        plans in prop::collection::vec(attempt_plan(), 0..20),
    ) {
        let config = ReplayConfig::builder()
            .max_items(max_items)
            .when_full(if end_stream { WhenFull::EndStream } else { WhenFull::Wait })
            .build()
            .unwrap();
        let mut reusable = ReusableReceiver::with_replay(channel_with(n), config);
        let mut acked_upto = 0u64; // every id below is acknowledged
        let mut delivered = vec![false; n as usize];
        let mut stale = Vec::new();

        for plan in plans {
            let mut stream = reusable.stream();
            prop_assert!(stale_streams_yield_nothing(&mut stale));
            let lease = stream.lease();
            let got = pull(&mut stream, plan.pulls);
            // Unacknowledged first, in order, then new ones: consecutive ids
            // from the oldest unacknowledged.
            let expected: Vec<u64> = (acked_upto..acked_upto + got.len() as u64).collect();
            prop_assert_eq!(&got, &expected);
            prop_assert!(reusable.unacked_len() <= max_items);
            for id in &got {
                delivered[*id as usize] = true;
            }
            let confirmed = confirmed(plan.ack, got.len());
            prop_assert_eq!(lease.ack(confirmed), Ok(confirmed));
            acked_upto += confirmed;
            end_attempt(&plan, stream, &mut stale);
        }

        // Then attempts succeed: pull everything, acknowledge, until drained
        // (a full buffer ends or pauses a stream).
        let mut rounds = 0;
        while !reusable.is_drained() {
            rounds += 1;
            prop_assert!(rounds <= n + 2, "no progress");
            let mut stream = reusable.stream();
            prop_assert!(stale_streams_yield_nothing(&mut stale));
            let lease = stream.lease();
            let got = pull(&mut stream, usize::MAX);
            let expected: Vec<u64> = (acked_upto..acked_upto + got.len() as u64).collect();
            prop_assert_eq!(&got, &expected);
            for id in &got {
                delivered[*id as usize] = true;
            }
            lease.ack_all().unwrap();
            acked_upto += got.len() as u64;
        }
        prop_assert_eq!(acked_upto, n);
        prop_assert!(delivered.iter().all(|d| *d), "every item delivered at least once");
        let stats = reusable.stats();
        prop_assert_eq!(stats.acknowledged, n, "each item acknowledged exactly once");
        prop_assert_eq!(stats.lost, 0);
        prop_assert_eq!(stats.yielded - stats.replayed, n, "first deliveries");
        prop_assert!(stale_streams_yield_nothing(&mut stale));
    }

    #[test]
    fn plain_mode_never_yields_an_item_twice_and_counts_the_unconfirmed_as_lost(
        n in 0u64..40,
        plans in prop::collection::vec(attempt_plan(), 0..20),
    ) {
        let mut reusable = ReusableReceiver::new(channel_with(n));
        let mut next = 0u64;
        let mut lost = 0u64;
        let mut stale = Vec::new();
        for plan in plans {
            let mut stream = reusable.stream();
            prop_assert!(stale_streams_yield_nothing(&mut stale));
            let lease = stream.lease();
            let got = pull(&mut stream, plan.pulls);
            let expected: Vec<u64> = (next..next + got.len() as u64).collect();
            prop_assert_eq!(&got, &expected);
            next += got.len() as u64;
            let confirmed = confirmed(plan.ack, got.len());
            lease.ack(confirmed).unwrap();
            lost += got.len() as u64 - confirmed;
            end_attempt(&plan, stream, &mut stale);
        }
        reusable.revoke();
        prop_assert_eq!(reusable.stats().lost, lost);
        let rest = pull(&mut reusable.stream(), usize::MAX);
        prop_assert_eq!(rest, (next..n).collect::<Vec<_>>());
    }
}
