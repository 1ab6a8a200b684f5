//! A property test against a real server: random scripts of commit,
//! rollback, retry_after, fail, drop and kill (a consumer whose connection
//! dies holding a delivery and its queue), with random attempt and
//! in-flight limits, checked against what must hold whatever the script:
//! every message ends committed exactly once or dead-lettered exactly once
//! with the right reason and attempts; attempts only grow and never pass the
//! limit; a committed message never comes back; nothing is left on the
//! consumer.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_patterns_core::{DeadLetterReason, Jitter};
use async_patterns_testkit::nats::NatsServer;
use async_patterns_txn_jetstream::{DeadLetter, Receiver, RetryPolicy};
use common::server;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::time::{Instant, timeout};

const LEASE: Duration = Duration::from_millis(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Commit,
    Rollback,
    RetryAfter,
    Fail,
    Drop,
    /// The consumer's connection dies while it holds this delivery.
    Kill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Commit),
        2 => Just(Op::Rollback),
        1 => Just(Op::RetryAfter),
        1 => Just(Op::Fail),
        2 => Just(Op::Drop),
        1 => Just(Op::Kill),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    messages: usize,
    max_attempts: u32,
    max_in_flight: usize,
    script: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        2usize..6,
        1u32..4,
        prop_oneof![Just(1usize), Just(3)],
        prop::collection::vec(op(), 1..30),
    )
        .prop_map(|(messages, max_attempts, max_in_flight, script)| Case {
            messages,
            max_attempts,
            max_in_flight,
            script,
        })
}

/// What the handlers saw of one message.
#[derive(Debug, Default)]
struct Seen {
    attempts: Vec<u32>,
    committed: u32,
    /// The last thing a handler did with it, and at which attempt.
    last: Option<(Op, u32)>,
}

/// One consumer "process": its own connection and receiver.
struct Process {
    client: async_nats::Client,
    receiver: Receiver,
}

async fn process(server: &NatsServer, names: &Names, case: &Case) -> Process {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let receiver = Receiver::builder(jetstream::new(client.clone()))
        .stream(&names.stream)
        .consumer("model")
        .dead_letter_subject(&names.dead_subject)
        .lease(LEASE)
        .max_attempts(case.max_attempts)
        .max_in_flight(case.max_in_flight)
        .retry_policy(
            RetryPolicy::builder()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .await
        .expect("receiver");
    Process { client, receiver }
}

struct Names {
    stream: String,
    dead_stream: String,
    dead_subject: String,
}

async fn run_case(server: &NatsServer, number: usize, case: Case) -> Result<(), TestCaseError> {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let context = jetstream::new(client);
    let names = Names {
        stream: format!("MODEL{number}"),
        dead_stream: format!("MODEL{number}_DEAD"),
        dead_subject: format!("dead{number}.model"),
    };
    for (name, subject) in [
        (&names.stream, format!("model{number}.>")),
        (&names.dead_stream, format!("dead{number}.>")),
    ] {
        context
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                ..Default::default()
            })
            .await
            .expect("stream");
    }
    // The consumer must exist before the first process, so that "model"
    // consumers of every process share it with the case's in-flight limit.
    context
        .get_stream(&names.stream)
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("model".into()),
            ack_wait: LEASE,
            max_deliver: -1,
            max_ack_pending: case.max_in_flight as i64,
            ..Default::default()
        })
        .await
        .expect("consumer");
    for i in 0..case.messages {
        context
            .publish(format!("model{number}.{i}"), i.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut script = case.script.iter().copied();
    let mut current = process(server, &names, &case).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        prop_assert!(
            Instant::now() < deadline,
            "the case did not settle: {seen:?}"
        );
        let delivery = match timeout(Duration::from_millis(300), current.receiver.begin()).await {
            Ok(Ok(Some(d))) => d,
            Ok(other) => return Err(TestCaseError::fail(format!("begin: {other:?}"))),
            Err(_) => {
                // Quiet: done once every message ended and nothing is left.
                let dead = common::dead_letters_in(&context, &names.dead_stream).await;
                let committed = seen.values().filter(|s| s.committed > 0).count();
                let stream = context.get_stream(&names.stream).await.unwrap();
                let info = stream.consumer_info("model").await.unwrap();
                if committed + dead.len() == case.messages
                    && info.num_pending == 0
                    && info.num_ack_pending == 0
                {
                    return check(&case, &seen, &dead);
                }
                continue;
            }
        };
        let sequence = delivery.stream_sequence();
        let attempt = delivery.attempt();
        let entry = seen.entry(sequence).or_default();
        prop_assert_eq!(entry.committed, 0, "#{} came back after a commit", sequence);
        prop_assert!(
            entry.attempts.last().is_none_or(|&a| a < attempt),
            "#{} attempts went {:?} then {}",
            sequence,
            entry.attempts,
            attempt
        );
        prop_assert!(
            attempt <= case.max_attempts,
            "#{} handed out at attempt {}",
            sequence,
            attempt
        );
        entry.attempts.push(attempt);
        let op = script.next().unwrap_or(Op::Commit);
        entry.last = Some((op, attempt));
        match op {
            Op::Commit => {
                delivery.commit().await.expect("commit");
                entry.committed += 1;
            }
            Op::Rollback => delivery.rollback().await.expect("rollback"),
            Op::RetryAfter => delivery
                .retry_after(Duration::from_millis(20))
                .await
                .expect("retry_after"),
            Op::Fail => delivery.fail("scripted").await.expect("fail"),
            Op::Drop => drop(delivery),
            Op::Kill => {
                // The process dies holding the delivery: it never ends it
                // (forgotten, so no drop-rollback runs), and its connection
                // goes, so that its lease is not renewed either.
                std::mem::forget(delivery);
                let _ = current.client.drain().await;
                drop(current);
                current = process(server, &names, &case).await;
            }
        }
    }
}

