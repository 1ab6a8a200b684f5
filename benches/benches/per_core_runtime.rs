//! `per_core_runtime`: spawning onto a `PerCoreRuntime` from outside the pool
//! beside `tokio::spawn` on a multi-thread runtime and tokio-util's
//! `LocalPoolHandle::spawn_pinned` (same number of workers); a message hop
//! between two workers beside the seed's recipe (two current-thread runtimes
//! on two threads talking through tokio mpsc), with and without spinning
//! before parking, and what spinning costs in CPU; a ping-pong between two
//! workers beside the same on tokio's multi-thread runtime; and the TCP echo
//! server of the crate's example on both runtimes.
//!
//! Targets are judged on paired rounds (`paired` / `record_paired`): ours
//! and the anchor back to back, alternating which goes first.

#[path = "../../crates/per-core-runtime/examples/echo_server/echo.rs"]
mod echo;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use async_patterns_benches::{
    Better, MIN_ROUNDS, Metric, Paired, paired, record_metric, record_paired, test_mode, time,
};
// Both runtimes have a `JoinHandle`: ours under an alias.
use async_patterns_per_core_runtime::{
    CpuBudget, JoinHandle as CoreJoinHandle, PerCoreRuntime, RuntimeMetrics,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;
use tokio_util::task::LocalPoolHandle;

const TASKS: usize = 500_000;
const ROUND_TRIPS: usize = 2_000;
const CONNECTIONS: usize = 32;
const MESSAGES: usize = 100;
const MESSAGE_SIZE: usize = 64;
/// The paired rounds of each target (the minimum is `MIN_ROUNDS`).
const ROUNDS: usize = 9;
/// How long a worker spins before parking in `ours:spin`.
const SPIN: Duration = Duration::from_micros(50);

fn workers() -> usize {
    CpuBudget::detect().workers()
}

fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn per_core(workers: usize, spin: Duration) -> PerCoreRuntime {
    PerCoreRuntime::builder()
        .workers(workers)
        .spin_before_park(spin)
        .build()
        .expect("per-core runtime")
}

/// One round of ours: spawn `TASKS` trivial tasks round-robin from this
/// thread, then join every handle.
fn spawn_join_ours(rt: &PerCoreRuntime) -> usize {
    let handles: Vec<CoreJoinHandle<usize>> = (0..TASKS)
        .map(|i| rt.spawn(move || async move { i }).expect("running"))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .sum::<usize>()
}

fn spawn_join_tokio(rt: &tokio::runtime::Runtime) -> usize {
    let handles: Vec<_> = (0..TASKS).map(|i| rt.spawn(async move { i })).collect();
    rt.block_on(join_all(handles))
}

fn spawn_join_local_pool(pool: &LocalPoolHandle, rt: &tokio::runtime::Runtime) -> usize {
    let handles: Vec<_> = (0..TASKS)
        .map(|i| pool.spawn_pinned(move || async move { i }))
        .collect();
    rt.block_on(join_all(handles))
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<usize>>) -> usize {
    let mut sum = 0;
    for h in handles {
        sum += h.await.expect("no panic");
    }
    sum
}

fn spawn_join(c: &mut Criterion) {
    const GROUP: &str = "per_core_runtime/spawn_join_500k";
    let workers = workers();
    let rt = per_core(workers, Duration::ZERO);
    let tokio_rt = multi_thread(workers);
    let pool = LocalPoolHandle::new(workers);

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("ours", |b| b.iter(|| spawn_join_ours(&rt)));
    group.bench_function("tokio::spawn", |b| b.iter(|| spawn_join_tokio(&tokio_rt)));
    group.bench_function("LocalPoolHandle::spawn_pinned", |b| {
        b.iter(|| spawn_join_local_pool(&pool, &tokio_rt))
    });
    group.finish();

    let vs_tokio = paired(
        ROUNDS,
        || time(|| spawn_join_ours(&rt)),
        || time(|| spawn_join_tokio(&tokio_rt)),
    );
    record_paired(GROUP, "ours", "tokio::spawn", &vs_tokio);
    let vs_pool = paired(
        ROUNDS,
        || time(|| spawn_join_ours(&rt)),
        || time(|| spawn_join_local_pool(&pool, &tokio_rt)),
    );
    record_paired(GROUP, "ours", "LocalPoolHandle::spawn_pinned", &vs_pool);
}

/// Sends `n` pings and waits for each pong; returns each round trip.
async fn ping(tx: mpsc::Sender<()>, mut rx: mpsc::Receiver<()>, n: usize) -> Vec<Duration> {
    let mut round_trips = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        tx.send(()).await.expect("pong alive");
        rx.recv().await.expect("pong alive");
        round_trips.push(start.elapsed());
    }
    round_trips
}

