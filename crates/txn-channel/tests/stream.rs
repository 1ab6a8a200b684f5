//! `Receiver::from_stream`: the same semantics over a stream
//! that is not a channel; items are pulled only when needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_patterns_txn_channel::Receiver;
use futures::{FutureExt, StreamExt};
use tokio::time::timeout;

#[tokio::test]
async fn rolled_back_stream_items_come_back_in_order() {
    let mut rx = Receiver::from_stream(futures::stream::iter(1..=4));
    let batch = rx.begin_batch(3).await.unwrap();
    assert_eq!(batch.commit_first(1).collect::<Vec<_>>(), [1]);
    let mut got = Vec::new();
    while let Some(delivery) = rx.begin().await {
        got.push((*delivery, delivery.attempt()));
        delivery.commit();
    }
    assert_eq!(got, [(2, 2), (3, 2), (4, 1)]);
}

#[tokio::test]
async fn the_stream_is_pulled_only_when_a_delivery_needs_an_item() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let stream = futures::stream::iter(0..100).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut rx = Receiver::from_stream(stream);
    rx.begin().await.unwrap().rollback();
    rx.begin().await.unwrap().commit();
    assert_eq!(pulled.load(Ordering::SeqCst), 1);
    let batch = rx.begin_batch(5).await.unwrap();
    assert_eq!(&*batch, [1, 2, 3, 4, 5]);
    assert_eq!(pulled.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn a_batch_over_a_stream_does_not_wait_for_items_that_are_not_ready() {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut rx = Receiver::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let batch = timeout(Duration::from_secs(1), rx.begin_batch(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*batch, [1, 2]);
    batch.commit_all();
    // Waiting for the next item is cancel-safe over a stream too.
    assert!(rx.begin().now_or_never().is_none());
    tx.send(3).await.unwrap();
    assert_eq!(rx.begin().await.unwrap().commit(), 3);
}

#[tokio::test]
async fn closing_a_stream_receiver_stops_pulling_but_delivers_what_it_holds() {
    let mut rx = Receiver::from_stream(futures::stream::iter(1..=10));
    rx.begin_batch(2).await.unwrap().rollback();
    rx.close();
    let mut got = Vec::new();
    while let Some(delivery) = rx.begin().await {
        got.push(delivery.commit());
    }
    assert_eq!(got, [1, 2]);
}
