//! The pipeline across OS processes (`--queue jetstream`): one producer
//! process, N consumer processes sharing one durable JetStream consumer, and
//! the coordinator — the process the user started — which owns the
//! nats-server, the gRPC upload server and the books.
//!
//! ```text
//!  producer process                      nats-server (JetStream, file store)      consumer processes (N)
//!  ────────────────                      ───────────────────────────────────      ──────────────────────
//!  SensorLibrary (sync) ─callback─▶ bridge    stream DEMO  (demo.events)           txn-jetstream Receiver,
//!        (DropNewest, counted)        │          ▲      │  durable consumer ──▶     begin_batch(64)
//!                                batching        │      │  "uploader"               │ upload (reusable-receiver
//!                                     │          │      │                           │  replay + retry, gRPC)
//!                     txn-jetstream Publisher ───┘      │                           ▼
//!                     (window, dedup id per event)      │                       commit_all / rollback / fail
//!                                                       └── stream DEMO_DEAD (demo.dead) ◀── dead letters
//!
//!  coordinator: starts the server and the processes, kills and replaces a
//!  consumer (--chaos), restarts the server (--restart-server), shows each
//!  process's progress, and at the end balances the books:
//!  produced = uploaded (distinct) + dead-lettered only + dropped by policy.
//! ```
//!
//! Children report on their stdout in lines the coordinator reads:
//! `@progress k=v ...` every [`CHILD_REPORT_EVERY`], and `@final k=v ...`
//! once, before a clean exit.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_patterns_batching::{BatchConfig, BatchExt};
use async_patterns_bridge::{ChannelBuilder, Overflow};
use async_patterns_core::{Jitter, RetryPolicy};
use async_patterns_reusable_receiver::{ReplayConfig, Retry, ReusableReceiver};
use async_patterns_testkit::nats::{NatsServer, spawn_child};
use async_patterns_testkit::proto::Item;
use async_patterns_testkit::proto::upload_client::UploadClient;
use async_patterns_testkit::{Faults, UploadServer};
use async_patterns_txn_jetstream::{
    BatchDelivery, DeadLetter, Delivery, OutgoingMessage, Publisher, Receiver,
};
use futures::StreamExt;

use crate::legacy::{POISON_PREFIX, RawEvent, SensorLibrary};
use crate::pipeline::{DemoConfig, DemoError, Rate};
use crate::stop::Stop;

/// The stream the producer feeds.
pub const STREAM: &str = "DEMO";
/// Its subject.
pub const SUBJECT: &str = "demo.events";
/// The durable consumer every consumer process shares.
pub const CONSUMER: &str = "uploader";
/// The stream of dead letters.
pub const DEAD_STREAM: &str = "DEMO_DEAD";
/// Its subject.
pub const DEAD_SUBJECT: &str = "demo.dead";
/// The header carrying the event's id on every message.
pub const EVENT_ID: &str = "Event-Id";
/// How often a child reports its progress.
pub const CHILD_REPORT_EVERY: Duration = Duration::from_millis(250);
/// The consumer's lease (JetStream's ack wait): how long a killed consumer's
/// messages wait before they are delivered to another.
pub const LEASE: Duration = Duration::from_secs(4);
/// Attempts before a message is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 3;
/// How long the consumers get to drain after the producer is done (or
/// stopped) before they are told to stop.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// Which part a process of the distributed pipeline plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The library, bridge, batching and publisher.
    Producer,
    /// Deliveries, uploads, commits.
    Consumer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

fn fail(what: &str) -> impl FnOnce(&dyn fmt::Display) -> DemoError + '_ {
    move |e| DemoError::new(format!("{what}: {e}"))
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, DemoError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| fail("cannot start a tokio runtime")(&e))
}

async fn connect(url: &str) -> Result<jetstream::Context, DemoError> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| fail("cannot connect to nats-server")(&e))?;
    Ok(jetstream::new(client))
}

