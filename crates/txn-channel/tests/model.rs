//! Model-based test: any sequence of sends, deliveries (single, batch,
//! peek) ended by commit, rollback, `retry_after`, a panic while held or a
//! cancellation, and closing, run against the channel and against a
//! `VecDeque` model. After every step they agree on what was delivered, its
//! attempt count, what was committed and what was dead-lettered; at the end,
//! every item sent was committed or dead-lettered exactly once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, Receiver, Sender};
use futures::FutureExt;
use proptest::prelude::*;
use tokio::runtime::Runtime;
use tokio::time::{Instant, timeout};

/// Long enough to pass any `retry_after` of the model; with paused time it
/// costs nothing.
const LONG: Duration = Duration::from_secs(3600);
/// Short enough to cancel a wait for a `retry_after` (whole seconds).
const SHORT: Duration = Duration::from_millis(1);
const PANIC_MESSAGE: &str = "model: panic while a delivery is held";

#[derive(Debug, Clone, Copy)]
enum End {
    Commit,
    Rollback,
    RetryAfter(u64),
    PanicWhileHeld,
    CancelWhileHeld,
}

#[derive(Debug, Clone, Copy)]
enum BatchEnd {
    CommitAll,
    CommitFirst(usize),
    Rollback,
    RetryAfter(u64),
    PanicWhileHeld,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Send,
    Begin(End),
    Batch(usize, BatchEnd),
    /// The seed recipe's peek.
    Recv,
    /// The seed recipe's commit.
    Commit,
    /// A `begin` raced against a 1 ms timer.
    CancelBegin,
    CloseSenders,
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        4 => Just(End::Commit),
        2 => Just(End::Rollback),
        1 => (1..=3_u64).prop_map(End::RetryAfter),
        1 => Just(End::PanicWhileHeld),
        1 => Just(End::CancelWhileHeld),
    ]
}

fn batch_end() -> impl Strategy<Value = BatchEnd> {
    prop_oneof![
        3 => Just(BatchEnd::CommitAll),
        2 => (0..=5_usize).prop_map(BatchEnd::CommitFirst),
        1 => Just(BatchEnd::Rollback),
        1 => (1..=3_u64).prop_map(BatchEnd::RetryAfter),
        1 => Just(BatchEnd::PanicWhileHeld),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Send),
        4 => end().prop_map(Op::Begin),
        2 => (1..=5_usize, batch_end()).prop_map(|(max, end)| Op::Batch(max, end)),
        1 => Just(Op::Recv),
        1 => Just(Op::Commit),
        1 => Just(Op::CancelBegin),
        1 => Just(Op::CloseSenders),
    ]
}

/// The reference: a queue of `(item, attempts)`.
struct Model {
    queue: VecDeque<(u32, u32)>,
    capacity: usize,
    max_attempts: u32,
    committed: Vec<u32>,
    dead: Vec<(u32, u32)>,
    not_before: Option<Instant>,
    held: bool,
    closed: bool,
    next: u32,
    /// Every item a send accepted.
    accepted: Vec<u32>,
}

impl Model {
    /// What any delivery does first: dead-letter exhausted items. Returns
    /// whether an item is there to deliver.
    fn settle(&mut self) -> bool {
        while let Some(&(item, attempts)) = self.queue.front() {
            if attempts < self.max_attempts {
                return true;
            }
            self.queue.pop_front();
            self.dead.push((attempts, item));
            self.not_before = None;
            self.held = false;
        }
        false
    }

    /// Delivers the first `n` items: one more attempt each.
    fn deliver(&mut self, n: usize) -> Vec<(u32, u32)> {
        self.not_before = None;
        self.held = false;
        for entry in self.queue.iter_mut().take(n) {
            entry.1 += 1;
        }
        self.queue.iter().take(n).copied().collect()
    }

    fn commit(&mut self, n: usize) {
        for _ in 0..n {
            let (item, _) = self
                .queue
                .pop_front()
                .expect("model: commit of a delivered item");
            self.committed.push(item);
        }
        if n > 0 {
            self.not_before = None;
        }
    }
}

struct Real {
    tx: Option<Sender<u32>>,
    rx: Receiver<u32>,
    committed: Vec<u32>,
    dead: Arc<Mutex<Vec<(u32, u32)>>>,
}

fn quiet_model_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PANIC_MESSAGE) {
                default(info);
            }
        }));
    });
}

