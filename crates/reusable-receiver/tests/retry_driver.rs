//! The retry driver on paused time: backoff, classification, callbacks,
//! acknowledgement on success, revocation after every attempt, cancellation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_core::{Jitter, RetryPolicy};
use async_patterns_reusable_receiver::{
    GiveUp, NextStep, ReplayConfig, Retry, ReusableReceiver, ReusableStream, retry,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

async fn filled(n: u64) -> (mpsc::Sender<u64>, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel(64);
    for i in 0..n {
        tx.send(i).await.unwrap();
    }
    (tx, rx)
}

fn exact(initial_ms: u64, attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_delay(Duration::from_millis(initial_ms))
        .jitter(Jitter::None)
        .max_attempts(attempts)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn attempts_start_after_the_policys_delays() {
    let (_tx, rx) = filled(0).await;
    let mut reusable = ReusableReceiver::new(rx);
    let start = Instant::now();
    let mut starts = Vec::new();
    let err = retry(&mut reusable, exact(10, 4), |_stream| {
        starts.push(start.elapsed());
        async { Err::<(), _>("down") }
    })
    .await
    .unwrap_err();
    assert_eq!(err.attempts(), 4);
    assert_eq!(err.reason(), GiveUp::PolicyExhausted);
    assert_eq!(starts, [0, 10, 30, 70].map(Duration::from_millis));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_bounds_the_run() {
    let (_tx, rx) = filled(0).await;
    let mut reusable = ReusableReceiver::new(rx);
    let policy = RetryPolicy::builder()
        .initial_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(Duration::from_millis(1_000))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry(&mut reusable, policy, |_s| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err::<(), _>(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.reason(), GiveUp::PolicyExhausted);
    assert!(start.elapsed() <= Duration::from_millis(1_050));
}

#[tokio::test(start_paused = true)]
async fn rejected_error_gives_up_at_once() {
    let (_tx, rx) = filled(3).await;
    let mut reusable = ReusableReceiver::new(rx);
    let mut calls = 0;
    let err = Retry::new(exact(10, 10))
        .classify(|e: &&str| *e != "fatal")
        .run(&mut reusable, |_s| {
            calls += 1;
            async { Err::<(), _>("fatal") }
        })
        .await
        .unwrap_err();
    assert_eq!(
        (calls, err.reason(), err.attempts()),
        (1, GiveUp::NotRetryable, 1)
    );
    assert_eq!(
        err.to_string(),
        "gave up after 1 attempt: the error is not retryable"
    );
}

#[tokio::test(start_paused = true)]
async fn callback_sees_every_attempt_with_its_counts_and_next_step() {
    let (tx, rx) = filled(6).await;
    drop(tx);
    let config = ReplayConfig::builder().build().unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let mut seen = Vec::new();
    let mut call = 0;
    let total = Retry::new(exact(10, 5))
        .on_attempt(|a| {
            seen.push((
                a.number(),
                a.is_success(),
                a.error().copied(),
                a.metrics().delivered,
                a.metrics().acked,
                a.next(),
            ))
        })
        .run(&mut reusable, |stream| {
            call += 1;
            let fail = call < 3;
            async move {
                let items: Vec<u64> = stream.take(if fail { 2 } else { 100 }).collect().await;
                if fail { Err("flaky") } else { Ok(items.len()) }
            }
        })
        .await
        .unwrap();
    assert_eq!(total, 6);
    assert_eq!(
        seen,
        [
            (
                1,
                false,
                Some("flaky"),
                2,
                0,
                NextStep::RetryAfter(Duration::from_millis(10))
            ),
            (
                2,
                false,
                Some("flaky"),
                2,
                0,
                NextStep::RetryAfter(Duration::from_millis(20))
            ),
            (3, true, None, 6, 6, NextStep::Done),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stream_kept_by_the_consumer_is_revoked_when_the_attempt_ends() {
    let (tx, rx) = filled(4).await;
    let mut reusable = ReusableReceiver::new(rx);
    let kept: Arc<Mutex<Option<ReusableStream<u64>>>> = Arc::default();
    let value = retry(&mut reusable, exact(10, 3), |mut stream| {
        let kept = Arc::clone(&kept);
        async move {
            let first = stream.next().await;
            // Like hyper holding a request body after the call returned.
            *kept.lock().unwrap() = Some(stream);
            Ok::<_, ()>(first)
        }
    })
    .await
    .unwrap();
    assert_eq!(value, Some(0));
    let mut late = kept.lock().unwrap().take().unwrap();
    assert_eq!(
        late.next().await,
        None,
        "the attempt is over: no more items"
    );
    drop(tx);
    let rest: Vec<u64> = reusable.stream().collect().await;
    assert_eq!(rest, [1, 2, 3]);
    assert_eq!(reusable.metrics().lost, 0, "success acknowledged the item");
}

#[tokio::test(start_paused = true)]
async fn cancelled_run_revokes_its_attempt_and_the_next_run_replays() {
    let (tx, rx) = filled(5).await;
    drop(tx);
    let config = ReplayConfig::builder().build().unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let stuck = async {
        retry(&mut reusable, exact(10, 3), |mut stream| async move {
            stream.next().await;
            stream.next().await;
            std::future::pending::<Result<(), ()>>().await
        })
        .await
    };
    tokio::select! {
        _ = stuck => panic!("the attempt never ends"),
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    assert!(
        reusable.lease().is_none(),
        "the cancelled attempt's lease was revoked"
    );
    assert_eq!(reusable.metrics().unacked as usize, 2);
    let all = retry(&mut reusable, exact(10, 3), |stream| async move {
        Ok::<Vec<u64>, ()>(stream.collect().await)
    })
    .await
    .unwrap();
    assert_eq!(all, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn cancelled_run_in_plain_mode_counts_its_items_as_lost() {
    let (_tx, rx) = filled(5).await;
    let mut reusable = ReusableReceiver::new(rx);
    let stuck = retry(&mut reusable, exact(10, 3), |mut stream| async move {
        stream.next().await;
        std::future::pending::<Result<(), ()>>().await
    });
    tokio::select! {
        _ = stuck => panic!("the attempt never ends"),
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    assert_eq!(reusable.metrics().lost, 1);
}

#[tokio::test(start_paused = true)]
async fn panicking_attempt_keeps_its_items_for_replay() {
    let (tx, rx) = filled(3).await;
    drop(tx);
    let config = ReplayConfig::builder().build().unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let outcome = tokio::spawn(async move {
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(retry(
            &mut reusable,
            exact(10, 3),
            |mut stream| async move {
                stream.next().await;
                panic!("the consumer crashed");
                #[allow(unreachable_code)]
                Ok::<(), ()>(())
            },
        )))
        .await;
        (result.is_err(), reusable)
    });
    let (panicked, mut reusable) = outcome.await.unwrap();
    assert!(panicked);
    assert!(reusable.lease().is_none());
    let all: Vec<u64> = reusable.stream().collect().await;
    assert_eq!(all, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn success_ends_a_kept_stream_that_waits_for_room_in_the_buffer() {
    let (_tx, rx) = filled(10).await;
    let config = ReplayConfig::builder().max_items(2).build().unwrap();
    let mut reusable = ReusableReceiver::with_replay(rx, config);
    let waiting = Arc::new(Mutex::new(None));
    retry(&mut reusable, exact(10, 3), |mut stream| {
        let waiting = Arc::clone(&waiting);
        async move {
            stream.next().await;
            stream.next().await;
            // The buffer is full; the body, still held elsewhere, waits for room.
            let task = tokio::spawn(async move { stream.next().await });
            tokio::task::yield_now().await;
            *waiting.lock().unwrap() = Some(task);
            Ok::<(), ()>(())
        }
    })
    .await
    .unwrap();
    let task = waiting.lock().unwrap().take().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert_eq!(ended.expect("the waiting stream was woken").unwrap(), None);
    assert_eq!(reusable.metrics().unacked as usize, 0);
}