fn check(
    case: &Case,
    seen: &BTreeMap<u64, Seen>,
    dead: &[DeadLetter],
) -> Result<(), TestCaseError> {
    let mut dead_by_sequence = BTreeMap::new();
    for letter in dead {
        prop_assert!(
            dead_by_sequence
                .insert(letter.stream_sequence(), letter)
                .is_none(),
            "#{} dead-lettered twice",
            letter.stream_sequence()
        );
    }
    for sequence in 1..=case.messages as u64 {
        let s = seen.get(&sequence);
        let committed = s.map_or(0, |s| s.committed);
        match (committed, dead_by_sequence.get(&sequence)) {
            (1, None) => {}
            (0, Some(letter)) => {
                let expected = match s.and_then(|s| s.last) {
                    Some((Op::Fail, attempt)) => {
                        (DeadLetterReason::Failed("scripted".into()), attempt)
                    }
                    Some((Op::Rollback | Op::RetryAfter | Op::Drop, attempt))
                        if attempt == case.max_attempts =>
                    {
                        (DeadLetterReason::MaxAttempts, attempt)
                    }
                    // Its last attempt ran out in a dead process (held or
                    // queued), or in a queue.
                    _ => (DeadLetterReason::LeaseExpired, case.max_attempts + 1),
                };
                prop_assert_eq!(
                    (letter.reason().clone(), letter.attempts()),
                    expected,
                    "#{} seen {:?}",
                    sequence,
                    s
                );
            }
            (c, d) => {
                return Err(TestCaseError::fail(format!(
                    "#{sequence}: committed {c} times, dead letter {:?}",
                    d.map(|l| l.reason())
                )));
            }
        }
    }
    Ok(())
}

#[test]
fn random_scripts_end_every_message_committed_once_or_dead_lettered_once() {
    let server = server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("TXN_JETSTREAM_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let number = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&case(), |case| {
            let n = number.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(run_case(&server, n, case))
        })
        .unwrap();
}
