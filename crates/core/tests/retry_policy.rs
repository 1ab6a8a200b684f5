//! `RetryPolicy` / `Backoff` under paused time, and their invariants under
//! proptest.

use std::time::Duration;

use async_patterns_core::{Jitter, RetryPolicy};
use proptest::prelude::*;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn wait_sleeps_exactly_the_returned_delay_on_paused_clock() {
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(1))
        .jitter(Jitter::None)
        .max_attempts(6)
        .build()
        .unwrap();
    let mut backoff = policy.backoff();
    let start = Instant::now();
    let mut total = Duration::ZERO;
    let mut delays = Vec::new();
    while let Some(d) = backoff.wait().await {
        total += d;
        delays.push(d);
        assert_eq!(start.elapsed(), total);
    }
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1000].map(Duration::from_millis)
    );
    assert_eq!(backoff.attempts(), 6);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_before_a_retry_would_start_late() {
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_secs(1))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut backoff = policy.backoff();
    let mut delays = Vec::new();
    while let Some(d) = backoff.wait().await {
        delays.push(d.as_secs());
    }
    // 1 + 2 + 4 = 7 s; the next delay (8 s) would end at 15 s > 10 s.
    assert_eq!(delays, [1, 2, 4]);
    assert_eq!(backoff.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn elapsed_counts_time_spent_in_attempts_too() {
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_secs(1))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut backoff = policy.backoff();
    // The attempt itself takes 4.5 s: a 1 s delay would start the next one at 5.5 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(backoff.next_delay(), None);
}

#[tokio::test(start_paused = true)]
async fn seeded_policies_repeat_the_same_jittered_delays() {
    let policy = RetryPolicy::builder()
        .jitter(Jitter::Full)
        .seed(1234)
        .max_attempts(8)
        .build()
        .unwrap();
    let run = || {
        let mut b = policy.backoff();
        std::iter::from_fn(move || b.next_delay()).collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 7);
    assert_eq!(first, run());
    // Full jitter really varies the delays.
    assert!(first.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn reset_starts_a_new_sequence() {
    let policy = RetryPolicy::builder()
        .jitter(Jitter::None)
        .max_attempts(2)
        .build()
        .unwrap();
    let mut backoff = policy.backoff();
    assert!(backoff.next_delay().is_some());
    assert!(backoff.next_delay().is_none());
    backoff.reset();
    assert_eq!(backoff.next_delay(), Some(policy.initial_delay()));
}

#[test]
fn invalid_settings_name_the_field() {
    let cases = [
        (
            RetryPolicy::builder().initial_delay(Duration::ZERO),
            "initial_delay",
        ),
        (
            RetryPolicy::builder()
                .initial_delay(Duration::from_secs(3))
                .max_delay(Duration::from_secs(2)),
            "max_delay",
        ),
        (RetryPolicy::builder().multiplier(0.9), "multiplier"),
        (
            RetryPolicy::builder().multiplier(f64::INFINITY),
            "multiplier",
        ),
        (
            RetryPolicy::builder().jitter(Jitter::Proportional(-0.1)),
            "jitter",
        ),
        (RetryPolicy::builder().max_attempts(0), "max_attempts"),
        (
            RetryPolicy::builder().max_elapsed(Duration::ZERO),
            "max_elapsed",
        ),
    ];
    for (builder, field) in cases {
        assert_eq!(builder.build().unwrap_err().field(), field);
    }
}

fn jitter_strategy() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        (0.0f64..=1.0).prop_map(Jitter::Proportional),
    ]
}

proptest! {
    #[test]
    fn delays_respect_cap_attempts_and_jitter_range(
        initial_ms in 1u64..5_000,
        extra_cap_ms in 0u64..60_000,
        multiplier in 1.0f64..10.0,
        jitter in jitter_strategy(),
        max_attempts in 1u32..40,
        seed in any::<u64>(),
    ) {
        let initial = Duration::from_millis(initial_ms);
        let cap = initial + Duration::from_millis(extra_cap_ms);
        let policy = RetryPolicy::builder()
            .initial_delay(initial)
            .max_delay(cap)
            .multiplier(multiplier)
            .jitter(jitter)
            .max_attempts(max_attempts)
            .seed(seed)
            .build()
            .unwrap();
        let mut backoff = policy.backoff();
        let mut retries = 0u32;
        while let Some(delay) = backoff.next_delay() {
            retries += 1;
            let base = policy.base_delay(retries);
            prop_assert!(base <= cap);
            prop_assert!(delay <= base, "jittered {delay:?} above base {base:?}");
            let low = match jitter {
                Jitter::None => base,
                Jitter::Full => Duration::ZERO,
                Jitter::Proportional(f) => base.mul_f64(1.0 - f),
                other => panic!("strategy produced unknown jitter {other:?}"),
            };
            // `mul_f64` rounds to the nearest nanosecond.
            prop_assert!(delay + Duration::from_nanos(1) >= low, "jittered {delay:?} below {low:?}");
            prop_assert!(backoff.attempts() <= max_attempts);
        }
        prop_assert_eq!(retries + 1, max_attempts);
        prop_assert_eq!(backoff.attempts(), max_attempts);
    }

    #[test]
    fn base_delays_never_decrease(
        initial_ms in 1u64..1_000,
        multiplier in 1.0f64..4.0,
        retries in 1u32..200,
    ) {
        let policy = RetryPolicy::builder()
            .initial_delay(Duration::from_millis(initial_ms))
            .max_delay(Duration::from_secs(3600))
            .multiplier(multiplier)
            .build()
            .unwrap();
        prop_assert!(policy.base_delay(retries) <= policy.base_delay(retries + 1));
    }
}
