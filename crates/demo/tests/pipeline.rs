//! The demo pipeline, run in-process: the books balance under faults, and a
//! fault-free run needs no retries and uploads no duplicates.

use std::sync::mpsc;
use std::time::Duration;

use async_patterns_demo::legacy::{POISON_PREFIX, SensorLibrary};
use async_patterns_demo::{DemoConfig, Report, Stop, run, run_until_deadline};

/// Runs the pipeline on its own thread, failing the test if it hangs.
fn run_within(config: DemoConfig) -> Report {
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let _ = tx.send(run(&config, |_| {}));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the pipeline did not finish within 120 s")
        .expect("the pipeline could not run");
    runner.join().unwrap();
    report
}

fn config(events: u64, fault_rate: f64, seed: u64) -> DemoConfig {
    DemoConfig {
        events,
        fault_rate,
        seed,
        ..DemoConfig::default()
    }
}

#[test]
fn books_balance_under_faults_with_a_fixed_seed() {
    let report = run_within(config(4_000, 0.3, 7));
    assert!(report.balanced(), "{report}");
    assert_eq!(report.lost, 0);
    assert_eq!(report.produced, 4_000);
    assert!(report.failed_calls > 0, "faults were injected: {report}");
    assert_eq!(
        report.uploaded_unique + report.dead_lettered_only + report.dropped_by_policy,
        report.produced
    );
    // Every produced event went through the batcher (none dropped by it).
    assert_eq!(
        report.batching.items.total(),
        report.produced - report.dropped_by_policy
    );
    assert_eq!(report.batching.dropped, 0);
}

#[test]
fn fault_free_run_needs_no_retries_and_uploads_no_duplicates() {
    let report = run_within(config(3_000, 0.0, 3));
    assert!(report.balanced(), "{report}");
    assert_eq!(report.failed_calls, 0, "{report}");
    assert_eq!(report.redeliveries, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.upload_calls, report.committed_batches);
    assert_eq!(
        report.uploaded_unique,
        report.produced - report.dropped_by_policy
    );
}

#[test]
fn poison_events_are_dead_lettered_and_the_books_still_balance() {
    let cfg = config(6_000, 0.9, 11);
    // The same events the demo's library produces: which ids are poison.
    let library = SensorLibrary::new(cfg.seed, cfg.fault_rate / 1000.0, |_| {});
    let poison: Vec<u64> = (0..cfg.events)
        .filter(|id| library.event(*id).payload.starts_with(POISON_PREFIX))
        .collect();
    assert!(
        !poison.is_empty(),
        "pick a seed that produces poison events"
    );

    let report = run_within(cfg);
    assert!(report.balanced(), "{report}");
    assert!(
        report.dead_lettered_batches >= 1,
        "{} poison events, nothing dead-lettered: {report}",
        poison.len()
    );
    assert!(report.dead_lettered_only >= poison.len() as u64);
}

#[test]
fn a_single_worker_refuses_enrichment_instead_of_deadlocking() {
    let report = run_within(DemoConfig {
        workers: 1,
        ..config(1_000, 0.0, 5)
    });
    assert!(report.balanced(), "{report}");
    // Every tenth event asks for enrichment; the service runs on the same
    // (only) worker, so each call is refused at once.
    assert_eq!(report.enriched, 0);
    assert_eq!(report.enrich_refused, 100);
}

#[test]
fn enrichment_calls_from_another_worker_are_answered() {
    let report = run_within(config(1_000, 0.0, 5));
    assert_eq!(report.enriched, 100, "{report}");
    assert_eq!(report.enrich_refused, 0);
}

#[test]
fn the_injected_blocking_step_is_reported_by_name() {
    let report = run_within(DemoConfig {
        inject_blocking: true,
        ..config(2_000, 0.0, 1)
    });
    assert!(report.balanced(), "{report}");
    assert!(
        report
            .blocking_reports
            .iter()
            .any(|r| r.contains("\"batching stage\"")),
        "{:?}",
        report.blocking_reports
    );
}

#[test]
fn invalid_flags_are_errors() {
    let err = run(&config(0, 0.1, 1), |_| {}).unwrap_err();
    assert!(err.to_string().contains("--events"), "{err}");
    let err = run(&config(10, 1.5, 1), |_| {}).unwrap_err();
    assert!(err.to_string().contains("--fault-rate"), "{err}");
    let err = run(
        &DemoConfig {
            workers: 0,
            ..config(10, 0.1, 1)
        },
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
}

#[test]
fn rate_max_without_faults_needs_no_retries_and_loads_every_worker() {
    let report = run_within(DemoConfig {
        events: 20_000,
        fault_rate: 0.0,
        seed: 8,
        workers: 3,
        rate: async_patterns_demo::Rate::Max,
        ..DemoConfig::default()
    });
    assert!(report.balanced(), "{report}");
    assert_eq!(report.produced, 20_000);
    assert_eq!(
        report.dropped_by_policy, 0,
        "at full speed nothing is dropped: {report}"
    );
    assert_eq!(report.failed_calls, 0, "{report}");
    assert_eq!(report.redeliveries, 0, "{report}");
    assert_eq!(report.uploaded_unique, 20_000, "{report}");
    assert_eq!(report.produced_per_worker.len(), 3);
    assert!(
        report.produced_per_worker.iter().all(|&n| n > 0),
        "every worker produces: {report}"
    );
}

#[test]
fn a_stop_drains_under_a_deadline_and_counts_what_it_gives_up() {
    // Every upload fails: a batch in flight at the stop could leave only by
    // using up its attempts and their backoff, seconds a batch. The drain
    // deadline ends that; what was left is counted as abandoned, and the
    // books still balance.
    let config = config(200_000, 1.0, 11);
    let stop = Stop::new();
    let (tx, rx) = mpsc::channel();
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let report = run_until_deadline(&config, &stop, Duration::from_millis(300), |p| {
                if p.produced >= 2_000 {
                    stop.request();
                }
            });
            let _ = tx.send(report);
        })
    };
    let report = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the pipeline did not finish within 120 s of its stop")
        .expect("the pipeline could not run");
    runner.join().unwrap();
    assert!(report.stopped_early, "{report}");
    assert!(report.abandoned > 0, "{report}");
    assert!(report.balanced(), "{report}");
    assert_eq!(
        report.produced,
        report.uploaded_unique
            + report.dead_lettered_only
            + report.dropped_by_policy
            + report.abandoned,
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("abandoned"), "{text}");
    assert!(text.contains("drained until the drain deadline"), "{text}");
}

#[test]
fn a_stop_without_faults_drains_everything_before_the_deadline() {
    let config = config(200_000, 0.0, 12);
    let stop = Stop::new();
    let report = run_until_deadline(&config, &stop, Duration::from_secs(60), |p| {
        if p.produced >= 2_000 {
            stop.request();
        }
    })
    .expect("the pipeline could not run");
    assert!(report.stopped_early, "{report}");
    assert_eq!(report.abandoned, 0, "{report}");
    assert!(report.balanced(), "{report}");
    assert_eq!(
        report.uploaded_unique + report.dropped_by_policy,
        report.produced,
        "{report}"
    );
}
