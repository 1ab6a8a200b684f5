//! `backoff`: the cost of computing retry delays with `async-patterns-core`'s
//! `Backoff`, beside backon's exponential backoff iterator.

use std::hint::black_box;
use std::time::Duration;

use async_patterns_core::{Jitter, RetryPolicy};
use backon::BackoffBuilder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RETRIES: usize = 10;

fn backoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("backoff/ten_jittered_delays");
    group.throughput(Throughput::Elements(RETRIES as u64));

    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_secs(5))
        .jitter(Jitter::Full)
        .max_attempts(RETRIES as u32 + 1)
        .seed(42)
        .build()
        .expect("valid policy");
    group.bench_function("ours", |b| {
        b.iter(|| {
            let mut backoff = black_box(&policy).backoff();
            let mut total = Duration::ZERO;
            while let Some(d) = backoff.next_delay() {
                total += d;
            }
            total
        })
    });

    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(RETRIES);
    group.bench_function("backon", |b| {
        b.iter(|| black_box(builder).build().sum::<Duration>())
    });
    group.finish();
}

criterion_group!(benches, backoff);
criterion_main!(benches);
