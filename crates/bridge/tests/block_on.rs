//! `block_on` beyond the happy path: a panicking future propagates its panic
//! from every context (never a hang, never a swallowed panic), and the
//! helper runtime is shared across calls.

mod common;

use async_patterns_bridge::{block_on, block_on_local};
use common::{current_thread, multi_thread, within};

fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("expected a panic");
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "block_on's helper runtime lives as long as the process: miri reports its thread as leaked"
)]
fn a_panicking_future_propagates_outside_any_runtime() {
    within(|| {
        let msg = panics(|| block_on(async { panic!("boom outside") }));
        assert_eq!(msg, "boom outside");
        // The helper runtime survives a panicking future.
        assert_eq!(block_on(async { 1 }), 1);
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "block_on's helper runtime lives as long as the process: miri reports its thread as leaked"
)]
fn a_panicking_future_propagates_from_the_helper_thread_of_a_current_thread_runtime() {
    within(|| {
        current_thread().block_on(async {
            let msg = panics(|| block_on(async { panic!("boom on helper") }));
            assert_eq!(msg, "boom on helper");
        });
    });
}

#[test]
fn a_panicking_future_propagates_on_a_worker_and_a_blocking_thread() {
    within(|| {
        multi_thread(1).block_on(async {
            let on_worker =
                tokio::spawn(async { panics(|| block_on(async { panic!("boom on worker") })) });
            assert_eq!(on_worker.await.unwrap(), "boom on worker");
            let on_pool = tokio::task::spawn_blocking(|| {
                panics(|| {
                    let _ = block_on_local(async { panic!("boom in pool") });
                })
            });
            assert_eq!(on_pool.await.unwrap(), "boom in pool");
        });
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "block_on's helper runtime lives as long as the process: miri reports its thread as leaked"
)]
fn block_on_borrows_from_the_caller_even_on_the_helper_thread() {
    within(|| {
        let words = ["a".to_string(), "bc".to_string()];
        let total = current_thread().block_on(async {
            // Not `'static`: the future borrows `words` from this stack frame.
            block_on(async { words.iter().map(String::len).sum::<usize>() })
        });
        assert_eq!(total, 3);
    });
}
