//! Proptest: under any sequence of sends, receives, clones and drops of
//! either end, with every overflow policy, the channel behaves like a bounded
//! FIFO model, and every item is received exactly once, handed back, or
//! counted as dropped — nothing is lost silently, nothing duplicated — and
//! `metrics()` reports every counter the model predicts.

use std::collections::VecDeque;

use async_patterns_bridge::{
    ChannelBuilder, Overflow, Receiver, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use futures::FutureExt;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    TrySend(usize),
    SendTimeoutZero(usize),
    TryRecv,
    /// `recv().await`, polled once.
    Recv,
    CloneSender(usize),
    DropSender(usize),
    CloseReceiver,
    DropReceiver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize).prop_map(Op::TrySend),
        2 => (0..3usize).prop_map(Op::SendTimeoutZero),
        3 => Just(Op::TryRecv),
        2 => Just(Op::Recv),
        1 => (0..3usize).prop_map(Op::CloneSender),
        1 => (0..3usize).prop_map(Op::DropSender),
        1 => Just(Op::CloseReceiver),
        1 => Just(Op::DropReceiver),
    ]
}

fn overflow() -> impl Strategy<Value = Overflow> {
    prop_oneof![
        Just(Overflow::Reject),
        Just(Overflow::DropNewest),
        Just(Overflow::DropOldest)
    ]
}

/// What a send did to its item, as the model predicts it.
#[derive(Debug, PartialEq)]
enum Fate {
    Queued,
    /// Accepted, then discarded by a lossy policy (the item itself).
    DroppedNewest,
    Full,
    Closed,
}

struct Model {
    capacity: usize,
    overflow: Overflow,
    buffer: VecDeque<u32>,
    closed: bool,
    dropped: u64,
    sent: u64,
    delivered: u64,
    rejected: u64,
    handed_back: u64,
}

impl Model {
    fn send(&mut self, item: u32) -> Fate {
        let fate = self.fate(item);
        match fate {
            Fate::Queued | Fate::DroppedNewest => self.sent += 1,
            Fate::Full => {
                self.rejected += 1;
                self.handed_back += 1;
            }
            Fate::Closed => self.handed_back += 1,
        }
        fate
    }

    fn fate(&mut self, item: u32) -> Fate {
        if self.closed {
            return Fate::Closed;
        }
        if self.buffer.len() < self.capacity {
            self.buffer.push_back(item);
            return Fate::Queued;
        }
        match self.overflow {
            Overflow::DropNewest => {
                self.dropped += 1;
                Fate::DroppedNewest
            }
            Overflow::DropOldest => {
                self.buffer.pop_front();
                self.dropped += 1;
                self.buffer.push_back(item);
                Fate::Queued
            }
            _ => Fate::Full,
        }
    }
}

proptest! {
    // Under miri: a few cases, and no failure file (miri has no file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 6 } else { 512 },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_item_is_received_once_handed_back_or_counted(
        capacity in 1..5usize,
        overflow in overflow(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let (tx, rx) = ChannelBuilder::<u32>::new().capacity(capacity).overflow(overflow).build().unwrap();
        let observer = tx.clone(); // reads `metrics()` to the end; never sends
        let mut senders: Vec<Sender<u32>> = vec![tx];
        let mut rx: Option<Receiver<u32>> = Some(rx);
        let mut model = Model {
            capacity, overflow, buffer: VecDeque::new(), closed: false,
            dropped: 0, sent: 0, delivered: 0, rejected: 0, handed_back: 0,
        };
        let (mut next, mut received, mut handed_back) = (0u32, Vec::new(), 0u64);

        for op in ops {
            match op {
                Op::TrySend(i) | Op::SendTimeoutZero(i) if i < senders.len() => {
                    let item = next;
                    next += 1;
                    let fate = model.send(item);
                    let back = match op {
                        Op::TrySend(_) => match senders[i].try_send(item) {
                            Ok(()) => None,
                            Err(TrySendError::Full(v)) => Some((Fate::Full, v)),
                            Err(TrySendError::Closed(v)) => Some((Fate::Closed, v)),
                            Err(e) => panic!("{e}"),
                        },
                        _ => match senders[i].send_timeout(item, std::time::Duration::ZERO) {
                            Ok(()) => None,
                            Err(SendTimeoutError::Timeout(v)) => Some((Fate::Full, v)),
                            Err(SendTimeoutError::Closed(v)) => Some((Fate::Closed, v)),
                            Err(e) => panic!("{e}"),
                        },
                    };
                    match back {
                        None => prop_assert!(matches!(fate, Fate::Queued | Fate::DroppedNewest), "{fate:?}"),
                        Some((got, v)) => {
                            prop_assert_eq!(got, fate);
                            prop_assert_eq!(v, item, "the wrong value came back");
                            handed_back += 1;
                        }
                    }
                }
                Op::TryRecv => if let Some(rx) = rx.as_mut() {
                    let expected = match model.buffer.pop_front() {
                        Some(v) => Ok(v),
                        None if model.closed => Err(TryRecvError::Disconnected),
                        None => Err(TryRecvError::Empty),
                    };
                    let got = rx.try_recv();
                    prop_assert_eq!(got, expected);
                    if let Ok(v) = got {
                        received.push(v);
                        model.delivered += 1;
                    }
                },
                Op::Recv => if let Some(rx) = rx.as_mut() {
                    let expected = match model.buffer.pop_front() {
                        Some(v) => Some(Some(v)),
                        None if model.closed => Some(None),
                        None => None,
                    };
                    let got = rx.recv().now_or_never();
                    prop_assert_eq!(got, expected);
                    if let Some(Some(v)) = got {
                        received.push(v);
                        model.delivered += 1;
                    }
                },
                Op::CloneSender(i) if i < senders.len() => senders.push(senders[i].clone()),
                Op::DropSender(i) if i < senders.len() => {
                    senders.swap_remove(i);
                    // `observer` keeps the channel open from the senders' side.
                }
                Op::CloseReceiver => if let Some(rx) = rx.as_mut() {
                    rx.close();
                    model.closed = true;
                },
                Op::DropReceiver if rx.is_some() => {
                    rx = None;
                    model.dropped += model.buffer.len() as u64;
                    model.buffer.clear();
                    model.closed = true;
                }
                _ => {}
            }
            let m = observer.metrics();
            prop_assert_eq!(m.dropped, model.dropped);
            prop_assert_eq!(m.sent, model.sent);
            prop_assert_eq!(m.delivered, model.delivered);
            prop_assert_eq!(m.rejected, model.rejected);
            prop_assert_eq!(m.handed_back, model.handed_back);
            prop_assert_eq!(m.queued, model.buffer.len());
            prop_assert_eq!(observer.len(), model.buffer.len());
            prop_assert_eq!(m.sent, m.delivered + m.dropped + m.queued as u64);
        }

        // Dropping the receiver (if still there) drops and counts the rest.
        drop(rx);
        prop_assert_eq!(observer.metrics().dropped, model.dropped + model.buffer.len() as u64);
        // FIFO: what was received came out in the order it went in.
        prop_assert!(received.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", received);
        // The ledger: every item accounted for exactly once.
        let m = observer.metrics();
        prop_assert_eq!(received.len() as u64 + handed_back + m.dropped, u64::from(next));
        prop_assert_eq!(m.handed_back, handed_back);
        prop_assert_eq!(m.sent, m.delivered + m.dropped);
        prop_assert_eq!(m.queued, 0);
    }
}
