//! Stopping the workers: waiting for them to drain until a deadline,
//! cancelling what is left at the deadline, and joining their threads —
//! on the caller's thread (`shutdown`, `Drop` where blocking is allowed) or on
//! a thread of its own (`shutdown_async`), so that no runtime thread ever
//! blocks on it.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use crate::loom::Arc;
use crate::metrics::ShutdownReport;
use crate::runtime::PoolShared;

/// The worker threads of a runtime and the channel on which each tells it
/// has exited (its tasks ended, its tokio runtime dropped).
pub(crate) struct WorkerThreads {
    threads: Vec<Option<thread::JoinHandle<()>>>,
    exited: mpsc::Receiver<usize>,
}

impl WorkerThreads {
    pub(crate) fn new(exited: mpsc::Receiver<usize>, capacity: usize) -> Self {
        WorkerThreads {
            threads: Vec::with_capacity(capacity),
            exited,
        }
    }

    pub(crate) fn push(&mut self, thread: thread::JoinHandle<()>) {
        self.threads.push(Some(thread));
    }

    /// Waits until every worker has exited, cancelling at `deadline` those
    /// still running, and joins their threads. Blocks the calling thread:
    /// call it only where blocking is allowed. Returns whether the deadline
    /// cut a drain short.
    pub(crate) fn stop(&mut self, shared: &PoolShared, deadline: Option<Instant>) -> bool {
        let mut running = self.started();
        let deadline_reached = self.wait_for(shared, &mut running, deadline);
        self.join_all();
        deadline_reached
    }

    /// The same as [`stop`](Self::stop), handing the report to `report`.
    /// For a shutdown requested from a task on worker `own` of this runtime,
    /// `report` runs as soon as the *other* workers have exited (the calling
    /// task, waiting for the report, keeps its own worker alive) and returns
    /// once the caller has the report; then `own` goes on draining until the
    /// same deadline, and its thread is joined too.
    pub(crate) fn stop_reporting(
        &mut self,
        shared: &PoolShared,
        deadline: Option<Instant>,
        own: Option<usize>,
        report: impl FnOnce(ShutdownReport),
    ) {
        let mut running = self.started();
        let own_running = own.is_some_and(|i| std::mem::replace(&mut running[i], false));
        let deadline_reached = self.wait_for(shared, &mut running, deadline);
        report(ShutdownReport::new(shared, deadline_reached));
        if let Some(own) = own {
            running[own] = own_running;
            self.wait_for(shared, &mut running, deadline);
        }
        self.join_all();
    }

    /// Which workers have a thread to wait for.
    fn started(&self) -> Vec<bool> {
        self.threads.iter().map(Option::is_some).collect()
    }

    /// Waits until no worker in `running` runs; at `deadline`, cancels the
    /// ones that still do and waits for them. Returns whether the deadline
    /// was reached with workers still running.
    fn wait_for(
        &mut self,
        shared: &PoolShared,
        running: &mut [bool],
        deadline: Option<Instant>,
    ) -> bool {
        let mut deadline_reached = false;
        while running.iter().any(|&r| r) {
            let next = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.exited.recv_timeout(left)
                }
                None => self
                    .exited
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(index) => running[index] = false,
                Err(RecvTimeoutError::Timeout) => {
                    deadline_reached = true;
                    break;
                }
                // Every worker thread holds a sender until it ends.
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        if deadline_reached {
            for (worker, still) in shared.workers().iter().zip(running.iter()) {
                if *still {
                    worker.cancel_all();
                }
            }
            while running.iter().any(|&r| r) {
                match self.exited.recv() {
                    Ok(index) => running[index] = false,
                    Err(mpsc::RecvError) => break,
                }
            }
        }
        deadline_reached
    }

    fn join_all(&mut self) {
        for thread in self.threads.iter_mut().filter_map(Option::take) {
            // The worker caught every panic of its tasks and hooks; a panic
            // here would be a bug of this crate, and its tasks were cancelled
            // by the loop's `Drop` anyway.
            let _ = thread.join();
        }
    }
}

/// Runs `stop_reporting` on a thread of its own and returns the receiving
/// end of the report, or the thread's error (with every worker told to
/// cancel now, so that nothing is left draining without a deadline).
pub(crate) fn in_background(
    mut threads: WorkerThreads,
    shared: Arc<PoolShared>,
    deadline: Option<Instant>,
    own: Option<usize>,
    name: String,
) -> std::io::Result<ReportReceiver> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (received_tx, received_rx) = mpsc::channel::<()>();
    let on_error = shared.clone();
    let spawned = thread::Builder::new().name(name).spawn(move || {
        threads.stop_reporting(&shared, deadline, own, |report| {
            // The caller may have dropped the future: the shutdown goes on.
            if tx.send(report).is_ok() && own.is_some() {
                // Its own worker must not be cancelled before the calling
                // task has the report: wait until the receiver is dropped,
                // which it is once it has the report (or was itself dropped).
                let _ = received_rx.recv();
            }
        });
    });
    match spawned {
        Ok(_detached) => Ok(ReportReceiver {
            report: rx,
            received: received_tx,
        }),
        Err(error) => {
            for worker in on_error.workers().iter() {
                worker.cancel_all();
            }
            Err(error)
        }
    }
}

/// Where `shutdown_async` waits for its report.
pub(crate) struct ReportReceiver {
    report: tokio::sync::oneshot::Receiver<ShutdownReport>,
    /// Dropped once the report is received: the shutdown thread may then
    /// cancel the caller's own worker at the deadline.
    received: mpsc::Sender<()>,
}

impl ReportReceiver {
    pub(crate) async fn receive(self) -> ShutdownReport {
        let ReportReceiver { report, received } = self;
        let report = report.await;
        drop(received);
        // The shutdown thread sends the report before it can end; it can
        // only fail to if it panicked, a bug of this crate.
        report.expect("the shutdown thread reports before it ends")
    }
}
