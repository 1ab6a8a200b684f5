//! A TCP echo server on a `PerCoreRuntime` — one `SO_REUSEPORT` listener per
//! worker, each connection served on the worker that accepted it — beside the
//! same server on tokio's multi-thread runtime. Each run starts the server,
//! loads it from a client thread, prints requests/s and latency percentiles,
//! and shuts the server down.
//!
//! ```sh
//! cargo run --release --example echo_server                      # per-core
//! cargo run --release --example echo_server -- multi-thread      # tokio multi-thread
//! cargo run --release --example echo_server -- per-core 128 500  # connections, messages each
//! ```

mod echo;

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntime};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "per-core".to_string());
    let connections: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let messages: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let workers = CpuBudget::detect().workers();
    let any_port: SocketAddr = "127.0.0.1:0".parse()?;
    // The load generator runs on a thread of its own.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    match mode.as_str() {
        "per-core" => {
            let rt = PerCoreRuntime::builder()
                .workers(workers)
                .pin(true)
                .build()?;
            let (addr, _accept_loops) = echo::serve_per_core(&rt, any_port)?;
            println!(
                "per-core echo server on {addr}: {workers} pinned workers, cpus {:?}",
                rt.cpus()
            );
            let start = Instant::now();
            let latencies = client.block_on(echo::run_clients(addr, connections, messages, 64))?;
            print_stats(latencies, start.elapsed());
            for m in rt.metrics().workers {
                println!(
                    "  {}: {} connections served, busy {:?}",
                    m.worker,
                    m.spawned.saturating_sub(1),
                    m.busy_time
                );
            }
            // The accept loops stop when shutdown begins; the connections
            // have all closed by now, so nothing is left at the deadline.
            let report = rt.shutdown(Duration::from_secs(5));
            println!(
                "shutdown: {} completed, {} cancelled, {} panicked, deadline reached: {}",
                report.completed(),
                report.cancelled(),
                report.panicked(),
                report.deadline_reached
            );
        }
        "multi-thread" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()?;
            let (addr, accept_loop) = rt.block_on(echo::serve_multi_thread(any_port))?;
            println!("multi-thread echo server on {addr}: {workers} workers");
            let start = Instant::now();
            let latencies = client.block_on(echo::run_clients(addr, connections, messages, 64))?;
            print_stats(latencies, start.elapsed());
            accept_loop.abort();
            rt.shutdown_timeout(Duration::from_millis(100));
        }
        other => {
            return Err(
                format!("unknown mode {other:?}: expected per-core or multi-thread").into(),
            );
        }
    }
    Ok(())
}

fn print_stats(mut latencies: Vec<Duration>, elapsed: Duration) {
    let requests = latencies.len();
    println!(
        "{requests} requests in {elapsed:?}: {:.0} requests/s, p50 {:?}, p99 {:?}",
        requests as f64 / elapsed.as_secs_f64(),
        echo::percentile(&mut latencies, 50.0),
        echo::percentile(&mut latencies, 99.0),
    );
}
