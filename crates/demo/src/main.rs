//! `cargo xtask demo`: the async-patterns end-to-end demo's command line.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use async_patterns_demo::{DemoConfig, Progress, Stop, run_until};

const USAGE: &str = "\
usage: cargo xtask demo [-- OPTIONS]

An ingestion pipeline on a per-core runtime: a sync legacy library's callback
hands events to async code (bridge), they are batched (batching), each batch
is committed only once uploaded (txn-channel) through a gRPC client-streaming
call that is retried without losing its receiver (reusable-receiver), against
a real tonic server that injects faults, while a blocking detector watches.
At the end the books must balance: every event uploaded, dead-lettered, or
counted as dropped by policy. The exit code is 1 if they do not.

Ctrl-C (SIGINT) or SIGTERM stops the producers; what is in flight drains and
the summary of what was produced is printed (exit code 0 if it balances). A
second Ctrl-C ends the demo at once (exit code 130).

options:
  --events N         events to produce (default 20000)
  --fault-rate P     share of upload calls the server fails, 0..=1 (default 0.1);
                     a thousandth of it is the share of poison events
  --workers N        workers of the per-core runtime, at least 1 (default 2)
  --seed S           seed for events, faults and jitter (default 1)
  --inject-blocking  block one pipeline stage for 300 ms, for the detector to report
  -h, --help         this text";

fn parse_args() -> Result<Option<DemoConfig>, String> {
    let mut config = DemoConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--events" => config.events = parse(&value()?, &arg)?,
            "--fault-rate" => config.fault_rate = parse(&value()?, &arg)?,
            "--workers" => config.workers = parse(&value()?, &arg)?,
            "--seed" => config.seed = parse(&value()?, &arg)?,
            "--inject-blocking" => config.inject_blocking = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(config))
}

fn parse<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: `{value}` is not a valid value"))
}

fn show(progress: &Progress, live: bool) {
    let workers: Vec<String> = progress
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "w{i}: {} ev, {} tasks, busy {:.0?}",
                w.produced, w.live_tasks, w.busy
            )
        })
        .collect();
    let line = format!(
        "[{:>5.1}s] produced {:>6}  dropped {:>4}  batched {:>6}  uploaded {:>6}  retried {:>4}  dead-lettered {:>4} | {}",
        progress.elapsed.as_secs_f64(),
        progress.produced,
        progress.dropped,
        progress.batched,
        progress.uploaded,
        progress.retried,
        progress.dead_lettered,
        workers.join(" | ")
    );
    if live {
        // Rewrite one line in place on a terminal.
        print!("\r\x1b[2K{line}");
        let _ = std::io::stdout().flush();
    } else {
        println!("{line}");
    }
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "async-patterns demo: {} events, fault rate {}, {} workers, seed {}{}",
        config.events,
        config.fault_rate,
        config.workers,
        config.seed,
        if config.inject_blocking {
            ", blocking step injected"
        } else {
            ""
        }
    );
    let live = std::io::stdout().is_terminal();
    let stop = match Stop::on_signals(move |name| {
        let lead = if live { "\n" } else { "" };
        println!(
            "{lead}{name}: stopping the producers, draining what is in flight (again to quit at once)"
        );
    }) {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run_until(&config, &stop, |p| show(p, live)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("\nerror: {e}");
            return ExitCode::from(2);
        }
    };
    if live {
        println!();
    }
    println!("\n{report}");
    if report.balanced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