async fn pong(mut rx: mpsc::Receiver<()>, tx: mpsc::Sender<()>) {
    while rx.recv().await.is_some() {
        if tx.send(()).await.is_err() {
            break;
        }
    }
}

/// One exchange of `n` round trips between worker 0 and worker `other`.
fn ping_pong_ours(rt: &PerCoreRuntime, other: usize, n: usize) -> Vec<Duration> {
    let (ping_tx, ping_rx) = mpsc::channel(1);
    let (pong_tx, pong_rx) = mpsc::channel(1);
    let ponger = rt
        .spawn_on(other, move || pong(ping_rx, pong_tx))
        .expect("running");
    let round_trips = rt
        .block_on(0, move || ping(ping_tx, pong_rx, n))
        .expect("no panic");
    ponger.join().expect("no panic");
    round_trips
}

/// The same on tokio's multi-thread runtime, which places the two tasks
/// itself (it may run both on one worker).
fn ping_pong_tokio(rt: &tokio::runtime::Runtime, n: usize) -> Vec<Duration> {
    let (ping_tx, ping_rx) = mpsc::channel(1);
    let (pong_tx, pong_rx) = mpsc::channel(1);
    let ponger = rt.spawn(pong(ping_rx, pong_tx));
    let pinger = rt.spawn(ping(ping_tx, pong_rx, n));
    rt.block_on(async {
        let round_trips = pinger.await.expect("no panic");
        ponger.await.expect("no panic");
        round_trips
    })
}