/// Checks, before a delivery, that the real one happens exactly when the
/// model says, and after the model's `retry_after` instant.
async fn expect_delivered(model: &Model, waited_from: Instant, delivered: bool) {
    let deliverable = !model.queue.is_empty();
    assert_eq!(
        delivered, deliverable,
        "delivery when the model has {:?}",
        model.queue
    );
    if delivered {
        match model.not_before {
            Some(at) => assert!(Instant::now() >= at, "delivered before its retry time"),
            None => assert_eq!(Instant::now(), waited_from, "a delivery waited for nothing"),
        }
    }
}

async fn step(model: &mut Model, real: &mut Real, op: Op) {
    let start = Instant::now();
    match op {
        Op::Send => {
            let Some(tx) = &real.tx else { return };
            let item = model.next;
            model.next += 1;
            let sent = tx.try_send(item);
            if model.queue.len() < model.capacity {
                assert!(
                    sent.is_ok(),
                    "refused with {} of {}",
                    model.queue.len(),
                    model.capacity
                );
                model.queue.push_back((item, 0));
                model.accepted.push(item);
            } else {
                assert!(sent.unwrap_err().is_full());
            }
        }
        Op::Begin(end) => {
            let deliverable = model.settle();
            if !deliverable && !model.closed {
                assert!(
                    timeout(LONG, real.rx.begin()).await.is_err(),
                    "delivered from an empty channel"
                );
                return;
            }
            let not_before = model.not_before;
            let delivered = match end {
                End::PanicWhileHeld => {
                    let outcome = std::panic::AssertUnwindSafe(async {
                        if let Some(delivery) = real.rx.begin().await {
                            let _held = delivery;
                            std::panic::panic_any(PANIC_MESSAGE);
                        }
                    })
                    .catch_unwind()
                    .await;
                    outcome.is_err()
                }
                End::CancelWhileHeld => {
                    let processing = async {
                        let delivery = real.rx.begin().await?;
                        tokio::time::sleep(LONG * 2).await;
                        Some(delivery.commit())
                    };
                    match timeout(LONG, processing).await {
                        Ok(None) => false,
                        Ok(Some(_)) => panic!("processing outlived its timeout"),
                        Err(_) => true,
                    }
                }
                _ => {
                    let Some(delivery) = real.rx.begin().await else {
                        expect_delivered(model, start, false).await;
                        return;
                    };
                    model.not_before = not_before;
                    expect_delivered(model, start, true).await;
                    let expected = model.deliver(1)[0];
                    assert_eq!((*delivery, delivery.attempt()), expected);
                    match end {
                        End::Commit => {
                            real.committed.push(delivery.commit());
                            model.commit(1);
                        }
                        End::Rollback => delivery.rollback(),
                        End::RetryAfter(secs) => {
                            delivery.retry_after(Duration::from_secs(secs));
                            model.not_before = Some(Instant::now() + Duration::from_secs(secs));
                        }
                        End::PanicWhileHeld | End::CancelWhileHeld => unreachable!(),
                    }
                    return;
                }
            };
            assert_eq!(delivered, deliverable);
            if delivered {
                if let Some(at) = not_before {
                    assert!(Instant::now() >= at);
                }
                model.deliver(1);
            }
        }
        Op::Batch(max, end) => {
            let deliverable = model.settle();
            if !deliverable && !model.closed {
                assert!(timeout(LONG, real.rx.begin_batch(max)).await.is_err());
                return;
            }
            if let BatchEnd::PanicWhileHeld = end {
                let not_before = model.not_before;
                let outcome = std::panic::AssertUnwindSafe(async {
                    if let Some(batch) = real.rx.begin_batch(max).await {
                        let _held = batch;
                        std::panic::panic_any(PANIC_MESSAGE);
                    }
                })
                .catch_unwind()
                .await;
                assert_eq!(outcome.is_err(), deliverable);
                if deliverable {
                    if let Some(at) = not_before {
                        assert!(Instant::now() >= at);
                    }
                    model.deliver(max.min(model.queue.len()));
                }
                return;
            }
            let Some(batch) = real.rx.begin_batch(max).await else {
                expect_delivered(model, start, false).await;
                return;
            };
            expect_delivered(model, start, true).await;
            let n = max.min(model.queue.len());
            let expected = model.deliver(n);
            let got: Vec<_> = batch
                .iter()
                .enumerate()
                .map(|(i, item)| (*item, batch.attempt(i).unwrap()))
                .collect();
            assert_eq!(got, expected);
            match end {
                BatchEnd::CommitAll => {
                    real.committed.extend(batch.commit_all());
                    model.commit(n);
                }
                BatchEnd::CommitFirst(k) => {
                    let k = k.min(n);
                    real.committed.extend(batch.commit_first(k));
                    model.commit(k);
                }
                BatchEnd::Rollback => batch.rollback(),
                BatchEnd::RetryAfter(secs) => {
                    batch.retry_after(Duration::from_secs(secs));
                    model.not_before = Some(Instant::now() + Duration::from_secs(secs));
                }
                BatchEnd::PanicWhileHeld => unreachable!(),
            }
        }
        Op::Recv => {
            let deliverable = model.settle();
            if !deliverable && !model.closed {
                assert!(timeout(LONG, real.rx.recv()).await.is_err());
                return;
            }
            let got = real.rx.recv().await.copied();
            expect_delivered(model, start, got.is_some()).await;
            if let Some(item) = got {
                assert_eq!(item, model.deliver(1)[0].0);
                model.held = true;
            }
        }
        Op::Commit => {
            let got = real.rx.commit();
            if model.held {
                model.held = false;
                model.commit(1);
                assert_eq!(got, model.committed.last().copied());
                real.committed.extend(got);
            } else {
                assert_eq!(got, None);
            }
        }
        Op::CancelBegin => {
            let deliverable = model.settle();
            let ready = deliverable && model.not_before.is_none_or(|at| at <= start + SHORT);
            let ended = model.closed && !deliverable;
            match timeout(SHORT, real.rx.begin()).await {
                Err(_) => assert!(!ready && !ended, "a ready begin timed out"),
                Ok(None) => assert!(ended, "begin ended early"),
                Ok(Some(delivery)) => {
                    assert!(ready);
                    let expected = model.deliver(1)[0];
                    assert_eq!((*delivery, delivery.attempt()), expected);
                    // Dropped: rolled back.
                }
            }
        }
        Op::CloseSenders => {
            real.tx = None;
            model.closed = true;
        }
    }
    assert_eq!(real.committed, model.committed);
    assert_eq!(*real.dead.lock().unwrap(), model.dead);
}

