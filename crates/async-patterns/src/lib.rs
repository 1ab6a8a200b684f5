//! One dependency for all of [async-patterns]: tested building blocks for the
//! hard async patterns of tokio programs.
//!
//! The shared pieces of every pattern — the runtime-context probe, retry and
//! backoff, configuration errors — are always here, under [`core`]. Each
//! pattern crate is behind a cargo feature of its own name and re-exported as
//! a module of that name; `full` enables them all:
//!
//! ```toml
//! [dependencies]
//! async-patterns = { version = "0.1", features = ["full"] }
//! ```
//!
//! | feature | module | crate | pattern |
//! |---|---|---|---|
//! | (always) | [`core`] | `async-patterns-core` | runtime-context probe, retry/backoff, streams with a return value, config errors |
//! | `bridge` | `bridge` | `async-patterns-bridge` | sync code inside async code: hand work over, call async code and wait, `block_on` — in any tokio context, never a panic or a deadlock |
//! | `batching` | `batching` | `async-patterns-batching` | channels and streams into batches by count, weight and time; buffer reuse, flush on demand, nothing lost |
//! | `txn-channel` | `txn_channel` | `async-patterns-txn-channel` | transactional receive: peek, process, commit — or the item comes back; attempts counted, poison items dead-lettered |
//! | `txn-jetstream` | `txn_jetstream` | `async-patterns-txn-jetstream` | the same deliveries over NATS JetStream: durable, shared by processes, surviving crashes; dead letters with reasons, leases kept alive, a windowed publisher |
//! | `reusable-receiver` | `reusable_receiver` | `async-patterns-reusable-receiver` | retry a `'static` stream consumer (a gRPC client-streaming call) with the same receiver, replaying what the failed attempt did not confirm |
//! | `per-core-runtime` | `per_core_runtime` | `async-patterns-per-core-runtime` | one pinned single-thread runtime per core: spawn `!Send` tasks on a core from anywhere, join them, shut down gracefully |
//! | `blocking-detector` | `blocking_detector` | `async-patterns-blocking-detector` | find the poll that blocks a runtime worker, name it while it is stuck, and fail tests on it |
//!
//! # When to use it, and when not
//!
//! Use the facade when you use several patterns and want one version to
//! track. When you need one pattern, depend on its crate directly: the
//! facade adds nothing to it.
//!
//! # Examples
//!
//! ```
//! use async_patterns::core::RuntimeContext;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Sync code can ask whether it may block before it does.
//! assert!(!RuntimeContext::current().can_block());
//! # }
//! ```
//!
//! [async-patterns]: https://github.com/async-patterns/async-patterns
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use async_patterns_core as core;

#[cfg(feature = "bridge")]
#[cfg_attr(docsrs, doc(cfg(feature = "bridge")))]
pub use async_patterns_bridge as bridge;

#[cfg(feature = "batching")]
#[cfg_attr(docsrs, doc(cfg(feature = "batching")))]
pub use async_patterns_batching as batching;

#[cfg(feature = "txn-channel")]
#[cfg_attr(docsrs, doc(cfg(feature = "txn-channel")))]
pub use async_patterns_txn_channel as txn_channel;

#[cfg(feature = "txn-jetstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "txn-jetstream")))]
pub use async_patterns_txn_jetstream as txn_jetstream;

#[cfg(feature = "reusable-receiver")]
#[cfg_attr(docsrs, doc(cfg(feature = "reusable-receiver")))]
pub use async_patterns_reusable_receiver as reusable_receiver;

#[cfg(feature = "per-core-runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "per-core-runtime")))]
pub use async_patterns_per_core_runtime as per_core_runtime;

#[cfg(feature = "blocking-detector")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking-detector")))]
pub use async_patterns_blocking_detector as blocking_detector;