/// The seed's recipe: one thread per core, each driving its own
/// current-thread runtime, work handed to it through its runtime's handle.
struct SeedRuntimes {
    handles: Vec<tokio::runtime::Handle>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SeedRuntimes {
    fn new(n: usize) -> SeedRuntimes {
        let mut seed = SeedRuntimes {
            handles: Vec::new(),
            stop: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n {
            let (handle_tx, handle_rx) = std_mpsc::channel();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("seed-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    handle_tx.send(rt.handle().clone()).expect("bench alive");
                    let _ = rt.block_on(stop_rx);
                })
                .expect("thread");
            seed.handles
                .push(handle_rx.recv().expect("runtime started"));
            seed.stop.push(stop_tx);
            seed.threads.push(thread);
        }
        seed
    }

    /// `n` round trips between a task on runtime 0 and one on runtime 1.
    fn ping_pong(&self, n: usize) -> Vec<Duration> {
        let (ping_tx, ping_rx) = mpsc::channel(1);
        let (pong_tx, pong_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = std_mpsc::channel();
        self.handles[1].spawn(pong(ping_rx, pong_tx));
        self.handles[0].spawn(async move {
            let _ = done_tx.send(ping(ping_tx, pong_rx, n).await);
        });
        done_rx.recv().expect("no panic")
    }
}

impl Drop for SeedRuntimes {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn percentile(latencies: &mut [Duration], p: f64) -> f64 {
    echo::percentile(latencies, p).as_secs_f64()
}

/// Paired rounds judged on two costs of the same runs (the p50 and p99 of
/// one set of round trips): ours and the anchor back to back, alternating
/// which goes first, as `paired` does.
fn paired_percentiles(
    rounds: usize,
    mut ours: impl FnMut() -> Vec<Duration>,
    mut anchor: impl FnMut() -> Vec<Duration>,
) -> (Paired, Paired) {
    let rounds = if test_mode() {
        1
    } else {
        rounds.max(MIN_ROUNDS)
    };
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut o, mut a) = if round % 2 == 0 {
            let o = ours();
            (o, anchor())
        } else {
            let a = anchor();
            (ours(), a)
        };
        p50.push(percentile(&mut a, 50.0) / percentile(&mut o, 50.0));
        p99.push(percentile(&mut a, 99.0) / percentile(&mut o, 99.0));
    }
    (Paired::from_ratios(p50), Paired::from_ratios(p99))
}

const SEED: &str = "current-thread runtimes + mpsc";

fn hop(c: &mut Criterion) {
    let n = if test_mode() { 100 } else { 5_000 };
    let plain = per_core(2, Duration::ZERO);
    let spinning = per_core(2, SPIN);
    // Pinned to two CPUs of their own, when the mask has two.
    let pinned = (CpuBudget::detect().cpus().len() >= 2).then(|| {
        PerCoreRuntime::builder()
            .workers(2)
            .pin(true)
            .spin_before_park(SPIN)
            .build()
            .expect("per-core runtime")
    });
    let seed = SeedRuntimes::new(2);
    let mut ours: Vec<(&str, &PerCoreRuntime)> = vec![("ours:spin", &spinning), ("ours", &plain)];
    if let Some(pinned) = &pinned {
        ours.insert(0, ("ours:pinned+spin", pinned));
    }

    let mut group = c.benchmark_group("per_core_runtime/hop");
    group.throughput(Throughput::Elements(ROUND_TRIPS as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &(name, rt) in &ours {
        group.bench_function(name, |b| {
            b.iter(|| black_box(ping_pong_ours(rt, 1, ROUND_TRIPS)))
        });
    }
    group.bench_function(SEED, |b| b.iter(|| black_box(seed.ping_pong(ROUND_TRIPS))));
    group.finish();

    for &(name, rt) in &ours {
        let (p50, p99) =
            paired_percentiles(ROUNDS, || ping_pong_ours(rt, 1, n), || seed.ping_pong(n));
        record_paired("per_core_runtime/hop_p50", name, SEED, &p50);
        record_paired("per_core_runtime/hop_p99", name, SEED, &p99);
    }
    for &(name, rt) in &ours {
        let mut latencies = ping_pong_ours(rt, 1, n);
        record_latencies("per_core_runtime/hop", name, "round trip", &mut latencies);
    }
    let mut latencies = seed.ping_pong(n);
    record_latencies("per_core_runtime/hop", SEED, "round trip", &mut latencies);
    drop(seed);

    spin_cost(&ours);
}

/// The CPU time of the calling thread, in seconds: the first field of
/// `/proc/thread-self/schedstat`, the scheduler's own count of the
/// nanoseconds the thread ran (`utime`/`stime` in `stat` are sampled at the
/// timer tick and miss a thread that runs in short bursts).
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Each worker's CPU time over `window`, while a task on each is woken by a
/// 1 ms interval timer, as a fraction of one CPU.
fn cpu_while_woken_every_ms(rt: &PerCoreRuntime, window: Duration) -> f64 {
    let handles: Vec<CoreJoinHandle<f64>> = rt
        .spawn_on_all(move |_| async move {
            let before = thread_cpu_secs();
            let end = tokio::time::Instant::now() + window;
            let mut every_ms = tokio::time::interval(Duration::from_millis(1));
            while tokio::time::Instant::now() < end {
                every_ms.tick().await;
            }
            thread_cpu_secs() - before
        })
        .expect("running");
    mean_share(handles, window)
}

/// Each worker's CPU time over a ping-pong between workers 0 and 1 that
/// lasts `window`, as a fraction of one CPU.
fn cpu_during_ping_pong(rt: &PerCoreRuntime, window: Duration) -> f64 {
    let (ping_tx, mut ping_rx) = mpsc::channel::<()>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<()>(1);
    let ponger = rt
        .spawn_on(1, move || async move {
            let before = thread_cpu_secs();
            while ping_rx.recv().await.is_some() {
                if pong_tx.send(()).await.is_err() {
                    break;
                }
            }
            thread_cpu_secs() - before
        })
        .expect("running");
    let pinger = rt
        .spawn_on(0, move || async move {
            let before = thread_cpu_secs();
            let end = Instant::now() + window;
            while Instant::now() < end {
                ping_tx.send(()).await.expect("pong alive");
                pong_rx.recv().await.expect("pong alive");
            }
            drop(ping_tx);
            thread_cpu_secs() - before
        })
        .expect("running");
    mean_share(vec![pinger, ponger], window)
}

fn mean_share(handles: Vec<CoreJoinHandle<f64>>, window: Duration) -> f64 {
    let secs: Vec<f64> = handles
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .collect();
    secs.iter().sum::<f64>() / secs.len() as f64 / window.as_secs_f64()
}

/// What spinning costs in CPU, for each of `ours`: a worker woken every
/// millisecond (a timer; the adaptive spin should soon stop spinning), and a
/// worker in a ping-pong with another (spinning between every two messages,
/// the case it is for); and the spin time the runtime itself counts.
fn spin_cost(ours: &[(&str, &PerCoreRuntime)]) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let window = if test_mode() {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(2)
    };
    for &(implementation, rt) in ours {
        let per_second =
            |spun: Duration| spun.as_secs_f64() / rt.workers() as f64 / window.as_secs_f64() * 1e3;
        let spin_before = total_spin(&rt.metrics());
        let timer = cpu_while_woken_every_ms(rt, window);
        let spun_timer = total_spin(&rt.metrics()) - spin_before;
        let spin_before = total_spin(&rt.metrics());
        let ping_pong = cpu_during_ping_pong(rt, window);
        let spun_ping_pong = total_spin(&rt.metrics()) - spin_before;
        for (metric, value, unit) in [
            ("CPU of a worker woken every 1 ms", timer * 100.0, "%"),
            (
                "spin_time of a worker woken every 1 ms",
                per_second(spun_timer),
                "ms/s",
            ),
            ("CPU of a worker in a ping-pong", ping_pong * 100.0, "%"),
            (
                "spin_time of a worker in a ping-pong",
                per_second(spun_ping_pong),
                "ms/s",
            ),
        ] {
            record_metric(Metric {
                group: "per_core_runtime/spin_cost",
                implementation,
                metric,
                value,
                unit,
                better: Better::Lower,
            });
        }
    }
}

fn total_spin(metrics: &RuntimeMetrics) -> Duration {
    metrics.workers.iter().map(|w| w.spin_time).sum()
}

fn ping_pong(c: &mut Criterion) {
    let workers = workers().max(2);
    let ours = per_core(workers, Duration::ZERO);
    let tokio_rt = multi_thread(workers);

    let mut group = c.benchmark_group("per_core_runtime/ping_pong");
    group.throughput(Throughput::Elements(ROUND_TRIPS as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ping_pong_ours(&ours, 1, ROUND_TRIPS)))
    });
    group.bench_function("ours:same-worker", |b| {
        b.iter(|| black_box(ping_pong_ours(&ours, 0, ROUND_TRIPS)))
    });
    group.bench_function("tokio multi-thread", |b| {
        b.iter(|| black_box(ping_pong_tokio(&tokio_rt, ROUND_TRIPS)))
    });
    group.finish();

