//! Sync → async calls: answers reach their own callers, the concurrency limit
//! holds, and a service that panics, is dropped, aborted or too slow ends
//! every pending call — never a hang, the request handed back whenever the
//! service never took it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_patterns_bridge::{CallError, ServiceBuilder, service};
use common::{multi_thread, within};

#[test]
fn each_caller_gets_its_own_answer_with_concurrent_serving() {
    within(|| {
        let rt = multi_thread(2);
        let (client, server) = ServiceBuilder::<u64, u64>::new()
            .capacity(8)
            .concurrency(4)
            .build()
            .unwrap();
        let served = rt.spawn(server.serve(|n| async move {
            // Later requests finish first.
            tokio::time::sleep(Duration::from_micros(1000 - n % 1000)).await;
            n * 3
        }));
        let callers: Vec<_> = (0..8u64)
            .map(|c| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let n = c * 1000 + i;
                        assert_eq!(client.call(n), Ok(n * 3));
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        drop(client);
        rt.block_on(served).unwrap();
    });
}

#[test]
fn serve_never_exceeds_its_concurrency_and_uses_all_of_it() {
    within(|| {
        let rt = multi_thread(2);
        let (client, server) = ServiceBuilder::<(), ()>::new()
            .capacity(16)
            .concurrency(3)
            .build()
            .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let served = rt.spawn(server.serve(move |()| {
            let (running, peak) = (r.clone(), p.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        client.call(()).unwrap();
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        drop(client);
        rt.block_on(served).unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn a_panicking_handler_fails_its_call_and_hands_queued_requests_back() {
    within(|| {
        let rt = multi_thread(1);
        let (client, server) = service::<u32, u32>(8);
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate_rx = std::sync::Mutex::new(gate_rx);
        let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
        let taken_tx = std::sync::Mutex::new(taken_tx);
        let served = rt.spawn(server.serve(move |n| {
            if n == 1 {
                // Hold the service until the other calls are queued.
                taken_tx.lock().unwrap().send(()).unwrap();
                gate_rx.lock().unwrap().recv().unwrap();
            }
            async move {
                assert!(n != 1, "handler failure");
                n
            }
        }));
        let first = {
            let client = client.clone();
            std::thread::spawn(move || client.call(1))
        };
        // Call 1 is in the handler before the others are sent, so they queue.
        taken_rx.recv().unwrap();
        let queued: Vec<_> = (2..5)
            .map(|n| {
                let client = client.clone();
                std::thread::spawn(move || client.call(n))
            })
            .collect();
        while client_queue_len(&client) < 3 {
            std::thread::yield_now();
        }
        gate_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Err(CallError::Closed(None)));
        for (n, q) in (2..5).zip(queued) {
            assert_eq!(q.join().unwrap(), Err(CallError::Closed(Some(n))));
        }
        assert!(rt.block_on(served).unwrap_err().is_panic());
        assert_eq!(client.call(9), Err(CallError::Closed(Some(9))));
    });
}

/// Queued calls, read from the client's `Debug` output (the only place it
/// is shown).
fn client_queue_len<Req, Resp>(client: &async_patterns_bridge::SyncClient<Req, Resp>) -> usize {
    let text = format!("{client:?}");
    let at = text.find("queued: ").expect("queued in Debug") + "queued: ".len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn an_aborted_service_task_releases_every_caller() {
    within(|| {
        let rt = multi_thread(1);
        let (client, server) = ServiceBuilder::<u32, u32>::new()
            .capacity(8)
            .concurrency(2)
            .build()
            .unwrap();
        let taken = Arc::new(AtomicUsize::new(0));
        let t = taken.clone();
        let served = rt.spawn(server.serve(move |n| {
            t.fetch_add(1, Ordering::SeqCst);
            async move {
                std::future::pending::<()>().await;
                n
            }
        }));
        let callers: Vec<_> = (0..5)
            .map(|n| {
                let client = client.clone();
                std::thread::spawn(move || client.call(n))
            })
            .collect();
        while taken.load(Ordering::SeqCst) < 2 || client_queue_len(&client) < 3 {
            std::thread::yield_now();
        }
        served.abort();
        let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        let in_service = results
            .iter()
            .filter(|r| **r == Err(CallError::Closed(None)))
            .count();
        let handed_back = results
            .iter()
            .filter(|r| matches!(r, Err(CallError::Closed(Some(_)))))
            .count();
        assert_eq!((in_service, handed_back), (2, 3), "{results:?}");
    });
}

#[test]
fn a_call_timing_out_in_the_queue_is_withdrawn_and_never_served() {
    within(|| {
        let rt = multi_thread(1);
        let (client, server) = service::<u32, u32>(8);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let gate = Arc::new(tokio::sync::Mutex::new(Some(gate_rx)));
        let served = rt.spawn(server.serve(move |n| {
            s.lock().unwrap().push(n);
            let gate = gate.clone();
            async move {
                if n == 1 {
                    let rx = gate.lock().await.take().unwrap();
                    rx.await.unwrap();
                }
                n
            }
        }));
        let first = {
            let client = client.clone();
            std::thread::spawn(move || client.call(1))
        };
        while seen.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        // 1 is being served; 2 waits in the queue and times out there.
        assert_eq!(
            client.call_timeout(2, Duration::from_millis(20)),
            Err(CallError::Timeout(Some(2)))
        );
        gate_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Ok(1));
        assert_eq!(client.call(3), Ok(3));
        drop(client);
        rt.block_on(served).unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [1, 3],
            "the withdrawn call was served"
        );
    });
}

#[test]
fn a_call_timing_out_while_served_drops_the_late_answer() {
    // Long enough for the service to take the request first, even under
    // miri or on a loaded machine; the handler then holds it past the
    // deadline, so the timeout comes while it is being served.
    let deadline = Duration::from_millis(if cfg!(miri) { 5_000 } else { 500 });
    within(move || {
        let rt = multi_thread(1);
        let (client, server) = service::<u64, u64>(4);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Arc::new(std::sync::Mutex::new(released));
        let served = rt.spawn(server.serve(move |n| {
            let released = released.clone();
            async move {
                if n == 200 {
                    // Wait (off the runtime) until the caller has given up.
                    tokio::task::spawn_blocking(move || released.lock().unwrap().recv())
                        .await
                        .unwrap()
                        .unwrap();
                }
                n
            }
        }));
        assert_eq!(
            client.call_timeout(200, deadline),
            Err(CallError::Timeout(None))
        );
        release.send(()).unwrap();
        // The service carries on; the next call gets its own answer.
        assert_eq!(client.call(1), Ok(1));
        drop(client);
        rt.block_on(served).unwrap();
    });
}

#[test]
fn a_full_queue_makes_call_timeout_hand_the_request_back() {
    within(|| {
        let (client, _server) = service::<u32, u32>(1); // never served
        let queued = {
            let client = client.clone();
            std::thread::spawn(move || client.call_timeout(1, Duration::from_millis(300)))
        };
        while client_queue_len(&client) < 1 {
            std::thread::yield_now();
        }
        assert_eq!(
            client.call_timeout(2, Duration::from_millis(10)),
            Err(CallError::Timeout(Some(2)))
        );
        assert_eq!(queued.join().unwrap(), Err(CallError::Timeout(Some(1))));
    });
}

#[test]
fn serve_returns_once_every_client_is_gone_and_the_queue_is_empty() {
    within(|| {
        let rt = multi_thread(1);
        let (client, server) = ServiceBuilder::<u32, u32>::new()
            .capacity(4)
            .concurrency(2)
            .build()
            .unwrap();
        let served = rt.spawn(server.serve(|n| async move { n }));
        assert_eq!(client.call(5), Ok(5));
        let clone = client.clone();
        drop(client);
        assert_eq!(clone.call(6), Ok(6));
        drop(clone);
        rt.block_on(served).unwrap();
    });
}

#[test]
fn builder_rejects_zero_concurrency_and_bad_capacity() {
    let err = ServiceBuilder::<(), ()>::new()
        .capacity(4)
        .concurrency(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "concurrency");
    let err = ServiceBuilder::<(), ()>::new()
        .capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "capacity");
}

#[test]
fn call_error_debug_and_into_inner_need_no_debug_request() {
    struct Opaque;
    let err = CallError::Closed(Some(Opaque));
    assert_eq!(format!("{err:?}"), "Closed(Some(..))");
    assert!(err.into_inner().is_some());
    assert_eq!(
        format!("{:?}", CallError::<Opaque>::Timeout(None)),
        "Timeout(None)"
    );
}
