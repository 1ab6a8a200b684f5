//! Each of the three tools — the channel's sync sends, `SyncClient::call`,
//! `block_on` — in each context sync code runs in: outside any runtime, a
//! current-thread runtime (inside `block_on` and inside a spawned task), a
//! multi-thread worker, a `spawn_blocking` thread, the thread inside a
//! multi-thread runtime's `block_on`, and a `Drop` impl running in a task.
//! Where the thread may wait, the tools wait and succeed; where waiting
//! would deadlock, they say so at once. Every scenario runs under an
//! anti-hang timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_patterns_bridge::{
    CallError, SendBlockingError, SendTimeoutError, Sender, ServiceReceiver, SyncClient,
    TrySendError, block_on, block_on_local, channel, service,
};
use async_patterns_core::RuntimeContext;
use common::{current_thread, multi_thread, within};
use tokio::task::JoinHandle;

/// Items each waiting scenario pushes through a channel of capacity 1, so
/// that almost every send has to wait for the consumer.
const SENT: u32 = 200;

/// Spawns a consumer that collects everything the channel delivers.
fn collect(mut rx: async_patterns_bridge::Receiver<u32>) -> JoinHandle<Vec<u32>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    })
}

/// Sync code that must wait for room: every item arrives, in order.
fn send_all_waiting(tx: Sender<u32>) {
    assert!(RuntimeContext::current().can_block());
    for i in 0..SENT {
        if i % 2 == 0 {
            tx.send_blocking(i).unwrap();
        } else {
            tx.send_timeout(i, Duration::from_secs(30)).unwrap();
        }
    }
}

fn assert_all_received(got: Vec<u32>) {
    assert_eq!(got, (0..SENT).collect::<Vec<_>>());
}

/// Sync code that may not wait: room is used, a full channel is reported at
/// once with the value handed back.
fn sends_refuse_to_wait(tx: &Sender<u32>) {
    assert!(!RuntimeContext::current().can_block());
    assert_eq!(tx.try_send(1), Ok(()));
    assert_eq!(
        tx.send_blocking(2),
        Err(SendBlockingError::WouldDeadlock(2))
    );
    let started = Instant::now();
    assert_eq!(
        tx.send_timeout(3, Duration::from_secs(30)),
        Err(SendTimeoutError::WouldDeadlock(3))
    );
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
    assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
}

fn serve_doubling(server: ServiceReceiver<u32, u32>) -> impl Future<Output = ()> {
    server.serve(|n| async move {
        tokio::task::yield_now().await;
        n * 2
    })
}

/// Sync code calling a served service: answered.
fn calls_are_answered(client: &SyncClient<u32, u32>) {
    assert!(RuntimeContext::current().can_block());
    for i in 0..20 {
        assert_eq!(client.call(i), Ok(i * 2));
    }
    assert_eq!(client.call_timeout(50, Duration::from_secs(30)), Ok(100));
}

/// Sync code on a current-thread runtime: refused at once, request back.
fn calls_refuse_to_wait(client: &SyncClient<u32, u32>) {
    assert_eq!(client.call(7), Err(CallError::WouldDeadlock(7)));
    assert_eq!(
        client.call_timeout(8, Duration::from_secs(30)),
        Err(CallError::WouldDeadlock(8))
    );
}

/// A future that needs a runtime: a timer, a spawned task, a yield.
async fn needs_a_runtime() -> u32 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let task = tokio::spawn(async { 40 });
    tokio::task::yield_now().await;
    task.await.unwrap() + 2
}

fn block_on_runs_the_future() {
    assert_eq!(block_on(needs_a_runtime()), 42);
    let local = std::rc::Rc::new(1); // a future that is not `Send`
    assert_eq!(block_on_local(async { *local + 1 }).ok(), Some(2));
}

/// Runs `f` when dropped: a `Drop` impl that calls sync code.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

// ---- outside any runtime ------------------------------------------------

#[test]
fn outside_any_runtime_sends_wait_for_room() {
    within(|| {
        let consumer_rt = multi_thread(1);
        let (tx, rx) = channel(1);
        let consumer = consumer_rt.spawn(async move { collect(rx).await.unwrap() });
        assert_eq!(RuntimeContext::current(), RuntimeContext::NoRuntime);
        send_all_waiting(tx);
        assert_all_received(consumer_rt.block_on(consumer).unwrap());
    });
}

