//! Against a real tonic endpoint (`async-patterns-testkit`'s `UploadServer`
//! on 127.0.0.1): a client-streaming `Upload` fed by `reusable.stream()`,
//! retried by the driver while the server fails calls with `UNAVAILABLE`
//! part-way, drops connections mid-stream, or faults at random.
//!
//! At least once (replay mode): every id reaches the server, and an id
//! reaches it more than once only if an attempt yielded it and did not
//! confirm it. At most once (plain mode): the loss the receiver reports is
//! exactly what the server never saw, plus what it saw without confirming.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_core::RetryPolicy;
use async_patterns_reusable_receiver::{
    GiveUp, ReplayConfig, Retry, RetryError, ReusableReceiver, ReusableStream, WhenFull,
};
use async_patterns_testkit::proto::Item;
use async_patterns_testkit::proto::upload_client::UploadClient;
use async_patterns_testkit::{CallEnd, FaultKind, Faults, UploadServer, received_count};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the test timed out")
}

/// Sends ids `0..n` with a small payload, then closes the channel.
fn produce(n: u64, capacity: usize) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(capacity);
    tokio::spawn(async move {
        for id in 0..n {
            let item = Item {
                id,
                payload: vec![(id % 251) as u8; 64],
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    rx
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(50))
        .max_attempts(30)
        .build()
        .unwrap()
}

/// The transport failures a dropped connection shows as, and injected
/// `UNAVAILABLE`s. (The `tonic` feature has a ready classifier; see
/// `tests/tonic_classifier.rs`.)
fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
}

/// One attempt as the client saw it: the ids its stream yielded, in order,
/// how many the server confirmed, and whether it succeeded.
#[derive(Debug, Clone, Default)]
struct ClientAttempt {
    yielded: Vec<u64>,
    confirmed: usize,
    succeeded: bool,
}

type Log = Arc<Mutex<Vec<ClientAttempt>>>;

type UploadAttempt = std::pin::Pin<Box<dyn Future<Output = Result<u64, Status>> + Send>>;

/// One upload attempt: records what the stream yields; on an injected
/// `UNAVAILABLE`, acknowledges the items the server says it received.
fn upload(
    client: &UploadClient<Channel>,
    log: &Log,
) -> impl FnMut(ReusableStream<Item>) -> UploadAttempt {
    let client = client.clone();
    let log = Arc::clone(log);
    move |stream| {
        let mut client = client.clone();
        let log = Arc::clone(&log);
        let lease = stream.lease();
        let index = {
            let mut log = log.lock().unwrap();
            log.push(ClientAttempt::default());
            log.len() - 1
        };
        let recorded = {
            let log = Arc::clone(&log);
            stream.inspect(move |item| log.lock().unwrap()[index].yielded.push(item.id))
        };
        Box::pin(async move {
            match client.upload(recorded).await {
                Ok(summary) => {
                    log.lock().unwrap()[index].succeeded = true;
                    Ok(summary.into_inner().received)
                }
                Err(status) => {
                    if let Some(n) = received_count(&status) {
                        lease
                            .ack(n)
                            .expect("the server received what the stream yielded");
                        log.lock().unwrap()[index].confirmed = n as usize;
                    }
                    Err(status)
                }
            }
        })
    }
}

fn counts(ids: &[u64]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(*id).or_default() += 1;
    }
    counts
}

