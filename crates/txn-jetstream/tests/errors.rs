//! Every failure is a clear error, in time: bad settings, a missing stream
//! or consumer, a server without JetStream, a consumer that does not fit, a
//! consumer deleted mid-run, a server gone mid-run.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull, push};
use async_patterns_testkit::nats::{INSTALL_HINT, NatsServer};
use async_patterns_txn_jetstream::{BuildError, DeliveryError, ReceiveError, Receiver};
use common::*;
use tokio::time::{Instant, timeout};

fn config_field(err: BuildError) -> &'static str {
    match err {
        BuildError::Config(e) => e.field(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_out_of_range_are_config_errors_naming_the_setting() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let err = builder(&context, "c")
        .max_attempts(0)
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `max_attempts`: got 0, expected at least 1"
    );
    let err = Receiver::builder(context.clone())
        .consumer("c")
        .build()
        .await
        .unwrap_err();
    assert_eq!(config_field(err), "stream");
    let err = builder(&context, "a.b").build().await.unwrap_err();
    assert_eq!(config_field(err), "consumer");
    let err = builder(&context, "c")
        .max_in_flight(0)
        .build()
        .await
        .unwrap_err();
    assert_eq!(config_field(err), "max_in_flight");
    let err = builder(&context, "c")
        .max_in_flight(8)
        .prefetch(9)
        .build()
        .await
        .unwrap_err();
    assert_eq!(config_field(err), "prefetch");
    let err = builder(&context, "c")
        .keep_alive(Some(Duration::from_secs(2)))
        .build()
        .await
        .unwrap_err();
    assert_eq!(config_field(err), "keep_alive");
    // Dead letters stored where this consumer would receive them again.
    let err = builder(&context, "c")
        .dead_letter_subject("orders.dead")
        .build()
        .await
        .unwrap_err();
    assert_eq!(config_field(err), "dead_letter_subject");
    let err = builder(&context, "c")
        .dead_letter_subject("dead.*")
        .build()
        .await
        .unwrap_err();
    assert_eq!(config_field(err), "dead_letter_subject");
    // A builder that fails creates nothing.
    let stream = context.get_stream(STREAM).await.unwrap();
    assert!(
        stream.consumer_info("c").await.is_err(),
        "no consumer was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_consumer_or_dead_letter_stream_are_named() {
    let server = server();
    let context = connect(&server).await;
    let err = builder(&context, "c").build().await.unwrap_err();
    assert!(
        matches!(&err, BuildError::StreamNotFound { stream } if stream == STREAM),
        "{err:?}"
    );
    streams(&context).await;
    let err = builder(&context, "c")
        .create_if_missing(false)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::ConsumerNotFound { consumer, .. } if consumer == "c"),
        "{err:?}"
    );
    let err = builder(&context, "c")
        .dead_letter_subject("nowhere.orders")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::NoDeadLetterStream { subject } if subject == "nowhere.orders"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no stream stores the dead-letter subject `nowhere.orders`: create one that does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_is_a_clear_error_not_a_hang() {
    let server = NatsServer::start_without_jetstream().expect(INSTALL_HINT);
    let context = connect(&server).await;
    let started = Instant::now();
    let err = timeout(Duration::from_secs(10), builder(&context, "c").build())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, BuildError::NoJetStream), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_that_does_not_fit_is_refused_not_changed() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let stream = context.get_stream(STREAM).await.unwrap();
    let make = |name: &str, ack_policy, max_deliver, ack_wait| pull::Config {
        durable_name: Some(name.into()),
        ack_policy,
        max_deliver,
        ack_wait,
        ..Default::default()
    };
    stream
        .create_consumer(make("none", AckPolicy::None, -1, Duration::from_secs(30)))
        .await
        .unwrap();
    stream
        .create_consumer(make(
            "capped",
            AckPolicy::Explicit,
            5,
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    stream
        .create_consumer(make(
            "short",
            AckPolicy::Explicit,
            -1,
            Duration::from_secs(7),
        ))
        .await
        .unwrap();
    stream
        .create_consumer(push::Config {
            durable_name: Some("pushed".into()),
            deliver_subject: "deliver.here".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        config_field(builder(&context, "none").build().await.unwrap_err()),
        "consumer"
    );
    assert_eq!(
        config_field(builder(&context, "pushed").build().await.unwrap_err()),
        "consumer"
    );
    // max_deliver 5 would stop the server delivering a message before its
    // 10th attempt could dead-letter it.
    assert_eq!(
        config_field(builder(&context, "capped").build().await.unwrap_err()),
        "max_attempts"
    );
    let bare = |name: &str| {
        Receiver::builder(context.clone())
            .stream(STREAM)
            .consumer(name)
            .dead_letter_subject("dead.orders")
    };
    assert!(bare("capped").max_attempts(4).build().await.is_ok());
    // The lease asked for is not the consumer's; without one, it is adopted.
    assert_eq!(
        config_field(builder(&context, "short").build().await.unwrap_err()),
        "lease"
    );
    let adopted = bare("short").build().await.expect("bound");
    drop(adopted);
    let info = stream.consumer_info("short").await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7), "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_mid_run_ends_begin_with_an_error() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let receiver = builder(&context, "c").build().await.unwrap();
    let delivery = timeout(Duration::from_secs(5), receiver.begin())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    context
        .get_stream(STREAM)
        .await
        .unwrap()
        .delete_consumer("c")
        .await
        .unwrap();
    let err = timeout(Duration::from_secs(10), receiver.begin())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, ReceiveError::ConsumerDeleted), "{err:?}");
    // Acknowledging to a consumer that is gone is unconfirmed, in time.
    let err = timeout(Duration::from_secs(10), delivery.commit())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Unconfirmed(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_mid_run_fails_commit_and_begin_in_time() {
    let mut server = server();
    let context = connect(&server).await;
    streams(&context).await;
    publish(&context, 1).await;
    let receiver = builder(&context, "c")
        .ack_timeout(Duration::from_millis(500))
        .disconnect_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let delivery = timeout(Duration::from_secs(5), receiver.begin())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.kill().unwrap();
    let started = Instant::now();
    let err = timeout(Duration::from_secs(10), delivery.commit())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Unconfirmed(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let err = timeout(Duration::from_secs(10), receiver.begin())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, ReceiveError::Disconnected), "{err:?}");
    // Back up: receiving works again. The unconfirmed ack may have reached
    // the server after all (the client sends what it buffered while
    // disconnected): message 1 is then committed, otherwise delivered again.
    server.start_again().unwrap();
    context
        .publish("orders.after", "after".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Receive until message 2 came and the consumer has settled: if the ack
    // of message 1 was lost with the server, message 1 comes again once its
    // lease (2 s) runs out, and is committed then.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if got.contains(&2) && consumer_state(&context, "c").await == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "receiving resumes after the restart and settles: got {got:?}, left {:?}",
            consumer_state(&context, "c").await
        );
        // `begin` is cancel safe: a timed-out call took nothing.
        match timeout(Duration::from_millis(500), receiver.begin()).await {
            Ok(Ok(Some(d))) => {
                got.push(d.stream_sequence());
                d.commit().await.expect("committed");
            }
            Ok(Ok(None)) => panic!("closed"),
            Ok(Err(ReceiveError::Disconnected)) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    assert!(got.iter().all(|s| [1, 2].contains(s)), "{got:?}");
}
