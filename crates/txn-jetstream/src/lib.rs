//! Transactional deliveries over NATS JetStream: the words of
//! [async-patterns-txn-channel] — `begin`, `commit`, `rollback`,
//! `retry_after`, `fail`, `attempt`, leases, dead letters with a reason —
//! over a queue that survives the process and is shared by processes.
//! Moving a consumer from the in-process channel to JetStream changes its
//! constructor, not its handler: both implement core's [`Transaction`].
//!
//! - [`Receiver`] takes messages from a durable pull consumer (created or
//!   bound) as owned [`Delivery`]s (`'static + Send`: hand them to spawned
//!   tasks), one at a time or in batches ([`Receiver::begin_batch`]).
//! - [`Delivery::commit`] acknowledges and waits for the server to confirm
//!   (a double ack); [`Delivery::rollback`] naks with the delay the retry
//!   policy gives the attempt, so a failing dependency does not burn every
//!   attempt in milliseconds; [`Delivery::retry_after`] naks with a chosen
//!   delay; [`Delivery::fail`] dead-letters. Dropping a delivery rolls it
//!   back.
//! - Dead letters: after `max_attempts` (or on `fail`, or when a message's
//!   last lease ran out, or it does not decode) the message is published to
//!   a dead-letter subject with headers naming its stream, sequence,
//!   subject, attempts, reason and times ([`DeadLetter`] reads them back) —
//!   confirmed, under a de-duplication id, *before* the original is
//!   terminated, so that a crash in between duplicates and never loses.
//! - Leases: the consumer's ack wait; the receiver keeps the lease of a
//!   delivery in flight alive with in-progress acks, so long work is not
//!   redelivered behind the handler's back.
//! - [`Publisher`]: a bounded window of unconfirmed publishes (backpressure),
//!   confirmations taken in order, every message under a de-duplication id,
//!   failed publishes retried under that id; it takes whole batches.
//! - Graceful shutdown ([`Receiver::shutdown_async`]), metrics
//!   ([`ReceiverMetrics`], [`PublisherMetrics`]), and an error for every
//!   failure — never a hang.
//!
//! # The guarantee
//!
//! At least once, and nothing lost: every message published (and confirmed)
//! to the stream is, in the end, committed by a handler or published to the
//! dead-letter subject — through handler errors and panics, dropped
//! deliveries, consumer processes killed at any point, and server restarts.
//! A message may be delivered more than once (after a crash, a lost ack, a
//! lease that ran out): [`Delivery::attempt`] says so, and
//! [`Delivery::stream_sequence`] is a key for idempotence. A commit that
//! returned `Ok` is never delivered again.
//!
//! # When to use it, and when not
//!
//! Use it when work must survive the process that took it, or be shared by
//! several processes: a durable queue with retries, backoff and dead
//! letters, on a server you already run. Within one process, txn-channel
//! does the same without a server and far faster. For streaming replays,
//! ordered consumers or key-value use, use `async-nats` directly.
//!
//! # Examples
//!
//! ```
//! use async_patterns_txn_jetstream::{OutgoingMessage, Publisher, Receiver};
//! use std::time::Duration;
//! # use async_patterns_testkit::nats::NatsServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = NatsServer::start()?;
//! let client = async_nats::connect(server.url()).await?;
//! let context = async_nats::jetstream::new(client);
//! context.create_stream(async_nats::jetstream::stream::Config {
//!     name: "ORDERS".into(),
//!     subjects: vec!["orders.>".into()],
//!     ..Default::default()
//! }).await?;
//! context.create_stream(async_nats::jetstream::stream::Config {
//!     name: "DEAD_LETTERS".into(),
//!     subjects: vec!["dead_letter.>".into()],
//!     ..Default::default()
//! }).await?;
//!
//! let mut publisher = Publisher::builder(context.clone()).build()?;
//! publisher.publish_all(["7", "x", "9"].map(|p| OutgoingMessage::new("orders.new", p))).await?;
//!
//! let receiver = Receiver::builder(context)
//!     .stream("ORDERS")
//!     .consumer("billing")
//!     .decode(|message| String::from_utf8(message.payload.to_vec()))
//!     .build()
//!     .await?;
//! for _ in 0..3 {
//!     let delivery = receiver.begin().await?.expect("open");
//!     match delivery.parse::<u64>() {
//!         Ok(_) => delivery.commit().await?,
//!         Err(_) => delivery.fail("not a number").await?,
//!     }
//! }
//! let metrics = receiver.metrics();
//! assert_eq!((metrics.committed, metrics.dead_lettered), (2, 1));
//! # Ok(())
//! # }
//! ```
//!
//! [async-patterns-txn-channel]: https://docs.rs/async-patterns-txn-channel
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ack;
mod dead_letter;
mod delivery;
mod error;
mod metrics;
mod publisher;
mod puller;
mod receiver;
mod shared;
mod time;

pub use async_patterns_core::{ConfigError, DeadLetterReason, RetryPolicy, Transaction};
pub use dead_letter::{DeadLetter, NotADeadLetter, headers};
pub use delivery::{BatchDelivery, Delivery};
pub use error::{
    BatchError, BuildError, DeliveryError, PublishError, PublishErrorKind, ReceiveError,
};
pub use metrics::{PublisherMetrics, ReceiverMetrics};
pub use publisher::{OutgoingMessage, Publisher, PublisherBuilder};
pub use receiver::{Ordering, Receiver, ReceiverBuilder, ShutdownReport};

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The cookbook page's examples (`docs/txn-jetstream.md`), compiled and run
/// as doc tests against a real server.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/txn-jetstream.md")]
struct CookbookDoctests;
