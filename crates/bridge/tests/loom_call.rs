//! Loom models of a sync → async call's hand-off: the caller parked on its
//! call slot while the service answers, ends, or goes away with the request
//! still queued. The caller must always return — with the answer, or with
//! `Closed` and the request if the service never took it. And a client
//! waiting for the service to be served is woken when it is.
#![cfg(async_patterns_loom)]

use std::future::Future;

use async_patterns_bridge::{CallError, service};
use loom::future::block_on;
use loom::thread;

#[test]
fn answered_call_returns_the_response() {
    loom::model(|| {
        let (client, server) = service::<u32, u32>(1);
        let served = thread::spawn(move || block_on(server.serve(|n| async move { n + 1 })));
        assert_eq!(client.call(1), Ok(2));
        drop(client); // lets `serve` return
        served.join().unwrap();
    });
}

#[test]
fn service_dropped_with_the_call_queued_hands_the_request_back() {
    loom::model(|| {
        let (client, server) = service::<u32, u32>(1);
        let dropper = thread::spawn(move || drop(server));
        match client.call(5) {
            Err(CallError::Closed(Some(5))) => {}
            other => panic!("unexpected {other:?}"),
        }
        dropper.join().unwrap();
    });
}

#[test]
fn service_that_takes_the_call_and_ends_without_answering_releases_the_caller() {
    loom::model(|| {
        let (client, server) = service::<u32, u32>(1);
        let served = thread::spawn(move || {
            // The handler's future is dropped before it completes, as when
            // the serving task is cancelled.
            let mut serve = Box::pin(server.serve(|n| async move {
                std::future::pending::<()>().await;
                n
            }));
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            // Poll until the request has been taken (or the client left).
            for _ in 0..3 {
                if serve.as_mut().poll(&mut cx).is_ready() {
                    return;
                }
                thread::yield_now();
            }
        });
        let result = client.call(9);
        assert!(
            matches!(result, Err(CallError::Closed(Some(9) | None))),
            "unexpected {result:?}"
        );
        served.join().unwrap();
    });
}

#[test]
fn a_waiting_served_future_is_woken_by_the_first_poll_of_serve() {
    loom::model(|| {
        let (client, server) = service::<u32, u32>(1);
        let serving = thread::spawn(move || {
            // One poll records where `serve` runs; then the future is dropped
            // (the service ends).
            let mut serve = Box::pin(server.serve(|n| async move { n }));
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let _ = serve.as_mut().poll(&mut cx);
        });
        // Completes whichever comes first: the poll, or the end of `serve`.
        block_on(client.served());
        serving.join().unwrap();
        assert!(format!("{client:?}").contains("served: true"));
    });
}
