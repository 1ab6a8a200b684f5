//! The ingestion pipeline: every pattern crate of the workspace in one
//! program, under injected faults, with books that must balance.
//!
//! ```text
//!  worker 0                         workers 1..n (producers)          worker n-1 (pipeline)
//!  ────────                         ────────────────────────          ─────────────────────
//!  tonic Upload server  ◀─ gRPC ─┐  SensorLibrary (sync) ──callback─▶ bridge channel (DropNewest)
//!  enrichment service ◀─ call ───┼─ (sync → async call, some events)       │
//!                                │                                   batching (count, weight, time)
//!                                │                                        │
//!                                │                                   txn-channel (commit on success,
//!                                │                                        │   dead-letter after 3 attempts)
//!                                └─────────── reusable-receiver replay + retry driver per batch
//! ```
//!
//! Every produced event ends in exactly one of: uploaded (at least once),
//! dead-lettered, or dropped by the bridge's overflow policy — and is
//! counted there. [`Report::lost`] is what is left over, and must be zero.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_patterns_batching::{BatchConfig, BatchExt, BatchMetrics};
use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
use async_patterns_bridge::{
    CallError, ChannelBuilder, Overflow, Sender, ServiceBuilder, SyncClient,
};
use async_patterns_core::{Jitter, RetryPolicy};
use async_patterns_per_core_runtime::{PerCoreRuntime, ShutdownReport};
use async_patterns_reusable_receiver::{ReplayConfig, Retry, ReusableReceiver};
use async_patterns_testkit::proto::Item;
use async_patterns_testkit::proto::upload_client::UploadClient;
use async_patterns_testkit::{Faults, UploadServer};
use async_patterns_txn_channel::{ChannelBuilder as TxnChannelBuilder, DeadLetter};
use futures::StreamExt;

use crate::legacy::{POISON_PREFIX, RawEvent, SensorLibrary};
use crate::stop::Stop;

/// What to run: the demo's command-line flags.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// How many events the legacy library produces.
    pub events: u64,
    /// The share of upload calls the server fails (half `UNAVAILABLE`, half
    /// a dropped connection); a thousandth of it is the share of poison
    /// events, which the server always rejects. 0 means no faults at all.
    pub fault_rate: f64,
    /// Workers of the per-core runtime (the server runs on worker 0).
    pub workers: usize,
    /// Seeds the events, the faults and the backoff jitter.
    pub seed: u64,
    /// Makes the batching stage block its worker once, for the blocking
    /// detector to report.
    pub inject_blocking: bool,
    /// In-process channels, or JetStream across processes.
    pub queue: Queue,
    /// Consumer processes (`--queue jetstream`).
    pub consumers: usize,
    /// Kill a consumer process with SIGKILL mid-run and start a replacement
    /// (`--queue jetstream`).
    pub chaos: bool,
    /// Restart nats-server on the same store mid-run (`--queue jetstream`).
    pub restart_server: bool,
    /// How fast the legacy library emits.
    pub rate: Rate,
}

/// Where the events travel between the producer and the uploader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Queue {
    /// In one process: bridge, batching, txn-channel.
    #[default]
    InProcess,
    /// Across OS processes, through a JetStream stream on a nats-server the
    /// demo starts ([`crate::distributed`]).
    JetStream,
}

/// How fast the legacy library emits events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rate {
    /// Bursts with pauses, about 5k events/s, and a backlog burst now and
    /// then that the bridge's `DropNewest` policy trims (counted).
    #[default]
    Paced,
    /// As fast as the pipeline takes: no pauses, and the callback waits for
    /// room instead of dropping.
    Max,
}

/// A worker busy this long without parking or making progress is reported
/// by the blocking detector.
pub const BLOCKING_THRESHOLD: Duration = Duration::from_millis(100);

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            events: 20_000,
            fault_rate: 0.1,
            workers: 2,
            seed: 1,
            inject_blocking: false,
            queue: Queue::InProcess,
            consumers: 2,
            chaos: false,
            restart_server: false,
            rate: Rate::Paced,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug)]
pub struct DemoError(String);

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

impl DemoError {
    pub(crate) fn new(message: String) -> DemoError {
        DemoError(message)
    }
}

fn fail(what: &str) -> impl FnOnce(&dyn fmt::Display) -> DemoError + '_ {
    move |e| DemoError(format!("{what}: {e}"))
}

