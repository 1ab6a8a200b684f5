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
//! | feature / module | crate | pattern |
//! |---|---|---|
//! | (always) [`core`] | `async-patterns-core` | runtime-context probe, retry/backoff, config errors |
//! | `blocking-detector` / `blocking_detector` | `async-patterns-blocking-detector` | find the poll that blocks a runtime worker, name it, fail tests on it |
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

#[cfg(feature = "blocking-detector")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking-detector")))]
pub use async_patterns_blocking_detector as blocking_detector;
