//! `RuntimeContext::current()` and `run_blocking` in every context a sync
//! function can be called from.

use std::sync::mpsc;
use std::time::Duration;

use async_patterns_core::{BlockingStrategy, RuntimeContext, WouldDeadlock};
use tokio::runtime::{Builder, Handle, Runtime};

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn plain_thread_has_no_runtime_and_may_block() {
    let ctx = std::thread::spawn(RuntimeContext::current).join().unwrap();
    assert_eq!(ctx, RuntimeContext::NoRuntime);
    assert_eq!(ctx.blocking_strategy(), BlockingStrategy::Direct);
    assert_eq!(RuntimeContext::run_blocking(|| 5), Ok(5));
}

#[test]
fn current_thread_block_on_is_detected_and_refuses_to_block() {
    let rt = current_thread();
    let (ctx, refused) = rt.block_on(async {
        (
            RuntimeContext::current(),
            RuntimeContext::run_blocking(|| unreachable!("must not run")),
        )
    });
    assert_eq!(ctx, RuntimeContext::CurrentThread);
    assert_eq!(refused, Err::<(), _>(WouldDeadlock));
}

#[test]
fn task_spawned_on_current_thread_runtime_is_detected() {
    let rt = current_thread();
    let ctx = rt.block_on(async { tokio::spawn(async { RuntimeContext::current() }).await });
    assert_eq!(ctx.unwrap(), RuntimeContext::CurrentThread);
}

#[test]
fn local_set_on_current_thread_runtime_is_detected() {
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    let ctx = local.block_on(&rt, async {
        tokio::task::spawn_local(async { RuntimeContext::current() }).await
    });
    assert_eq!(ctx.unwrap(), RuntimeContext::CurrentThread);
}

#[test]
fn drop_running_inside_a_current_thread_task_is_detected() {
    struct Probe(mpsc::Sender<RuntimeContext>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.send(RuntimeContext::current()).unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let rt = current_thread();
    rt.block_on(async move {
        tokio::spawn(async move { drop(Probe(tx)) }).await.unwrap();
    });
    assert_eq!(rx.recv().unwrap(), RuntimeContext::CurrentThread);
}

#[test]
fn spawn_blocking_on_current_thread_runtime_is_a_blocking_thread() {
    let rt = current_thread();
    let ctx = rt.block_on(async { tokio::task::spawn_blocking(RuntimeContext::current).await });
    assert_eq!(ctx.unwrap(), RuntimeContext::BlockingThread);
}

#[test]
fn multi_thread_worker_is_detected_and_blocks_in_place() {
    let rt = multi_thread(2);
    let ctx = rt.block_on(async { tokio::spawn(async { RuntimeContext::current() }).await });
    let ctx = ctx.unwrap();
    assert_eq!(ctx, RuntimeContext::MultiThreadWorker);
    assert_eq!(ctx.blocking_strategy(), BlockingStrategy::BlockInPlace);
}

#[test]
fn spawn_blocking_on_multi_thread_runtime_is_a_blocking_thread() {
    let rt = multi_thread(1);
    let ctx = rt.block_on(async { tokio::task::spawn_blocking(RuntimeContext::current).await });
    assert_eq!(ctx.unwrap(), RuntimeContext::BlockingThread);
}

#[test]
fn multi_thread_block_on_thread_is_a_blocking_thread() {
    let rt = multi_thread(1);
    assert_eq!(
        rt.block_on(async { RuntimeContext::current() }),
        RuntimeContext::BlockingThread
    );
}

#[test]
fn thread_that_entered_a_handle_is_a_blocking_thread() {
    let rt = multi_thread(1);
    let handle = rt.handle().clone();
    let ctx = std::thread::spawn(move || {
        let _guard = handle.enter();
        RuntimeContext::current()
    })
    .join()
    .unwrap();
    assert_eq!(ctx, RuntimeContext::BlockingThread);
}

/// On a worker, `run_blocking` must hand the worker's other tasks away: with a
/// single worker, the task that unblocks us can only run if it does.
#[test]
fn run_blocking_on_the_only_worker_lets_other_tasks_run() {
    let rt = multi_thread(1);
    let got = rt.block_on(async {
        tokio::spawn(async {
            let (tx, rx) = mpsc::channel();
            tokio::spawn(async move { tx.send(42).unwrap() });
            RuntimeContext::run_blocking(|| rx.recv_timeout(Duration::from_secs(30)))
        })
        .await
    });
    assert_eq!(got.unwrap(), Ok(Ok(42)));
}

/// Inside `run_blocking` on a worker, nesting `Handle::block_on` is allowed
/// (tokio panics without `block_in_place`).
#[test]
fn run_blocking_on_a_worker_allows_handle_block_on() {
    let rt = multi_thread(2);
    let got = rt.block_on(async {
        tokio::spawn(async {
            RuntimeContext::run_blocking(|| {
                Handle::current().block_on(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    9
                })
            })
        })
        .await
    });
    assert_eq!(got.unwrap(), Ok(9));
}

#[test]
fn run_blocking_on_a_blocking_thread_runs_directly() {
    let rt = multi_thread(1);
    let got = rt.block_on(async {
        tokio::task::spawn_blocking(|| RuntimeContext::run_blocking(|| "ran")).await
    });
    assert_eq!(got.unwrap(), Ok("ran"));
}

#[test]
fn display_names_the_context() {
    assert_eq!(
        RuntimeContext::CurrentThread.to_string(),
        "on a current-thread tokio runtime"
    );
}
