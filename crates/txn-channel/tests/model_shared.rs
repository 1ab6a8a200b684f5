//! Model-based test of sharing the work: several consumers (receiver
//! clones, added and dropped on the way) take borrowing and owned
//! deliveries and end them — commit, rollback, `retry_after`, `fail`,
//! drop, panic, `extend` — in any order, while time advances (leases run
//! out, backoff comes due), begins are cancelled and the channel is closed,
//! in every order (strict, per key, unordered) with random limits. All under
//! paused time, against a model of every item's state.
//!
//! Checked at every step: a delivery is one the order allows now (strict:
//! the oldest item, nothing else in flight; per key: the oldest of its key,
//! no other of its key in flight; never more than `max_in_flight`), never
//! before its backoff, with the right attempt; a begin that finds nothing
//! finds nothing in the model either; an end after the lease ran out fails
//! and one before succeeds. At the end (close, drop every delivery, drain):
//! every item sent was committed exactly once or dead-lettered exactly once
//! — after exactly `max_attempts` deliveries unless failed — with the
//! reason the model expects, and the metrics add up.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use async_patterns_core::{DeadLetterReason, Jitter, RetryPolicy};
use async_patterns_txn_channel::{
    ChannelBuilder, DeadLetter, DeliveryError, OwnedDelivery, Receiver, Sender, TrySendError,
};
use futures::FutureExt;
use proptest::prelude::*;
use tokio::time::Instant;

const PANIC_MESSAGE: &str = "model: a handler panicked";

type Item = (u32, u8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Strict,
    PerKey,
    Unordered,
}

#[derive(Debug, Clone)]
struct Config {
    order: Order,
    consumers: usize,
    capacity: usize,
    max_attempts: Option<u32>,
    max_in_flight: Option<usize>,
    lease: Option<u64>,
    backoff: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum End {
    Commit,
    Rollback,
    RetryAfter(u64),
    Fail,
    Drop,
    Panic,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Send(u8),
    /// A borrowing delivery, begun and ended in one step.
    Borrowed(usize, End),
    Owned(usize),
    EndOwned(usize, End),
    Extend(usize, u64),
    Advance(u64),
    CancelBegin(usize),
    Clone(usize),
    DropConsumer(usize),
    Close,
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        4 => Just(End::Commit),
        2 => Just(End::Rollback),
        1 => (0..=3_u64).prop_map(End::RetryAfter),
        1 => Just(End::Fail),
        1 => Just(End::Drop),
        1 => Just(End::Panic),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3_u8).prop_map(Op::Send),
        3 => (0..4_usize, end()).prop_map(|(c, e)| Op::Borrowed(c, e)),
        3 => (0..4_usize).prop_map(Op::Owned),
        3 => (0..8_usize, end()).prop_map(|(s, e)| Op::EndOwned(s, e)),
        1 => (0..8_usize, 1..=4_u64).prop_map(|(s, d)| Op::Extend(s, d)),
        2 => (1..=4_u64).prop_map(Op::Advance),
        1 => (0..4_usize).prop_map(Op::CancelBegin),
        1 => (0..4_usize).prop_map(Op::Clone),
        1 => (0..4_usize).prop_map(Op::DropConsumer),
        1 => Just(Op::Close),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            Just(Order::Strict),
            Just(Order::PerKey),
            Just(Order::Unordered)
        ],
        1..=3_usize,
        1..=6_usize,
        proptest::option::of(1..=3_u32),
        proptest::option::of(1..=3_usize),
        proptest::option::of(1..=3_u64),
        proptest::option::of(1..=2_u64),
    )
        .prop_map(
            |(order, consumers, capacity, max_attempts, max_in_flight, lease, backoff)| Config {
                order,
                consumers,
                capacity,
                max_attempts,
                max_in_flight: if order == Order::Strict {
                    None
                } else {
                    max_in_flight
                },
                lease,
                backoff,
            },
        )
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Queued,
    /// In flight as delivery number `delivery`: `deadline` for a leased
    /// (owned) one.
    Flight {
        deadline: Option<Instant>,
        delivery: u64,
    },
    Committed,
    Dead(DeadLetterReason),
}

#[derive(Debug, Clone)]
struct ModelItem {
    key: u8,
    attempts: u32,
    not_before: Option<Instant>,
    state: State,
}

