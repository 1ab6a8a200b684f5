//! Hidden entry points for the loom models in `tests/loom*.rs`, compiled only
//! with `--cfg loom`: one worker's inbox and task machinery — the crate's
//! own code — driven by the model's threads instead of a worker thread and
//! its tokio runtime.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use crate::loom::Arc;
use crate::runtime::submit;
use crate::task::Stage;
use crate::worker::{WorkerLoop, WorkerShared};
use crate::{JoinHandle, WorkerMetrics};

/// What spawners and shutdown see of a worker.
#[derive(Clone)]
pub struct ModelInbox(Arc<WorkerShared>);

/// The worker's side: takes tasks from the inbox and runs them.
pub struct ModelWorker(WorkerLoop);

/// A worker with no thread: its inbox and its loop.
pub fn worker() -> (ModelInbox, ModelWorker) {
    let shared = Arc::new(WorkerShared::new(0));
    (
        ModelInbox(shared.clone()),
        ModelWorker(WorkerLoop::new(shared)),
    )
}

impl ModelInbox {
    /// Spawns a task, or `None` once the worker refuses new tasks.
    pub fn spawn<F, Fut>(&self, f: F) -> Option<JoinHandle<Fut::Output>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        submit(&self.0, Stage::Closure(f)).ok()
    }

    /// Starts a graceful shutdown: no new tasks.
    pub fn drain(&self) {
        self.0.drain();
    }

    /// The shutdown deadline: cancel everything.
    pub fn cancel_all(&self) {
        self.0.cancel_all();
    }

    /// The worker's counters.
    pub fn metrics(&self) -> WorkerMetrics {
        self.0.metrics()
    }
}

impl ModelWorker {
    /// Waits for work: `Ready(true)` with tasks to run, `Ready(false)` when
    /// the worker must stop.
    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.0.poll_take(cx)
    }

    /// Runs the tasks taken.
    pub fn tick(&mut self) {
        while self.0.tick() {}
    }

    /// Stops the worker, cancelling what is left.
    pub fn stop(&mut self) {
        self.0.stop();
    }
}

impl fmt::Debug for ModelInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelInbox")
    }
}

impl fmt::Debug for ModelWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelWorker")
    }
}
