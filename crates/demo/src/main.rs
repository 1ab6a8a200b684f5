//! `cargo xtask demo`: the async-patterns demo's command line.

use std::process::ExitCode;

use async_patterns_demo::{AttemptOutcome, probe_contexts, retry_flaky};

const USAGE: &str = "\
usage: cargo xtask demo [-- OPTIONS]

Probes the tokio context of every kind of thread, then retries a flaky
operation with exponential backoff (on paused time, so it ends at once).

options:
  --failures N   failures before the flaky operation succeeds (default 4)
  --attempts N   the retry policy's attempt limit (default 6)
  --seed S       seed for the backoff jitter (default 7)
  -h, --help     this text";

struct Options {
    failures: u32,
    attempts: u32,
    seed: u64,
}

fn parse_args() -> Result<Option<Options>, String> {
    let mut opts = Options {
        failures: 4,
        attempts: 6,
        seed: 7,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--failures" => opts.failures = parse(&value()?, &arg)?,
            "--attempts" => opts.attempts = parse(&value()?, &arg)?,
            "--seed" => opts.seed = parse(&value()?, &arg)?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(opts))
}

fn parse<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: `{value}` is not a valid number"))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    println!("== 1. where may sync code block? ==");
    for (place, ctx) in probe_contexts() {
        println!(
            "  {place:<34} {:<36} blocking: {:?}",
            ctx.to_string(),
            ctx.blocking_strategy()
        );
    }

    println!("\n== 2. retrying a flaky operation ==");
    let report = |attempt: u32, outcome: &AttemptOutcome| match outcome {
        AttemptOutcome::Succeeded => println!("  attempt {attempt}: ok"),
        AttemptOutcome::RetriedAfter(d) => {
            println!("  attempt {attempt}: unavailable, retrying after {d:?}")
        }
        AttemptOutcome::GaveUp => println!("  attempt {attempt}: unavailable, giving up"),
    };
    match retry_flaky(opts.failures, opts.attempts, opts.seed, report) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "the operation still failed after {} attempts",
                opts.attempts
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