/// One event as it travels through the pipeline.
#[derive(Debug, Clone)]
struct Event {
    id: u64,
    payload: Vec<u8>,
}

/// Live counters, shared by every stage.
#[derive(Debug)]
struct Counters {
    produced: Vec<AtomicU64>,
    enriched: AtomicU64,
    enrich_refused: AtomicU64,
    enrich_failed: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
    batched_items: AtomicU64,
    upload_calls: AtomicU64,
    failed_calls: AtomicU64,
    committed_batches: AtomicU64,
    committed_items: AtomicU64,
    redeliveries: AtomicU64,
    dead_letter_batches: AtomicU64,
    dead_letter_ids: Mutex<Vec<u64>>,
    /// Events in batches the upload stage gave up on at the drain deadline.
    abandoned_ids: Mutex<Vec<u64>>,
}

impl Counters {
    fn new(workers: usize) -> Self {
        Counters {
            produced: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            enriched: AtomicU64::new(0),
            enrich_refused: AtomicU64::new(0),
            enrich_failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_items: AtomicU64::new(0),
            upload_calls: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            committed_batches: AtomicU64::new(0),
            committed_items: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
            dead_letter_batches: AtomicU64::new(0),
            dead_letter_ids: Mutex::new(Vec::new()),
            abandoned_ids: Mutex::new(Vec::new()),
        }
    }
}

/// How an upload is retried, in every mode of the demo: five attempts,
/// 10 ms doubling to 200 ms, jittered, reproducible from the run's seed.
pub(crate) fn upload_retry_policy(
    seed: u64,
) -> Result<RetryPolicy, async_patterns_core::ConfigError> {
    RetryPolicy::builder()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(200))
        .jitter(Jitter::Proportional(0.5))
        .max_attempts(5)
        .seed(seed)
        .build()
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Progress of one worker of the per-core runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProgress {
    /// Events the legacy library produced on this worker.
    pub produced: u64,
    /// Tasks of the per-core runtime alive on this worker.
    pub live_tasks: u64,
    /// Time this worker spent running tasks.
    pub busy: Duration,
}

/// A live view of the pipeline, taken every half second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Since the pipeline started.
    pub elapsed: Duration,
    /// Events produced by the legacy library.
    pub produced: u64,
    /// Events dropped by the bridge's overflow policy.
    pub dropped: u64,
    /// Events put into batches.
    pub batched: u64,
    /// Events in batches whose upload succeeded.
    pub uploaded: u64,
    /// Upload calls that failed and were retried or redelivered.
    pub retried: u64,
    /// Events handed to the dead-letter callback.
    pub dead_lettered: u64,
    /// Per worker.
    pub workers: Vec<WorkerProgress>,
}

/// The outcome of a run: what happened at every stage, and the books.
#[derive(Debug, Clone)]
pub struct Report {
    /// The configuration that ran.
    pub config: DemoConfig,
    /// Wall time of the pipeline.
    pub elapsed: Duration,
    /// Events produced by the legacy library (its callback ran for each).
    pub produced: u64,
    /// Sync → async enrichment calls answered.
    pub enriched: u64,
    /// Enrichment calls refused with `WouldDeadlock` (a worker that serves
    /// the service itself asked it).
    pub enrich_refused: u64,
    /// Enrichment calls that failed otherwise.
    pub enrich_failed: u64,
    /// Events dropped by the bridge's `DropNewest` policy, as it counted them.
    pub dropped_by_policy: u64,
    /// What the batching stage reported when its input ended.
    pub batching: BatchMetrics,
    /// gRPC upload calls made (attempts, including retries).
    pub upload_calls: u64,
    /// Upload calls that failed.
    pub failed_calls: u64,
    /// Batches the txn-channel delivered again after a failed upload.
    pub redeliveries: u64,
    /// Batches committed after a successful upload.
    pub committed_batches: u64,
    /// Distinct event ids the server received.
    pub uploaded_unique: u64,
    /// Receipts beyond the first of an id: items replayed after a fault.
    pub duplicates: u64,
    /// Batches that used up their attempts and were dead-lettered.
    pub dead_lettered_batches: u64,
    /// Events in those batches.
    pub dead_lettered: u64,
    /// Dead-lettered events the server never received.
    pub dead_lettered_only: u64,
    /// Events still in the pipeline when the drain deadline passed after a
    /// stop, which the upload stage gave up on (and the server never
    /// received): counted, not silently lost — but gone with the process,
    /// which is what a pipeline in memory can promise.
    pub abandoned: u64,
    /// Events neither uploaded, nor dead-lettered, nor dropped by policy,
    /// nor abandoned at the drain deadline.
    pub lost: i64,
    /// Ids the server received that the library never produced.
    pub unknown_ids: u64,
    /// How the per-core runtime shut down.
    pub shutdown: ShutdownReport,
    /// What the blocking detectors reported, one line each.
    pub blocking_reports: Vec<String>,
    /// Whether the run was stopped early (Ctrl-C or `SIGTERM`): the
    /// producers stopped after `produced` events and what was in flight
    /// drained.
    pub stopped_early: bool,
    /// Events the legacy library produced on each worker.
    pub produced_per_worker: Vec<u64>,
}

