//! Calls from a thread that drives a current-thread runtime: they wait for a
//! service served by another runtime, and refuse — never hang — when the
//! wait could deadlock (same runtime, not served, or a cycle of runtimes);
//! `served().await` lets such a caller wait until the service runs.

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

/// The issue-14 case: a current-thread runtime calls a service that another
/// runtime will serve but has not polled yet. The call is refused; awaiting
/// `served()` waits for that runtime, and then the same call is answered.
#[test]
fn current_thread_caller_awaits_served_then_calls_a_service_started_later() {
    within(|| {
        let (client, server) = service::<u32, u32>(4);
        let (start, may_start) = mpsc::channel::<()>();
        let service_thread = std::thread::spawn(move || {
            may_start.recv().unwrap();
            current_thread().block_on(server.serve(|n| async move { n * 3 }));
        });
        let (refused, answered) = current_thread().block_on(async move {
            let task = tokio::spawn(async move {
                // A sync callback's call before the service runs anywhere.
                let refused = client.call(1);
                start.send(()).unwrap();
                client.served().await;
                (refused, client.call(2))
            });
            task.await.unwrap()
        });
        assert_eq!(refused, Err(CallError::WouldDeadlock(1)));
        assert_eq!(answered, Ok(6));
        service_thread.join().unwrap();
    });
}

/// `served()` on the runtime that will serve the service itself completes
/// (the runtime goes on and polls `serve`), and the call it then makes is
/// refused for the right reason: the service runs here.
#[test]
fn served_completes_when_the_service_is_spawned_on_the_waiting_runtime() {
    within(|| {
        let (client, server) = service::<u32, u32>(4);
        let got = current_thread().block_on(async move {
            let waiter = tokio::spawn({
                let client = client.clone();
                async move {
                    client.served().await;
                    client.call(8)
                }
            });
            tokio::task::yield_now().await; // `waiter` is now waiting
            tokio::spawn(server.serve(|n| async move { n }));
            waiter.await.unwrap()
        });
        assert_eq!(got, Err(CallError::WouldDeadlock(8)));
    });
}

/// A service whose receiver is dropped without ever being served: `served()`
/// completes instead of hanging, and calls report `Closed`.
#[test]
fn served_completes_when_the_service_is_dropped_unserved() {
    within(|| {
        current_thread().block_on(async {
            let (client, server) = service::<u32, u32>(4);
            let waiting = tokio::spawn({
                let client = client.clone();
                async move { client.served().await }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            drop(server);
            waiting.await.unwrap();
            assert!(client.is_closed());
            assert_eq!(client.call(3), Err(CallError::Closed(Some(3))));
            // Once settled, it completes at once.
            client.served().await;
        })
    });
}

/// A `serve` future that is dropped before its first poll never serves:
/// waiting `served()` futures complete, and nothing is left registered.
#[test]
fn served_completes_when_an_unpolled_serve_future_is_dropped() {
    within(|| {
        current_thread().block_on(async {
            let (client, server) = service::<u32, u32>(4);
            let serve = server.serve(|n| async move { n });
            let waiting = tokio::spawn({
                let client = client.clone();
                async move { client.served().await }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            drop(serve);
            waiting.await.unwrap();
            assert_eq!(client.call(4), Err(CallError::Closed(Some(4))));
        })
    });
}

/// `served()` is cancel safe: a waiting future dropped in `select!` leaves
/// no registration behind, and a later one still completes.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_served_future_cancelled_in_select_leaves_nothing_behind() {
    let (client, server) = service::<u32, u32>(4);
    for _ in 0..3 {
        tokio::select! {
            () = client.served() => unreachable!("nothing serves it yet"),
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    assert!(
        format!("{client:?}").contains("served_waiters: 0"),
        "{client:?}"
    );
    let served = tokio::spawn(server.serve(|n| async move { n }));
    // Paused time advances only when every task is idle: a lost wake-up
    // fails here instead of hanging.
    tokio::time::timeout(Duration::from_secs(60), client.served())
        .await
        .expect("served() was never woken");
    drop(client);
    served.await.unwrap();
}
