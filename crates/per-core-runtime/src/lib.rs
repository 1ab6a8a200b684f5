//! One single-threaded tokio runtime per CPU core, optionally pinned, that
//! you can spawn onto from anywhere: `!Send` tasks, joinable results,
//! per-worker metrics and a graceful shutdown that accounts for every task.
//!
//! **Guarantee.** Every task the runtime accepts runs at most once and ends
//! exactly once — completed, panicked, aborted or cancelled by shutdown —
//! and its [`JoinHandle`] reports which (with the output, or a
//! [`JoinError`]). A spawn that is refused (bad worker index, runtime shut
//! down) hands your closure back inside the error, unrun. A panicking task
//! never takes its worker down. At shutdown, every future is dropped on its
//! own worker thread, so its `Drop`s run there. No call of this crate
//! blocks a thread that drives a current-thread runtime — this crate's
//! workers included: [`JoinHandle::join`] and
//! [`block_on`](PerCoreRuntime::block_on) refuse there with a
//! `WouldDeadlock` error that hands back what you passed, and dropping the
//! runtime there does not wait.
//!
//! # What you get
//!
//! - [`PerCoreRuntime::builder`] ([`PerCoreRuntimeBuilder`]): the number of
//!   [`workers`](PerCoreRuntimeBuilder::workers) (default: the
//!   [`CpuBudget`], std's `available_parallelism`, which follows the
//!   affinity mask and the cgroup CPU quota),
//!   [`pin`](PerCoreRuntimeBuilder::pin)ning worker `i` to CPU `i` of the
//!   mask (a failure to pin is an error),
//!   [`spin_before_park`](PerCoreRuntimeBuilder::spin_before_park) for
//!   workers that talk to each other a lot, thread names and stack size,
//!   `on_worker_start`/`on_worker_stop` hooks, and each worker's tokio
//!   runtime builder (I/O and timers enabled).
//! - Spawning from any thread or runtime: [`spawn_on`](PerCoreRuntime::spawn_on)
//!   a worker, [`spawn`](PerCoreRuntime::spawn) by [`Placement`]
//!   (round-robin, least loaded, by key), [`spawn_on_all`](PerCoreRuntime::spawn_on_all),
//!   [`block_on`](PerCoreRuntime::block_on); from inside a worker,
//!   [`spawn_local`](PerCoreRuntime::spawn_local). You pass a `Send` closure;
//!   the future it builds on the worker need not be `Send`.
//! - [`JoinHandle`]: `.await` it on any runtime, or [`join`](JoinHandle::join)
//!   it from a plain thread; [`abort`](JoinHandle::abort) it.
//! - [`PerCoreRuntime::current_worker`], [`PerCoreRuntime::metrics`] (a
//!   [`RuntimeMetrics`] snapshot: alive tasks, spawned, completed, busy and
//!   spin time, per worker and summed), and a graceful shutdown that
//!   returns a [`ShutdownReport`]: [`shutdown`](PerCoreRuntime::shutdown)
//!   from sync code, [`shutdown_async`](PerCoreRuntime::shutdown_async) from
//!   async code.
//!
//! [`JoinHandle`] and [`JoinError`] have tokio's names and tokio's meaning.
//! Where both runtimes' handles are in scope, import ours under an alias:
//!
//! ```
//! use async_patterns_per_core_runtime::{
//!     JoinError as CoreJoinError, JoinHandle as CoreJoinHandle, PerCoreRuntime,
//! };
//! use tokio::task::JoinHandle;
//!
//! let rt = PerCoreRuntime::builder().workers(1).build()?;
//! let on_core: CoreJoinHandle<u32> = rt.spawn_on(0, || async { 1 })?;
//! let tokio_rt = tokio::runtime::Runtime::new()?;
//! let on_tokio: JoinHandle<u32> = tokio_rt.spawn(async { 2 });
//! let sum = tokio_rt.block_on(async {
//!     let core: Result<u32, CoreJoinError> = on_core.await;
//!     core.unwrap() + on_tokio.await.unwrap()
//! });
//! assert_eq!(sum, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each worker is a current-thread tokio runtime with a
//! [`LocalSet`](tokio::task::LocalSet), so `tokio::task::spawn_local`,
//! tokio's timers and sockets all work inside tasks.
//!
//! # When thread-per-core wins, and when work-stealing does
//!
//! Use it when work partitions by key (a connection, a shard, a tenant) and
//! each partition's state can live on one core without locks or atomics:
//! proxies, caches, per-shard storage engines, servers with one
//! `SO_REUSEPORT` listener per core. Tasks never migrate, so their data stays
//! in one core's cache, `Rc`/`RefCell` replace `Arc`/`Mutex`, and pinning
//! keeps the OS from moving workers around.
//!
//! Prefer tokio's multi-thread (work-stealing) runtime when load is uneven
//! or unpredictable: here a worker with a long queue is not helped by an
//! idle one, and a task that hogs its worker delays every task placed there.
//! The same goes for CPU-heavy or blocking work (use `spawn_blocking` or a
//! thread pool) and for programs with few long-lived tasks, where the
//! default runtime is simpler and just as fast.
//!
//! # Examples
//!
//! ```
//! use std::cell::RefCell;
//! use std::collections::HashMap;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
//!
//! let rt = PerCoreRuntime::builder().workers(2).build()?;
//!
//! // One lock-free cache per worker, built on the worker: `Rc` is fine.
//! let caches = rt.spawn_on_all(|worker| async move {
//!     thread_local!(static CACHE: Rc<RefCell<HashMap<String, usize>>> = Rc::default());
//!     CACHE.with(|c| c.borrow_mut().insert("worker".into(), worker.index()));
//! })?;
//! for cache in caches {
//!     cache.join()?;
//! }
//!
//! // Requests for one key always go to the same worker.
//! let key = Placement::by_key(&"user-7");
//! let first = rt.spawn_with(key, || async { PerCoreRuntime::current_worker() })?.join()?;
//! let again = rt.spawn_with(key, || async { PerCoreRuntime::current_worker() })?.join()?;
//! assert_eq!(first, again);
//!
//! // A panic is an error for its handle, not the end of the worker.
//! let failed = rt.spawn_on(0, || async { panic!("bad request") })?;
//! assert!(failed.join().unwrap_err().is_panic());
//! assert_eq!(rt.block_on(0, || async { "still serving" })?, "still serving");
//!
//! let report = rt.shutdown(Duration::from_secs(5));
//! assert_eq!((report.completed(), report.panicked()), (5, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod cpus;
mod error;
mod inbox;
mod join;
mod loom;
mod metrics;
mod runtime;
mod shutdown;
mod spin;
mod task;
mod worker;

#[cfg(all(test, async_patterns_loom))]
mod loom_model;
#[cfg(all(test, not(async_patterns_loom)))]
mod task_stress;

pub use async_patterns_core::ConfigError;
pub use builder::{BuildError, PerCoreRuntimeBuilder};
pub use cpus::CpuBudget;
pub use error::{BlockOnWorkerError, JoinBlockingError, SpawnError, SpawnErrorKind};
pub use join::{JoinError, JoinHandle};
pub use metrics::{RuntimeMetrics, ShutdownReport, WorkerMetrics};
pub use runtime::{Handle, PerCoreRuntime, Placement, WorkerId};