fn run(capacity: usize, max_attempts: u32, ops: &[Op]) {
    quiet_model_panics();
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let dead = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&dead);
        let (tx, rx) = ChannelBuilder::new()
            .capacity(capacity)
            .max_attempts(max_attempts)
            .on_dead_letter(move |d: DeadLetter<u32>| {
                sink.lock().unwrap().push((d.attempts(), d.into_inner()))
            })
            .build()
            .unwrap();
        let mut real = Real {
            tx: Some(tx),
            rx,
            committed: Vec::new(),
            dead,
        };
        let mut model = Model {
            queue: VecDeque::new(),
            capacity,
            max_attempts,
            committed: Vec::new(),
            dead: Vec::new(),
            not_before: None,
            held: false,
            closed: false,
            next: 0,
            accepted: Vec::new(),
        };
        for &op in ops {
            step(&mut model, &mut real, op).await;
        }

        // Close and drain, committing everything: each item sent ends up
        // committed or dead-lettered, exactly once.
        step(&mut model, &mut real, Op::CloseSenders).await;
        while !model.queue.is_empty() || model.held {
            step(&mut model, &mut real, Op::Batch(3, BatchEnd::CommitAll)).await;
        }
        assert!(real.rx.begin().await.is_none());
        let mut all: Vec<u32> = real.committed.clone();
        all.extend(real.dead.lock().unwrap().iter().map(|&(_, item)| item));
        all.sort_unstable();
        assert_eq!(all, model.accepted, "an item was lost or duplicated");
        for window in real.committed.windows(2) {
            assert!(
                window[0] < window[1],
                "committed out of order: {:?}",
                real.committed
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn channel_agrees_with_the_vecdeque_model(
        capacity in 1..=6_usize,
        max_attempts in 1..=4_u32,
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        run(capacity, max_attempts, &ops);
    }
}

#[test]
fn model_covers_a_retry_a_poison_item_and_a_partial_batch() {
    run(
        4,
        2,
        &[
            Op::Send,
            Op::Send,
            Op::Send,
            Op::Begin(End::RetryAfter(2)),
            Op::CancelBegin,
            Op::Begin(End::Rollback),
            Op::Batch(3, BatchEnd::CommitFirst(1)),
            Op::Recv,
            Op::Commit,
            Op::Begin(End::PanicWhileHeld),
            Op::Begin(End::CancelWhileHeld),
            Op::Send,
            Op::Batch(5, BatchEnd::CommitAll),
        ],
    );
}
