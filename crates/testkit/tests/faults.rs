//! The fault injection of `UploadServer`, seen from a real tonic client.

use std::time::Duration;

use async_patterns_testkit::{
    CallEnd, FaultKind, Faults, UploadServer, proto::Item, received_count,
};

fn items(ids: std::ops::Range<u64>) -> impl futures_util::Stream<Item = Item> + Send + 'static {
    futures_util::stream::iter(ids.map(|id| Item {
        id,
        payload: vec![0; 16],
    }))
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test timed out")
}

#[tokio::test]
async fn dropped_connection_fails_the_call_and_the_client_reconnects() {
    within(async {
        let server = UploadServer::start(Faults::none().drop_after(3, 1))
            .await
            .unwrap();
        let mut client = server.client();
        let status = client.upload(items(0..100)).await.unwrap_err();
        assert_eq!(
            received_count(&status),
            None,
            "no count over a dropped connection: {status:?}"
        );
        assert_eq!(
            server.calls()[0].end,
            CallEnd::Fault(FaultKind::DropConnection)
        );
        assert_eq!(server.calls()[0].ids, [0, 1, 2]);

        // The same client reconnects for the next call; retry while the old
        // connection's failure is still being noticed.
        let mut summary = None;
        for _ in 0..20 {
            if let Ok(s) = client.upload(items(3..6)).await {
                summary = Some(s.into_inner());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(summary.expect("a call after the drop succeeds").received, 3);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn random_faults_are_reproducible_from_the_seed() {
    within(async {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let server = UploadServer::start(Faults::none().random(0.05, 7))
                .await
                .unwrap();
            let mut client = server.client();
            let mut ends = Vec::new();
            for call in 0..5u64 {
                let result = client.upload(items(call * 100..call * 100 + 100)).await;
                ends.push(result.is_ok());
                if result.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let per_call: Vec<_> = server
                .calls()
                .into_iter()
                .map(|c| (c.ids.len(), c.end))
                .collect();
            runs.push(per_call);
            server.shutdown().await;
        }
        assert_eq!(runs[0], runs[1]);
        assert!(
            runs[0]
                .iter()
                .any(|(_, end)| matches!(end, CallEnd::Fault(_))),
            "a 5% rate over 500 items faults at least once: {:?}",
            runs[0]
        );
    })
    .await;
}

#[tokio::test]
async fn fail_after_zero_items_fails_before_reading_anything() {
    within(async {
        let server = UploadServer::start(Faults::none().fail_after(0, 2))
            .await
            .unwrap();
        let mut client = server.client();
        for _ in 0..2 {
            let status = client.upload(items(0..10)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(received_count(&status), Some(0));
        }
        let summary = client.upload(items(0..10)).await.unwrap().into_inner();
        assert_eq!(summary.received, 10);
        assert_eq!(server.received_ids(), (0..10).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    within(async {
        let server = UploadServer::start(Faults::none()).await.unwrap();
        let mut client = server.client();
        client.upload(items(0..1)).await.unwrap();
        server.shutdown().await;
        assert!(client.upload(items(0..1)).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn random_call_faults_fail_about_the_given_share_of_calls() {
    within(async {
        let server = UploadServer::start(Faults::none().random_calls(0.25, 11))
            .await
            .unwrap();
        let mut client = server.client();
        let mut failed = 0;
        for call in 0..200u64 {
            // Short calls: the rate is per call, however few items it sends.
            if client.upload(items(call * 2..call * 2 + 2)).await.is_err() {
                failed += 1;
            }
        }
        let faulted = server
            .calls()
            .iter()
            .filter(|c| matches!(c.end, CallEnd::Fault(_)))
            .count();
        // About 50 expected; binomial(200, 0.25) lies in 25..=75 with
        // overwhelming odds (and the seed makes the run reproducible).
        assert!(
            (25..=75).contains(&faulted),
            "{faulted} of 200 calls faulted"
        );
        // A call can also fail on the client side while it notices a dropped
        // connection, never the other way round.
        assert!(failed >= faulted, "{failed} failures for {faulted} faults");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn poison_items_are_rejected_as_invalid_argument_every_time() {
    within(async {
        let server = UploadServer::start(Faults::none().reject_payload_prefix(b"poison"))
            .await
            .unwrap();
        let mut client = server.client();
        let with_poison = || {
            futures_util::stream::iter([
                Item {
                    id: 1,
                    payload: b"fine".to_vec(),
                },
                Item {
                    id: 2,
                    payload: b"poison!".to_vec(),
                },
                Item {
                    id: 3,
                    payload: b"fine".to_vec(),
                },
            ])
        };
        for _ in 0..2 {
            let status = client.upload(with_poison()).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
        for call in server.calls() {
            assert_eq!(call.end, CallEnd::Fault(FaultKind::Rejected));
            assert_eq!(call.ids, [1], "the poison item itself is not recorded");
        }
        assert_eq!(
            client
                .upload(items(10..12))
                .await
                .unwrap()
                .into_inner()
                .received,
            2
        );
        server.shutdown().await;
    })
    .await;
}
