//! A worker: its shared side (inbox, counters, thread identity), and its
//! thread, which pins itself, builds a current-thread tokio runtime and a
//! `LocalSet`, and runs — as a task of that runtime — the loop that polls the
//! worker's tasks until shutdown, then cancels whatever is left.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use async_patterns_core::__private::CachePadded;
use tokio::task::LocalSet;

use crate::WorkerId;
use crate::builder::{BuildError, Hooks};
use crate::inbox::Phase;
use crate::inbox::{Inbox, Take};
use crate::loom::{Arc, AtomicBool, AtomicU64, Ordering};
use crate::metrics::WorkerMetrics;
use crate::runtime::Handle;
use crate::spin::{self, PREEMPTED, SpinBudget, SpinEnd};
use crate::task::{Ended, Registry, TaskRef};

/// How many tasks the loop polls before it yields to tokio, so that the I/O
/// driver, timers and tokio's own tasks get their turn (tokio's own
/// schedulers check for I/O every 61 tasks by default).
const POLLS_PER_TICK: usize = 61;

/// How often a spinning worker gives way to the OS (`sched_yield`: another
/// thread that waits for this CPU runs first).
const SPIN_YIELD_TO_OS: Duration = Duration::from_micros(2);

/// How often a spinning worker gives way to tokio (its I/O driver, timers
/// and tasks).
const SPIN_YIELD_TO_TOKIO: Duration = Duration::from_micros(20);

/// The part of a worker that other threads see.
pub(crate) struct WorkerShared {
    pub(crate) index: usize,
    // What producers write (the inbox) and what the worker writes (the
    // counters) live on separate cache lines.
    pub(crate) inbox: CachePadded<Inbox>,
    pub(crate) counters: CachePadded<Counters>,
    /// Set at the shutdown deadline: the loop stops between two polls.
    cancelling: AtomicBool,
    thread: OnceLock<ThreadId>,
}

