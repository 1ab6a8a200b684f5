//! Calls from a thread that drives a current-thread runtime: they wait for a
//! service served by another runtime, and refuse — never hang — when the
//! wait could deadlock (same runtime, not served, or a cycle of runtimes).

mod common;

use std::sync::mpsc;
use std::time::Duration;

use async_patterns_bridge::{CallError, service};
use common::{current_thread, within};

/// Serves `server` on a current-thread runtime of its own thread until the
/// clients are gone; returns once `serve` is running.
fn serve_on_own_runtime(
    server: async_patterns_bridge::ServiceReceiver<u32, u32>,
) -> std::thread::JoinHandle<()> {
    let (started, is_started) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let serving = tokio::spawn(server.serve(|n| async move { n + 100 }));
            // `serve` records where it runs on its first poll.
            tokio::task::yield_now().await;
            started.send(()).unwrap();
            serving.await.unwrap();
        });
    });
    is_started.recv_timeout(Duration::from_secs(30)).unwrap();
    thread
}

#[test]
fn current_thread_caller_waits_for_a_service_on_another_runtime() {
    within(|| {
        let (client, server) = service::<u32, u32>(4);
        let service_thread = serve_on_own_runtime(server);
        let answers = current_thread().block_on(async move {
            // A sync callback inside a task on this current-thread runtime.
            let task = tokio::spawn(async move {
                let answers: Vec<_> = (0..10).map(|i| client.call(i)).collect();
                answers
            });
            task.await.unwrap()
        });
        assert_eq!(answers, (0..10).map(|i| Ok(i + 100)).collect::<Vec<_>>());
        service_thread.join().unwrap();
    });
}

#[test]
fn current_thread_caller_refuses_a_service_that_is_not_served() {
    within(|| {
        let (client, _server) = service::<u32, u32>(4);
        let got = current_thread().block_on(async move { client.call(5) });
        assert_eq!(got, Err(CallError::WouldDeadlock(5)));
    });
}

#[test]
fn current_thread_caller_refuses_a_service_on_its_own_runtime() {
    within(|| {
        let (client, server) = service::<u32, u32>(4);
        let got = current_thread().block_on(async move {
            tokio::spawn(server.serve(|n| async move { n }));
            tokio::task::yield_now().await; // `serve` is now running here
            client.call(6)
        });
        assert_eq!(got, Err(CallError::WouldDeadlock(6)));
    });
}

#[test]
fn current_thread_caller_gets_closed_for_a_service_that_is_gone() {
    within(|| {
        let (client, server) = service::<u32, u32>(4);
        drop(server);
        let got = current_thread().block_on(async move { client.call(7) });
        assert_eq!(got, Err(CallError::Closed(Some(7))));
    });
}

/// Runtime A waits in a call to B's service; B's handler, while A waits,
/// makes B's own thread call A's service. Waiting there would deadlock both
/// runtimes, so that call is refused and A's call completes. The same call
/// made when A is not waiting is answered: the refusal was the cycle's.
#[test]
fn two_current_thread_runtimes_never_wait_for_each_other() {
    within(|| {
        let (client_a, server_a) = service::<u32, u32>(4);
        let (client_b, server_b) = service::<u32, Result<u32, CallError<u32>>>(4);

        let (b_ready, b_is_ready) = mpsc::channel();
        let runtime_b = std::thread::spawn(move || {
            current_thread().block_on(async move {
                let serving = tokio::spawn(server_b.serve(move |_| {
                    let client_a = client_a.clone();
                    // A sync call from a task of runtime B to A's service.
                    async move {
                        tokio::spawn(async move { client_a.call(41) })
                            .await
                            .unwrap()
                    }
                }));
                tokio::task::yield_now().await;
                b_ready.send(()).unwrap();
                serving.await.unwrap();
            })
        });
        b_is_ready.recv_timeout(Duration::from_secs(30)).unwrap();

        let (a_answer, a_answered) = mpsc::channel();
        let client_b_in_a = client_b.clone();
        let runtime_a = std::thread::spawn(move || {
            current_thread().block_on(async move {
                let serving = tokio::spawn(server_a.serve(|n| async move { n + 1 }));
                tokio::task::yield_now().await;
                // A task of runtime A calls B's service and waits for it.
                let answer = tokio::spawn(async move { client_b_in_a.call(1) })
                    .await
                    .unwrap();
                a_answer.send(answer).unwrap();
                serving.await.unwrap();
            })
        });

        let answer = a_answered.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(answer, Ok(Err(CallError::WouldDeadlock(41))));
        // Now A's thread is idle: B's thread may wait for A's service.
        assert_eq!(client_b.call(2), Ok(Ok(42)));

        drop(client_b); // B's serve ends, dropping its handler and A's last client
        runtime_b.join().unwrap();
        runtime_a.join().unwrap();
    });
}