#[test]
fn outside_any_runtime_calls_are_answered() {
    within(|| {
        let service_rt = current_thread();
        let (client, server) = service(4);
        let served = std::thread::spawn(move || service_rt.block_on(serve_doubling(server)));
        calls_are_answered(&client);
        drop(client);
        served.join().unwrap();
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "block_on's helper runtime lives as long as the process: miri reports its thread as leaked"
)]
fn outside_any_runtime_block_on_runs_on_the_helper_runtime() {
    within(block_on_runs_the_future);
}

// ---- current-thread runtime, inside `block_on` ---------------------------

#[test]
fn current_thread_block_on_sends_refuse_to_wait() {
    within(|| {
        let (tx, mut rx) = channel(1);
        current_thread().block_on(async {
            sends_refuse_to_wait(&tx);
            // The value that was sent is there; the refused ones were handed back.
            assert_eq!(rx.recv().await, Some(1));
        });
    });
}

#[test]
fn current_thread_block_on_calls_are_refused() {
    within(|| {
        let (client, server) = service(4);
        current_thread().block_on(async {
            tokio::spawn(serve_doubling(server));
            calls_refuse_to_wait(&client);
        });
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "block_on's helper runtime lives as long as the process: miri reports its thread as leaked"
)]
fn current_thread_block_on_runs_send_futures_on_a_helper_thread() {
    within(|| {
        current_thread().block_on(async {
            assert_eq!(block_on(needs_a_runtime()), 42);
            let refused = block_on_local(async { 1 });
            assert!(refused.is_err());
        });
    });
}

// ---- current-thread runtime, inside a spawned task -----------------------

#[test]
fn current_thread_task_sends_refuse_to_wait() {
    within(|| {
        let (tx, mut rx) = channel(1);
        current_thread().block_on(async move {
            tokio::spawn(async move { sends_refuse_to_wait(&tx) })
                .await
                .unwrap();
            assert_eq!(rx.recv().await, Some(1));
            assert_eq!(rx.recv().await, None);
        });
    });
}

#[test]
fn current_thread_task_calls_are_refused() {
    within(|| {
        let (client, server) = service(4);
        current_thread().block_on(async move {
            tokio::spawn(serve_doubling(server));
            tokio::spawn(async move { calls_refuse_to_wait(&client) })
                .await
                .unwrap();
        });
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "block_on's helper runtime lives as long as the process: miri reports its thread as leaked"
)]
fn current_thread_task_block_on_uses_a_helper_thread() {
    within(|| {
        current_thread().block_on(async {
            let got = tokio::spawn(async {
                let out = block_on(needs_a_runtime());
                (out, block_on_local(async { 1 }).is_err())
            })
            .await
            .unwrap();
            assert_eq!(got, (42, true));
        });
    });
}

// ---- multi-thread worker --------------------------------------------------

#[test]
fn multi_thread_worker_sends_wait_while_the_consumer_runs_on_the_same_runtime() {
    within(|| {
        // One worker: the consumer can only run because the waiting sender
        // hands the worker over (`block_in_place`).
        multi_thread(1).block_on(async {
            let (tx, rx) = channel(1);
            let consumer = collect(rx);
            tokio::spawn(async move {
                assert_eq!(RuntimeContext::current(), RuntimeContext::MultiThreadWorker);
                send_all_waiting(tx);
            })
            .await
            .unwrap();
            assert_all_received(consumer.await.unwrap());
        });
    });
}

#[test]
fn multi_thread_worker_calls_a_service_on_the_same_runtime() {
    within(|| {
        multi_thread(1).block_on(async {
            let (client, server) = service(4);
            let served = tokio::spawn(serve_doubling(server));
            tokio::spawn(async move { calls_are_answered(&client) })
                .await
                .unwrap();
            served.await.unwrap();
        });
    });
}

#[test]
fn multi_thread_worker_block_on_can_await_tasks_of_its_own_runtime() {
    within(|| {
        multi_thread(1).block_on(async {
            tokio::spawn(async { block_on_runs_the_future() })
                .await
                .unwrap();
        });
    });
}

// ---- spawn_blocking thread ------------------------------------------------

#[test]
fn spawn_blocking_sends_wait_for_a_consumer_on_the_same_runtime() {
    within(|| {
        for rt in [current_thread(), multi_thread(1)] {
            rt.block_on(async {
                let (tx, rx) = channel(1);
                let consumer = collect(rx);
                tokio::task::spawn_blocking(move || {
                    assert_eq!(RuntimeContext::current(), RuntimeContext::BlockingThread);
                    send_all_waiting(tx);
                })
                .await
                .unwrap();
                assert_all_received(consumer.await.unwrap());
            });
        }
    });
}

#[test]
fn spawn_blocking_calls_a_service_on_the_same_runtime() {
    within(|| {
        for rt in [current_thread(), multi_thread(1)] {
            rt.block_on(async {
                let (client, server) = service(4);
                let served = tokio::spawn(serve_doubling(server));
                tokio::task::spawn_blocking(move || calls_are_answered(&client))
                    .await
                    .unwrap();
                served.await.unwrap();
            });
        }
    });
}

#[test]
fn spawn_blocking_block_on_uses_the_runtime_it_belongs_to() {
    within(|| {
        for rt in [current_thread(), multi_thread(1)] {
            rt.block_on(async {
                tokio::task::spawn_blocking(block_on_runs_the_future)
                    .await
                    .unwrap();
            });
        }
    });
}

// ---- the thread inside a multi-thread runtime's `block_on` ----------------

#[test]
fn multi_thread_runtime_block_on_thread_can_wait_with_every_tool() {
    within(|| {
        multi_thread(1).block_on(async {
            assert_eq!(RuntimeContext::current(), RuntimeContext::BlockingThread);
            let (tx, rx) = channel(1);
            let consumer = collect(rx);
            send_all_waiting(tx);
            assert_all_received(consumer.await.unwrap());

            let (client, server) = service(4);
            let served = tokio::spawn(serve_doubling(server));
            calls_are_answered(&client);
            drop(client);
            served.await.unwrap();

            block_on_runs_the_future();
        });
    });
}

// ---- a `Drop` impl running in a task --------------------------------------

#[test]
fn drop_in_a_multi_thread_task_waits_and_delivers() {
    within(|| {
        multi_thread(1).block_on(async {
            let (tx, rx) = channel(1);
            let consumer = collect(rx);
            let (client, server) = service(4);
            let served = tokio::spawn(serve_doubling(server));
            let answers = Arc::new(Mutex::new(Vec::new()));
            let seen = answers.clone();
            tokio::spawn(async move {
                let _guard = OnDrop(Some(move || {
                    send_all_waiting(tx);
                    seen.lock().unwrap().push(client.call(21).unwrap());
                    seen.lock().unwrap().push(block_on(needs_a_runtime()));
                }));
                tokio::task::yield_now().await;
                // `_guard` drops here, inside the task's poll.
            })
            .await
            .unwrap();
            assert_all_received(consumer.await.unwrap());
            served.await.unwrap();
            assert_eq!(*answers.lock().unwrap(), [42, 42]);
        });
    });
}

#[test]
fn drop_in_a_current_thread_task_refuses_to_wait() {
    within(|| {
        current_thread().block_on(async {
            let (tx, mut rx) = channel(1);
            let (client, server) = service(4);
            tokio::spawn(serve_doubling(server));
            tokio::spawn(async move {
                let _guard = OnDrop(Some(move || {
                    sends_refuse_to_wait(&tx);
                    calls_refuse_to_wait(&client);
                    // Not under miri: block_on's helper runtime lives as long
                    // as the process, which miri reports as a leaked thread.
                    if !cfg!(miri) {
                        assert_eq!(block_on(needs_a_runtime()), 42);
                    }
                }));
                tokio::task::yield_now().await;
            })
            .await
            .unwrap();
            assert_eq!(rx.recv().await, Some(1));
            assert_eq!(rx.recv().await, None);
        });
    });
}