/// One `@progress` or `@final` line: `key=value` pairs.
fn report_line(kind: &str, pairs: &[(&str, u64)]) -> String {
    let mut line = format!("@{kind}");
    for (k, v) in pairs {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}

fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// If this process was started as a producer or consumer of `--queue
/// jetstream` (its arguments name a `--role`), runs that role to the end and
/// returns the exit code; otherwise `None`. The demo's `main` calls it first
/// — and so does any other binary that runs [`run_distributed`], which
/// starts the children from its own executable.
pub fn child_process() -> Option<std::process::ExitCode> {
    use std::process::ExitCode;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let role = match value("--role")? {
        "producer" => Role::Producer,
        "consumer" => Role::Consumer,
        other => {
            eprintln!("error: --role: `{other}` is not producer or consumer");
            return Some(ExitCode::from(2));
        }
    };
    let parsed = (|| {
        let mut config = DemoConfig::default();
        let number = |name: &str| value(name).ok_or(format!("--role needs {name}"));
        config.events = number("--events")?
            .parse()
            .map_err(|_| "--events".to_string())?;
        config.seed = number("--seed")?
            .parse()
            .map_err(|_| "--seed".to_string())?;
        config.fault_rate = number("--fault-rate")?
            .parse()
            .map_err(|_| "--fault-rate".to_string())?;
        config.rate = if value("--rate") == Some("max") {
            Rate::Max
        } else {
            Rate::Paced
        };
        let nats = number("--nats")?.to_string();
        let upload: SocketAddr = number("--upload")?
            .parse()
            .map_err(|_| "--upload".to_string())?;
        Ok::<_, String>((config, nats, upload))
    })();
    let (config, nats, upload) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {role}: invalid or missing {e}");
            return Some(ExitCode::from(2));
        }
    };
    let stop = match Stop::on_signals(|_| {}) {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("{role}: cannot install the signal handlers: {e}");
            return Some(ExitCode::from(2));
        }
    };
    let result = match role {
        Role::Producer => producer_main(&config, &nats, &stop),
        Role::Consumer => consumer_main(&config, &nats, upload, &stop),
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{role} {}: {e}", std::process::id());
            ExitCode::from(2)
        }
    })
}

// ───────────────────────────── the producer ─────────────────────────────

