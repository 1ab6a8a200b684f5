//! A transactional channel for tokio: look at the next item, process it, and
//! take it out of the channel only when processing succeeded. On failure — an
//! explicit rollback, an early return, a panic, or the processing future
//! being cancelled — the same item is delivered again.
//!
//! **Guarantee: at-least-once delivery, in order.** An item leaves the
//! channel only through a commit or, after
//! [`max_attempts`](TransactionalChannelBuilder::max_attempts) failed
//! deliveries, through the dead-letter destination (a channel or a
//! callback), with its attempt count. Until then every delivery returns the
//! oldest uncommitted item, so items are processed in the order they were
//! sent, and an item can be delivered more than once (make processing
//! idempotent, or commit before side effects that must not repeat).
//! Cancelling [`recv`](TransactionalReceiver::recv),
//! [`begin`](TransactionalReceiver::begin) or
//! [`begin_batch`](TransactionalReceiver::begin_batch) in a `select!` loses
//! nothing. Items still in the channel when the receiver is dropped are
//! dropped with it; to shut down without losing any,
//! [`close`](TransactionalReceiver::close) the receiver and drain it.
//!
//! - [`TransactionalChannel::new`] / [`builder`](TransactionalChannel::builder)
//!   create a [`Sender`] (tokio-like: `send().await`, `try_send`,
//!   `send_blocking`, `reserve`, errors hand the value back) and a
//!   [`TransactionalReceiver`]. `capacity` counts every uncommitted item,
//!   so memory is bounded exactly and producers wait while the consumer
//!   retries.
//! - The guard API: [`begin`](TransactionalReceiver::begin) gives a
//!   [`Delivery`] that derefs to the item, tells its
//!   [`attempt`](Delivery::attempt), and ends in
//!   [`commit`](Delivery::commit), [`rollback`](Delivery::rollback) or
//!   [`retry_after`](Delivery::retry_after); dropping it rolls back.
//!   [`begin_batch`](TransactionalReceiver::begin_batch) does the same for up
//!   to `max` items, with [`commit_all`](BatchDelivery::commit_all) and
//!   [`commit_first`](BatchDelivery::commit_first).
//! - The seed recipe's peek-and-commit shape, kept:
//!   [`recv`](TransactionalReceiver::recv) returns `Option<&T>`, the same
//!   item until [`commit`](TransactionalReceiver::commit) removes it.
//! - [`TransactionalReceiver::from_stream`] gives the same semantics over any
//!   [`Stream`](futures_core::Stream).
//!
//! # When to use it, and when not
//!
//! Use it when a consumer must not lose an item it failed to process: a job
//! queue whose handler can fail or panic, a pipeline stage that forwards to
//! a flaky service, a consumer inside a `select!` that may be cancelled mid
//! item. It is the in-process counterpart of a broker's ack/nack with a
//! delivery limit.
//!
//! Do not use it when losing an item on failure is acceptable (a plain
//! `tokio::sync::mpsc` is simpler), when items must survive the process (use
//! a persistent queue), or when several consumers should share the work: the
//! receiver delivers one item (or batch) at a time, in order, to one
//! consumer. A failed item holds back the ones behind it until it is
//! committed or dead-lettered; if later items should pass it, commit it and
//! send it again at the back.
//!
//! # Examples
//!
//! ```
//! use async_patterns_txn_channel::{DeadLetter, TransactionalChannel};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (dead_tx, mut dead_rx) = TransactionalChannel::new::<DeadLetter<u32>>(16);
//! let (tx, mut rx) = TransactionalChannel::builder()
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
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chan;
mod channel;
mod dead_letter;
mod delivery;
mod loom;
mod receiver;
mod sender;

pub use async_patterns_core::{SendBlockingError, SendError, TrySendError};
pub use channel::{DEFAULT_CAPACITY, TransactionalChannel, TransactionalChannelBuilder};
pub use dead_letter::DeadLetter;
pub use delivery::{BatchDelivery, Committed, Delivery};
pub use receiver::TransactionalReceiver;
pub use sender::{Permit, Sender};

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
