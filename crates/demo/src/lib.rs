//! The async-patterns demo, as a library so that tests can run it in-process;
//! `cargo xtask demo` runs its binary.
//!
//! For now it exercises `async-patterns-core`: it probes the runtime context
//! from every kind of thread a sync callback can run on, and retries a flaky
//! async operation with an exponential backoff. The end-to-end pipeline that
//! uses every pattern replaces it as the pattern crates land.
//!
//! The crate also compiles and runs the code blocks of the cookbook pages in
//! `docs/` as doc tests, so the cookbook cannot drift from the API.

use std::time::Duration;

use async_patterns_core::{ConfigError, Jitter, RetryPolicy, RuntimeContext};

/// Where each probe ran and what [`RuntimeContext::current`] said there.
pub fn probe_contexts() -> Vec<(&'static str, RuntimeContext)> {
    let mut seen = vec![("main thread", RuntimeContext::current())];
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime");
    current.block_on(async {
        seen.push(("current-thread block_on", RuntimeContext::current()));
        let task = tokio::spawn(async { RuntimeContext::current() });
        seen.push((
            "task on a current-thread runtime",
            task.await.expect("task"),
        ));
        let blocking = tokio::task::spawn_blocking(RuntimeContext::current);
        seen.push((
            "spawn_blocking (current-thread)",
            blocking.await.expect("task"),
        ));
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("multi-thread runtime");
    multi.block_on(async {
        let task = tokio::spawn(async { RuntimeContext::current() });
        seen.push(("task on a multi-thread worker", task.await.expect("task")));
        let blocking = tokio::task::spawn_blocking(RuntimeContext::current);
        seen.push((
            "spawn_blocking (multi-thread)",
            blocking.await.expect("task"),
        ));
    });
    seen
}

/// One attempt of [`retry_flaky`], as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The attempt succeeded.
    Succeeded,
    /// The attempt failed and the next one starts after this delay.
    RetriedAfter(Duration),
    /// The attempt failed and the policy gave up.
    GaveUp,
}

/// Retries an operation that fails `failures` times, with at most `attempts`
/// attempts and jitter seeded by `seed`, on paused time so that it finishes
/// at once. Reports each attempt through `on_attempt`; returns whether the
/// operation finally succeeded.
pub fn retry_flaky(
    failures: u32,
    attempts: u32,
    seed: u64,
    mut on_attempt: impl FnMut(u32, &AttemptOutcome),
) -> Result<bool, ConfigError> {
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .jitter(Jitter::Proportional(0.5))
        .max_attempts(attempts)
        .seed(seed)
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("current-thread runtime");
    Ok(rt.block_on(async {
        let mut backoff = policy.backoff();
        let mut failures_left = failures;
        loop {
            let attempt = backoff.attempts();
            if failures_left == 0 {
                on_attempt(attempt, &AttemptOutcome::Succeeded);
                return true;
            }
            failures_left -= 1;
            match backoff.wait().await {
                Some(delay) => on_attempt(attempt, &AttemptOutcome::RetriedAfter(delay)),
                None => {
                    on_attempt(attempt, &AttemptOutcome::GaveUp);
                    return false;
                }
            }
        }
    }))
}

/// The cookbook's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
mod cookbook {
    #[doc = include_str!("../../../docs/core.md")]
    struct Core;

    #[doc = include_str!("../../../docs/outcome-streams.md")]
    struct OutcomeStreams;

    #[doc = include_str!("../../../docs/blocking-detector.md")]
    struct BlockingDetector;

    #[doc = include_str!("../../../docs/mutex.md")]
    struct Mutex;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_cover_every_context() {
        let seen: Vec<_> = probe_contexts().into_iter().map(|(_, c)| c).collect();
        for ctx in [
            RuntimeContext::NoRuntime,
            RuntimeContext::CurrentThread,
            RuntimeContext::MultiThreadWorker,
            RuntimeContext::BlockingThread,
        ] {
            assert!(seen.contains(&ctx), "{ctx:?} missing from {seen:?}");
        }
    }

    #[test]
    fn flaky_operation_succeeds_within_the_attempt_limit() {
        let mut outcomes = Vec::new();
        let ok = retry_flaky(3, 5, 1, |n, o| outcomes.push((n, o.clone()))).unwrap();
        assert!(ok);
        assert_eq!(outcomes.len(), 4);
        assert_eq!(outcomes.last(), Some(&(4, AttemptOutcome::Succeeded)));
    }

    #[test]
    fn flaky_operation_gives_up_at_the_attempt_limit() {
        let mut outcomes = Vec::new();
        let ok = retry_flaky(10, 3, 1, |n, o| outcomes.push((n, o.clone()))).unwrap();
        assert!(!ok);
        assert_eq!(outcomes.last(), Some(&(3, AttemptOutcome::GaveUp)));
    }
}