impl Report {
    /// Whether every produced event is accounted for, and nothing else
    /// arrived.
    pub fn balanced(&self) -> bool {
        self.lost == 0 && self.unknown_ids == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.batching;
        writeln!(f, "== summary ({:.1?}) ==", self.elapsed)?;
        if self.stopped_early {
            writeln!(
                f,
                "stopped early  by a signal: the producers stopped after {} of {} events, and what was in flight {}",
                self.produced,
                self.config.events,
                if self.abandoned > 0 {
                    "drained until the drain deadline (the rest is counted as abandoned below)"
                } else {
                    "drained"
                }
            )?;
        }
        writeln!(
            f,
            "produced       {:>8}  events, by the sync legacy library's callback",
            self.produced
        )?;
        writeln!(
            f,
            "  enriched     {:>8}  sync → async calls answered ({} refused as WouldDeadlock, {} failed)",
            self.enriched, self.enrich_refused, self.enrich_failed
        )?;
        writeln!(
            f,
            "dropped        {:>8}  by the bridge's DropNewest overflow policy (counted)",
            self.dropped_by_policy
        )?;
        writeln!(
            f,
            "batched        {:>8}  events in {} batches (full {}, weight {}, deadline {}, closed {})",
            b.items.total(),
            b.batches.total(),
            b.batches.full,
            b.batches.weight,
            b.batches.deadline,
            b.batches.closed
        )?;
        writeln!(
            f,
            "upload calls   {:>8}  ({} failed and retried from the replay buffer; {} batches redelivered by the txn-channel)",
            self.upload_calls, self.failed_calls, self.redeliveries
        )?;
        writeln!(
            f,
            "uploaded       {:>8}  distinct events, {} duplicates (unconfirmed items replayed after a fault)",
            self.uploaded_unique, self.duplicates
        )?;
        writeln!(
            f,
            "dead-lettered  {:>8}  events in {} batch(es) ({} of them never reached the server)",
            self.dead_lettered, self.dead_lettered_batches, self.dead_lettered_only
        )?;
        if self.abandoned > 0 {
            writeln!(
                f,
                "abandoned      {:>8}  events still in the pipeline at the drain deadline after the stop: counted, gone with the process",
                self.abandoned
            )?;
        }
        writeln!(
            f,
            "lost           {:>8}  = produced − uploaded − dead-lettered only − dropped − abandoned",
            self.lost
        )?;
        writeln!(
            f,
            "blocking       {:>8}  reports from the blocking detectors (threshold {:?})",
            self.blocking_reports.len(),
            BLOCKING_THRESHOLD
        )?;
        for line in &self.blocking_reports {
            writeln!(f, "  {line}")?;
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "throughput     {:>8.0}  events/s end to end (uploaded + dead-lettered only); per stage: produced {:.0}/s, batched {:.0}/s, uploaded {:.0}/s",
            (self.uploaded_unique + self.dead_lettered_only) as f64 / secs,
            self.produced as f64 / secs,
            b.items.total() as f64 / secs,
            self.uploaded_unique as f64 / secs,
        )?;
        let workers: Vec<String> = self
            .produced_per_worker
            .iter()
            .enumerate()
            .map(|(i, n)| format!("w{i}: {n} ev"))
            .collect();
        writeln!(
            f,
            "workers        produced per worker of the per-core runtime: {}",
            workers.join(", ")
        )?;
        writeln!(
            f,
            "runtime        shutdown: {} tasks completed, {} cancelled, {} panicked",
            self.shutdown.completed(),
            self.shutdown.cancelled(),
            self.shutdown.panicked()
        )?;
        if self.balanced() {
            write!(
                f,
                "books balance: yes — every event uploaded, dead-lettered or counted as dropped{}",
                if self.abandoned > 0 {
                    " or abandoned"
                } else {
                    ""
                }
            )
        } else {
            write!(
                f,
                "books balance: NO — {} events lost, {} unknown ids",
                self.lost, self.unknown_ids
            )
        }
    }
}

