//! The seed recipe's example — a consumer that fails after 10 items,
//! retried in a loop with the same receiver — run on this crate, with the
//! consumer's stream dropped late (as hyper may drop a request body): the
//! retry does not wait for the drop, and the time until the drop costs
//! almost no CPU. The recipe itself, measured the same way, spins.
//!
//! CPU time is the calling thread's (`CLOCK_THREAD_CPUTIME_ID`): the
//! scenario runs on a current-thread runtime on the test's own thread, so
//! other tests running in parallel do not count.

use std::time::{Duration, Instant};

use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, ReusableStream};
use async_patterns_testkit::{cpu, seed};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// How late the failed attempt's stream is dropped.
const LATE_DROP: Duration = Duration::from_millis(300);

/// The recipe's consumer: processes items, fails after the tenth. On
/// failure it leaves its stream to a task that drops it `late_drop` later,
/// and reports the drop through `dropped`.
async fn fallible_stream_consumer(
    mut stream: ReusableStream<String>,
    processed: &mut Vec<String>,
    late_drop: Option<(Duration, oneshot::Sender<()>)>,
) -> Result<(), &'static str> {
    let mut countdown_before_failure = 10;
    while let Some(value) = stream.next().await {
        processed.push(value);
        countdown_before_failure -= 1;
        if countdown_before_failure == 0 {
            if let Some((delay, dropped)) = late_drop {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    drop(stream);
                    let _ = dropped.send(());
                });
            }
            return Err("SomeError");
        }
    }
    Ok(())
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn consumer_failing_after_ten_items_is_retried_until_every_item_is_processed_once() {
    current_thread().block_on(async {
        let (sender, receiver) = mpsc::channel(1000);
        let producer = tokio::spawn(async move {
            for counter in 0..35 {
                sender.send(format!("ack_id_{counter}")).await.unwrap();
            }
        });
        let mut reusable = ReusableReceiver::new(receiver);
        let mut processed = Vec::new();
        let mut errors = 0;
        while let Err(error) =
            fallible_stream_consumer(reusable.stream(), &mut processed, None).await
        {
            assert_eq!(error, "SomeError");
            errors += 1;
            assert!(errors < 10, "the loop makes progress");
        }
        producer.await.unwrap();
        let expected: Vec<String> = (0..35).map(|c| format!("ack_id_{c}")).collect();
        assert_eq!(processed, expected);
        assert_eq!(errors, 3);
        assert_eq!(reusable.metrics().leases, 4);
    });
}

#[test]
fn retry_does_not_wait_for_a_late_drop_and_the_wait_costs_almost_no_cpu() {
    current_thread().block_on(async {
        let (sender, receiver) = mpsc::channel(1000);
        let (dropped_tx, dropped_rx) = oneshot::channel();
        // 25 items, then the channel stays open until the late drop has
        // happened: the last attempt waits for more, parked.
        let producer = tokio::spawn(async move {
            for counter in 0..25 {
                sender.send(format!("ack_id_{counter}")).await.unwrap();
            }
            let _ = dropped_rx.await;
        });

        let mut reusable = ReusableReceiver::new(receiver);
        let mut processed = Vec::new();
        let first = reusable.stream();
        let first_lease = first.lease();
        let result =
            fallible_stream_consumer(first, &mut processed, Some((LATE_DROP, dropped_tx))).await;
        assert!(result.is_err());

        let failed_at = Instant::now();
        let cpu_at_failure = cpu::thread_time();
        let next = reusable.stream();
        let recovery = failed_at.elapsed();
        assert!(
            !first_lease.metrics().released,
            "the failed attempt's stream is still alive"
        );
        let mut result = fallible_stream_consumer(next, &mut processed, None).await;
        while result.is_err() {
            result = fallible_stream_consumer(reusable.stream(), &mut processed, None).await;
        }
        let wall = failed_at.elapsed();
        let cpu = cpu::thread_time() - cpu_at_failure;
        producer.await.unwrap();

        assert!(first_lease.metrics().released);
        assert_eq!(processed.len(), 25);
        assert!(wall >= LATE_DROP, "the run lasted until the late drop");
        assert!(
            recovery < Duration::from_millis(50),
            "the next stream was ready after {recovery:?}"
        );
        // Parked, not spinning: a few hundred microseconds of work over
        // 300 ms; a spinning wait would use a good share of the 300 ms.
        assert!(
            cpu < Duration::from_millis(20),
            "{cpu:?} of CPU time over {wall:?} of waiting"
        );
    });
}

#[test]
fn replayed_recipe_with_acknowledged_progress_processes_everything_exactly_once() {
    current_thread().block_on(async {
        let (sender, receiver) = mpsc::channel(1000);
        for counter in 0..25 {
            sender.send(format!("ack_id_{counter}")).await.unwrap();
        }
        drop(sender);
        let config = ReplayConfig::builder().max_items(100).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(receiver, config);
        let mut processed = Vec::new();
        loop {
            // The consumer confirms what it processed, through the lease.
            let stream = reusable.stream();
            let lease = stream.lease();
            let before = processed.len();
            let result = fallible_stream_consumer(stream, &mut processed, None).await;
            lease.ack((processed.len() - before) as u64).unwrap();
            if result.is_ok() {
                break;
            }
        }
        assert_eq!(processed.len(), 25);
        assert_eq!(reusable.metrics().redelivered, 0);
        assert!(reusable.is_drained());
    });
}

/// The control: the recipe, measured the same way, burns CPU for as long as
/// the late drop takes — which shows the probe above can tell.
#[test]
fn seed_recipe_spins_until_the_late_drop() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (sender, receiver) = mpsc::channel(16);
        sender.send(1u64).await.unwrap();
        let mut recipe = seed::ReusableReceiver::new(receiver);
        let mut stream = recipe.stream();
        assert_eq!(stream.next().await, Some(1));
        // "hyper" keeps the stream and drops it late, on a worker thread.
        let holder = tokio::spawn(async move {
            tokio::time::sleep(LATE_DROP).await;
            drop(stream);
        });
        let started = Instant::now();
        let cpu_before = cpu::thread_time();
        let _next = recipe.stream(); // spins on this thread until the drop
        let cpu = cpu::thread_time() - cpu_before;
        let wall = started.elapsed();
        holder.await.unwrap();
        assert!(wall >= LATE_DROP - Duration::from_millis(5));
        // Even on a loaded machine a spinning thread gets a fair share.
        assert!(
            cpu > wall / 10,
            "the recipe used {cpu:?} of CPU over {wall:?}"
        );
    });
}
