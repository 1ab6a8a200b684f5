//! `txn_jetstream`: 100k small messages through a local nats-server (started
//! here by the testkit harness, with JetStream on a temporary store),
//! consumed and published by `async-patterns-txn-jetstream` beside the loops
//! a user writes by hand with `async-nats`. Every comparison is judged on
//! paired rounds: ours and the anchor back to back, alternating which goes
//! first, each on a fresh consumer (or stream) of its own.
//!
//! In criterion's test mode (`cargo xtask ci`) each comparison runs once on
//! 1,000 messages.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use async_patterns_benches::{paired, record_paired, secs, test_mode};
use async_patterns_testkit::nats::{INSTALL_HINT, NatsServer};
use async_patterns_txn_jetstream::{OutgoingMessage, Publisher, Receiver};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::runtime::Runtime;

const ROUNDS: usize = 5;
const WINDOW: usize = 256;
const BATCH: usize = 256;
const PAYLOAD: &[u8] = b"0123456789abcdef";

fn messages() -> usize {
    if test_mode() { 1_000 } else { 100_000 }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server and a stream `WORK` holding `messages()` messages, plus a
/// dead-letter stream (the receiver requires one; nothing goes there).
struct Fixture {
    _server: NatsServer,
    context: jetstream::Context,
    next: std::cell::Cell<usize>,
}

impl Fixture {
    fn new(rt: &Runtime) -> Fixture {
        let server = NatsServer::start().expect(INSTALL_HINT);
        let context = rt.block_on(async {
            let client = async_nats::connect(server.url()).await.expect("connect");
            let context = jetstream::new(client);
            for (name, subject) in [("WORK", "work.>"), ("DEAD", "dead.>")] {
                context
                    .create_stream(stream::Config {
                        name: name.into(),
                        subjects: vec![subject.into()],
                        ..Default::default()
                    })
                    .await
                    .expect("stream");
            }
            let mut publisher = Publisher::builder(context.clone())
                .window(WINDOW)
                .build()
                .expect("publisher");
            publisher
                .publish_all(
                    (0..messages())
                        .map(|i| OutgoingMessage::new(format!("work.{}", i % 8), PAYLOAD)),
                )
                .await
                .expect("filled");
            context
        });
        Fixture {
            _server: server,
            context,
            next: std::cell::Cell::new(0),
        }
    }

    /// A fresh durable consumer over the whole stream.
    fn consumer(&self, rt: &Runtime) -> String {
        self.next.set(self.next.get() + 1);
        let name = format!("c{}", self.next.get());
        rt.block_on(async {
            self.context
                .get_stream("WORK")
                .await
                .expect("stream")
                .create_consumer(pull::Config {
                    durable_name: Some(name.clone()),
                    ack_wait: Duration::from_secs(60),
                    max_deliver: -1,
                    max_ack_pending: 1000,
                    ..Default::default()
                })
                .await
                .expect("consumer");
        });
        name
    }

    fn receiver(&self, rt: &Runtime, confirm: bool) -> Receiver {
        let consumer = self.consumer(rt);
        rt.block_on(
            Receiver::builder(self.context.clone())
                .stream("WORK")
                .consumer(consumer)
                .dead_letter_subject("dead.work")
                .confirm_acks(confirm)
                .build(),
        )
        .expect("receiver")
    }

    fn pull_consumer(&self, rt: &Runtime) -> jetstream::consumer::PullConsumer {
        let consumer = self.consumer(rt);
        rt.block_on(async {
            self.context
                .get_stream("WORK")
                .await
                .expect("stream")
                .get_consumer(&consumer)
                .await
                .expect("consumer")
        })
    }
}

/// Ours: `begin` + `commit` per message; returns the seconds taken.
fn ours_per_message(rt: &Runtime, receiver: Receiver) -> f64 {
    let n = messages();
    rt.block_on(async move {
        let start = Instant::now();
        for _ in 0..n {
            let delivery = receiver.begin().await.expect("receive").expect("open");
            delivery.commit().await.expect("commit");
        }
        secs(start.elapsed())
    })
}

/// Ours: `begin_batch(256)` + `commit_all`.
fn ours_batch(rt: &Runtime, receiver: Receiver) -> f64 {
    let n = messages();
    rt.block_on(async move {
        let start = Instant::now();
        let mut done = 0;
        while done < n {
            let batch = receiver
                .begin_batch(BATCH.min(n - done))
                .await
                .expect("receive")
                .expect("open");
            done += batch.len();
            batch.commit_all().await.expect("commit");
        }
        secs(start.elapsed())
    })
}

/// The hand-written loop: async-nats' message stream, one ack per message,
/// confirmed (`double_ack`) or not (`ack`).
fn hand_loop(rt: &Runtime, consumer: jetstream::consumer::PullConsumer, confirm: bool) -> f64 {
    let n = messages();
    rt.block_on(async move {
        let start = Instant::now();
        let mut messages = consumer.messages().await.expect("messages");
        for _ in 0..n {
            let message = messages.next().await.expect("open").expect("message");
            if confirm {
                message.double_ack().await.expect("double ack");
            } else {
                message.ack().await.expect("ack");
            }
        }
        secs(start.elapsed())
    })
}

fn consume(_c: &mut Criterion) {
    let rt = runtime();
    let fixture = Fixture::new(&rt);

    let confirmed = paired(
        ROUNDS,
        || {
            let r = fixture.receiver(&rt, true);
            ours_per_message(&rt, r)
        },
        || {
            let c = fixture.pull_consumer(&rt);
            hand_loop(&rt, c, true)
        },
    );
    record_paired(
        "txn_jetstream/consume_confirmed_100k",
        "ours",
        "async-nats double_ack",
        &confirmed,
    );

    let batch = paired(
        ROUNDS,
        || {
            let r = fixture.receiver(&rt, true);
            ours_batch(&rt, r)
        },
        || {
            let c = fixture.pull_consumer(&rt);
            hand_loop(&rt, c, true)
        },
    );
    record_paired(
        "txn_jetstream/consume_confirmed_100k",
        "ours:batch",
        "async-nats double_ack",
        &batch,
    );

    let plain = paired(
        ROUNDS,
        || {
            let r = fixture.receiver(&rt, false);
            ours_per_message(&rt, r)
        },
        || {
            let c = fixture.pull_consumer(&rt);
            hand_loop(&rt, c, false)
        },
    );
    record_paired(
        "txn_jetstream/consume_ack_100k",
        "ours:unconfirmed",
        "async-nats ack",
        &plain,
    );
}

/// A fresh stream `PUB` for one publishing run (the last one deleted).
fn fresh_stream(rt: &Runtime, context: &jetstream::Context) {
    rt.block_on(async {
        let _ = context.delete_stream("PUB").await;
        context
            .create_stream(stream::Config {
                name: "PUB".into(),
                subjects: vec!["pub.>".into()],
                ..Default::default()
            })
            .await
            .expect("stream");
    });
}

fn publish_ours(rt: &Runtime, context: &jetstream::Context) -> f64 {
    fresh_stream(rt, context);
    let n = messages();
    rt.block_on(async {
        let mut publisher = Publisher::builder(context.clone())
            .window(WINDOW)
            .build()
            .expect("publisher");
        let start = Instant::now();
        publisher
            .publish_all((0..n).map(|i| OutgoingMessage::new(format!("pub.{}", i % 8), PAYLOAD)))
            .await
            .expect("published");
        secs(start.elapsed())
    })
}

fn publish_one_at_a_time(rt: &Runtime, context: &jetstream::Context) -> f64 {
    fresh_stream(rt, context);
    let n = messages();
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..n {
            context
                .publish(format!("pub.{}", i % 8), PAYLOAD.into())
                .await
                .expect("sent")
                .await
                .expect("confirmed");
        }
        secs(start.elapsed())
    })
}