impl WorkerShared {
    pub(crate) fn new(index: usize) -> Self {
        WorkerShared {
            index,
            inbox: CachePadded::new(Inbox::new()),
            counters: CachePadded::new(Counters::default()),
            cancelling: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// Shutdown: stop taking new tasks and run the accepted ones to the end.
    pub(crate) fn drain(&self) {
        self.inbox.close(Phase::Draining);
    }

    /// Shutdown deadline: cancel every task now (between two polls).
    pub(crate) fn cancel_all(&self) {
        self.cancelling.store(true, Ordering::Relaxed);
        self.inbox.close(Phase::Cancelling);
    }

    fn is_cancelling(&self) -> bool {
        self.cancelling.load(Ordering::Relaxed)
    }

    /// Records the calling thread as this worker's.
    pub(crate) fn mark_current_thread(&self) {
        let _ = self.thread.set(std::thread::current().id());
    }

    /// Whether the calling thread is this worker's thread.
    #[cfg_attr(async_patterns_loom, allow(dead_code))]
    pub(crate) fn is_current_thread(&self) -> bool {
        self.thread.get() == Some(&std::thread::current().id())
    }

    /// Tasks accepted and not ended.
    pub(crate) fn alive_tasks(&self) -> u64 {
        // Ended first: it never runs ahead of accepted, so the difference
        // does not underflow (saturating anyway, for stale reads).
        let ended = self.counters.ended();
        self.inbox.accepted().saturating_sub(ended)
    }

    pub(crate) fn metrics(&self) -> WorkerMetrics {
        let c = &self.counters;
        let (completed, panicked, aborted, cancelled) = (
            c.completed.load(Ordering::Relaxed),
            c.panicked.load(Ordering::Relaxed),
            c.aborted.load(Ordering::Relaxed),
            c.cancelled.load(Ordering::Relaxed),
        );
        let spawned = self.inbox.accepted();
        WorkerMetrics {
            worker: WorkerId(self.index),
            spawned,
            completed,
            panicked,
            aborted,
            cancelled,
            alive_tasks: spawned.saturating_sub(completed + panicked + aborted + cancelled),
            busy_time: Duration::from_nanos(c.busy_nanos.load(Ordering::Relaxed)),
            spin_time: Duration::from_nanos(c.spin_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A worker's counters. Only the worker thread writes them, so increments
/// are a load and a store, not a locked read-modify-write.
#[derive(Default)]
pub(crate) struct Counters {
    completed: AtomicU64,
    panicked: AtomicU64,
    aborted: AtomicU64,
    cancelled: AtomicU64,
    busy_nanos: AtomicU64,
    spin_nanos: AtomicU64,
}

impl Counters {
    /// Counts a task's ending. Worker thread only.
    pub(crate) fn record(&self, ended: Ended) {
        let counter = match ended {
            Ended::Completed => &self.completed,
            Ended::Panicked => &self.panicked,
            Ended::Aborted => &self.aborted,
            Ended::Cancelled => &self.cancelled,
        };
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn add_busy(&self, busy: Duration) {
        add_nanos(&self.busy_nanos, busy);
    }

    fn add_spin(&self, spin: Duration) {
        add_nanos(&self.spin_nanos, spin);
    }

    fn ended(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
            + self.panicked.load(Ordering::Relaxed)
            + self.aborted.load(Ordering::Relaxed)
            + self.cancelled.load(Ordering::Relaxed)
    }
}

/// Adds `d` to a counter of nanoseconds that only the worker thread writes.
fn add_nanos(counter: &AtomicU64, d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let total = counter.load(Ordering::Relaxed);
    counter.store(total.saturating_add(nanos), Ordering::Relaxed);
}

/// The worker this thread is, if any.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) handle: Handle,
    pub(crate) worker: Arc<WorkerShared>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// The worker this thread is (`None` elsewhere, and while the thread's
/// locals are being torn down).
pub(crate) fn current() -> Option<Current> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

pub(crate) fn current_index() -> Option<usize> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(|c| c.worker.index))
        .ok()
        .flatten()
}

/// The loop that runs a worker's tasks, as a task of the worker's tokio
/// runtime (so that wakes from the runtime's own thread cost no syscall).
pub(crate) struct WorkerLoop {
    shared: Arc<WorkerShared>,
    registry: Registry,
    batch: VecDeque<TaskRef>,
    /// How long to look for work before parking.
    spin: SpinBudget,
    /// Whether this worker's thread is pinned to a CPU of its own (no other
    /// worker of its runtime can run there).
    own_cpu: bool,
    /// The inbox's count of accepted tasks when the worker last lingered.
    accepted: u64,
}

impl WorkerLoop {
    pub(crate) fn new(shared: Arc<WorkerShared>, spin: Duration, own_cpu: bool) -> Self {
        WorkerLoop {
            shared,
            registry: Registry::default(),
            batch: VecDeque::new(),
            spin: SpinBudget::new(spin),
            own_cpu,
            accepted: 0,
        }
    }

    /// Out of work: before parking (which makes the next wake a thread
    /// wake-up, a syscall on both sides), keep looking for up to the spin
    /// budget (see `spin.rs`). A producer that queues meanwhile finds the
    /// worker awake and wakes nobody; the worker sees the `pending` flag
    /// within a few hundred nanoseconds.
    ///
    /// The spin gives way to the OS (`sched_yield`) every
    /// [`SPIN_YIELD_TO_OS`], so that another thread waiting for this CPU —
    /// on an oversubscribed machine, the very thread that would answer —
    /// runs first; and to tokio every [`SPIN_YIELD_TO_TOKIO`], which polls
    /// its I/O driver and timers without blocking and runs its own tasks, so
    /// that spinning delays none of them by more than that.
    ///
    /// A worker that may share its CPU with another worker (not pinned to a
    /// CPU of its own) watches whether another thread ran on its CPU while it
    /// spun; if one did, the spin ends as [`SpinEnd::Preempted`] and the
    /// worker stops spinning for a while (see `spin.rs`).
    async fn spin_for_work(&mut self, budget: Duration) -> SpinEnd {
        // A pinned worker shares its CPU with no other worker: losing it to
        // another thread delays no answer, so it is no reason to stop.
        let watch = !self.own_cpu;
        let switches = if watch {
            spin::involuntary_switches()
        } else {
            None
        };
        let start = Instant::now();
        let mut last = start;
        let mut to_os = start + SPIN_YIELD_TO_OS;
        let mut to_tokio = start + SPIN_YIELD_TO_TOKIO;
        let end = loop {
            if self.shared.inbox.has_pending() {
                break SpinEnd::Found;
            }
            let now = Instant::now();
            if watch && now.duration_since(last) >= PREEMPTED {
                break SpinEnd::Preempted;
            }
            if now.duration_since(start) >= budget {
                break SpinEnd::TimedOut;
            }
            if now >= to_tokio {
                tokio::task::yield_now().await;
                // Tokio's own tasks may have run meanwhile: not a preemption.
                last = Instant::now();
                to_tokio = last + SPIN_YIELD_TO_TOKIO;
            } else if now >= to_os {
                std::thread::yield_now();
                last = now;
                to_os = now + SPIN_YIELD_TO_OS;
            } else {
                std::hint::spin_loop();
                last = now;
            }
        };
        self.shared.counters.add_spin(start.elapsed());
        if watch && end != SpinEnd::Preempted && spin::involuntary_switches() != switches {
            // Another thread ran on this CPU while the worker spun: the work
            // that ended the spin was probably made by it, in the time the
            // spin let it have.
            return SpinEnd::Preempted;
        }
        end
    }

    /// Waits for work: `Ready(true)` when the batch holds tasks,
    /// `Ready(false)` when the worker must stop.
    pub(crate) fn poll_take(&mut self, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let idle = self.registry.len() == 0;
        match self.shared.inbox.take(&mut self.batch, cx.waker(), idle) {
            Take::Work => Poll::Ready(true),
            Take::Stop => Poll::Ready(false),
            Take::Park => Poll::Pending,
        }
    }

    async fn run(mut self) {
        loop {
            if self.batch.is_empty() {
                let accepted = self.shared.inbox.accepted();
                if accepted != self.accepted && !self.shared.inbox.has_pending() {
                    // New tasks came in since the worker was last idle: a
                    // producer may be in the middle of a burst of spawns.
                    // Linger for one turn of tokio (its I/O driver polled
                    // without blocking, its ready tasks run) before looking
                    // at the inbox again, so that the producer queues the
                    // next ones meanwhile and finds the worker awake instead
                    // of paying a wake-up every few tasks. (Not after mere
                    // wakes of started tasks: a worker that hands a message
                    // to another, maybe on the same CPU, should park at once.)
                    self.accepted = accepted;
                    tokio::task::yield_now().await;
                }
                let idle_since = self.spin.enabled().then(Instant::now);
                let budget = self.spin.current();
                if !budget.is_zero() && !self.shared.inbox.has_pending() {
                    let end = self.spin_for_work(budget).await;
                    self.spin.spun(end);
                }
                if !poll_fn(|cx| self.poll_take(cx)).await {
                    break;
                }
                if let Some(since) = idle_since {
                    self.spin.worked_after(since.elapsed());
                }
            }
            let yield_now = self.tick();
            if self.shared.is_cancelling() {
                break;
            }
            if yield_now {
                tokio::task::yield_now().await;
            }
        }
        self.stop();
    }

    /// Polls tasks from the batch; returns whether to yield to tokio.
    pub(crate) fn tick(&mut self) -> bool {
        let start = Instant::now();
        let mut polls = 0;
        let mut yield_now = false;
        while let Some(task) = self.batch.pop_front() {
            task.run(&mut self.registry);
            polls += 1;
            // A task that used up tokio's cooperative budget (or many tasks
            // that did together) makes the loop yield, as tokio would.
            if polls == POLLS_PER_TICK || !tokio::task::coop::has_budget_remaining() {
                yield_now = true;
                break;
            }
            if self.shared.is_cancelling() {
                break;
            }
        }
        self.shared.counters.add_busy(start.elapsed());
        yield_now
    }

    /// Cancels every task that has not ended, on this thread, inside the
    /// runtime. Idempotent.
    pub(crate) fn stop(&mut self) {
        let queued = self.shared.inbox.exit();
        for task in self
            .registry
            .take_all()
            .into_iter()
            .chain(self.batch.drain(..))
            .chain(queued)
        {
            task.cancel();
        }
    }
}

impl Drop for WorkerLoop {
    fn drop(&mut self) {
        // Normally a no-op (`run` ended with `stop`); if the loop was dropped
        // early (its runtime is going away), nothing is left behind.
        self.stop();
    }
}

/// Everything a worker thread needs to start.
pub(crate) struct WorkerStart {
    pub(crate) shared: Arc<WorkerShared>,
    pub(crate) handle: Handle,
    pub(crate) cpu: Option<usize>,
    /// Whether `cpu` is this worker's alone among the runtime's workers.
    pub(crate) own_cpu: bool,
    pub(crate) spin: Duration,
    pub(crate) hooks: Hooks,
    pub(crate) ready: mpsc::Sender<(usize, Result<(), BuildError>)>,
    pub(crate) exited: mpsc::Sender<usize>,
}

/// Tells the runtime this worker thread is done, however it ends.
struct ExitNotice(mpsc::Sender<usize>, usize, Handle);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        // Counted first, so that whoever gets the notice sees it counted.
        self.2.worker_stopped();
        let _ = self.0.send(self.1);
    }
}

/// The body of a worker thread.
pub(crate) fn main(start: WorkerStart) {
    let WorkerStart {
        shared,
        handle,
        cpu,
        own_cpu,
        spin,
        hooks,
        ready,
        exited,
    } = start;
    let index = shared.index;
    let _exit = ExitNotice(exited, index, handle.clone());
    shared.mark_current_thread();
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            handle,
            worker: shared.clone(),
        })
    });
    let (runtime, local) = match prepare(index, cpu, &hooks) {
        Ok(prepared) => prepared,
        Err(error) => {
            shared.inbox.exit();
            let _ = ready.send((index, Err(error)));
            CURRENT.with(|c| c.borrow_mut().take());
            return;
        }
    };
    let _ = ready.send((index, Ok(())));
    drop(ready);
    {
        let _local = local.enter();
        let worker_loop = WorkerLoop::new(shared.clone(), spin, own_cpu);
        runtime.block_on(local.run_until(async move {
            // If the loop panics, its `Drop` has cancelled every task.
            let _ = tokio::spawn(worker_loop.run()).await;
        }));
        if let Some(on_stop) = &hooks.on_stop {
            let _runtime = runtime.enter();
            let _ = catch_unwind(AssertUnwindSafe(|| on_stop(WorkerId(index))));
        }
    }
    {
        // Tasks started with tokio's `spawn_local` are dropped here, in the
        // runtime's context.
        let _runtime = runtime.enter();
        drop(local);
    }
    // Tasks started with `tokio::spawn` are dropped here; blocking tasks are
    // waited for.
    drop(runtime);
    CURRENT.with(|c| c.borrow_mut().take());
}