/// Room in the bridge between the legacy callback and the batcher.
const BRIDGE_CAPACITY: usize = 512;

/// Events in the legacy device's occasional backlog burst, read without a
/// pause: more than [`BRIDGE_CAPACITY`], so some are dropped by policy.
const BACKLOG: u64 = 600;

/// How often the caller's `on_progress` runs.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How long what is in flight may drain after a stop (Ctrl-C or `SIGTERM`)
/// in the in-process mode, before the upload stage gives up on what is left
/// and counts it as abandoned. Without faults it drains in milliseconds;
/// with every upload failing, each batch left takes its attempts and
/// backoff (up to about 3 s a batch).
pub const IN_PROCESS_DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the pipeline to the end, calling `on_progress` every
/// [`PROGRESS_EVERY`] from the calling thread, and returns the books.
///
/// # Errors
///
/// A [`DemoError`] if the configuration is invalid or the runtime, the
/// server or a stage cannot start; a pipeline that loses events is *not* an
/// error — see [`Report::balanced`].
pub fn run(config: &DemoConfig, on_progress: impl FnMut(&Progress)) -> Result<Report, DemoError> {
    run_until(config, &Stop::new(), on_progress)
}

/// [`run`], stopped early when `stop` is raised: the producers read no more
/// events, the stages drain what is in flight, and the books cover what was
/// produced.
///
/// # Errors
///
/// As for [`run`].
pub fn run_until(
    config: &DemoConfig,
    stop: &Stop,
    on_progress: impl FnMut(&Progress),
) -> Result<Report, DemoError> {
    run_until_deadline(config, stop, IN_PROCESS_DRAIN_DEADLINE, on_progress)
}

