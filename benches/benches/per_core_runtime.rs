//! `per_core_runtime`: spawning onto a `PerCoreRuntime` from outside the pool
//! beside `tokio::spawn` on a multi-thread runtime and tokio-util's
//! `LocalPoolHandle::spawn_pinned` (same number of workers); a ping-pong
//! between two workers beside the same on tokio's multi-thread runtime; and
//! the TCP echo server of the crate's example on both runtimes.

#[path = "../../crates/per-core-runtime/examples/echo_server/echo.rs"]
mod echo;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_patterns_benches::{Better, Metric, record_metric, test_mode};
use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;
use tokio_util::task::LocalPoolHandle;

const TASKS: usize = 500_000;
const ROUND_TRIPS: usize = 2_000;
const CONNECTIONS: usize = 32;
const MESSAGES: usize = 100;
const MESSAGE_SIZE: usize = 64;

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

fn spawn_join(c: &mut Criterion) {
    let workers = workers();
    let mut group = c.benchmark_group("per_core_runtime/spawn_join_500k");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));

    let rt = PerCoreRuntime::builder()
        .workers(workers)
        .build()
        .expect("per-core runtime");
    group.bench_function("ours", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TASKS)
                .map(|i| rt.spawn(move || async move { i }).expect("running"))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .sum::<usize>()
        })
    });
    drop(rt);

    let tokio_rt = multi_thread(workers);
    group.bench_function("tokio::spawn", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TASKS)
                .map(|i| tokio_rt.spawn(async move { i }))
                .collect();
            tokio_rt.block_on(join_all(handles))
        })
    });

    let pool = LocalPoolHandle::new(workers);
    group.bench_function("LocalPoolHandle::spawn_pinned", |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TASKS)
                .map(|i| pool.spawn_pinned(move || async move { i }))
                .collect();
            tokio_rt.block_on(join_all(handles))
        })
    });
    group.finish();
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<usize>>) -> usize {
    let mut sum = 0;
    for h in handles {
        sum += h.await.expect("no panic");
    }
    sum
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

fn ping_pong(c: &mut Criterion) {
    let workers = workers().max(2);
    let ours = PerCoreRuntime::builder()
        .workers(workers)
        .build()
        .expect("per-core runtime");
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
    record_latencies(
        "per_core_runtime/ping_pong",
        "ours",
        "round trip",
        ping_pong_ours(&ours, 1, n),
    );
    record_latencies(
        "per_core_runtime/ping_pong",
        "ours:same-worker",
        "round trip",
        ping_pong_ours(&ours, 0, n),
    );
    record_latencies(
        "per_core_runtime/ping_pong",
        "tokio multi-thread",
        "round trip",
        ping_pong_tokio(&tokio_rt, n),
    );
}

fn record_latencies(group: &str, implementation: &str, what: &str, mut latencies: Vec<Duration>) {
    for p in [50.0, 99.0] {
        let value = echo::percentile(&mut latencies, p).as_nanos() as f64;
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
    let unpinned = PerCoreRuntime::builder()
        .workers(workers)
        .build()
        .expect("per-core runtime");
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
        let (latencies, elapsed) = load(&client, addr, rounds);
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
            latencies,
        );
    }
    tokio_accept.abort();
    ours.shutdown(Duration::from_secs(5));
    unpinned.shutdown(Duration::from_secs(5));
}

criterion_group!(benches, spawn_join, ping_pong, tcp_echo);
criterion_main!(benches);