/// Pins the thread, builds the runtime and runs `on_worker_start`.
fn prepare(
    index: usize,
    cpu: Option<usize>,
    hooks: &Hooks,
) -> Result<(tokio::runtime::Runtime, LocalSet), BuildError> {
    let id = WorkerId(index);
    if let Some(cpu) = cpu {
        crate::cpus::pin_current_thread(cpu).map_err(|source| BuildError::Pin {
            worker: index,
            cpu,
            source,
        })?;
    }
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    // A build with the bare `--cfg loom` (a user's own loom tests set it for
    // every crate) has no tokio I/O driver, and tokio panics if asked for
    // one: timers only, there.
    #[allow(unexpected_cfgs)]
    {
        // tidy: tokio under a bare loom cfg
        #[cfg(not(loom))]
        builder.enable_io();
    }
    if let Some(configure) = &hooks.configure_runtime {
        catch_unwind(AssertUnwindSafe(|| configure(id, &mut builder)))
            .map_err(|payload| BuildError::hook_panicked(index, "configure_runtime", &payload))?;
    }
    // tokio reports most failures as errors, a few as panics: both are the
    // build's error, never a worker thread that silently died.
    let runtime = match catch_unwind(AssertUnwindSafe(|| builder.build())) {
        Ok(built) => built.map_err(|source| BuildError::Runtime {
            worker: index,
            source,
        })?,
        Err(payload) => {
            return Err(BuildError::Runtime {
                worker: index,
                source: std::io::Error::other(format!(
                    "tokio panicked building the runtime: {}",
                    crate::builder::panic_message(&payload)
                )),
            });
        }
    };
    let local = LocalSet::new();
    if let Some(on_start) = &hooks.on_start {
        let _runtime = runtime.enter();
        let _local = local.enter();
        catch_unwind(AssertUnwindSafe(|| on_start(id)))
            .map_err(|payload| BuildError::hook_panicked(index, "on_worker_start", &payload))?;
    }
    Ok((runtime, local))
}
