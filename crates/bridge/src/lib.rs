//! Sync code inside async code: hand work to async code, or call it and wait
//! — in every tokio context, never with a panic, never with a deadlock.
//!
//! A function that is not `async` and that you do not control — a callback
//! of a sync library, a `log::Log` impl, a `Drop`, a sync trait method — may
//! run inside an async task. There `Handle::block_on`, `blocking_send` and
//! `blocking_recv` panic ("Cannot start a runtime from within a runtime"),
//! `block_in_place` panics on a current-thread runtime, and the blocking
//! calls of other channels silently deadlock a current-thread runtime. This
//! crate gives such code three tools, each of which decides how to wait from
//! [`RuntimeContext`](async_patterns_core::RuntimeContext):
//!
//! - [`channel`] → ([`Sender`], [`Receiver`]): hand items to an async
//!   consumer. `try_send` never blocks; `send_blocking` and `send_timeout`
//!   wait for room where the thread may wait and say
//!   [`WouldDeadlock`](SendBlockingError::WouldDeadlock) where it may not;
//!   `send().await` serves async producers — `send_blocking` has the one
//!   meaning every crate of the workspace gives it, defined on
//!   [`SendBlockingError`]. A lossy [`Overflow`] policy (drop newest, drop
//!   oldest — counted in [`ChannelMetrics`]) suits producers that must never
//!   wait, such as logging. Fast: a lock-free ring that wakes the consumer
//!   only when it actually sleeps.
//! - [`service`] → ([`SyncClient`], [`ServiceReceiver`]): call async code
//!   from sync code and get its answer; the async side serves calls with an
//!   async closure, with a concurrency limit. [`SyncClient::served`] waits
//!   until the service runs somewhere.
//! - [`block_on`]: run a future to completion from sync code, wherever.
//!
//! # Which tool when
//!
//! | you need | use |
//! |---|---|
//! | pass data on, fire and forget | [`Sender::try_send`] (never waits) or a lossy [`Overflow`] |
//! | pass data on, with back-pressure | [`Sender::send_blocking`] / [`send_timeout`](Sender::send_timeout) |
//! | a result from async code, repeatedly | [`SyncClient::call`] — the service runs where async code belongs |
//! | a one-off async result | [`block_on`] |
//!
//! # Context × tool × behaviour
//!
//! | calling thread | `try_send` | `send_blocking` when full | `call` | `block_on` |
//! |---|---|---|---|---|
//! | outside any runtime | never waits | parks | parks | runs on a lazily started helper runtime |
//! | `spawn_blocking` thread | never waits | parks | parks | polls here, parked between polls |
//! | multi-thread worker (task, sync callback, `Drop`) | never waits | parks in `block_in_place` | waits in `block_in_place` | `block_in_place` + `Handle::block_on` |
//! | current-thread runtime (`block_on` or a task) | never waits | `WouldDeadlock(value)` at once | parks if another runtime serves the service (see [`SyncClient`]; [`served`](SyncClient::served)`.await` waits until one does); otherwise `WouldDeadlock(req)` at once | runs a `Send` future on a helper thread (costly; see [`block_on`]); [`block_on_local`] returns an error |
//!
//! # Guarantees
//!
//! The channel is FIFO and delivers each item **at most once**: every value
//! given to a send is either received exactly once, handed back in the
//! send's error, or counted in [`ChannelMetrics::dropped`] (discarded by
//! a lossy [`Overflow`] policy, or still buffered when the receiver was
//! dropped); [`metrics`](Sender::metrics) reports all of it. `recv` is
//! cancel safe. A call either returns the service's
//! answer or a [`CallError`] — the request handed back if the service never
//! took it — and never hangs when the service panics, is dropped or is
//! cancelled.
//!
//! # When not to use it
//!
//! If the code is async already, use async channels (tokio's `mpsc`) and
//! `.await`. If the sync code is yours and blocks for long (file I/O, CPU
//! work), move it to `spawn_blocking` instead of calling into a runtime from
//! it. For a sync → sync queue, `std::sync::mpsc` or crossbeam fit better.
//! And nothing here makes waiting on a current-thread runtime possible:
//! there the answer is `try_send`, or a multi-thread runtime.
//!
//! # Examples
//!
//! The seed recipe, made complete: a sync callback running inside an async
//! task `try_send`s into the bridge, and an async consumer drains it.
//!
//! ```
//! use async_patterns_bridge::{channel, Sender, TrySendError};
//!
//! /// A sync callback interface of some library.
//! trait OnEvent {
//!     fn on_event(&self, name: &str);
//! }
//!
//! struct Forward(Sender<String>);
//!
//! impl OnEvent for Forward {
//!     fn on_event(&self, name: &str) {
//!         match self.0.try_send(name.to_string()) {
//!             Ok(()) => {}
//!             Err(TrySendError::Full(_)) => eprintln!("consumer behind: event dropped"),
//!             Err(e) => eprintln!("consumer gone: {e}"),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, mut rx) = channel::<String>(1000);
//! let consumer = tokio::spawn(async move {
//!     let mut seen = Vec::new();
//!     while let Some(event) = rx.recv().await {
//!         seen.push(event);
//!     }
//!     seen
//! });
//!
//! let callback = Forward(tx);
//! tokio::spawn(async move {
//!     // Inside an async task, the library calls the sync callback.
//!     callback.on_event("started");
//!     callback.on_event("stopped");
//! })
//! .await
//! .unwrap();
//!
//! assert_eq!(consumer.await.unwrap(), ["started", "stopped"]);
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod block_on;
mod channel;
mod error;
mod loom;
mod ring;
mod service;
mod waiters;

pub use async_patterns_core::{
    ConfigError, SendBlockingError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use block_on::{block_on, block_on_local};
pub use channel::{ChannelBuilder, ChannelMetrics, Overflow, Receiver, Sender, channel};
pub use error::{BlockOnError, CallError};
pub use service::{ServiceBuilder, ServiceReceiver, SyncClient, service};

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
