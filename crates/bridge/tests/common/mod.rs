//! Helpers shared by the integration tests: runtimes of each flavor and an
//! anti-hang guard.

#![allow(dead_code, unreachable_pub)]

use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

/// How long any one scenario may take before the test fails as hung. Far
/// above what a loaded machine needs; it only fires on a real hang.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Runs `scenario` on a fresh thread and returns its result, failing the test
/// if it does not finish within [`HANG_LIMIT`]. Panics inside it propagate.
pub fn within<R: Send + 'static>(scenario: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, result) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            scenario,
        )));
    });
    match result.recv_timeout(HANG_LIMIT) {
        Ok(Ok(value)) => {
            runner.join().unwrap();
            value
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("anti-hang timeout fired: the scenario did not finish in {HANG_LIMIT:?}"),
    }
}

pub fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}