/// The producer process: the sync library's callback feeds a bridge
/// channel, batches are published through the txn-jetstream publisher, every
/// event under its id as the de-duplication id. Stops reading on `stop`,
/// then drains and prints `@final`.
///
/// # Errors
///
/// The runtime, the connection or a stage could not start.
pub fn producer_main(config: &DemoConfig, url: &str, stop: &Stop) -> Result<(), DemoError> {
    let rt = runtime(2)?;
    let produced = Arc::new(AtomicU64::new(0));
    let overflow = match config.rate {
        Rate::Paced => Overflow::DropNewest,
        // As fast as the pipeline takes: the library waits for room
        // (`send_blocking`; nothing is rejected).
        Rate::Max => Overflow::Reject,
    };
    let (tx, rx) = ChannelBuilder::<(u64, Vec<u8>)>::new()
        .capacity(4096)
        .overflow(overflow)
        .build()
        .map_err(|e| fail("bridge channel")(&e))?;
    // The legacy library runs on a plain thread of its own, as a sync
    // library would, and reports through its sync callback.
    let library = {
        let produced = Arc::clone(&produced);
        let stop = stop.clone();
        let (events, seed, rate) = (config.events, config.seed, config.rate);
        let poison_rate = config.fault_rate / 1000.0;
        std::thread::Builder::new()
            .name("legacy-library".into())
            .spawn(move || {
                let mut library = SensorLibrary::new(seed, poison_rate, move |raw: RawEvent| {
                    produced.fetch_add(1, Ordering::Relaxed);
                    match rate {
                        Rate::Paced => {
                            let _ = tx.try_send((raw.id, raw.payload));
                        }
                        Rate::Max => {
                            let _ = tx.send_blocking((raw.id, raw.payload));
                        }
                    }
                });
                let mut start = 0;
                while start < events && !stop.is_requested() {
                    let end = (start + 100).min(events);
                    library.read(start..end);
                    start = end;
                    if rate == Rate::Paced {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
            .map_err(|e| fail("cannot start the library thread")(&e))?
    };
    let (published, dropped) = rt.block_on(async {
        let context = connect(url).await?;
        let mut publisher = Publisher::builder(context)
            .window(256)
            .build()
            .map_err(|e| fail("publisher")(&e))?;
        let batch_config = BatchConfig::builder()
            .max_items(256)
            .max_delay(Duration::from_millis(10))
            .build()
            .map_err(|e| fail("batch config")(&e))?;
        let mut batches = rx.batched(batch_config);
        let published = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let reporter = {
            let (produced, published, dropped) = (
                Arc::clone(&produced),
                Arc::clone(&published),
                Arc::clone(&dropped),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CHILD_REPORT_EVERY).await;
                    let p = published.load(Ordering::Relaxed);
                    print_line(&report_line(
                        "progress",
                        &[
                            ("events", produced.load(Ordering::Relaxed)),
                            ("published", p),
                            ("dropped", dropped.load(Ordering::Relaxed)),
                        ],
                    ));
                }
            })
        };
        while let Some(batch) = batches.next().await {
            dropped.store(batches.get_ref().metrics().dropped, Ordering::Relaxed);
            let n = batch.len() as u64;
            let mut messages: Vec<OutgoingMessage> = batch
                .into_vec()
                .into_iter()
                .map(|(id, payload)| {
                    OutgoingMessage::new(SUBJECT, payload)
                        .id(format!("event-{id}"))
                        .header(EVENT_ID, &id.to_string())
                })
                .collect();
            // A failed publish (the server restarting) is tried again with
            // the same de-duplication ids: stored once, never lost.
            loop {
                match publisher.publish_all(messages).await {
                    Ok(()) => break,
                    Err(e) => {
                        eprintln!("producer: publish failed ({e}); trying again");
                        messages = e.into_inner();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            published.fetch_add(n, Ordering::Relaxed);
        }
        dropped.store(batches.get_ref().metrics().dropped, Ordering::Relaxed);
        reporter.abort();
        Ok::<_, DemoError>((published, dropped))
    })?;
    library
        .join()
        .map_err(|_| DemoError::new("the library thread panicked".into()))?;
    print_line(&report_line(
        "final",
        &[
            ("events", produced.load(Ordering::Relaxed)),
            ("published", published.load(Ordering::Relaxed)),
            ("dropped", dropped.load(Ordering::Relaxed)),
        ],
    ));
    Ok(())
}

// ───────────────────────────── a consumer ─────────────────────────────

/// Counters of one consumer process.
#[derive(Debug, Default)]
struct ConsumerCounters {
    committed: AtomicU64,
    upload_calls: AtomicU64,
    failed_calls: AtomicU64,
    rolled_back: AtomicU64,
    failed: AtomicU64,
}

/// A consumer process: takes batches from the shared durable consumer,
/// uploads each through a client-streaming gRPC call fed by a reusable
/// receiver (replayed and retried on faults), commits it once uploaded. A
/// batch the server rejects is split: each event is uploaded alone, and the
/// one rejected is failed (dead-lettered with the server's reason). Stops
/// taking on `stop`, finishes what it holds, and prints `@final`.
///
/// # Errors
///
/// The runtime, the connection or the receiver could not start.
pub fn consumer_main(
    config: &DemoConfig,
    url: &str,
    upload: SocketAddr,
    stop: &Stop,
) -> Result<(), DemoError> {
    let rt = runtime(2)?;
    let counters = Arc::new(ConsumerCounters::default());
    let receiver = rt.block_on(async {
        let context = connect(url).await?;
        receiver_builder(context, config.seed)?
            .build()
            .await
            .map_err(|e| fail("cannot bind the durable consumer")(&e))
    })?;
    let policy =
        crate::pipeline::upload_retry_policy(config.seed).map_err(|e| fail("retry policy")(&e))?;
    let report = rt.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{upload}"))
            .map_err(|e| fail("upload address")(&e))?
            .tcp_nodelay(true);
        let client = UploadClient::new(endpoint.connect_lazy());
        let reporter = {
            let (receiver, counters) = (receiver.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CHILD_REPORT_EVERY).await;
                    print_line(&consumer_line("progress", &receiver, &counters, None));
                }
            })
        };
        // Stop taking new batches when asked; what was queued is still
        // begun and finished.
        let closer = {
            let (receiver, stop) = (receiver.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_requested() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                receiver.close();
            })
        };
        loop {
            match receiver.begin_batch(64).await {
                Ok(Some(batch)) => {
                    upload_batch(batch, &client, &policy, &counters).await;
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("consumer {}: {e}; trying again", std::process::id());
                    if stop.is_requested() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let shutdown = receiver.shutdown_async(Duration::from_secs(5)).await;
        closer.abort();
        reporter.abort();
        Ok::<_, DemoError>(shutdown)
    })?;
    print_line(&consumer_line(
        "final",
        &receiver,
        &counters,
        Some(report.handed_back + report.returned),
    ));
    Ok(())
}

fn consumer_line(
    kind: &str,
    receiver: &Receiver,
    counters: &ConsumerCounters,
    handed_back: Option<u64>,
) -> String {
    let m = receiver.metrics();
    let mut pairs = vec![
        ("events", counters.committed.load(Ordering::Relaxed)),
        ("in_flight", m.in_flight + m.queued),
        ("redelivered", m.redelivered),
        ("dead_lettered", m.dead_lettered),
        (
            "upload_calls",
            counters.upload_calls.load(Ordering::Relaxed),
        ),
        (
            "failed_calls",
            counters.failed_calls.load(Ordering::Relaxed),
        ),
        ("rolled_back", counters.rolled_back.load(Ordering::Relaxed)),
    ];
    if let Some(n) = handed_back {
        pairs.push(("handed_back", n));
    }
    report_line(kind, &pairs)
}

/// The receiver every process builds the same way: the coordinator to
/// create the durable consumer, the consumers to bind it.
fn receiver_builder(
    context: jetstream::Context,
    seed: u64,
) -> Result<async_patterns_txn_jetstream::ReceiverBuilder, DemoError> {
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
        .jitter(Jitter::Proportional(0.5))
        .seed(seed)
        .build()
        .map_err(|e| fail("retry policy")(&e))?;
    Ok(Receiver::builder(context)
        .stream(STREAM)
        .consumer(CONSUMER)
        .create_if_missing(true)
        .lease(LEASE)
        .max_in_flight(512)
        .prefetch(256)
        .max_attempts(MAX_ATTEMPTS)
        .retry_policy(policy)
        .dead_letter_subject(DEAD_SUBJECT))
}

fn event_id(delivery: &Delivery) -> u64 {
    delivery
        .headers()
        .and_then(|h| h.get(EVENT_ID))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(u64::MAX)
}

/// One upload call of `deliveries`' events, retried by the reusable
/// receiver's driver from its replay buffer.
async fn upload(
    deliveries: &[Delivery],
    client: &UploadClient<tonic::transport::Channel>,
    policy: &RetryPolicy,
    counters: &ConsumerCounters,
) -> Result<(), tonic::Status> {
    let len = deliveries.len().max(1);
    let (tx, rx) = tokio::sync::mpsc::channel(len);
    for delivery in deliveries {
        let item = Item {
            id: event_id(delivery),
            payload: delivery.payload().to_vec(),
        };
        tx.try_send(item)
            .expect("the channel has room for the whole batch");
    }
    drop(tx);
    let replay = ReplayConfig::builder()
        .max_items(len)
        .build()
        .expect("a valid replay config");
    let mut reusable = ReusableReceiver::with_replay(rx, replay);
    Retry::new(policy.clone())
        .classify(async_patterns_reusable_receiver::tonic::is_retryable)
        .on_attempt(|attempt| {
            counters.upload_calls.fetch_add(1, Ordering::Relaxed);
            if attempt.error().is_some() {
                counters.failed_calls.fetch_add(1, Ordering::Relaxed);
            }
        })
        .run(&mut reusable, |stream| {
            let mut client = client.clone();
            async move { client.upload(stream).await }
        })
        .await
        .map(|_| ())
        .map_err(|e| e.error().clone())
}

async fn upload_batch(
    batch: BatchDelivery,
    client: &UploadClient<tonic::transport::Channel>,
    policy: &RetryPolicy,
    counters: &ConsumerCounters,
) {
    let n = batch.len() as u64;
    match upload(&batch, client, policy, counters).await {
        Ok(()) => {
            if batch.commit_all().await.is_ok() {
                counters.committed.fetch_add(n, Ordering::Relaxed);
            }
            // A commit the server did not confirm: the messages come back
            // when their lease runs out, and are uploaded again (counted as
            // duplicates, never lost).
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            // One of them is poison: upload each alone; fail the rejected.
            for delivery in batch.into_deliveries() {
                match upload(std::slice::from_ref(&delivery), client, policy, counters).await {
                    Ok(()) => {
                        if delivery.commit().await.is_ok() {
                            counters.committed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = delivery
                            .fail(format!(
                                "rejected by the upload server: {}",
                                status.message()
                            ))
                            .await;
                    }
                    Err(_) => {
                        counters.rolled_back.fetch_add(1, Ordering::Relaxed);
                        let _ = delivery.rollback().await;
                    }
                }
            }
        }
        Err(_) => {
            // The driver gave up: nak with the policy's backoff; after
            // MAX_ATTEMPTS the receiver dead-letters them.
            counters.rolled_back.fetch_add(n, Ordering::Relaxed);
            let _ = batch.rollback().await;
        }
    }
}

// ───────────────────────────── the coordinator ─────────────────────────────

/// What the coordinator knows of one child process.
#[derive(Debug, Clone)]
pub struct ProcessProgress {
    /// Its process id.
    pub pid: u32,
    /// Producer or consumer.
    pub role: Role,
    /// `producer`, `consumer-1`, ...
    pub name: String,
    /// Events produced (the producer) or committed (a consumer).
    pub events: u64,
    /// Published and not yet confirmed (producer: produced − published −
    /// dropped), or begun and not yet ended plus queued (consumer).
    pub in_flight: u64,
    /// Whether it is still running.
    pub alive: bool,
    /// Killed by the demo's chaos (SIGKILL).
    pub killed: bool,
    /// Its last report, key by key.
    pub last: BTreeMap<String, u64>,
    /// Whether its last report was its `@final` one.
    pub finished: bool,
}

/// A live view of the distributed pipeline.
#[derive(Debug, Clone)]
pub struct DistributedProgress {
    /// Since the pipeline started.
    pub elapsed: Duration,
    /// Every process started so far.
    pub processes: Vec<ProcessProgress>,
}

/// The books of a distributed run.
#[derive(Debug, Clone)]
pub struct DistributedReport {
    /// The configuration that ran.
    pub config: DemoConfig,
    /// Wall time.
    pub elapsed: Duration,
    /// Events the library produced.
    pub produced: u64,
    /// Events the producer's bridge dropped by its overflow policy.
    pub dropped_by_policy: u64,
    /// Events published and confirmed by the stream.
    pub published: u64,
    /// Messages the stream holds.
    pub stored: u64,
    /// Messages the stream saw acknowledged: stored − dead-lettered, once the
    /// consumers drained it (distinct messages, however often delivered).
    pub committed: u64,
    /// Confirmed commits, summed over the consumers' last reports (a killed
    /// consumer's last report misses its last commits).
    pub commits_reported: u64,
    /// Distinct event ids the upload server received.
    pub uploaded_unique: u64,
    /// Receipts beyond the first of an id.
    pub duplicates: u64,
    /// Deliveries beyond a message's first, summed over the consumers.
    pub redelivered: u64,
    /// Upload calls, and those that failed.
    pub upload_calls: u64,
    /// Upload calls that failed and were retried.
    pub failed_calls: u64,
    /// Events in the dead-letter stream.
    pub dead_lettered: u64,
    /// Dead-lettered events the server never received.
    pub dead_lettered_only: u64,
    /// Dead letters by reason.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Messages still in the stream, undelivered or unacknowledged, when the
    /// consumers were stopped (0 unless the drain deadline passed).
    pub left_in_stream: u64,
    /// Events neither uploaded, dead-lettered, dropped nor left in the stream.
    pub lost: i64,
    /// Consumer processes killed with SIGKILL (and replaced).
    pub consumers_killed: u64,
    /// Times the server was restarted.
    pub server_restarts: u64,
    /// Consumer processes started in all (replacements included).
    pub consumers_started: u64,
    /// Stopped early by a signal.
    pub stopped_early: bool,
    /// Events per second, end to end (uploaded distinct + dead-lettered
    /// only, over the wall time).
    pub events_per_sec: f64,
    /// Events per second the producer published, over its running time.
    pub published_per_sec: f64,
}

impl DistributedReport {
    /// Whether every produced event is accounted for.
    pub fn balanced(&self) -> bool {
        self.lost == 0
    }
}

impl fmt::Display for DistributedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== summary: jetstream, {} consumer processes ({:.1?}) ==",
            self.config.consumers, self.elapsed
        )?;
        if self.stopped_early {
            writeln!(
                f,
                "stopped early  by a signal: the producer stopped after {} of {} events, and the consumers drained the stream",
                self.produced, self.config.events
            )?;
        }
        writeln!(
            f,
            "produced       {:>8}  events, by the sync legacy library's callback (producer process)",
            self.produced
        )?;
        writeln!(
            f,
            "dropped        {:>8}  by the bridge's DropNewest overflow policy (counted)",
            self.dropped_by_policy
        )?;
        writeln!(
            f,
            "published      {:>8}  confirmed by the stream, each under a de-duplication id ({} stored; {:.0} events/s)",
            self.published, self.stored, self.published_per_sec
        )?;
        writeln!(
            f,
            "upload calls   {:>8}  ({} failed and retried from the replay buffer)",
            self.upload_calls, self.failed_calls
        )?;
        writeln!(
            f,
            "committed      {:>8}  distinct messages acknowledged (stored − dead-lettered); the consumers reported {} confirmed commits, {} redeliveries",
            self.committed, self.commits_reported, self.redelivered
        )?;
        writeln!(
            f,
            "uploaded       {:>8}  distinct events, {} duplicates (uploaded, then redelivered: not committed before a kill, a restart or an upload fault)",
            self.uploaded_unique, self.duplicates
        )?;
        let reasons: Vec<String> = self
            .dead_letter_reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        writeln!(
            f,
            "dead-lettered  {:>8}  events in {DEAD_STREAM} ({} never reached the server){}",
            self.dead_lettered,
            self.dead_lettered_only,
            if reasons.is_empty() {
                String::new()
            } else {
                format!("; reasons: {}", reasons.join(", "))
            }
        )?;
        if self.left_in_stream > 0 {
            writeln!(
                f,
                "left in stream {:>8}  messages the consumers had not finished at the drain deadline (durable, not lost)",
                self.left_in_stream
            )?;
        }
        writeln!(
            f,
            "lost           {:>8}  = produced − uploaded − dead-lettered only − dropped{}",
            self.lost,
            if self.left_in_stream > 0 {
                " − left in stream"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "chaos          {} consumer process(es) killed with SIGKILL and replaced ({} started in all), {} server restart(s)",
            self.consumers_killed, self.consumers_started, self.server_restarts
        )?;
        writeln!(
            f,
            "throughput     {:.0} events/s end to end",
            self.events_per_sec
        )?;
        if self.balanced() {
            write!(
                f,
                "books balance: yes — every event uploaded, dead-lettered or counted as dropped; lost = 0"
            )
        } else {
            write!(f, "books balance: NO — {} events lost", self.lost)
        }
    }
}