/// [`run_until`] with the drain deadline given: once `stop` is raised,
/// what is in flight has `drain_deadline` to drain; then the upload stage
/// stops uploading, counts what is left as abandoned and lets the stages
/// end.
///
/// # Errors
///
/// As for [`run`].
pub fn run_until_deadline(
    config: &DemoConfig,
    stop: &Stop,
    drain_deadline: Duration,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, DemoError> {
    if config.events == 0 {
        return Err(DemoError("--events must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&config.fault_rate) {
        return Err(DemoError(format!(
            "--fault-rate must be between 0 and 1, got {}",
            config.fault_rate
        )));
    }
    let started = Instant::now();
    let watch = Watch::default();
    let runtime = PerCoreRuntime::builder()
        .workers(config.workers)
        .thread_name_prefix("demo-worker")
        .configure_runtime({
            let watch = watch.clone();
            move |worker, builder| watch.install(worker.index(), builder)
        })
        .build()
        .map_err(|e| fail("cannot start the per-core runtime")(&e))?;
    watch.check()?;
    let workers = runtime.workers();
    let pipeline_worker = workers - 1;
    let producer_workers: Vec<usize> = if workers == 1 || config.rate == Rate::Max {
        // At full speed every worker produces its share of the events.
        (0..workers).collect()
    } else if workers == 1 {
        vec![0]
    } else {
        (1..workers).collect()
    };
    let counters = Arc::new(Counters::new(workers));

    // The gRPC server and the enrichment service, on worker 0.
    let faults = if config.fault_rate > 0.0 {
        Faults::none()
            .random_calls(config.fault_rate, config.seed)
            .reject_payload_prefix(POISON_PREFIX)
    } else {
        Faults::none()
    };
    let server = runtime
        .block_on(0, move || UploadServer::start(faults))
        .map_err(|e| fail("cannot run on worker 0")(&e))?
        .map_err(|e| fail("cannot start the gRPC server")(&e))?;
    let (enrich, enrich_service) = ServiceBuilder::<u64, u32>::new()
        .capacity(256)
        .concurrency(32)
        .build()
        .map_err(|e| fail("enrichment service")(&e))?;
    let service_task = runtime
        .spawn_on(0, move || {
            enrich_service.serve(|id| async move {
                tokio::task::yield_now().await;
                (id % 251) as u32
            })
        })
        .map_err(|e| fail("cannot start the enrichment service")(&e))?;
    // A first call from this plain thread returns once the service is
    // served, so the workers' first calls are not refused as unserved.
    enrich
        .call(0)
        .map_err(|e| fail("the enrichment service does not answer")(&e))?;

    // The stages, back to front.
    let overflow = match config.rate {
        Rate::Paced => Overflow::DropNewest,
        // At full speed the producers wait for room instead (`send().await`).
        Rate::Max => Overflow::Reject,
    };
    let (events_tx, events_rx) = ChannelBuilder::<Event>::new()
        .capacity(BRIDGE_CAPACITY)
        .overflow(overflow)
        .build()
        .map_err(|e| fail("bridge channel")(&e))?;
    let dead_letters = Arc::clone(&counters);
    let (batches_tx, batches_rx) = TxnChannelBuilder::new()
        .capacity(8)
        .max_attempts(3)
        .on_dead_letter(move |letter: DeadLetter<Vec<Event>>| {
            add(&dead_letters.dead_letter_batches, 1);
            let ids = letter.into_inner().into_iter().map(|e| e.id);
            lock(&dead_letters.dead_letter_ids).extend(ids);
        })
        .build()
        .map_err(|e| fail("txn-channel")(&e))?;
    let batch_config = BatchConfig::builder()
        .max_items(64)
        .max_delay(Duration::from_millis(20))
        .max_weight(16 * 1024, |e: &Event| e.payload.len())
        .build()
        .map_err(|e| fail("batch config")(&e))?;

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Raised at the drain deadline: the upload stage gives up on what is left.
    let (abandon_tx, abandon_rx) = tokio::sync::watch::channel(false);
    let uploader = {
        let counters = Arc::clone(&counters);
        let policy = upload_retry_policy(config.seed).map_err(|e| fail("retry policy")(&e))?;
        let addr = server.addr();
        let detector = watch.detector(pipeline_worker)?;
        runtime
            .spawn_on(pipeline_worker, move || {
                detector.watch_named("upload stage", async move {
                    upload_stage(batches_rx, addr, policy, &counters, abandon_rx).await;
                    drop(done_tx);
                })
            })
            .map_err(|e| fail("cannot start the uploader")(&e))?
    };
    let batcher = {
        let counters = Arc::clone(&counters);
        let inject_blocking = config.inject_blocking;
        let detector = watch.detector(pipeline_worker)?;
        runtime
            .spawn_on(pipeline_worker, move || {
                let stage = batching_stage(
                    events_rx,
                    batch_config,
                    batches_tx,
                    counters,
                    inject_blocking,
                );
                detector.watch_named("batching stage", stage)
            })
            .map_err(|e| fail("cannot start the batcher")(&e))?
    };
    let producers = spawn_producers(
        &runtime,
        &producer_workers,
        config,
        &events_tx,
        &enrich,
        &counters,
        stop,
    )?;
    // The producers hold the only senders and clients now: when they finish,
    // the bridge closes and the stages drain, back to the uploader.
    drop((events_tx, enrich));

    // Progress until the uploader, the last stage, is done — after a stop,
    // for at most the drain deadline.
    let mut stopped_at: Option<Instant> = None;
    let mut abandoned = false;
    loop {
        let wait = match stopped_at {
            Some(at) if !abandoned => {
                PROGRESS_EVERY.min((at + drain_deadline).saturating_duration_since(Instant::now()))
            }
            _ => PROGRESS_EVERY,
        };
        match done_rx.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
        if stopped_at.is_none() && stop.is_requested() {
            stopped_at = Some(Instant::now());
        }
        if let Some(at) = stopped_at
            && !abandoned
            && at.elapsed() >= drain_deadline
        {
            abandoned = true;
            let _ = abandon_tx.send(true);
        }
        on_progress(&progress(&counters, &runtime, started));
    }
    on_progress(&progress(&counters, &runtime, started));

    for producer in producers {
        producer.join().map_err(|e| fail("a producer failed")(&e))?;
    }
    let batching = batcher.join().map_err(|e| fail("the batcher failed")(&e))?;
    uploader
        .join()
        .map_err(|e| fail("the uploader failed")(&e))?;
    service_task
        .join()
        .map_err(|e| fail("the enrichment service failed")(&e))?;

    let received = server.received_ids();
    drop(server);
    let shutdown = runtime.shutdown(Duration::from_secs(5));
    let elapsed = started.elapsed();

    let dead_lettered_ids = std::mem::take(&mut *lock(&counters.dead_letter_ids));
    let uploaded: HashSet<u64> = received.iter().copied().collect();
    let dead: HashSet<u64> = dead_lettered_ids.iter().copied().collect();
    let dead_only = dead.difference(&uploaded).count() as u64;
    let abandoned_ids: HashSet<u64> = std::mem::take(&mut *lock(&counters.abandoned_ids))
        .into_iter()
        .filter(|id| !uploaded.contains(id) && !dead.contains(id))
        .collect();
    let abandoned = abandoned_ids.len() as u64;
    let produced: u64 = counters.produced.iter().map(get).sum();
    let dropped = get(&counters.dropped);
    let unknown = uploaded.iter().filter(|id| **id >= config.events).count() as u64;
    let lost = produced as i64
        - uploaded.len() as i64
        - dead_only as i64
        - dropped as i64
        - abandoned as i64;
    Ok(Report {
        config: config.clone(),
        elapsed,
        produced,
        enriched: get(&counters.enriched),
        enrich_refused: get(&counters.enrich_refused),
        enrich_failed: get(&counters.enrich_failed),
        dropped_by_policy: dropped,
        batching,
        upload_calls: get(&counters.upload_calls),
        failed_calls: get(&counters.failed_calls),
        redeliveries: get(&counters.redeliveries),
        committed_batches: get(&counters.committed_batches),
        uploaded_unique: uploaded.len() as u64,
        duplicates: (received.len() - uploaded.len()) as u64,
        dead_lettered_batches: get(&counters.dead_letter_batches),
        dead_lettered: dead_lettered_ids.len() as u64,
        dead_lettered_only: dead_only,
        abandoned,
        lost,
        unknown_ids: unknown,
        shutdown,
        blocking_reports: watch.reports(),
        stopped_early: stop.is_requested() && produced < config.events,
        produced_per_worker: counters.produced.iter().map(get).collect(),
    })
}

/// One blocking detector per worker runtime (a detector watches one
/// runtime), reporting into a shared list — and to stderr at once, so a
/// stuck worker shows up while it is still stuck.
#[derive(Clone, Default)]
struct Watch {
    detectors: Arc<Mutex<Vec<(usize, BlockingDetector)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    reports: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn install(&self, worker: usize, builder: &mut tokio::runtime::Builder) {
        let reports = Arc::clone(&self.reports);
        let installed = BlockingDetector::builder()
            .threshold(BLOCKING_THRESHOLD)
            .handler(move |report: &BlockingReport| {
                let when = match report.kind() {
                    ReportKind::Stuck => "while stuck",
                    _ => "after",
                };
                let line = format!("worker {worker} ({when}): {report}");
                eprintln!("\n{line}");
                lock(&reports).push(line);
            })
            .install(builder);
        match installed {
            Ok(detector) => lock(&self.detectors).push((worker, detector)),
            Err(e) => lock(&self.errors).push(format!("worker {worker}: {e}")),
        }
    }

    fn check(&self) -> Result<(), DemoError> {
        match lock(&self.errors).first() {
            None => Ok(()),
            Some(e) => Err(DemoError(format!(
                "cannot install the blocking detector: {e}"
            ))),
        }
    }

    /// The detector of `worker`'s runtime, to watch a stage by name.
    fn detector(&self, worker: usize) -> Result<BlockingDetector, DemoError> {
        lock(&self.detectors)
            .iter()
            .find(|(w, _)| *w == worker)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| DemoError(format!("no blocking detector on worker {worker}")))
    }

    fn reports(&self) -> Vec<String> {
        lock(&self.reports).clone()
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("detectors", &lock(&self.detectors).len())
            .field("reports", &lock(&self.reports).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn progress(counters: &Counters, runtime: &PerCoreRuntime, started: Instant) -> Progress {
    let metrics = runtime.metrics().workers;
    Progress {
        elapsed: started.elapsed(),
        produced: counters.produced.iter().map(get).sum(),
        dropped: get(&counters.dropped),
        batched: get(&counters.batched_items),
        uploaded: get(&counters.committed_items),
        retried: get(&counters.failed_calls),
        dead_lettered: lock(&counters.dead_letter_ids).len() as u64,
        workers: metrics
            .iter()
            .zip(&counters.produced)
            .map(|(m, produced)| WorkerProgress {
                produced: get(produced),
                live_tasks: m.alive_tasks,
                busy: m.busy_time,
            })
            .collect(),
    }
}

/// One producer task per producer worker, each driving its own instance of
/// the sync library over its share of the event ids.
fn spawn_producers(
    runtime: &PerCoreRuntime,
    producer_workers: &[usize],
    config: &DemoConfig,
    events_tx: &Sender<Event>,
    enrich: &SyncClient<u64, u32>,
    counters: &Arc<Counters>,
    stop: &Stop,
) -> Result<Vec<async_patterns_per_core_runtime::JoinHandle<()>>, DemoError> {
    let shares = producer_workers.len() as u64;
    let poison_rate = config.fault_rate / 1000.0;
    let mut handles = Vec::new();
    for (k, &worker) in producer_workers.iter().enumerate() {
        let k = k as u64;
        let ids = config.events * k / shares..config.events * (k + 1) / shares;
        let tx = events_tx.clone();
        let enrich = enrich.clone();
        let counters = Arc::clone(counters);
        let seed = config.seed;
        let rate = config.rate;
        let stop = stop.clone();
        let handle = runtime
            .spawn_on(worker, move || async move {
                let callback_counters = Arc::clone(&counters);
                // At full speed the callback keeps a burst's events, and the
                // task sends them with backpressure after the read.
                let held: Arc<Mutex<Vec<Event>>> = Arc::default();
                let callback_held = Arc::clone(&held);
                let callback_tx = tx.clone();
                // The callback is plain sync code, run by the library from
                // inside this async task.
                let mut library = SensorLibrary::new(seed, poison_rate, move |raw: RawEvent| {
                    let hold = (rate == Rate::Max).then_some(&*callback_held);
                    on_event(raw, worker, &callback_tx, hold, &enrich, &callback_counters);
                });
                let mut start = ids.start;
                let mut reads = 0u64;
                while start < ids.end && !stop.is_requested() {
                    reads += 1;
                    // The device delivers small bursts, and now and then a
                    // backlog larger than the bridge holds: the overflow
                    // policy drops (and counts) what does not fit.
                    let burst = if reads.is_multiple_of(40) {
                        BACKLOG
                    } else {
                        50
                    };
                    let end = (start + burst).min(ids.end);
                    library.read(start..end);
                    start = end;
                    if rate == Rate::Paced {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let burst: Vec<Event> = std::mem::take(&mut *lock(&held));
                    for event in burst {
                        if tx.send(event).await.is_err() {
                            return; // the batcher is gone; the books show it
                        }
                    }
                }
            })
            .map_err(|e| fail("cannot start a producer")(&e))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// The legacy library's callback: sync, running inside an async task.
fn on_event(
    raw: RawEvent,
    worker: usize,
    events: &Sender<Event>,
    hold: Option<&Mutex<Vec<Event>>>,
    enrich: &SyncClient<u64, u32>,
    counters: &Counters,
) {
    add(&counters.produced[worker], 1);
    let mut payload = raw.payload;
    if raw.needs_enrichment {
        // Sync → async: the service runs on worker 0. From another worker
        // this waits for the answer; from worker 0 itself it is refused
        // rather than deadlocking.
        match enrich.call_timeout(raw.id, Duration::from_secs(5)) {
            Ok(tag) => {
                add(&counters.enriched, 1);
                payload.extend_from_slice(format!(" tag={tag}").as_bytes());
            }
            Err(CallError::WouldDeadlock(_)) => add(&counters.enrich_refused, 1),
            Err(_) => add(&counters.enrich_failed, 1),
        }
    }
    let event = Event {
        id: raw.id,
        payload,
    };
    match hold {
        // Sent by the producer task, with backpressure, after the read.
        Some(held) => lock(held).push(event),
        // Never blocks: with `DropNewest`, a full channel counts the event
        // as dropped instead (the books include it).
        None => {
            let _ = events.try_send(event);
        }
    }
}

/// Groups the bridge's events into batches by count, weight and time, and
/// hands each batch to the txn-channel; returns the batcher's final metrics.
async fn batching_stage(
    events: async_patterns_bridge::Receiver<Event>,
    config: BatchConfig<Event>,
    batches_tx: async_patterns_txn_channel::Sender<Vec<Event>>,
    counters: Arc<Counters>,
    inject_blocking: bool,
) -> BatchMetrics {
    let mut batches = events.batched(config);
    let outcome = batches.outcome();
    let mut n = 0u64;
    while let Some(batch) = batches.next().await {
        n += 1;
        if inject_blocking && n == 10 {
            // The deliberately blocking step: the detector reports it.
            std::thread::sleep(Duration::from_millis(300));
        }
        add(&counters.batches, 1);
        add(&counters.batched_items, batch.len() as u64);
        counters
            .dropped
            .store(batches.get_ref().metrics().dropped, Ordering::Relaxed);
        if batches_tx.send(batch.into_vec()).await.is_err() {
            break; // the uploader is gone; the books will show it
        }
    }
    counters
        .dropped
        .store(batches.get_ref().metrics().dropped, Ordering::Relaxed);
    drop(batches);
    outcome
        .await
        .map(|summary| summary.value)
        .unwrap_or_default()
}

/// Uploads each batch of the txn-channel with a client-streaming call fed by
/// a reusable receiver in replay mode, retried by its driver; commits the
/// batch on success, and lets the txn-channel deliver it again (or
/// dead-letter it) otherwise.
async fn upload_stage(
    mut batches: async_patterns_txn_channel::Receiver<Vec<Event>>,
    addr: SocketAddr,
    policy: RetryPolicy,
    counters: &Counters,
    mut abandon: tokio::sync::watch::Receiver<bool>,
) {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .tcp_nodelay(true);
    let client = UploadClient::new(endpoint.connect_lazy());
    loop {
        let delivery = tokio::select! {
            delivery = batches.begin() => delivery,
            _ = abandon.wait_for(|abandoned| *abandoned) => break,
        };
        let Some(delivery) = delivery else {
            break;
        };
        if delivery.attempt() > 1 {
            add(&counters.redeliveries, 1);
        }
        let len = delivery.len();
        let (tx, rx) = tokio::sync::mpsc::channel(len.max(1));
        for event in delivery.iter() {
            let item = Item {
                id: event.id,
                payload: event.payload.clone(),
            };
            tx.try_send(item)
                .expect("the channel has room for the whole batch");
        }
        drop(tx);
        let replay = ReplayConfig::builder()
            .max_items(len.max(1))
            .build()
            .expect("a valid replay config");
        let mut reusable = ReusableReceiver::with_replay(rx, replay);
        let upload = Retry::new(policy.clone())
            .classify(async_patterns_reusable_receiver::tonic::is_retryable)
            .on_attempt(|attempt| {
                add(&counters.upload_calls, 1);
                if attempt.error().is_some() {
                    add(&counters.failed_calls, 1);
                }
            })
            .run(&mut reusable, |stream| {
                let mut client = client.clone();
                async move { client.upload(stream).await }
            });
        // At the drain deadline the upload in progress is dropped (its
        // attempt cancelled) and the batch given up on.
        let result = tokio::select! {
            result = upload => result,
            _ = abandon.wait_for(|abandoned| *abandoned) => {
                give_up(&delivery, counters);
                delivery.commit();
                break;
            }
        };
        match result {
            Ok(_) => {
                add(&counters.committed_batches, 1);
                add(&counters.committed_items, len as u64);
                delivery.commit();
            }
            // Not retryable, or the driver gave up: the txn-channel delivers
            // the batch again later, and dead-letters it after 3 attempts.
            Err(_) => delivery.retry_after(Duration::from_millis(20)),
        }
        if *abandon.borrow() {
            break;
        }
    }
    // Given up at the drain deadline: what is left (the stages ahead end
    // once their input is drained) is counted, not uploaded.
    while let Some(delivery) = batches.begin().await {
        give_up(&delivery, counters);
        delivery.commit();
    }
}

/// Counts the events of a batch the upload stage gives up on.
fn give_up(batch: &[Event], counters: &Counters) {
    lock(&counters.abandoned_ids).extend(batch.iter().map(|e| e.id));
}
