//! Faults that end processes: a consumer process killed with SIGKILL
//! mid-run, a crash between publishing a dead letter and terminating the
//! original, and the server restarted mid-run under publishers and
//! consumers. Nothing may be lost; duplicates are allowed only where the
//! crash makes them unavoidable, and are counted.
//!
//! The consumer processes are this test binary run again as a child: the
//! same test, which sees the environment variable naming it and plays the
//! child's part, so that a real process dies.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_core::DeadLetterReason;
use async_patterns_testkit::nats::spawn_child;
use async_patterns_txn_jetstream::{DeliveryError, OutgoingMessage, Publisher, RetryPolicy};
use common::*;
use tokio::time::{Instant, timeout};

const ROLE: &str = "TXN_JETSTREAM_FAULTS_CHILD";
const URL: &str = "TXN_JETSTREAM_FAULTS_URL";
const COMMITS: &str = "TXN_JETSTREAM_FAULTS_COMMITS";
const HOLD: &str = "TXN_JETSTREAM_FAULTS_HOLD";
const LEASE: Duration = Duration::from_secs(1);

/// Starts this test binary again, running only `test` in the child's part.
fn child_process(test: &str, url: &str, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, test)
        .env(URL, url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    spawn_child(command).expect("spawn the child process")
}

/// In the child process started for `test`: the server's URL.
fn child_of(test: &str) -> Option<String> {
    (std::env::var(ROLE).ok()? == test).then(|| std::env::var(URL).expect("a server url"))
}

async fn child_context(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"))
}

/// Commits `COMMITS` messages, then begins `HOLD` more and holds them,
/// saying so on stdout line by line, then waits to be killed.
async fn consumer_child(context: async_nats::jetstream::Context) {
    let commits: usize = std::env::var(COMMITS).unwrap().parse().unwrap();
    let hold: usize = std::env::var(HOLD).unwrap().parse().unwrap();
    let receiver = builder(&context, "work")
        .lease(LEASE)
        .build()
        .await
        .expect("receiver");
    for _ in 0..commits {
        let delivery = receiver.begin().await.unwrap().unwrap();
        let sequence = delivery.stream_sequence();
        delivery.commit().await.expect("committed");
        println!("committed {sequence}");
    }
    let mut held = Vec::new();
    for _ in 0..hold {
        let delivery = receiver.begin().await.unwrap().unwrap();
        println!("holding {}", delivery.stream_sequence());
        held.push(delivery);
    }
    // Let more arrive in the queue, unbegun, before the kill.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("ready {}", receiver.metrics().queued);
    std::future::pending::<()>().await;
}

