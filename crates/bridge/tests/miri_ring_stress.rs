//! Stress of the lock-free ring behind the channel with several threads at
//! once — producers claiming slots, the receiver freeing them, `DropOldest`
//! senders popping against the receiver, the receiver dropped mid-write —
//! sized down under miri, which runs these to check every `unsafe` access of
//! the ring (`cargo +nightly miri test -p async-patterns-bridge --test
//! miri_ring_stress`, with `-Zmiri-many-seeds` for many interleavings).
//!
//! Each test checks the channel's ledger: every value is received exactly
//! once (in its producer's order), handed back, or counted as dropped.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use async_patterns_bridge::{ChannelBuilder, Overflow, SendTimeoutError, TrySendError, channel};
use async_patterns_core::park_on as block_on;
use common::within;

/// Values each producer sends: few under miri, which interprets every step.
const PER_PRODUCER: u64 = if cfg!(miri) { 24 } else { 20_000 };
const PRODUCERS: u64 = 3;

/// A value that says who sent it and in which order, and owns heap memory,
/// so that a slot read twice, never, or after being freed shows up (as a
/// wrong value, a leak, or a double free that miri reports).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Tagged(Box<(u64, u64)>);

impl Tagged {
    fn new(producer: u64, seq: u64) -> Self {
        Tagged(Box::new((producer, seq)))
    }
    fn producer(&self) -> u64 {
        self.0.0
    }
    fn seq(&self) -> u64 {
        self.0.1
    }
}

/// Checks that each producer's values came in its order, with no duplicate.
fn assert_fifo_per_producer(received: &[Tagged]) {
    let mut last = vec![None::<u64>; PRODUCERS as usize];
    let mut seen = HashSet::new();
    for v in received {
        assert!(seen.insert((v.producer(), v.seq())), "{v:?} received twice");
        let last = &mut last[v.producer() as usize];
        assert!(last.is_none_or(|l| l < v.seq()), "{v:?} out of order");
        *last = Some(v.seq());
    }
}

#[test]
fn blocking_producers_racing_the_receiver_deliver_every_value_once_in_order() {
    within(|| {
        let (tx, mut rx) = channel::<Tagged>(2);
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for seq in 0..PER_PRODUCER {
                        // Alternate the three sync sends: a try_send that is
                        // refused comes back and goes again, blocking.
                        let value = Tagged::new(p, seq);
                        match seq % 3 {
                            0 => tx.send_blocking(value).unwrap(),
                            1 => match tx.try_send(value) {
                                Ok(()) => {}
                                Err(TrySendError::Full(v)) => tx.send_blocking(v).unwrap(),
                                Err(e) => panic!("{e}"),
                            },
                            _ => {
                                let mut value = value;
                                loop {
                                    match tx
                                        .send_timeout(value, std::time::Duration::from_micros(50))
                                    {
                                        Ok(()) => break,
                                        Err(SendTimeoutError::Timeout(v)) => value = v,
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let received = block_on(async {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(received.len() as u64, PRODUCERS * PER_PRODUCER);
        assert_fifo_per_producer(&received);
        let m = rx.metrics();
        assert_eq!(
            (m.sent, m.delivered, m.dropped),
            (received.len() as u64, received.len() as u64, 0)
        );
    });
}

#[test]
fn drop_oldest_senders_popping_against_the_receiver_lose_nothing_uncounted() {
    within(|| {
        let (tx, mut rx) = ChannelBuilder::<Tagged>::new()
            .capacity(2)
            .overflow(Overflow::DropOldest)
            .build()
            .unwrap();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for seq in 0..PER_PRODUCER {
                        tx.try_send(Tagged::new(p, seq)).unwrap(); // never full
                    }
                })
            })
            .collect();
        let observer = tx.clone();
        drop(tx);
        // The receiver takes what the senders do not discard, racing them
        // for the oldest slot.
        let consumer = thread::spawn(move || {
            block_on(async {
                let mut got = Vec::new();
                while let Some(v) = rx.recv().await {
                    got.push(v);
                }
                got
            })
        });
        for p in producers {
            p.join().unwrap();
        }
        let metrics_before_close = observer.metrics();
        drop(observer); // the last sender: the receiver ends
        let received = consumer.join().unwrap();
        assert_fifo_per_producer(&received);
        let total = PRODUCERS * PER_PRODUCER;
        assert_eq!(metrics_before_close.sent, total);
        // Each value was received once or discarded and counted; none twice.
        assert_eq!(received.len() as u64 + metrics_before_close.dropped, total);
    });
}

#[test]
fn receiver_dropped_while_producers_write_accounts_for_every_value() {
    within(|| {
        for round in 0..if cfg!(miri) { 2 } else { 50 } {
            let (tx, mut rx) = channel::<Tagged>(3);
            let handed_back = Arc::new(AtomicU64::new(0));
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let tx = tx.clone();
                    let handed_back = handed_back.clone();
                    thread::spawn(move || {
                        for seq in 0..PER_PRODUCER {
                            if tx.send_blocking(Tagged::new(p, seq)).is_err() {
                                handed_back.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            let observer = tx.clone();
            drop(tx);
            // Take some, then drop the receiver in the middle of the stream:
            // the buffered values are dropped (freeing their boxes) and
            // counted; senders mid-write get theirs back.
            let take = (round * 7 % 20) as usize;
            let received = block_on(async {
                let mut got = Vec::new();
                while got.len() < take {
                    match rx.recv().await {
                        Some(v) => got.push(v),
                        None => break,
                    }
                }
                drop(rx);
                got
            });
            for p in producers {
                p.join().unwrap();
            }
            assert_fifo_per_producer(&received);
            let m = observer.metrics();
            let handed_back = handed_back.load(Ordering::Relaxed);
            assert_eq!(
                received.len() as u64 + m.dropped + handed_back,
                PRODUCERS * PER_PRODUCER,
                "round {round}"
            );
            assert_eq!(m.handed_back, handed_back, "round {round}");
            assert_eq!(m.delivered, received.len() as u64, "round {round}");
            assert_eq!(m.sent, m.delivered + m.dropped, "round {round}");
        }
    });
}