/// A child process and what it reported.
struct Proc {
    child: Child,
    state: Arc<Mutex<ProcessProgress>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_role(
    role: Role,
    name: String,
    config: &DemoConfig,
    url: &str,
    upload: SocketAddr,
) -> Result<Proc, DemoError> {
    let exe = std::env::current_exe().map_err(|e| fail("cannot find the demo binary")(&e))?;
    let mut command = Command::new(exe);
    command
        .args(["--role", &role.to_string(), "--nats", url])
        .args(["--upload", &upload.to_string()])
        .args(["--events", &config.events.to_string()])
        .args(["--seed", &config.seed.to_string()])
        .args(["--fault-rate", &config.fault_rate.to_string()])
        .args([
            "--rate",
            if config.rate == Rate::Max {
                "max"
            } else {
                "paced"
            },
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Its own process group: a Ctrl-C at the terminal reaches the
    // coordinator only, which stops the children in order.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = spawn_child(command).map_err(|e| fail("cannot start a child process")(&e))?;
    let state = Arc::new(Mutex::new(ProcessProgress {
        pid: child.id(),
        role,
        name,
        events: 0,
        in_flight: 0,
        alive: true,
        killed: false,
        last: BTreeMap::new(),
        finished: false,
    }));
    let stdout = child.stdout.take().expect("piped");
    let reader = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (finished, rest) = if let Some(rest) = line.strip_prefix("@final") {
                    (true, rest)
                } else if let Some(rest) = line.strip_prefix("@progress") {
                    (false, rest)
                } else {
                    println!("{line}");
                    continue;
                };
                let values: BTreeMap<String, u64> = rest
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                    .collect();
                let mut s = lock(&state);
                s.events = values.get("events").copied().unwrap_or(s.events);
                s.in_flight = match s.role {
                    Role::Producer => values
                        .get("events")
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(values.get("published").copied().unwrap_or(0))
                        .saturating_sub(values.get("dropped").copied().unwrap_or(0)),
                    Role::Consumer => values.get("in_flight").copied().unwrap_or(0),
                };
                s.last = values;
                s.finished |= finished;
            }
        })
    };
    Ok(Proc {
        child,
        state,
        reader: Some(reader),
    })
}