    let n = if test_mode() { 100 } else { 20_000 };
    for (implementation, mut latencies) in [
        ("ours", ping_pong_ours(&ours, 1, n)),
        ("ours:same-worker", ping_pong_ours(&ours, 0, n)),
        ("tokio multi-thread", ping_pong_tokio(&tokio_rt, n)),
    ] {
        record_latencies(
            "per_core_runtime/ping_pong",
            implementation,
            "round trip",
            &mut latencies,
        );
    }
}

fn record_latencies(group: &str, implementation: &str, what: &str, latencies: &mut [Duration]) {
    for p in [50.0, 99.0] {
        let value = echo::percentile(latencies, p).as_nanos() as f64;
        record_metric(Metric {
            group,
            implementation,
            metric: &format!("p{p} {what}"),
            value,
            unit: "ns",
            better: Better::Lower,
        });
    }
}

/// Runs the echo load against `addr` `rounds` times; returns every latency
/// and the total time.
fn load(
    client: &tokio::runtime::Runtime,
    addr: SocketAddr,
    rounds: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        latencies.extend(
            client
                .block_on(echo::run_clients(addr, CONNECTIONS, MESSAGES, MESSAGE_SIZE))
                .expect("echo round"),
        );
    }
    (latencies, start.elapsed())
}

fn tcp_echo(c: &mut Criterion) {
    let workers = workers();
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let ours = PerCoreRuntime::builder()
        .workers(workers)
        .pin(true)
        .build()
        .expect("per-core runtime");
    let (ours_addr, _accept_loops) = echo::serve_per_core(&ours, any_port).expect("server");
    let unpinned = per_core(workers, Duration::ZERO);
    let (unpinned_addr, _unpinned_accept_loops) =
        echo::serve_per_core(&unpinned, any_port).expect("server");
    let tokio_rt = multi_thread(workers);
    let (tokio_addr, tokio_accept) = tokio_rt
        .block_on(echo::serve_multi_thread(any_port))
        .expect("server");

    let mut group = c.benchmark_group("per_core_runtime/tcp_echo");
    group.throughput(Throughput::Elements((CONNECTIONS * MESSAGES) as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("ours", |b| b.iter(|| load(&client, ours_addr, 1)));
    group.bench_function("ours:unpinned", |b| {
        b.iter(|| load(&client, unpinned_addr, 1))
    });
    group.bench_function("tokio multi-thread", |b| {
        b.iter(|| load(&client, tokio_addr, 1))
    });
    group.finish();

    let rounds = if test_mode() { 1 } else { 10 };
    for (implementation, addr) in [
        ("ours", ours_addr),
        ("ours:unpinned", unpinned_addr),
        ("tokio multi-thread", tokio_addr),
    ] {
        let (mut latencies, elapsed) = load(&client, addr, rounds);
        record_metric(Metric {
            group: "per_core_runtime/tcp_echo",
            implementation,
            metric: "requests/s",
            value: latencies.len() as f64 / elapsed.as_secs_f64(),
            unit: "req/s",
            better: Better::Higher,
        });
        record_latencies(
            "per_core_runtime/tcp_echo",
            implementation,
            "latency",
            &mut latencies,
        );
    }
    tokio_accept.abort();
    ours.shutdown(Duration::from_secs(5));
    unpinned.shutdown(Duration::from_secs(5));
}

criterion_group!(benches, spawn_join, hop, ping_pong, tcp_echo);
criterion_main!(benches);
