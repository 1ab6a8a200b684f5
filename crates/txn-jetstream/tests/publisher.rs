//! The publisher against a real server: every message confirmed and stored
//! once, the window bounding what is unconfirmed, ids de-duplicating, and
//! failures handing the messages back.

mod common;

use async_patterns_txn_jetstream::{OutgoingMessage, PublishErrorKind, Publisher};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_confirms_every_message_and_stores_each_once_in_order() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let mut publisher = Publisher::builder(context.clone())
        .window(64)
        .build()
        .unwrap();
    publisher
        .publish_all(
            (0..2000).map(|i| OutgoingMessage::new(format!("orders.{}", i % 5), i.to_string())),
        )
        .await
        .expect("all confirmed");
    let m = publisher.metrics();
    assert_eq!(
        (m.sent, m.confirmed, m.in_flight, m.handed_back),
        (2000, 2000, 0, 0)
    );
    let stored = stream_messages(&context, STREAM).await;
    let payloads: Vec<usize> = stored
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap())
        .collect();
    assert_eq!(payloads.len(), 2000, "each once");
    assert!(
        payloads.iter().enumerate().all(|(i, &p)| i == p),
        "in order"
    );
    // Every message carried a de-duplication id.
    assert!(stored.iter().all(|m| {
        m.headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .is_some()
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_bounds_the_unconfirmed_publishes() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let mut publisher = Publisher::builder(context.clone())
        .window(4)
        .build()
        .unwrap();
    let mut highest = 0;
    for i in 0..100 {
        publisher
            .publish(("orders.w", i.to_string()))
            .await
            .unwrap();
        highest = highest.max(publisher.in_flight());
    }
    assert_eq!(highest, 4);
    publisher.flush().await.unwrap();
    assert_eq!(publisher.in_flight(), 0);
    assert_eq!(publisher.metrics().confirmed, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_is_stored_once_and_counted_as_a_duplicate() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let mut publisher = Publisher::builder(context.clone()).build().unwrap();
    let message = OutgoingMessage::new("orders.d", "once").id("order-1");
    publisher
        .publish_all([message.clone(), message])
        .await
        .unwrap();
    let m = publisher.metrics();
    assert_eq!((m.confirmed, m.duplicates), (2, 1));
    assert_eq!(stream_messages(&context, STREAM).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_no_stream_stores_are_handed_back_not_retried() {
    let server = server();
    let context = connect(&server).await;
    streams(&context).await;
    let mut publisher = Publisher::builder(context.clone()).build().unwrap();
    let err = publisher
        .publish_all([("orders.ok", "1"), ("nowhere.a", "2"), ("nowhere.b", "3")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::NoStream);
    let back: Vec<String> = err
        .into_inner()
        .iter()
        .map(|m| m.subject().to_owned())
        .collect();
    assert_eq!(back, ["nowhere.a", "nowhere.b"]);
    let m = publisher.metrics();
    assert_eq!((m.confirmed, m.handed_back, m.retried), (1, 2, 0));
    // The publisher stays usable.
    publisher.publish_all([("orders.ok", "4")]).await.unwrap();
    assert_eq!(stream_messages(&context, STREAM).await.len(), 2);
}
