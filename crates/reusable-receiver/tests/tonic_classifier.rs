//! The `tonic` feature's classifier against the real endpoint: injected
//! `UNAVAILABLE`s and dropped connections are retried, until the upload
//! goes through.
#![cfg(feature = "tonic")]

use std::time::Duration;

use async_patterns_core::RetryPolicy;
use async_patterns_reusable_receiver::tonic::is_retryable;
use async_patterns_reusable_receiver::{ReplayConfig, Retry, ReusableReceiver};
use async_patterns_testkit::proto::Item;
use async_patterns_testkit::{Faults, UploadServer};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_classifier_retries_unavailable_and_dropped_connections() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = UploadServer::start(Faults::none().fail_after(10, 1).drop_after(20, 3))
            .await
            .unwrap();
        let client = server.client();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for id in 0..100 {
                tx.send(Item {
                    id,
                    payload: vec![1; 32],
                })
                .await
                .unwrap();
            }
        });
        let config = ReplayConfig::builder().max_items(1_000).build().unwrap();
        let mut reusable = ReusableReceiver::with_replay(rx, config);
        let policy = RetryPolicy::builder()
            .initial_delay(Duration::from_millis(5))
            .max_attempts(20)
            .build()
            .unwrap();
        let mut classified = Vec::new();
        let summary = Retry::new(policy)
            .classify(|status: &tonic::Status| {
                let retryable = is_retryable(status);
                classified.push((status.code(), retryable));
                retryable
            })
            .run(&mut reusable, |stream| {
                let mut client = client.clone();
                async move { client.upload(stream).await }
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(summary.received, 100);
        assert!(classified.iter().all(|(_, retryable)| *retryable));
        assert!(classified.contains(&(tonic::Code::Unavailable, true)));
        assert!(
            classified.contains(&(tonic::Code::Unknown, true)),
            "a dropped connection shows as UNKNOWN with an I/O cause: {classified:?}"
        );
        server.shutdown().await;
    })
    .await
    .expect("the test timed out");
}

#[test]
fn application_errors_are_final() {
    for status in [
        tonic::Status::invalid_argument("bad item"),
        tonic::Status::permission_denied("no"),
        tonic::Status::unknown("application error"),
        tonic::Status::internal("bug"),
        tonic::Status::cancelled("by the caller"),
    ] {
        assert!(!is_retryable(&status), "{status:?}");
    }
    for code in async_patterns_reusable_receiver::tonic::RETRYABLE_CODES {
        assert!(is_retryable(&tonic::Status::new(code, "transient")));
    }
}
