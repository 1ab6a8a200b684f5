//! `backoff`: the cost of computing retry delays with `async-patterns-core`'s
//! `Backoff`, beside backon's exponential backoff iterator. Criterion times
//! one sequence of each; the target is judged on paired rounds of many
//! sequences, ours and backon back to back.

use std::hint::black_box;
use std::time::Duration;

use async_patterns_benches::{paired, record_paired, time};
use async_patterns_core::{Jitter, RetryPolicy};
use backon::BackoffBuilder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const GROUP: &str = "backoff/ten_jittered_delays";
const RETRIES: usize = 10;
/// Sequences per side of a paired round: a few milliseconds of work, long
/// enough for the clock, short enough that a round rarely straddles a burst
/// of load from elsewhere.
const SEQUENCES_PER_ROUND: usize = 20_000;
/// Paired rounds (odd, so the median is one round's ratio).
const ROUNDS: usize = 15;

/// Starts a sequence and sums its delays.
fn ours(policy: &RetryPolicy) -> Duration {
    let mut backoff = black_box(policy).backoff();
    let mut total = Duration::ZERO;
    while let Some(d) = backoff.next_delay() {
        total += d;
    }
    total
}

/// The same with backon.
fn backon(builder: &backon::ExponentialBuilder) -> Duration {
    black_box(*builder).build().sum::<Duration>()
}

fn backoff(c: &mut Criterion) {
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_secs(5))
        .jitter(Jitter::Full)
        .max_attempts(RETRIES as u32 + 1)
        .seed(42)
        .build()
        .expect("valid policy");
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(RETRIES);

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(RETRIES as u64));
    group.bench_function("ours", |b| b.iter(|| ours(&policy)));
    group.bench_function("backon", |b| b.iter(|| backon(&builder)));
    group.finish();

    let result = paired(
        ROUNDS,
        || {
            time(|| {
                (0..SEQUENCES_PER_ROUND)
                    .map(|_| ours(&policy))
                    .sum::<Duration>()
            })
        },
        || {
            time(|| {
                (0..SEQUENCES_PER_ROUND)
                    .map(|_| backon(&builder))
                    .sum::<Duration>()
            })
        },
    );
    record_paired(GROUP, "ours", "backon", &result);
}

criterion_group!(benches, backoff);
criterion_main!(benches);
