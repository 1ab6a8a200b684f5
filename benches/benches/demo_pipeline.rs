//! The demo pipeline end to end, in events per second: in-process (bridge →
//! batching → txn-channel → gRPC upload on a per-core runtime) and across
//! processes (a producer process and two consumer processes around a
//! JetStream stream on a local nats-server), both at `--rate max` without
//! faults. A figure for `docs/benchmarks.md`, not a target: the two modes do
//! different work (the second stores every event on disk and confirms every
//! publish and every ack), and the machine decides the figure.
//!
//! The jetstream mode starts its producer and consumers from this very
//! executable, with `--role` arguments: `main` hands those to the demo.

use std::process::ExitCode;

use async_patterns_benches::{Better, Metric, record_metric, test_mode};
use async_patterns_demo::{DemoConfig, Queue, Rate, Stop, distributed, run, run_distributed};

const GROUP: &str = "demo_pipeline/end_to_end";

fn config(queue: Queue) -> DemoConfig {
    DemoConfig {
        events: if test_mode() { 2_000 } else { 50_000 },
        fault_rate: 0.0,
        rate: Rate::Max,
        queue,
        consumers: 2,
        ..DemoConfig::default()
    }
}

/// Events per second of one run of `queue`'s pipeline.
fn one_run(queue: Queue) -> f64 {
    let config = config(queue);
    match queue {
        Queue::InProcess => {
            let report = run(&config, |_| {}).expect("the in-process pipeline runs");
            assert!(report.balanced(), "{report}");
            (report.uploaded_unique + report.dead_lettered_only) as f64
                / report.elapsed.as_secs_f64()
        }
        Queue::JetStream => {
            let report = run_distributed(&config, &Stop::new(), |_| {})
                .expect("the pipeline across processes runs (it needs nats-server)");
            assert!(report.balanced(), "{report}");
            report.events_per_sec
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> ExitCode {
    if let Some(code) = distributed::child_process() {
        return code;
    }
    // Interleaved rounds, the median of each mode.
    let rounds = if test_mode() { 1 } else { 5 };
    let (mut in_process, mut jetstream) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        in_process.push(one_run(Queue::InProcess));
        jetstream.push(one_run(Queue::JetStream));
    }
    for (implementation, figures) in [("in-process", in_process), ("jetstream", jetstream)] {
        let (min, max) = figures
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!("{GROUP}/{implementation}: {rounds} rounds, min {min:.0}, max {max:.0} events/s");
        record_metric(Metric {
            group: GROUP,
            implementation,
            metric: "events/s end to end (median)",
            value: median(figures),
            unit: "events/s",
            better: Better::Higher,
        });
    }
    ExitCode::SUCCESS
}
