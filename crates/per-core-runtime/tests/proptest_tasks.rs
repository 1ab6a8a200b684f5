//! Invariants over random mixes of tasks and placements: every accepted task
//! ends exactly once, its handle reports how, every future is dropped exactly
//! once, and the shutdown report's counts add up — nothing lost, nothing
//! counted twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    Value,
    Yields(u8),
    Panics,
    AbortedWhilePending,
    PendingUntilShutdown,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Value),
        (1..20_u8).prop_map(Kind::Yields),
        Just(Kind::Panics),
        Just(Kind::AbortedWhilePending),
        Just(Kind::PendingUntilShutdown),
    ]
}

fn placement() -> impl Strategy<Value = Option<Placement>> {
    prop_oneof![
        (0..3_usize).prop_map(|_| None),
        Just(Some(Placement::RoundRobin)),
        Just(Some(Placement::LeastLoaded)),
        any::<u64>().prop_map(|k| Some(Placement::ByKey(k))),
    ]
}

/// Tasks per case, at most (fewer under miri, which is slow).
const MAX_TASKS: usize = if cfg!(miri) { 8 } else { 40 };

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Miri runs a couple of small cases: it checks the task cell's
        // accesses, which one case exercises as well as many.
        cases: if cfg!(miri) { 2 } else { 24 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_task_ends_exactly_once_and_is_counted_once(
        workers in 1..4_usize,
        tasks in prop::collection::vec((kind(), placement(), 0..4_usize), 1..MAX_TASKS),
    ) {
        let rt = PerCoreRuntime::builder().workers(workers).build().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for (i, (kind, placement, worker)) in tasks.iter().cloned().enumerate() {
            let guard = CountDrop(drops.clone());
            let make = move || {
                async move {
                    let _guard = guard;
                    match kind {
                        Kind::Value => i,
                        Kind::Yields(n) => {
                            for _ in 0..n {
                                tokio::task::yield_now().await;
                            }
                            i
                        }
                        Kind::Panics => panic!("task {i} panics"),
                        Kind::AbortedWhilePending | Kind::PendingUntilShutdown => {
                            std::future::pending().await
                        }
                    }
                }
            };
            let handle = match placement {
                Some(p) => rt.spawn_with(p, make).unwrap(),
                None => rt.spawn_on(worker % workers, make).unwrap(),
            };
            if matches!(tasks[i].0, Kind::AbortedWhilePending) {
                handle.abort();
            }
            handles.push(handle);
        }
        // Tasks that end on their own are joined before the shutdown, so that
        // a slow machine cannot turn them into cancellations; the others are
        // joined after it.
        let mut results: Vec<_> = handles
            .into_iter()
            .zip(&tasks)
            .map(|(handle, (kind, _, _))| match kind {
                Kind::PendingUntilShutdown => Err(handle),
                _ => Ok(handle.join()),
            })
            .collect();
        let report = rt.shutdown(Duration::ZERO);
        let results = results.drain(..).map(|r| r.unwrap_or_else(|handle| handle.join()));

        let mut expected = [0_u64; 4]; // completed, panicked, aborted, cancelled
        for ((kind, _, _), (i, result)) in tasks.iter().zip(results.enumerate()) {
            match kind {
                Kind::Value | Kind::Yields(_) => {
                    prop_assert_eq!(result.unwrap(), i);
                    expected[0] += 1;
                }
                Kind::Panics => {
                    prop_assert!(result.unwrap_err().is_panic());
                    expected[1] += 1;
                }
                Kind::AbortedWhilePending => {
                    let err = result.unwrap_err();
                    prop_assert_eq!(err.to_string(), "task was aborted");
                    expected[2] += 1;
                }
                Kind::PendingUntilShutdown => {
                    let err = result.unwrap_err();
                    prop_assert_eq!(err.to_string(), "task was cancelled because the runtime shut down");
                    expected[3] += 1;
                }
            }
        }
        prop_assert_eq!(drops.load(Ordering::SeqCst), tasks.len());
        prop_assert_eq!(
            [report.completed(), report.panicked(), report.aborted(), report.cancelled()],
            expected
        );
        // With no grace period, tasks still running were cut off by the deadline.
        prop_assert!(expected[3] == 0 || report.deadline_reached);
        let spawned: u64 = report.workers.iter().map(|w| w.spawned).sum();
        prop_assert_eq!(spawned, tasks.len() as u64);
        prop_assert!(report.workers.iter().all(|w| w.alive_tasks == 0));
    }
}