struct Model {
    cfg: Config,
    policy: Option<RetryPolicy>,
    items: BTreeMap<u32, ModelItem>,
    next: u32,
    closed: bool,
    delivered: u64,
    redelivered: u64,
    expired: u64,
}

impl Model {
    fn unfinished(&self, item: &ModelItem) -> bool {
        matches!(item.state, State::Queued | State::Flight { .. })
    }

    fn in_flight(&self) -> usize {
        self.items
            .values()
            .filter(|i| matches!(i.state, State::Flight { .. }))
            .count()
    }

    /// Leases that ran out give their item back (or to the dead letters),
    /// their backoff counted from the deadline.
    fn expire(&mut self, now: Instant) {
        let ids: Vec<u32> = self.items.keys().copied().collect();
        for id in ids {
            let item = &self.items[&id];
            let State::Flight {
                deadline: Some(at), ..
            } = item.state
            else {
                continue;
            };
            if at > now {
                continue;
            }
            self.expired += 1;
            self.fail_attempt(id, at, None, DeadLetterReason::LeaseExpired);
        }
    }

    /// A delivery of `id` ended without a commit at `at`.
    fn fail_attempt(&mut self, id: u32, at: Instant, delay: Option<u64>, reason: DeadLetterReason) {
        let max = self.cfg.max_attempts;
        let policy = self.policy.clone();
        let item = self.items.get_mut(&id).unwrap();
        if max.is_some_and(|m| item.attempts >= m) {
            item.state = State::Dead(reason);
            return;
        }
        item.state = State::Queued;
        let delay = match delay {
            Some(secs) => Duration::from_secs(secs),
            None => policy.map_or(Duration::ZERO, |p| p.base_delay(item.attempts)),
        };
        item.not_before = (!delay.is_zero()).then(|| at + delay);
    }

    fn ready(&self, item: &ModelItem, now: Instant) -> bool {
        item.state == State::Queued && item.not_before.is_none_or(|t| t <= now)
    }

    /// Whether the order allows delivering `id` now.
    fn may_deliver(&self, id: u32, now: Instant) -> bool {
        let item = &self.items[&id];
        if !self.ready(item, now) {
            return false;
        }
        if self
            .cfg
            .max_in_flight
            .is_some_and(|max| self.in_flight() >= max)
        {
            return false;
        }
        let oldest = |key: Option<u8>| {
            self.items
                .iter()
                .filter(|(_, i)| self.unfinished(i) && key.is_none_or(|k| i.key == k))
                .map(|(id, _)| *id)
                .next()
        };
        match self.cfg.order {
            Order::Strict => self.in_flight() == 0 && oldest(None) == Some(id),
            Order::PerKey => {
                oldest(Some(item.key)) == Some(id)
                    && !self
                        .items
                        .values()
                        .any(|i| i.key == item.key && matches!(i.state, State::Flight { .. }))
            }
            Order::Unordered => true,
        }
    }

    fn anything_deliverable(&self, now: Instant) -> bool {
        self.items.keys().any(|id| self.may_deliver(*id, now))
    }

    fn ended(&self) -> bool {
        self.closed && !self.items.values().any(|i| self.unfinished(i))
    }

    /// The real channel delivered `(id, key)` as attempt `attempt`, leased
    /// until `deadline`.
    fn delivered(
        &mut self,
        (id, key): Item,
        attempt: u32,
        deadline: Option<Instant>,
        now: Instant,
    ) -> u64 {
        assert!(
            self.may_deliver(id, now),
            "delivered {id} which the order does not allow now: {:?}",
            self.items
        );
        let item = self.items.get_mut(&id).unwrap();
        assert_eq!(item.key, key);
        item.attempts += 1;
        assert_eq!(attempt, item.attempts, "attempt of {id}");
        self.delivered += 1;
        item.state = State::Flight {
            deadline,
            delivery: self.delivered,
        };
        item.not_before = None;
        if attempt > 1 {
            self.redelivered += 1;
        }
        self.delivered
    }