/// The same window written by hand; with `ids`, each message carries a
/// de-duplication id as ours do (the same work for the server).
fn publish_hand_window(rt: &Runtime, context: &jetstream::Context, ids: bool) -> f64 {
    fresh_stream(rt, context);
    let n = messages();
    rt.block_on(async {
        let start = Instant::now();
        let mut window: FuturesOrdered<
            <jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture,
        > = FuturesOrdered::new();
        for i in 0..n {
            if window.len() >= WINDOW {
                window.next().await.expect("pending").expect("confirmed");
            }
            let subject = format!("pub.{}", i % 8);
            let confirmation = if ids {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("hand-{i}").as_str());
                context
                    .publish_with_headers(subject, headers, PAYLOAD.into())
                    .await
            } else {
                context.publish(subject, PAYLOAD.into()).await
            };
            window.push_back(std::future::IntoFuture::into_future(
                confirmation.expect("sent"),
            ));
        }
        while let Some(confirmed) = window.next().await {
            confirmed.expect("confirmed");
        }
        secs(start.elapsed())
    })
}

fn publish(_c: &mut Criterion) {
    let rt = runtime();
    let fixture = Fixture::new(&rt);
    let context = fixture.context.clone();
    let group = "txn_jetstream/publish_confirmed_100k";

    let one_at_a_time = paired(
        ROUNDS,
        || publish_ours(&rt, &context),
        || publish_one_at_a_time(&rt, &context),
    );
    record_paired(group, "ours", "async-nats one at a time", &one_at_a_time);

    let window = paired(
        ROUNDS,
        || publish_ours(&rt, &context),
        || publish_hand_window(&rt, &context, true),
    );
    record_paired(group, "ours", "FuturesOrdered window", &window);

    let window_no_ids = paired(
        ROUNDS,
        || publish_ours(&rt, &context),
        || publish_hand_window(&rt, &context, false),
    );
    record_paired(
        group,
        "ours",
        "FuturesOrdered window (no ids)",
        &window_no_ids,
    );
}

criterion_group!(benches, consume, publish);
criterion_main!(benches);