/// Checks the at-least-once contract of a finished replay-mode run.
fn assert_at_least_once(n: u64, server: &UploadServer, log: &Log) {
    let received = counts(&server.received_ids());
    for id in 0..n {
        assert!(
            received.contains_key(&id),
            "id {id} never reached the server"
        );
    }
    assert_eq!(received.len() as u64, n, "ids beyond the producer's");

    // The server saw an id again only when a call that had received it
    // ended without confirming it: a dropped connection (an injected
    // UNAVAILABLE confirms its count, a completed call everything).
    let calls = server.calls();
    let mut unconfirmed_by_server: HashMap<u64, usize> = HashMap::new();
    for call in &calls {
        if !matches!(
            call.end,
            CallEnd::Completed | CallEnd::Fault(FaultKind::Unavailable)
        ) {
            for id in &call.ids {
                *unconfirmed_by_server.entry(*id).or_default() += 1;
            }
        }
    }
    // ...and the client agrees: each duplicate was yielded to a failed
    // attempt after the prefix the server confirmed.
    let attempts = log.lock().unwrap().clone();
    let mut unconfirmed_by_client: HashMap<u64, usize> = HashMap::new();
    for attempt in attempts.iter().filter(|a| !a.succeeded) {
        for id in &attempt.yielded[attempt.confirmed..] {
            *unconfirmed_by_client.entry(*id).or_default() += 1;
        }
    }
    for (id, seen) in &received {
        let duplicates = seen - 1;
        assert_eq!(
            duplicates,
            unconfirmed_by_server.get(id).copied().unwrap_or(0),
            "id {id}: duplicates must be exactly the unconfirmed receptions"
        );
        assert!(
            duplicates <= unconfirmed_by_client.get(id).copied().unwrap_or(0),
            "id {id} was duplicated without having been unconfirmed"
        );
    }
    // Within an attempt the stream yields in order, and every call received
    // a prefix of what its attempt yielded.
    for attempt in &attempts {
        let mut sorted = attempt.yielded.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted, attempt.yielded,
            "an attempt yields ids in order, once"
        );
    }
    for call in &calls {
        assert!(
            attempts.iter().any(|a| a.yielded.starts_with(&call.ids)),
            "call {} received {:?}, not a prefix of any attempt",
            call.attempt,
            call.ids
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_mode_delivers_every_id_at_least_once_through_unavailable_and_dropped_connections() {
    within(async {
        const N: u64 = 400;
        let faults = Faults::none().fail_after(25, 2).drop_after(40, 4);
        let server = UploadServer::start(faults).await.unwrap();
        let client = server.client();
        let log = Log::default();
        let config = ReplayConfig::builder().max_items(10_000).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(produce(N, 64), config);

        let mut outcomes = Vec::new();
        let received = Retry::new(policy())
            .classify(retryable)
            .on_attempt(|a| outcomes.push((a.is_success(), a.metrics())))
            .run(&mut reusable, upload(&client, &log))
            .await
            .unwrap();

        assert_at_least_once(N, &server, &log);
        let calls = server.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.end == CallEnd::Fault(FaultKind::Unavailable))
                .count(),
            2
        );
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.end == CallEnd::Fault(FaultKind::DropConnection))
                .count(),
            2
        );
        // The successful call carried every id not confirmed before it.
        assert_eq!(received, N - 2 * 25);
        assert!(outcomes.last().unwrap().0);
        let metrics = reusable.metrics();
        assert_eq!(metrics.acked, N, "every item acknowledged exactly once");
        assert_eq!(metrics.lost, 0);
        assert!(metrics.redelivered > 0);
        assert!(reusable.is_drained());
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_mode_survives_seeded_random_faults() {
    within(async {
        const N: u64 = 600;
        for seed in [3, 11] {
            let server = UploadServer::start(Faults::none().random(0.02, seed))
                .await
                .unwrap();
            let client = server.client();
            let log = Log::default();
            let config = ReplayConfig::builder().max_items(10_000).build().unwrap();
            let mut reusable = ReusableReceiver::with_replay(produce(N, 64), config);
            let policy = RetryPolicy::builder()
                .initial_delay(Duration::from_millis(2))
                .max_delay(Duration::from_millis(20))
                .unlimited_attempts()
                .max_elapsed(Duration::from_secs(30))
                .build()
                .unwrap();
            Retry::new(policy)
                .classify(retryable)
                .run(&mut reusable, upload(&client, &log))
                .await
                .unwrap();
            assert_at_least_once(N, &server, &log);
            assert!(
                server.calls().len() > 1,
                "seed {seed}: at a 2% rate over {N} items some call faults"
            );
            server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_reports_as_lost_exactly_what_the_server_never_saw() {
    within(async {
        const N: u64 = 400;
        let server = UploadServer::start(Faults::none().fail_after(25, 3))
            .await
            .unwrap();
        let client = server.client();
        let log = Log::default();
        let mut reusable = ReusableReceiver::new(produce(N, 64));
        retry_plain(&mut reusable, &client, &log).await.unwrap();

        let received = counts(&server.received_ids());
        assert!(
            received.values().all(|c| *c == 1),
            "no duplicates at most once"
        );
        let never_seen = N - received.len() as u64;
        assert_eq!(reusable.metrics().lost, never_seen);
        // The lost items are those the failed attempts yielded past what the
        // server confirmed (tonic's encoder had pulled them ahead).
        let attempts = log.lock().unwrap().clone();
        let pulled_ahead: usize = attempts
            .iter()
            .filter(|a| !a.succeeded)
            .map(|a| a.yielded.len() - a.confirmed)
            .sum();
        assert_eq!(pulled_ahead as u64, never_seen);
        for attempt in attempts.iter().filter(|a| !a.succeeded) {
            for id in &attempt.yielded[attempt.confirmed..] {
                assert!(
                    !received.contains_key(id),
                    "id {id} was counted lost but arrived"
                );
            }
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_counts_items_a_dropped_connection_left_unconfirmed() {
    within(async {
        const N: u64 = 300;
        let server = UploadServer::start(Faults::none().drop_after(30, 2))
            .await
            .unwrap();
        let client = server.client();
        let log = Log::default();
        let mut reusable = ReusableReceiver::new(produce(N, 64));
        retry_plain(&mut reusable, &client, &log).await.unwrap();

        let received = counts(&server.received_ids());
        let never_seen = N - received.len() as u64;
        let seen_unconfirmed: usize = server
            .calls()
            .iter()
            .filter(|c| c.end == CallEnd::Fault(FaultKind::DropConnection))
            .map(|c| c.ids.len())
            .sum();
        // (The first attempt's stream may have yielded everything — tonic's
        // encoder pulls ahead — leaving the second call nothing to fail on.)
        assert!(seen_unconfirmed >= 30);
        // Without a confirmation the client cannot tell the two apart: both
        // count as lost.
        assert_eq!(
            reusable.metrics().lost,
            never_seen + seen_unconfirmed as u64
        );
        server.shutdown().await;
    })
    .await;
}

async fn retry_plain(
    reusable: &mut ReusableReceiver<Item>,
    client: &UploadClient<Channel>,
    log: &Log,
) -> Result<u64, RetryError<Status, Item>> {
    Retry::new(policy())
        .classify(retryable)
        .run(reusable, upload(client, log))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_stream_mode_uploads_in_bounded_batches_through_faults() {
    within(async {
        const N: u64 = 500;
        const BATCH: usize = 64;
        let faults = Faults::none()
            .fail_after(20, 2)
            .drop_after(30, 3)
            .random(0.01, 5);
        let server = UploadServer::start(faults).await.unwrap();
        let client = server.client();
        let log = Log::default();
        let config = ReplayConfig::builder()
            .max_items(BATCH)
            .when_full(WhenFull::EndStream)
            .build()
            .unwrap();
        let mut reusable = ReusableReceiver::with_replay(produce(N, 32), config);
        let mut runs = 0;
        while !reusable.is_drained() {
            runs += 1;
            assert!(runs < 100);
            Retry::new(policy())
                .classify(retryable)
                .run(&mut reusable, upload(&client, &log))
                .await
                .unwrap();
        }
        assert_at_least_once(N, &server, &log);
        for call in server.calls() {
            assert!(
                call.ids.len() <= BATCH,
                "a call carried {} items",
                call.ids.len()
            );
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_hands_back_every_unacknowledged_item_and_loses_none() {
    within(async {
        const N: u64 = 200;
        // Every call fails after 10 items: the policy runs out.
        let server = UploadServer::start(Faults::none().fail_after(10, u32::MAX))
            .await
            .unwrap();
        let client = server.client();
        let log = Log::default();
        let config = ReplayConfig::builder().max_items(10_000).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(produce(N, 256), config);
        let policy = RetryPolicy::builder()
            .initial_delay(Duration::from_millis(1))
            .max_attempts(3)
            .build()
            .unwrap();
        let err = Retry::new(policy)
            .classify(retryable)
            .run(&mut reusable, upload(&client, &log))
            .await
            .unwrap_err();
        assert_eq!((err.attempts(), err.reason()), (3, GiveUp::PolicyExhausted));
        assert_eq!(err.error().code(), Code::Unavailable);
        let unacked: Vec<u64> = err.into_unacked().into_iter().map(|i| i.id).collect();

        // Confirmed (server), handed back, or still in the channel: each id
        // exactly once, in order.
        let mut all = server.received_ids();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        all.extend(&unacked);
        let (mut rx, taken) = reusable.into_inner();
        all.extend(taken.into_iter().map(|i| i.id));
        while let Some(item) = rx.recv().await {
            all.push(item.id);
        }
        assert_eq!(all, (0..N).collect::<Vec<_>>());
        server.shutdown().await;
    })
    .await;
}
