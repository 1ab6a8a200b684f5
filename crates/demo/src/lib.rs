//! The async-patterns demo: an ingestion pipeline that uses every pattern
//! crate of the workspace together, under injected faults, and proves that
//! its books balance. `cargo xtask demo` runs the binary; this library lets
//! tests run the same pipeline in-process.
//!
//! - [`legacy`]: a sync "legacy library" that calls a sync callback from
//!   inside async tasks.
//! - [`pipeline`]: the pipeline on a per-core runtime — bridge, batching,
//!   txn-channel, reusable-receiver against a real tonic server with faults,
//!   and the blocking detector watching it — and the [`Report`] whose books
//!   must balance.
//! - [`distributed`]: the same pipeline across OS processes (`--queue
//!   jetstream`): a producer process and consumer processes around a
//!   nats-server the demo starts, with a consumer killed mid-run
//!   (`--chaos`), and the same books.
//! - [`stop`]: Ctrl-C or `SIGTERM` stops the producers; the pipeline drains
//!   and the books are printed.
//!
//! The crate also compiles and runs the code blocks of the cookbook pages in
//! `docs/` as doc tests, so the cookbook cannot drift from the API.

pub mod distributed;
pub mod legacy;
pub mod pipeline;
pub mod stop;

pub use distributed::{DistributedProgress, DistributedReport, run_distributed};
pub use pipeline::{
    DemoConfig, DemoError, IN_PROCESS_DRAIN_DEADLINE, Progress, Queue, Rate, Report,
    WorkerProgress, run, run_until, run_until_deadline,
};
pub use stop::Stop;

/// The cookbook's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
mod cookbook {
    #[doc = include_str!("../../../docs/core.md")]
    struct Core;

    #[doc = include_str!("../../../docs/outcome-streams.md")]
    struct OutcomeStreams;

    #[doc = include_str!("../../../docs/bridge.md")]
    struct Bridge;

    #[doc = include_str!("../../../docs/batching.md")]
    struct Batching;

    #[doc = include_str!("../../../docs/txn-channel.md")]
    struct TxnChannel;

    #[doc = include_str!("../../../docs/reusable-receiver.md")]
    struct ReusableReceiver;

    #[doc = include_str!("../../../docs/per-core-runtime.md")]
    struct PerCoreRuntime;

    #[doc = include_str!("../../../docs/blocking-detector.md")]
    struct BlockingDetector;

    #[doc = include_str!("../../../docs/mutex.md")]
    struct Mutex;
}
