//! Shared set-up of the tests: a real nats-server, a work stream and a
//! dead-letter stream, and readers of what the server holds.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_patterns_testkit::nats::{INSTALL_HINT, NatsServer};
use async_patterns_txn_jetstream::{DeadLetter, ReceiverBuilder};
use futures::StreamExt;

pub const STREAM: &str = "ORDERS";
pub const DEAD: &str = "DEAD";

pub fn server() -> NatsServer {
    NatsServer::start().expect(INSTALL_HINT)
}

pub async fn connect(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .expect("connect");
    jetstream::new(client)
}

/// Creates `ORDERS` (`orders.>`) and `DEAD` (`dead.>`), file-backed.
pub async fn streams(context: &jetstream::Context) {
    for (name, subject) in [(STREAM, "orders.>"), (DEAD, "dead.>")] {
        context
            .create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                ..Default::default()
            })
            .await
            .expect("create stream");
    }
}

/// Publishes `n` messages `0..n` on `orders.<i % 3>`, confirmed.
pub async fn publish(context: &jetstream::Context, n: usize) {
    for i in 0..n {
        context
            .publish(format!("orders.{}", i % 3), i.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
}

/// A receiver builder on `ORDERS` / `consumer` with dead letters to
/// `dead.orders`, short delays and a 2 s lease.
pub fn builder(context: &jetstream::Context, consumer: &str) -> ReceiverBuilder {
    async_patterns_txn_jetstream::Receiver::builder(context.clone())
        .stream(STREAM)
        .consumer(consumer)
        .dead_letter_subject("dead.orders")
        .lease(Duration::from_secs(2))
        .retry_policy(
            async_patterns_txn_jetstream::RetryPolicy::builder()
                .initial_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(50))
                .jitter(async_patterns_core::Jitter::None)
                .build()
                .expect("policy"),
        )
}

/// Creates the durable consumer `name` on `ORDERS` as a receiver would
/// (explicit acks, unlimited deliveries), without pulling from it.
pub async fn create_consumer(context: &jetstream::Context, name: &str, lease: Duration) {
    context
        .get_stream(STREAM)
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some(name.into()),
            ack_wait: lease,
            max_deliver: -1,
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await
        .expect("consumer");
}

/// Every dead letter stored in `DEAD`, in order.
pub async fn dead_letters(context: &jetstream::Context) -> Vec<DeadLetter> {
    dead_letters_in(context, DEAD).await
}

/// Every dead letter stored in the stream `name`, in order.
pub async fn dead_letters_in(context: &jetstream::Context, name: &str) -> Vec<DeadLetter> {
    let stream = context.get_stream(name).await.expect("dead stream");
    let mut out = Vec::new();
    let last = stream.get_info().await.expect("info").state.last_sequence;
    for sequence in 1..=last {
        if let Ok(raw) = stream.get_raw_message(sequence).await {
            out.push(DeadLetter::from_stream_message(&raw).expect("a dead letter"));
        }
    }
    out
}

/// The consumer's view: (messages not yet delivered, delivered and not
/// acknowledged).
pub async fn consumer_state(context: &jetstream::Context, consumer: &str) -> (u64, usize) {
    let stream = context.get_stream(STREAM).await.expect("stream");
    let info = stream.consumer_info(consumer).await.expect("consumer info");
    (info.num_pending, info.num_ack_pending)
}

/// Waits until the consumer has nothing pending or unacknowledged (the
/// server applies acks asynchronously), up to `limit`.
pub async fn settled(
    context: &jetstream::Context,
    consumer: &str,
    limit: Duration,
) -> (u64, usize) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = consumer_state(context, consumer).await;
        if state == (0, 0) || tokio::time::Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every message of the stream with a plain ephemeral consumer (for
/// checks that do not go through the crate).
pub async fn stream_messages(
    context: &jetstream::Context,
    name: &str,
) -> Vec<async_nats::jetstream::Message> {
    let stream = context.get_stream(name).await.expect("stream");
    let count = stream.get_info().await.expect("info").state.messages as usize;
    if count == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("ephemeral consumer");
    let mut out = Vec::new();
    while out.len() < count {
        let mut batch = consumer
            .fetch()
            .max_messages((count - out.len()).min(500))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        let before = out.len();
        while let Some(message) = batch.next().await {
            out.push(message.expect("message"));
        }
        assert!(
            out.len() > before,
            "the stream holds {count} messages, got {}",
            out.len()
        );
    }
    out
}
