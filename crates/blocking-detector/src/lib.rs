//! Find the poll that blocks a tokio runtime thread — a `std::thread::sleep`,
//! a CPU loop, sync file or DNS I/O, a contended `std::sync::Mutex` — name
//! it, report it while it is still stuck, and fail tests on it.
//!
//! One blocking poll stalls every other task on its worker. A
//! [`BlockingDetector`] finds it three ways, which combine:
//!
//! - **Watched futures** ([`BlockingDetector::watch`], [`spawn`](BlockingDetector::spawn)):
//!   each poll is timed; one longer than the threshold is reported with the
//!   task's name, the caller's source location, the duration and the thread.
//!   Stable tokio, any runtime, including `#[tokio::test]`.
//! - **The runtime watchdog** ([`BlockingDetectorBuilder::install`]): hooks
//!   in the runtime builder and one watchdog thread notice a worker that has
//!   been busy without parking or making progress for longer than the
//!   threshold, and report it *while it is still stuck*
//!   ([`ReportKind::Stuck`]) and again when it ends, with the total
//!   ([`ReportKind::Blocked`]).
//! - **Precise mode**: built with `RUSTFLAGS="--cfg tokio_unstable"`, the
//!   installed detector also uses tokio's before/after-task-poll hooks, so
//!   every task poll is timed and reports carry the task id and the
//!   `tokio::spawn` location — no wrapping needed.
//!
//! Each report says whether the task is to blame (Linux): the stall is
//! split into time on a CPU, waiting for a CPU and off a CPU, and classified
//! CPU-bound, blocked (sleep, system call, lock) or descheduled (the machine
//! was busy) — see [`StallClass`] and [`StallTimes`]. By default descheduled
//! stalls do not fail test guards ([`DescheduledPolicy`]).
//!
//! With the `stack-capture` feature on Linux, the watchdog also records the
//! stuck thread's stack (see [`BlockingDetectorBuilder::capture_stacks`]).
//! Reports go to a [`BlockingHandler`] (any `Fn(&BlockingReport)`; with the
//! `tracing` feature, `tracing` events by default), rate-limited per
//! location, and are counted in [`DetectorMetrics`]. In tests,
//! [`BlockingDetector::fail_on_blocking`] returns a guard that fails the test
//! listing every offending poll.
//!
//! # What is guaranteed
//!
//! Every poll of a watched future — and in precise mode every task poll —
//! that lasts the threshold or longer is reported exactly once when it
//! returns (`Blocked`), with its exact duration on the detector's clock. The
//! watchdog reports a worker blocked for the threshold plus at most a
//! quarter of it (half of it outside tracked polls) while it is still
//! blocked (`Stuck`), once per block, and once more when it ends. Rate
//! limiting only keeps reports from the handler: every report is counted and
//! every report reaches the active test guards. Off
//! ([`set_enabled(false)`](BlockingDetector::set_enabled)), a watched poll
//! costs one branch; a program that does not use the crate pays nothing.
//!
//! # When to use it, and when not
//!
//! Use it in tests (a guard around a test body catches a blocking call the
//! day it is added), in development, and in production with a threshold well
//! above your normal poll times (tens of milliseconds) to learn which code
//! stalls your workers. It tells you *where*; to see *what the thread was
//! doing*, add `stack-capture`.
//!
//! It is not a profiler: for the distribution of poll times use
//! [tokio-metrics](https://docs.rs/tokio-metrics); for a live view of every
//! task, [tokio-console](https://docs.rs/console-subscriber). Blocking done
//! on purpose belongs in `spawn_blocking` or `block_in_place`, which the
//! detector does not flag (the worker hands its tasks over first).
//!
//! # Examples
//!
//! ```
//! use async_patterns_blocking_detector::BlockingDetector;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let detector = BlockingDetector::builder()
//!     .threshold(Duration::from_millis(20))
//!     .build()?;
//! let guard = detector.fail_on_blocking();
//!
//! detector.spawn("fine", async { tokio::task::yield_now().await }).await?;
//! detector
//!     .spawn("oops", async { std::thread::sleep(Duration::from_millis(50)) })
//!     .await?;
//!
//! let failure = guard.check().unwrap_err();
//! let report = &failure.reports()[0];
//! assert_eq!(report.name(), Some("oops"));
//! assert_eq!(report.location().unwrap().file(), file!());
//! assert!(report.duration() >= Duration::from_millis(40));
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

// Under `--cfg async_patterns_loom` only the lock-free record is built, for
// the models in `loom_tests` (tokio's runtime hooks do not exist under loom).
mod activity;
mod loom;
#[cfg(all(test, async_patterns_loom))]
mod loom_tests;

#[cfg(not(async_patterns_loom))]
mod builder;
#[cfg(not(async_patterns_loom))]
mod clock;
#[cfg(not(async_patterns_loom))]
mod detector;
#[cfg(not(async_patterns_loom))]
mod guard;
#[cfg(all(not(async_patterns_loom), tokio_unstable))]
mod precise;
#[cfg(not(async_patterns_loom))]
mod report;
#[cfg(not(async_patterns_loom))]
mod runtime;
#[cfg(not(async_patterns_loom))]
mod sched;
#[cfg(all(
    not(async_patterns_loom),
    feature = "stack-capture",
    target_os = "linux"
))]
mod stack;
#[cfg(not(async_patterns_loom))]
mod watch;
#[cfg(not(async_patterns_loom))]
mod watchdog;

#[cfg(not(async_patterns_loom))]
pub use async_patterns_core::ConfigError;
#[cfg(not(async_patterns_loom))]
pub use builder::BlockingDetectorBuilder;
#[cfg(not(async_patterns_loom))]
pub use detector::{BlockingDetector, DescheduledPolicy, DetectorMetrics};
#[cfg(not(async_patterns_loom))]
pub use guard::{BlockingFailure, BlockingGuard};
#[cfg(all(not(async_patterns_loom), feature = "tracing"))]
pub use report::TracingHandler;
#[cfg(not(async_patterns_loom))]
pub use report::{
    BlockingHandler, BlockingReport, ReportKind, StallClass, StallTimes, StderrHandler, TaskId,
};
#[cfg(not(async_patterns_loom))]
pub use runtime::InstallError;
#[cfg(all(
    not(async_patterns_loom),
    feature = "stack-capture",
    target_os = "linux"
))]
pub use stack::{StackFrame, StackTrace};
#[cfg(not(async_patterns_loom))]
pub use watch::Watched;
