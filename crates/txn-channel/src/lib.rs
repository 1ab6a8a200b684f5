//! A transactional channel for tokio: take the next item, process it, and
//! remove it from the channel only when processing succeeded. On failure —
//! an explicit rollback, an early return, a panic, the processing future
//! being cancelled, or a lease running out — the same item is delivered
//! again, to this consumer or another.
//!
//! **Guarantee: at-least-once delivery.** An item leaves the channel only
//! through a commit or, when the channel gives up on it, through the
//! dead-letter destination (a channel or a callback) with the reason, its
//! attempts and its delivery times. Until then every end other than a
//! commit gives it back, in the channel's order (strict by default), so an
//! item can be delivered more than once: make processing idempotent, or
//! commit before side effects that must not repeat. Cancelling
//! [`recv`](Receiver::recv), [`begin`](Receiver::begin),
//! [`begin_owned`](Receiver::begin_owned) or
//! [`begin_batch`](Receiver::begin_batch) in a `select!` loses nothing.
//! Dropping a consumer loses nothing either; dropping the last one drops
//! what is left, counted in [`ChannelMetrics::dropped`] — to shut down
//! without losing any, [`close`](Receiver::close) and drain.
//!
//! - [`channel(capacity)`](channel) / [`ChannelBuilder`] create a
//!   [`Sender`] (tokio-like: `send().await`, `try_send`, `send_blocking`,
//!   `reserve`, errors hand the value back) and a [`Receiver`]. `capacity`
//!   counts every uncommitted item, so memory is bounded exactly and
//!   producers wait while consumers retry.
//! - The guard API: [`begin`](Receiver::begin) gives a [`Delivery`] that
//!   derefs to the item, tells its [`attempt`](Delivery::attempt), and ends
//!   in [`commit`](Delivery::commit), [`rollback`](Delivery::rollback),
//!   [`retry_after`](Delivery::retry_after) or [`fail`](Delivery::fail);
//!   dropping it rolls back. [`begin_batch`](Receiver::begin_batch) does
//!   the same for up to `max` items.
//! - Owned deliveries: [`begin_owned`](Receiver::begin_owned) gives an
//!   [`OwnedDelivery`] (`'static + Send`) to hand to a spawned task, with
//!   the same ends (which fail with [`DeliveryError::LeaseExpired`] if a
//!   [lease](ChannelBuilder::lease) ran out first) and
//!   [`extend`](OwnedDelivery::extend).
//! - Sharing the work: the [`Receiver`] is `Clone`, each clone a consumer;
//!   the builder chooses the order — [strict](ChannelBuilder::strict_order)
//!   (one at a time, in order), [per key](ChannelBuilder::order_by_key) or
//!   [none](ChannelBuilder::unordered) — the most items
//!   [in flight](ChannelBuilder::max_in_flight), a
//!   [lease](ChannelBuilder::lease) for owned deliveries, and a
//!   [retry policy](ChannelBuilder::retry_policy) that spaces redeliveries.
//! - Both kinds of delivery implement core's [`Transaction`], so one
//!   handler runs on this channel and on txn-jetstream's.
//! - The seed recipe's peek-and-commit shape, kept:
//!   [`recv`](Receiver::recv) returns `Option<&T>`, the same item until
//!   [`commit`](Receiver::commit) removes it.
//! - [`Receiver::from_stream`] gives the same semantics over any
//!   [`Stream`](futures_core::Stream).
//!
//! # When to use it, and when not
//!
//! Use it when a consumer must not lose an item it failed to process: a job
//! queue whose handlers can fail, panic or hang, a pipeline stage that
//! forwards to a flaky service, several workers sharing a queue with
//! per-customer order, a consumer inside a `select!` that may be cancelled
//! mid item. It is the in-process counterpart of a broker's ack/nack with a
//! delivery limit, a visibility timeout and backoff (RabbitMQ prefetch, SQS,
//! JetStream).
//!
//! Do not use it when losing an item on failure is acceptable (a plain
//! `tokio::sync::mpsc` is simpler), or when items must survive the process
//! or be shared between processes (use a broker:
//! `async-patterns-txn-jetstream` gives the same deliveries over NATS
//! JetStream). In strict order a failed item holds back the ones behind it
//! until it is committed or dead-lettered; if later items should pass it,
//! choose per-key or unordered delivery.
//!
//! # Examples
//!
//! ```
//! use async_patterns_txn_channel::{ChannelBuilder, DeadLetter, channel};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (dead_tx, mut dead_rx) = channel::<DeadLetter<u32>>(16);
//! let (tx, mut rx) = ChannelBuilder::new()
//!     .capacity(64)
//!     .max_attempts(3)
//!     .dead_letter(dead_tx)
//!     .build()?;
//!
//! tokio::spawn(async move {
//!     for job in [1, 2, 3, 4] {
//!         tx.send(job).await.unwrap();
//!     }
//! }); // the channel ends when this sender is dropped
//!
//! let mut done = Vec::new();
//! while let Some(delivery) = rx.begin().await {
//!     let job = *delivery;
//!     match job {
//!         3 => continue, // always fails: the dropped delivery rolls back
//!         2 if delivery.attempt() == 1 => delivery.retry_after(Duration::from_secs(1)),
//!         _ => done.push(delivery.commit()),
//!     }
//! }
//! assert_eq!(done, [1, 2, 4]);
//!
//! let dead = dead_rx.begin().await.unwrap().commit();
//! assert_eq!((dead.attempts(), dead.into_inner()), (3, 3));
//! # Ok(())
//! # }
//! ```
//!
//! Sharing the work between four workers, one key at a time:
//!
//! ```
//! use async_patterns_txn_channel::ChannelBuilder;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = ChannelBuilder::new()
//!     .order_by_key(|(account, _amount): &(u32, i64)| *account)
//!     .build()?;
//! let mut workers = Vec::new();
//! for _ in 0..4 {
//!     let mut rx = rx.clone();
//!     workers.push(tokio::spawn(async move {
//!         let mut seen = Vec::new();
//!         while let Some(delivery) = rx.begin().await {
//!             seen.push(*delivery);
//!             delivery.commit();
//!         }
//!         seen
//!     }));
//! }
//! drop(rx);
//! for i in 0..100 {
//!     tx.send((i % 8, i64::from(i))).await?;
//! }
//! drop(tx);
//! let mut all = Vec::new();
//! for worker in workers {
//!     all.extend(worker.await?);
//! }
//! assert_eq!(all.len(), 100);
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod dead_letter;
mod delivery;
mod error;
mod inbox;
#[cfg(test)]
mod inbox_stress;
mod metrics;
mod own_buffer;
mod owned;
mod receiver;
mod sender;
mod shared;
mod table;

pub use async_patterns_core::{
    ConfigError, DeadLetterReason, RetryPolicy, SendBlockingError, SendError, Transaction,
    TryRecvError, TrySendError,
};
pub use builder::{ChannelBuilder, DEFAULT_CAPACITY, channel};
pub use dead_letter::DeadLetter;
pub use delivery::{BatchDelivery, Committed, Delivery};
pub use error::DeliveryError;
pub use metrics::ChannelMetrics;
pub use owned::OwnedDelivery;
pub use receiver::Receiver;
pub use sender::{Permit, Sender};

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