impl Proc {
    fn alive(&mut self) -> bool {
        let alive = matches!(self.child.try_wait(), Ok(None));
        lock(&self.state).alive = alive;
        alive
    }

    fn signal(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: `kill` has no memory-safety preconditions; the child
            // is ours and not yet reaped (we hold its `Child`), so the pid
            // names it.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut s = lock(&self.state);
        s.alive = false;
        s.killed = true;
    }

    /// Waits for the process to exit, killing it after `limit`; then for its
    /// stdout to be read to the end.
    fn wait(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.alive() {
            if Instant::now() >= deadline {
                eprintln!(
                    "demo: {} did not exit in time; killing it",
                    lock(&self.state).name
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        lock(&self.state).alive = false;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    fn progress(&self) -> ProcessProgress {
        lock(&self.state).clone()
    }
}

/// Runs the pipeline across processes against a nats-server it starts,
/// calling `on_progress` every half second, and returns the books.
///
/// # Errors
///
/// The server (missing binary: the message says how to install it), a
/// process or a stage could not start.
pub fn run_distributed(
    config: &DemoConfig,
    stop: &Stop,
    mut on_progress: impl FnMut(&DistributedProgress),
) -> Result<DistributedReport, DemoError> {
    if config.events == 0 {
        return Err(DemoError::new("--events must be at least 1".into()));
    }
    if config.consumers == 0 {
        return Err(DemoError::new("--consumers must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&config.fault_rate) {
        return Err(DemoError::new(format!(
            "--fault-rate must be between 0 and 1, got {}",
            config.fault_rate
        )));
    }
    let started = Instant::now();
    let mut server = NatsServer::start().map_err(|e| fail("cannot start nats-server")(&e))?;
    let url = server.url();
    let rt = runtime(2)?;
    let context = rt.block_on(async {
        let context = connect(&url).await?;
        for (name, subject) in [(STREAM, SUBJECT), (DEAD_STREAM, DEAD_SUBJECT)] {
            context
                .create_stream(stream::Config {
                    name: name.into(),
                    subjects: vec![subject.into()],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| fail("cannot create a stream")(&e))?;
        }
        // The durable consumer, created once with the settings every
        // consumer process binds with.
        let receiver = receiver_builder(context.clone(), config.seed)?
            .build()
            .await
            .map_err(|e| fail("cannot create the durable consumer")(&e))?;
        receiver.shutdown_async(Duration::from_secs(1)).await;
        Ok::<_, DemoError>(context)
    })?;
    let faults = if config.fault_rate > 0.0 {
        Faults::none()
            .random_calls(config.fault_rate, config.seed)
            .reject_payload_prefix(POISON_PREFIX)
    } else {
        Faults::none()
    };
    let upload_server = rt
        .block_on(UploadServer::start(faults))
        .map_err(|e| fail("cannot start the gRPC server")(&e))?;
    let upload = upload_server.addr();

    let mut producer = spawn_role(Role::Producer, "producer".into(), config, &url, upload)?;
    let mut consumers = Vec::new();
    for k in 1..=config.consumers {
        consumers.push(spawn_role(
            Role::Consumer,
            format!("consumer-{k}"),
            config,
            &url,
            upload,
        )?);
    }
    let mut started_consumers = config.consumers as u64;
    let mut killed = 0u64;
    let mut restarts = 0u64;
    let mut producer_done_at: Option<Instant> = None;
    let mut stop_sent = false;
    let show = |procs: &[&Proc]| DistributedProgress {
        elapsed: started.elapsed(),
        processes: procs.iter().map(|p| p.progress()).collect(),
    };
    let mut last_show = Instant::now();
    let committed_now =
        |consumers: &[Proc]| -> u64 { consumers.iter().map(|c| lock(&c.state).events).sum() };
    let mut left_in_stream = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if stop.is_requested() && !stop_sent {
            stop_sent = true;
            producer.signal(libc::SIGTERM);
        }
        if producer_done_at.is_none() && !producer.alive() {
            producer_done_at = Some(Instant::now());
        }
        // Chaos: once a third of the events are committed, SIGKILL a
        // consumer and start a replacement; at two thirds, restart the
        // server on the same store.
        let committed = committed_now(&consumers);
        if config.chaos
            && killed == 0
            && committed >= config.events / 3
            && let Some(victim) = consumers.iter_mut().find(|c| lock(&c.state).alive)
        {
            let name = lock(&victim.state).name.clone();
            victim.sigkill();
            killed += 1;
            started_consumers += 1;
            println!("\nchaos: {name} killed with SIGKILL; starting consumer-{started_consumers}");
            let fresh = spawn_role(
                Role::Consumer,
                format!("consumer-{started_consumers}"),
                config,
                &url,
                upload,
            )?;
            consumers.push(fresh);
        }
        if config.restart_server && restarts == 0 && committed >= config.events * 2 / 3 {
            println!("\nchaos: restarting nats-server on the same store");
            server
                .restart()
                .map_err(|e| fail("cannot restart nats-server")(&e))?;
            restarts += 1;
        }
        if last_show.elapsed() >= crate::pipeline::PROGRESS_EVERY {
            last_show = Instant::now();
            let all: Vec<&Proc> = std::iter::once(&producer).chain(consumers.iter()).collect();
            on_progress(&show(&all));
        }
        if let Some(done) = producer_done_at {
            let (pending, ack_pending) = rt.block_on(async {
                let Ok(stream) = context.get_stream(STREAM).await else {
                    return (u64::MAX, u64::MAX);
                };
                match stream.consumer_info(CONSUMER).await {
                    Ok(info) => (info.num_pending, info.num_ack_pending as u64),
                    Err(_) => (u64::MAX, u64::MAX),
                }
            });
            if pending == 0 && ack_pending == 0 {
                break;
            }
            if done.elapsed() >= DRAIN_DEADLINE {
                left_in_stream = pending.saturating_add(ack_pending);
                eprintln!(
                    "\ndemo: the drain deadline passed with {left_in_stream} messages in the stream"
                );
                break;
            }
        }
    }
    // Stop the consumers: they finish what they hold and print @final.
    for c in consumers.iter_mut() {
        if c.alive() {
            c.signal(libc::SIGTERM);
        }
    }
    producer.wait(Duration::from_secs(30));
    for c in consumers.iter_mut() {
        c.wait(Duration::from_secs(30));
    }
    let all: Vec<&Proc> = std::iter::once(&producer).chain(consumers.iter()).collect();
    on_progress(&show(&all));

    let p = producer.progress();
    let produced = p.last.get("events").copied().unwrap_or(0);
    let published = p.last.get("published").copied().unwrap_or(0);
    let dropped = p.last.get("dropped").copied().unwrap_or(0);
    let sum = |key: &str| -> u64 {
        consumers
            .iter()
            .map(|c| lock(&c.state).last.get(key).copied().unwrap_or(0))
            .sum()
    };
    let (stored, dead_letters) = rt.block_on(async {
        let stored = match context.get_stream(STREAM).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        Ok::<_, DemoError>((stored, read_dead_letters(&context).await?))
    })?;
    let received = upload_server.received_ids();
    let uploaded: HashSet<u64> = received.iter().copied().collect();
    let mut dead = HashSet::new();
    let mut reasons = BTreeMap::new();
    for letter in &dead_letters {
        let id = letter
            .headers()
            .get(EVENT_ID)
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        dead.insert(id);
        *reasons
            .entry(letter.reason().as_label().to_string())
            .or_insert(0) += 1;
    }
    let dead_only = dead.difference(&uploaded).count() as u64;
    let lost = produced as i64
        - uploaded.len() as i64
        - dead_only as i64
        - dropped as i64
        - left_in_stream as i64;
    let elapsed = started.elapsed();
    let producer_time = producer_done_at.map_or(elapsed, |d| d.duration_since(started));
    drop(upload_server);
    drop(server);
    Ok(DistributedReport {
        config: config.clone(),
        elapsed,
        produced,
        dropped_by_policy: dropped,
        published,
        stored,
        committed: stored.saturating_sub(dead.len() as u64 + left_in_stream),
        commits_reported: sum("events"),
        uploaded_unique: uploaded.len() as u64,
        duplicates: (received.len() - uploaded.len()) as u64,
        redelivered: sum("redelivered"),
        upload_calls: sum("upload_calls"),
        failed_calls: sum("failed_calls"),
        dead_lettered: dead.len() as u64,
        dead_lettered_only: dead_only,
        dead_letter_reasons: reasons,
        left_in_stream,
        lost,
        consumers_killed: killed,
        server_restarts: restarts,
        consumers_started: started_consumers,
        stopped_early: stop.is_requested() && produced < config.events,
        events_per_sec: (uploaded.len() as u64 + dead_only) as f64 / elapsed.as_secs_f64(),
        published_per_sec: published as f64 / producer_time.as_secs_f64(),
    })
}

/// Every dead letter in the dead-letter stream.
async fn read_dead_letters(context: &jetstream::Context) -> Result<Vec<DeadLetter>, DemoError> {
    let stream = context
        .get_stream(DEAD_STREAM)
        .await
        .map_err(|e| fail("dead-letter stream")(&e))?;
    let mut stream = stream;
    let last = stream
        .info()
        .await
        .map_err(|e| fail("dead-letter stream")(&e))?
        .state
        .last_sequence;
    let mut out = Vec::new();
    for sequence in 1..=last {
        if let Ok(raw) = stream.get_raw_message(sequence).await
            && let Ok(letter) = DeadLetter::from_stream_message(&raw)
        {
            out.push(letter);
        }
    }
    Ok(out)
}
