//! Shared pieces of the [async-patterns] crates.
//!
//! Most users never depend on this crate directly: each pattern crate
//! re-exports what its API needs. Depend on it when you want one of these
//! pieces on its own:
//!
//! - [`RuntimeContext`]: is the calling thread outside any runtime, driving a
//!   current-thread runtime, a multi-thread worker, or a blocking-pool
//!   thread — and may it block here, only through `block_in_place`, or not at
//!   all? [`RuntimeContext::run_blocking`] applies the answer instead of
//!   panicking with "Cannot start a runtime from within a runtime" or
//!   deadlocking; [`park_on`] waits for a future on a thread that may block.
//! - [`RetryPolicy`] and [`Backoff`]: exponential backoff with a cap,
//!   [`Jitter`], a maximum number of attempts and a maximum elapsed time,
//!   measured on tokio's clock so that tests under `tokio::time::pause()` are
//!   deterministic.
//! - [`outcome`]: streams that end with a return value — a summary, an
//!   error, a cursor — delivered to an [`Outcome`](outcome::Outcome) handle,
//!   or an explicit [`Dropped`](outcome::Dropped) if the stream is dropped
//!   first; never a hang.
//! - [`ConfigError`]: the error every builder of the workspace returns, naming
//!   the setting, the rejected value and the accepted range.
//! - [`SendError`], [`TrySendError`], [`SendBlockingError`],
//!   [`SendTimeoutError`], [`TryRecvError`]: the errors of every channel of
//!   the workspace, each failed send handing back the value it could not
//!   send. [`SendBlockingError`] says once what `send_blocking` means in
//!   every crate.
//! - [`Transaction`] and [`DeadLetterReason`]: the handler's view of a
//!   transactional delivery (commit, rollback, retry after, fail) and why a
//!   consumer gave up on an item — the same in txn-channel and
//!   txn-jetstream, so a handler runs on either.
//!
//! The names and meanings shared by all the crates are listed in the
//! [conventions](https://github.com/async-patterns/async-patterns/blob/main/docs/conventions.md).
//!
//! # When to use it, and when not
//!
//! Use [`RuntimeContext`] in sync code that may be called from anywhere (a
//! callback, a `Drop`, a sync trait method) and has to decide how to wait.
//! Use [`RetryPolicy`] for a simple retry loop around an async operation.
//! If you need a full retry middleware for a tower `Service`, tower's `retry`
//! layer is the better fit; if your code always runs in one known context,
//! you do not need the probe.
//!
//! # Examples
//!
//! Retry an operation that fails twice, with paused time so the example runs
//! instantly:
//!
//! ```
//! use async_patterns_core::{RetryPolicy, RuntimeContext};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! assert_eq!(RuntimeContext::current(), RuntimeContext::CurrentThread);
//!
//! let policy = RetryPolicy::builder()
//!     .initial_delay(Duration::from_millis(100))
//!     .max_attempts(5)
//!     .build()?;
//! let mut backoff = policy.backoff();
//! let mut failures_left = 2;
//! loop {
//!     let outcome = if failures_left > 0 { failures_left -= 1; Err("busy") } else { Ok(()) };
//!     match outcome {
//!         Ok(()) => break,
//!         Err(e) if backoff.wait().await.is_none() => return Err(e.into()),
//!         Err(_) => continue,
//!     }
//! }
//! assert_eq!(backoff.attempts(), 3);
//! # Ok(())
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

mod context;
mod dead_letter;
mod error;
pub mod outcome;
mod retry;
mod send;
mod transaction;

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;

pub use context::{BlockingStrategy, RuntimeContext, WouldDeadlock, park_on};
pub use dead_letter::DeadLetterReason;
pub use error::ConfigError;
pub use retry::{Backoff, Jitter, RetryPolicy, RetryPolicyBuilder};
pub use send::{SendBlockingError, SendError, SendTimeoutError, TryRecvError, TrySendError};
pub use transaction::Transaction;