    /// Applies an end; returns whether it must succeed (the lease held).
    fn end(&mut self, id: u32, delivery: u64, how: End, now: Instant) -> bool {
        let State::Flight {
            deadline,
            delivery: current,
        } = self.items[&id].state
        else {
            return false; // expired and given back: not the holder's
        };
        if current != delivery {
            return false; // expired, and delivered again since
        }
        if deadline.is_some_and(|at| at <= now) {
            return false;
        }
        match how {
            End::Commit => self.items.get_mut(&id).unwrap().state = State::Committed,
            End::Rollback | End::Drop => {
                self.fail_attempt(id, now, None, DeadLetterReason::MaxAttempts)
            }
            End::Panic => self.fail_attempt(id, now, None, DeadLetterReason::Panicked),
            End::RetryAfter(secs) => {
                self.fail_attempt(id, now, Some(secs), DeadLetterReason::MaxAttempts)
            }
            End::Fail => {
                self.items.get_mut(&id).unwrap().state =
                    State::Dead(DeadLetterReason::Failed("model".into()))
            }
        }
        true
    }
}

type Letters = Arc<Mutex<Vec<(u32, u32, DeadLetterReason)>>>;

struct Real {
    tx: Option<Sender<Item>>,
    consumers: Vec<Receiver<Item>>,
    owned: Vec<(OwnedDelivery<Item>, u32, u64)>,
    committed: Vec<u32>,
    letters: Letters,
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

fn build(cfg: &Config, letters: &Letters) -> (Sender<Item>, Receiver<Item>, Option<RetryPolicy>) {
    let mut builder = ChannelBuilder::<Item>::new().capacity(cfg.capacity);
    builder = match cfg.order {
        Order::Strict => builder.strict_order(),
        Order::PerKey => builder.order_by_key(|(_, key): &Item| *key),
        Order::Unordered => builder.unordered(),
    };
    if let Some(max) = cfg.max_in_flight {
        builder = builder.max_in_flight(max);
    }
    if let Some(secs) = cfg.lease {
        builder = builder.lease(Duration::from_secs(secs));
    }
    let policy = cfg.backoff.map(|secs| {
        RetryPolicy::builder()
            .initial_delay(Duration::from_secs(secs))
            .jitter(Jitter::None)
            .build()
            .unwrap()
    });
    if let Some(policy) = &policy {
        builder = builder.retry_policy(policy.clone());
    }
    let sink = Arc::clone(letters);
    builder = builder.on_dead_letter(move |d: DeadLetter<Item>| {
        sink.lock()
            .unwrap()
            .push((d.item().0, d.attempts(), d.reason().clone()))
    });
    if let Some(max) = cfg.max_attempts {
        builder = builder.max_attempts(max);
    }
    let (tx, rx) = builder.build().unwrap();
    (tx, rx, policy)
}

/// Ends a borrowing or owned delivery as `how`; the closure ends it for real
/// and returns whether that succeeded.
fn expect_end(model: &mut Model, id: u32, delivery: u64, how: End, ok: bool) {
    let now = Instant::now();
    model.expire(now);
    let must = model.end(id, delivery, how, now);
    assert_eq!(ok, must, "end {how:?} of {id}: real {ok}, model {must}");
}

fn end_owned(real: &mut Real, model: &mut Model, slot: usize, how: End) {
    if real.owned.is_empty() {
        return;
    }
    let (delivery, id, number) = real.owned.remove(slot % real.owned.len());
    let ok = match how {
        End::Commit => match delivery.commit() {
            Ok(item) => {
                real.committed.push(item.0);
                true
            }
            Err(DeliveryError::LeaseExpired) => false,
            Err(e) => panic!("{e}"),
        },
        End::Rollback => delivery.rollback().is_ok(),
        End::RetryAfter(secs) => delivery.retry_after(Duration::from_secs(secs)).is_ok(),
        End::Fail => delivery.fail("model").is_ok(),
        End::Drop | End::Panic => {
            // A drop cannot say; the model decides from the lease.
            // (`None`: no lease, or one that ran out and was noticed.)
            let deadline = delivery.lease_deadline();
            let ok = model.cfg.lease.is_none() || deadline.is_some_and(|at| Instant::now() < at);
            if let End::Panic = how {
                let crashed = std::panic::catch_unwind(AssertUnwindSafe(move || {
                    let _held = delivery;
                    std::panic::panic_any(PANIC_MESSAGE);
                }));
                assert!(crashed.is_err());
            } else {
                drop(delivery);
            }
            ok
        }
    };
    expect_end(model, id, number, how, ok);
}

async fn step(real: &mut Real, model: &mut Model, op: Op) {
    let now = Instant::now();
    model.expire(now);
    let n = real.consumers.len();
    match op {
        Op::Send(key) => {
            let Some(tx) = &real.tx else { return };
            let id = model.next;
            let in_channel = model.items.values().filter(|i| model.unfinished(i)).count()
                + model
                    .items
                    .iter()
                    .filter(|(id, i)| {
                        matches!(i.state, State::Dead(_))
                            && !real.letters.lock().unwrap().iter().any(|l| l.0 == **id)
                    })
                    .count();
            match tx.try_send((id, key)) {
                Ok(()) => {
                    assert!(in_channel < model.cfg.capacity, "accepted over capacity");
                    model.next += 1;
                    model.items.insert(
                        id,
                        ModelItem {
                            key,
                            attempts: 0,
                            not_before: None,
                            state: State::Queued,
                        },
                    );
                }
                Err(TrySendError::Full(_)) => {
                    assert!(
                        !model.closed && in_channel >= model.cfg.capacity,
                        "refused with room"
                    );
                }
                Err(e) => {
                    assert!(model.closed, "{e}");
                }
            }
        }
        Op::Borrowed(c, how) => {
            let rx = &mut real.consumers[c % n];
            match rx.begin().now_or_never() {
                None => assert!(
                    !model.anything_deliverable(now) && !model.ended(),
                    "nothing delivered though the model can: {:?}",
                    model.items
                ),
                Some(None) => assert!(model.ended(), "ended early"),
                Some(Some(delivery)) => {
                    let item = *delivery;
                    let number = model.delivered(item, delivery.attempt(), None, now);
                    match how {
                        End::Commit => real.committed.push(delivery.commit().0),
                        End::Rollback => delivery.rollback(),
                        End::RetryAfter(secs) => delivery.retry_after(Duration::from_secs(secs)),
                        End::Fail => delivery.fail("model"),
                        End::Drop => drop(delivery),
                        End::Panic => {
                            let crashed = std::panic::catch_unwind(AssertUnwindSafe(move || {
                                let _held = delivery;
                                std::panic::panic_any(PANIC_MESSAGE);
                            }));
                            assert!(crashed.is_err());
                        }
                    }
                    expect_end(model, item.0, number, how, true);
                }
            }
        }
        Op::Owned(c) => {
            let rx = &mut real.consumers[c % n];
            match rx.begin_owned().now_or_never() {
                None => assert!(!model.anything_deliverable(now) && !model.ended()),
                Some(None) => assert!(model.ended(), "ended early"),
                Some(Some(delivery)) => {
                    let item = *delivery;
                    let deadline = model.cfg.lease.map(|s| now + Duration::from_secs(s));
                    assert_eq!(delivery.lease_deadline(), deadline);
                    let number = model.delivered(item, delivery.attempt(), deadline, now);
                    real.owned.push((delivery, item.0, number));
                }
            }
        }
        Op::EndOwned(slot, how) => end_owned(real, model, slot, how),
        Op::Extend(slot, secs) => {
            if real.owned.is_empty() {
                return;
            }
            let (delivery, id, number) = &real.owned[slot % real.owned.len()];
            let extended = delivery.extend(Duration::from_secs(secs));
            match &mut model.items.get_mut(id).unwrap().state {
                State::Flight { delivery: d, .. } if d != number => {
                    assert_eq!(extended, Err(DeliveryError::LeaseExpired));
                }
                State::Flight {
                    deadline: Some(at), ..
                } => {
                    assert!(extended.is_ok());
                    *at = (*at).max(now + Duration::from_secs(secs));
                    assert_eq!(delivery.lease_deadline(), Some(*at));
                }
                State::Flight { deadline: None, .. } => assert!(extended.is_ok()),
                _ => assert_eq!(extended, Err(DeliveryError::LeaseExpired)),
            }
        }
        Op::Advance(secs) => {
            tokio::time::advance(Duration::from_secs(secs)).await;
        }
        Op::CancelBegin(c) => {
            let rx = &mut real.consumers[c % n];
            let mut begin = Box::pin(rx.begin_owned());
            match (&mut begin).now_or_never() {
                None => assert!(!model.anything_deliverable(now) && !model.ended()),
                Some(None) => assert!(model.ended()),
                Some(Some(delivery)) => {
                    // Taken after all: the cancelled processing drops it.
                    let item = *delivery;
                    let deadline = model.cfg.lease.map(|s| now + Duration::from_secs(s));
                    let number = model.delivered(item, delivery.attempt(), deadline, now);
                    drop(delivery);
                    expect_end(model, item.0, number, End::Drop, true);
                }
            }
        }
        Op::Clone(c) => {
            if n < 4 {
                let clone = real.consumers[c % n].clone();
                real.consumers.push(clone);
            }
        }
        Op::DropConsumer(c) => {
            if n > 1 {
                drop(real.consumers.remove(c % n));
            }
        }
        Op::Close => {
            real.consumers[0].close();
            real.tx = None;
            model.closed = true;
        }
    }
}

fn run(cfg: Config, ops: &[Op]) {
    quiet_model_panics();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let letters: Letters = Arc::default();
        let (tx, rx, policy) = build(&cfg, &letters);
        let mut consumers = vec![rx];
        while consumers.len() < cfg.consumers {
            let clone = consumers[0].clone();
            consumers.push(clone);
        }
        let mut real = Real {
            tx: Some(tx),
            consumers,
            owned: Vec::new(),
            committed: Vec::new(),
            letters: Arc::clone(&letters),
        };
        let mut model = Model {
            cfg,
            policy,
            items: BTreeMap::new(),
            next: 0,
            closed: false,
            delivered: 0,
            redelivered: 0,
            expired: 0,
        };
        for &op in ops {
            step(&mut real, &mut model, op).await;
        }

        // The end: every owned delivery dropped, the intake closed, then one
        // consumer drains, committing everything (paused time skips to each
        // delay and lease).
        while !real.owned.is_empty() {
            end_owned(&mut real, &mut model, 0, End::Drop);
        }
        step(&mut real, &mut model, Op::Close).await;
        {
            let rx = &mut real.consumers[0];
            while let Some(delivery) = rx.begin().await {
                let now = Instant::now();
                model.expire(now);
                let item = *delivery;
                let number = model.delivered(item, delivery.attempt(), None, now);
                real.committed.push(delivery.commit().0);
                model.end(item.0, number, End::Commit, now);
            }
        }
        assert!(model.ended(), "the channel ended before the model");

        let letters = letters.lock().unwrap().clone();
        let mut committed = real.committed.clone();
        committed.sort_unstable();
        for (id, item) in &model.items {
            let times_committed = committed.iter().filter(|c| *c == id).count();
            let dead: Vec<_> = letters.iter().filter(|l| l.0 == *id).collect();
            match &item.state {
                State::Committed => {
                    assert_eq!((times_committed, dead.len()), (1, 0), "item {id}");
                }
                State::Dead(reason) => {
                    assert_eq!((times_committed, dead.len()), (0, 1), "item {id}");
                    assert_eq!(&dead[0].2, reason, "reason of {id}");
                    assert_eq!(dead[0].1, item.attempts, "attempts of {id}");
                    if !matches!(reason, DeadLetterReason::Failed(_)) {
                        assert_eq!(Some(item.attempts), model.cfg.max_attempts);
                    }
                }
                other => panic!("item {id} left {other:?}"),
            }
        }
        let m = real.consumers[0].metrics();
        assert_eq!(m.sent, u64::from(model.next));
        assert_eq!(m.committed, committed.len() as u64);
        assert_eq!(m.dead_lettered, letters.len() as u64);
        assert_eq!((m.in_flight, m.queued, m.dropped), (0, 0, 0));
        assert_eq!(m.delivered, model.delivered);
        assert_eq!(m.redelivered, model.redelivered);
        assert_eq!(m.expired, model.expired);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    #[test]
    fn consumers_sharing_a_channel_agree_with_the_model(
        cfg in config(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        run(cfg, &ops);
    }
}

#[test]
fn model_covers_leases_backoff_keys_and_a_dropped_consumer() {
    use End::*;
    use Op::*;
    run(
        Config {
            order: Order::PerKey,
            consumers: 2,
            capacity: 6,
            max_attempts: Some(2),
            max_in_flight: Some(2),
            lease: Some(2),
            backoff: Some(1),
        },
        &[
            Send(0),
            Send(0),
            Send(1),
            Owned(0),
            Owned(1),
            Owned(0),
            Advance(3),
            EndOwned(0, Commit),
            Borrowed(1, Rollback),
            Extend(0, 4),
            CancelBegin(0),
            DropConsumer(0),
            Advance(1),
            Borrowed(0, Panic),
            Owned(0),
            EndOwned(0, Fail),
            Send(2),
            Close,
        ],
    );
}
