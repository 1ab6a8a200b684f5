//! Retry a consumer that takes its stream by value and `'static` — a tonic
//! client-streaming call — with the same mpsc receiver, replaying what the
//! failed attempt did not confirm.
//!
//! **Delivery guarantee.** In replay mode
//! ([`ReusableReceiver::with_replay`]) delivery is *at least once*: every
//! item yielded to an attempt is kept until a [`Lease`] acknowledges it, and
//! the next attempt yields the unacknowledged items first, in order. An item
//! reaches the consumer twice only if an attempt yielded it and did not
//! confirm it. In plain mode ([`ReusableReceiver::new`]) delivery is *at
//! most once*: items a failed attempt pulled are gone, and
//! [`ReceiverMetrics::lost`] counts the ones it did not confirm. In both
//! modes, items not yet yielded stay in the channel for the next attempt,
//! and a stream revoked or dropped loses nothing it has not yielded.
//!
//! **Nothing held is lost.** Every item taken out of the channel — into the
//! replay buffer, set aside because it did not fit the weight bound, or
//! taken in a batch and not yet yielded — is yielded or handed back: a
//! stream ends only when nothing is held anywhere (or when its lease is
//! revoked, or [`WhenFull::EndStream`] ends an attempt with the buffer
//! full). [`ReusableReceiver::take_unacked`],
//! [`into_unacked`](ReusableReceiver::into_unacked) and
//! [`into_inner`](ReusableReceiver::into_inner) hand items back; dropping a
//! `ReusableReceiver` that still holds items is never silent: once nothing
//! can deliver them any more, they are dropped and counted in
//! [`ReceiverMetrics::dropped`] (the exact rules are under
//! [Dropping](ReusableReceiver#dropping)).
//!
//! # The problem
//!
//! `client.upload(stream)` consumes its request stream. When the call fails
//! the stream, and the receiver inside it, are gone. The usual recipe sends
//! the receiver back through a oneshot from the stream's `Drop` and spins on
//! `try_recv` until it arrives — burning a core while hyper holds on to the
//! request body, panicking when the body is dropped late or never, and
//! silently losing every item tonic's encoder had already pulled into its
//! buffer.
//!
//! Here the receiver never moves: it lives in state shared by the
//! [`ReusableReceiver`] and its streams. [`ReusableReceiver::stream`] starts
//! a new *lease* (a generation) and revokes the previous one, so the new
//! stream takes over at once, and a stale stream — however late it is
//! dropped — ends without touching an item. [`retry`] drives the attempts
//! with the backoff of an [`async_patterns_core::RetryPolicy`], a classifier
//! for retryable errors ([`tonic::is_retryable`] with the `tonic` feature),
//! acknowledgement on success, a per-attempt callback, and, when it gives
//! up, the last error with every unacknowledged item ([`RetryError`]).
//!
//! # When to use it, and when not
//!
//! Use it when a fallible consumer needs an owned stream fed from a channel
//! and you want to retry it without rebuilding the producer side: gRPC
//! client streaming, an upload over a reconnecting transport, a sink that
//! takes a stream. Use replay mode when the consumer can tolerate
//! duplicates of unconfirmed items (idempotent ids) and must not lose any.
//!
//! When the consumer borrows its input (`&mut Receiver` or a `&mut`
//! stream), retry it directly, no wrapper needed. When the request is a
//! single message, make it `Clone` and use a retry middleware (tower's
//! `retry`). When you need exactly-once, deduplicate on the server by id;
//! no client can provide it alone.
//!
//! # Examples
//!
//! The recipe's shape, kept: a consumer that fails after 10 items, retried
//! in a loop with the same receiver — no spinning, no panic, nothing pulled
//! twice:
//!
//! ```
//! use async_patterns_reusable_receiver::{ReusableReceiver, ReusableStream};
//! use futures::StreamExt;
//!
//! async fn fallible_consumer(
//!     mut stream: ReusableStream<String>,
//!     processed: &mut Vec<String>,
//! ) -> Result<(), &'static str> {
//!     let mut countdown_before_failure = 10;
//!     while let Some(value) = stream.next().await {
//!         processed.push(value);
//!         countdown_before_failure -= 1;
//!         if countdown_before_failure == 0 {
//!             return Err("some error");
//!         }
//!     }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (sender, receiver) = tokio::sync::mpsc::channel(1000);
//! let producer = tokio::spawn(async move {
//!     for counter in 0..25 {
//!         sender.send(format!("ack_id_{counter}")).await.unwrap();
//!     }
//! });
//!
//! let mut reusable = ReusableReceiver::new(receiver);
//! let mut processed = Vec::new();
//! let mut failures = 0;
//! while let Err(_error) = fallible_consumer(reusable.stream(), &mut processed).await {
//!     failures += 1; // log it, back off...
//! }
//! producer.await.unwrap();
//! assert_eq!(failures, 2);
//! assert_eq!(processed.len(), 25);
//! assert_eq!(processed[24], "ack_id_24");
//! # }
//! ```
//!
//! A tonic client-streaming call in replay mode, against a server that
//! fails the first two calls with `UNAVAILABLE` part-way (the server's
//! setup is hidden; `UploadClient` and `Item` are generated from its
//! `.proto` by `tonic-prost-build`):
//!
//! ```
//! use async_patterns_core::RetryPolicy;
//! use async_patterns_reusable_receiver::{ReplayConfig, Retry, ReusableReceiver};
//! # use async_patterns_testkit::{Faults, UploadServer};
//! use async_patterns_testkit::proto::{Item, upload_client::UploadClient};
//! use std::time::Duration;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = UploadServer::start(Faults::none().fail_after(40, 2)).await?;
//! # let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr()))?
//! #     .connect_lazy();
//! let client = UploadClient::new(channel);
//! let (tx, rx) = tokio::sync::mpsc::channel(256);
//! tokio::spawn(async move {
//!     for id in 0..100 {
//!         tx.send(Item { id, payload: vec![0; 64] }).await.unwrap();
//!     }
//! });
//!
//! let config = ReplayConfig::builder().max_items(10_000).build()?;
//! let mut reusable = ReusableReceiver::with_replay(rx, config);
//! let policy = RetryPolicy::builder().initial_delay(Duration::from_millis(10)).build()?;
//! let summary = Retry::new(policy)
//!     // With the `tonic` feature: `.classify(async_patterns_reusable_receiver::tonic::is_retryable)`
//!     .classify(|status: &tonic::Status| status.code() == tonic::Code::Unavailable)
//!     .on_attempt(|a| println!("attempt {}: {:?}, {:?}", a.number(), a.metrics(), a.next()))
//!     .run(&mut reusable, |stream| {
//!         let mut client = client.clone();
//!         async move { client.upload(stream).await }
//!     })
//!     .await?
//!     .into_inner();
//! assert_eq!(summary.received, 100); // the last attempt replayed all of them
//! # let mut seen = server.received_ids();
//! # seen.sort();
//! # seen.dedup();
//! # assert_eq!(seen, (0..100).collect::<Vec<_>>());
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

mod barrier;
mod error;
mod loom;
mod metrics;
mod receiver;
mod replay;
mod retry;
mod state;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use async_patterns_core::{ConfigError, RetryPolicy};
pub use error::AckError;
pub use metrics::{LeaseMetrics, ReceiverMetrics};
pub use receiver::{Lease, ReusableReceiver, ReusableStream};
pub use replay::{ReplayConfig, ReplayConfigBuilder, WhenFull};
pub use retry::{Attempt, GiveUp, NextStep, Retry, RetryError, retry};

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
