//! Turn a tokio channel or any stream into batches by count, weight and
//! time — fast, bounded, and losing nothing at close or cancellation.
//!
//! **Delivery guarantee.** Every item that enters a batcher comes out
//! exactly once, in order: in a [`Batch`], or handed back by
//! `into_remainder`. No item is duplicated. The only way to lose one is to
//! drop the batcher itself while it holds items, and those are counted in
//! [`BatchMetrics::dropped`] and reported by its `outcome()`. Dropping a
//! `next()`/`recv()` future — a `select!` branch that lost — loses nothing:
//! buffered items live in the batcher, never in the future.
//!
//! # Which batcher when
//!
//! | you have | use | how items move |
//! |---|---|---|
//! | both ends of the channel | [`channel`]`(capacity)` or [`ChannelBuilder`] → ([`Sender`], [`Receiver`]) | each sender stages items on a lane of its own; the receiver takes them in bulk and hands out whole batches — the fastest, with one producer or many |
//! | a `tokio::sync::mpsc::Receiver` | [`batched`]`(rx, config)` → [`BatchedMpsc`] | drained with `recv_many`, straight into the batch's buffer |
//! | any other [`Stream`](futures_core::Stream) | [`BatchExt::batched`] → [`Batched`] | one `poll_next` per item |
//!
//! All three close batches by the same limits (`max_items`, `max_delay`, an
//! optional `max_weight` with a weigher — a [`BatchConfig`] for the
//! adapters, the same options on the [`ChannelBuilder`]), hand out
//! [`Batch`]es that carry their [`FlushReason`], weight and age, reuse the
//! buffers of consumed batches, accept a [`Flusher`] to close the current
//! batch on demand, keep [`BatchMetrics`], and report the final metrics
//! through an [`Outcome`](async_patterns_core::outcome::Outcome) when they
//! end.
//!
//! # When not to use it
//!
//! - Items must be handled one by one, as soon as each arrives: batching
//!   only adds latency.
//! - Items must survive a crash or be redelivered after a failed batch: this
//!   is an in-memory, at-most-once batcher; put a durable queue in front.
//! - Batches must be grouped by key (per tenant, per partition): run one
//!   batcher per key, or use a windowing library.
//!
//! # Examples
//!
//! The usual recipe, `ReceiverStream::new(rx).chunks_timeout(n, d)`,
//! becomes:
//!
//! ```
//! use async_patterns_batching::{BatchConfig, FlushReason};
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), async_patterns_core::ConfigError> {
//! let (tx, rx) = tokio::sync::mpsc::channel(1024);
//! let config = BatchConfig::builder()
//!     .max_items(100)
//!     .max_delay(Duration::from_millis(10))
//!     .max_weight(4096, |line: &String| line.len())
//!     .build()?;
//! let mut batches = async_patterns_batching::batched(rx, config);
//! let outcome = batches.outcome();
//!
//! tokio::spawn(async move {
//!     for i in 0..250 {
//!         tx.send(format!("line {i}")).await.unwrap();
//!     }
//! });
//! let mut lines = 0;
//! while let Some(batch) = batches.next().await {
//!     assert!(batch.len() <= 100 && batch.weight() <= 4096);
//!     lines += batch.len(); // write the batch somewhere
//! }
//! assert_eq!(lines, 250);
//!
//! let metrics = outcome.await.unwrap().value;
//! assert_eq!((metrics.sent, metrics.delivered), (250, 250));
//! assert_eq!(metrics.batches.get(FlushReason::Closed), 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod assemble;
mod batch;
mod builder;
mod channel;
mod config;
mod deadline;
mod flush;
mod metrics;
mod mpsc;
mod stream;

pub use async_patterns_core::{ConfigError, SendError, TryRecvError, TrySendError};
pub use batch::{Batch, FlushReason};
pub use builder::ChannelBuilder;
pub use channel::{Receiver, Sender, channel};
pub use config::{BatchConfig, BatchConfigBuilder};
pub use flush::Flusher;
pub use metrics::{BatchMetrics, ReasonCounts, Spread};
pub use mpsc::{BatchedMpsc, batched};
pub use stream::{BatchExt, Batched};