/// Dead-letters the first message with a hook that kills this process
/// between the dead letter's confirmation and the original's termination.
async fn dead_letter_crash_child(context: async_nats::jetstream::Context) {
    let receiver = builder(&context, "work")
        .lease(LEASE)
        .__after_dead_letter_published(|| {
            println!("dead letter published, crashing");
            // SAFETY: `raise` has no preconditions; SIGKILL ends the process
            // here, as a crash at this point would.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        })
        .build()
        .await
        .expect("receiver");
    let delivery = receiver.begin().await.unwrap().unwrap();
    let _ = delivery.fail("poison").await;
    panic!("the hook should have killed the process");
}

/// Reads the child's stdout lines until one starts with `until`.
fn read_until(lines: &mut impl Iterator<Item = String>, until: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines.by_ref() {
        let done = line.contains(until);
        out.push(line);
        if done {
            return out;
        }
    }
    panic!("the child ended before `{until}`: {out:?}");
}

fn numbers(lines: &[String], prefix: &str) -> BTreeSet<u64> {
    lines
        .iter()
        // libtest's "test <name> ... " may precede the first line.
        .filter_map(|l| l.find(prefix).map(|at| &l[at + prefix.len()..]))
        .map(|n| n.trim().parse().expect("a sequence"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_process_killed_mid_run_loses_nothing() {
    const TEST: &str = "a_consumer_process_killed_mid_run_loses_nothing";
    if let Some(url) = child_of(TEST) {
        return consumer_child(child_context(&url).await).await;
    }
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let total = 40;
    publish(&context, total).await;
    // The consumer (and its lease) exist before the child binds them.
    create_consumer(&context, "work", LEASE).await;

    let mut child = child_process(
        TEST,
        &server.url(),
        &[(COMMITS, "10".into()), (HOLD, "5".into())],
    );
    let stdout = child.stdout.take().expect("piped");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        read_until(&mut lines, "ready")
    })
    .await
    .unwrap();
    let committed = numbers(&lines, "committed ");
    let held = numbers(&lines, "holding ");
    assert_eq!((committed.len(), held.len()), (10, 5), "{lines:?}");
    // SIGKILL: no drop, no nak, no in-progress ack — the process is gone.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    // A new consumer gets every message the dead one had not committed:
    // those it held, those in its queue, those it never pulled.
    let receiver = builder(&context, "work")
        .lease(LEASE)
        .build()
        .await
        .expect("receiver");
    let mut rest = BTreeMap::new();
    while rest.len() < total - committed.len() {
        let delivery = timeout(Duration::from_secs(10), receiver.begin())
            .await
            .unwrap_or_else(|_| panic!("missing messages; have {:?}", rest.keys()))
            .unwrap()
            .unwrap();
        let sequence = delivery.stream_sequence();
        assert!(
            !committed.contains(&sequence),
            "#{sequence} was committed, yet delivered again"
        );
        assert!(rest.insert(sequence, delivery.attempt()).is_none() || held.contains(&sequence));
        delivery.commit().await.expect("committed");
    }
    let all: BTreeSet<u64> = committed
        .iter()
        .copied()
        .chain(rest.keys().copied())
        .collect();
    assert_eq!(
        all,
        (1..=total as u64).collect(),
        "every message, once committed"
    );
    for sequence in &held {
        assert!(
            rest[sequence] >= 2,
            "#{sequence} was delivered to the dead process first"
        );
    }
    assert_eq!(
        settled(&context, "work", Duration::from_secs(3)).await,
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_dead_letter_and_termination_duplicates_and_never_loses() {
    const TEST: &str = "a_crash_between_dead_letter_and_termination_duplicates_and_never_loses";
    if let Some(url) = child_of(TEST) {
        return dead_letter_crash_child(child_context(&url).await).await;
    }
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    create_consumer(&context, "work", LEASE).await;

    let mut child = child_process(TEST, &server.url(), &[]);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child crashed at the hook"
    );

    // The dead letter is stored, and the original was not terminated.
    let dead = dead_letters(&context).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason(), &DeadLetterReason::Failed("poison".into()));
    let (_, unacked) = consumer_state(&context, "work").await;
    assert_eq!(
        unacked, 1,
        "the original is still the dead process's, until its lease runs out"
    );

    // It comes back; the handler gives up on it again.
    let receiver = builder(&context, "work")
        .lease(LEASE)
        .build()
        .await
        .expect("receiver");
    let again = timeout(Duration::from_secs(10), receiver.begin())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((again.stream_sequence(), again.attempt()), (1, 2));
    again.fail("poison").await.expect("dead-lettered");
    // The second dead letter was a duplicate the server dropped.
    let dead = dead_letters(&context).await;
    assert_eq!(dead.len(), 1, "stored once");
    assert_eq!(
        settled(&context, "work", Duration::from_secs(3)).await,
        (0, 0)
    );
}

/// What happened to each message (by payload: a retried publish may store
/// messages out of order), seen from the handlers.
#[derive(Debug, Default)]
struct Ledger {
    /// Commits that returned `Ok`, per message.
    committed: BTreeMap<u64, u32>,
    /// Commits whose confirmation was lost (the server restarted under
    /// them): committed or delivered again.
    unconfirmed: BTreeSet<u64>,
    /// Messages a handler gave up on.
    failed: BTreeSet<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_ends_every_message_committed_once_or_dead_lettered() {
    let mut server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let total: u64 = 300;
    let retry = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(1))
        .max_attempts(40)
        .build()
        .unwrap();
    // Two consumer "processes": separate connections on one consumer.
    let mut consumers = Vec::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for _ in 0..2 {
        let context = connect(&server).await;
        let receiver = builder(&context, "work")
            .lease(Duration::from_secs(2))
            .ack_timeout(Duration::from_secs(1))
            .disconnect_timeout(Duration::from_secs(30))
            .build()
            .await
            .expect("receiver");
        let ledger = ledger.clone();
        consumers.push(tokio::spawn(async move {
            loop {
                let delivery = match receiver.begin().await {
                    Ok(Some(d)) => d,
                    Ok(None) => return receiver,
                    Err(e) => panic!("receive error: {e}"),
                };
                // Every 7th message is poison; every 5th fails its first attempt.
                let payload: u64 = std::str::from_utf8(&delivery).unwrap().parse().unwrap();
                let result = if payload.is_multiple_of(7) {
                    let r = delivery.fail("poison").await;
                    if r.is_ok() {
                        ledger.lock().unwrap().failed.insert(payload);
                    }
                    r
                } else if payload.is_multiple_of(5) && delivery.attempt() == 1 {
                    delivery.rollback().await
                } else {
                    let r = delivery.commit().await;
                    let mut ledger = ledger.lock().unwrap();
                    match &r {
                        Ok(()) => *ledger.committed.entry(payload).or_default() += 1,
                        Err(DeliveryError::Unconfirmed(_)) => {
                            ledger.unconfirmed.insert(payload);
                        }
                        Err(_) => {}
                    }
                    r
                };
                // Errors here mean "it comes back"; the ledger checks that.
                drop(result);
            }
        }));
    }

    // Publish from a third connection, restarting the server half-way.
    let publisher_context = connect(&server).await;
    let publishing = tokio::spawn(async move {
        let mut publisher = Publisher::builder(publisher_context)
            .window(32)
            .ack_timeout(Duration::from_secs(1))
            .retry_policy(retry)
            .build()
            .unwrap();
        for i in 0..total {
            publisher
                .publish(
                    OutgoingMessage::new(format!("orders.{}", i % 3), i.to_string())
                        .id(format!("m-{i}")),
                )
                .await
                .expect("no message handed back");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        publisher.flush().await.expect("every message confirmed");
        publisher.metrics()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let restarted = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .unwrap();
    let server = restarted;
    let published = timeout(Duration::from_secs(60), publishing)
        .await
        .expect("publishing finishes")
        .unwrap();
    assert_eq!(published.handed_back, 0);
    eprintln!("publisher across the restart: {published:?}");

    // Everything is stored once, despite retries across the restart.
    let context = connect(&server).await;
    let stored = stream_messages(&context, STREAM).await;
    let payloads: BTreeSet<u64> = stored
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap())
        .collect();
    assert_eq!(stored.len() as u64, total, "no duplicates in the stream");
    assert_eq!(payloads, (0..total).collect(), "every message stored");

    // Every message ends: the consumer has nothing left.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = consumer_state(&context, "work").await;
        if state == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer never settled: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let dead: Vec<u64> = dead_letters(&context)
        .await
        .iter()
        .map(|d| std::str::from_utf8(d.payload()).unwrap().parse().unwrap())
        .collect();
    let dead_set: BTreeSet<u64> = dead.iter().copied().collect();
    assert_eq!(dead.len(), dead_set.len(), "each dead letter stored once");
    for payload in 0..total {
        let ok = ledger.committed.get(&payload).copied().unwrap_or(0);
        assert!(ok <= 1, "message {payload} committed {ok} times");
        if payload.is_multiple_of(7) {
            assert!(
                dead_set.contains(&payload),
                "poison {payload} not dead-lettered"
            );
            assert_eq!(ok, 0);
        } else {
            assert!(
                ok == 1 || ledger.unconfirmed.contains(&payload),
                "message {payload} neither committed nor with a commit in doubt"
            );
            assert!(
                !dead_set.contains(&payload),
                "message {payload} dead-lettered"
            );
        }
    }
    for consumer in consumers {
        consumer.abort();
    }
}
