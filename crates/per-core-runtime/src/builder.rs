//! [`PerCoreRuntimeBuilder`]: how many workers, pinned or not and to which CPUs, thread
//! names and stack size, hooks, each worker's tokio runtime settings, and the
//! default placement; [`BuildError`]: why a runtime could not start.

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_patterns_core::ConfigError;

use crate::WorkerId;
use crate::cpus::{self, CpuBudget};
use crate::runtime::{PerCoreRuntime, Placement};

type WorkerHook = Arc<dyn Fn(WorkerId) + Send + Sync>;
type RuntimeHook = Arc<dyn Fn(WorkerId, &mut tokio::runtime::Builder) + Send + Sync>;

/// The hooks every worker thread runs.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) configure_runtime: Option<RuntimeHook>,
    pub(crate) on_start: Option<WorkerHook>,
    pub(crate) on_stop: Option<WorkerHook>,
}

/// The smallest stack a worker thread may be given.
const MIN_STACK_SIZE: usize = 64 * 1024;

/// The longest a worker may spin before it parks: longer is a busy loop.
const MAX_SPIN: Duration = Duration::from_millis(10);

/// Configures and starts a [`PerCoreRuntime`]; from
/// [`PerCoreRuntime::builder`].
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
///
/// let rt = PerCoreRuntime::builder()
///     .workers(2)
///     .thread_name_prefix("shard")
///     .thread_stack_size(512 * 1024)
///     .placement(Placement::LeastLoaded)
///     .on_worker_start(|worker| println!("{worker} started"))
///     .configure_runtime(|_worker, tokio_builder| {
///         tokio_builder.event_interval(31);
///     })
///     .build()?;
/// let name = rt.block_on(1, || async { std::thread::current().name().map(String::from) })?;
/// assert_eq!(name.as_deref(), Some("shard-1"));
///
/// let err = PerCoreRuntime::builder().workers(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `workers`: got 0, expected at least 1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a PerCoreRuntimeBuilder does nothing until `build` is called"]
#[derive(Clone)]
pub struct PerCoreRuntimeBuilder {
    workers: Option<usize>,
    pin: bool,
    pin_cpus: Option<Vec<usize>>,
    name_prefix: String,
    stack_size: Option<usize>,
    placement: Placement,
    spin: Duration,
    hooks: Hooks,
}

impl Default for PerCoreRuntimeBuilder {
    fn default() -> Self {
        PerCoreRuntimeBuilder::new()
    }
}

impl PerCoreRuntimeBuilder {
    /// A builder with the defaults: one unpinned worker per CPU of the
    /// [`CpuBudget`], threads named `per-core-{i}`, round-robin placement, no
    /// hooks, no spinning before a worker parks. The same as
    /// [`PerCoreRuntime::builder`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntimeBuilder};
    ///
    /// let rt = PerCoreRuntimeBuilder::new().build()?;
    /// assert_eq!(rt.workers(), CpuBudget::detect().workers());
    /// assert_eq!(rt.cpus(), None);
    /// # Ok::<(), async_patterns_per_core_runtime::BuildError>(())
    /// ```
    pub fn new() -> Self {
        PerCoreRuntimeBuilder {
            workers: None,
            pin: false,
            pin_cpus: None,
            name_prefix: "per-core".to_string(),
            stack_size: None,
            placement: Placement::RoundRobin,
            spin: Duration::ZERO,
            hooks: Hooks::default(),
        }
    }

    /// The number of workers (threads, each with its own runtime). Default:
    /// [`CpuBudget::detect().workers()`](CpuBudget::workers) — std's
    /// `available_parallelism`: the CPUs in the affinity mask, or the cgroup
    /// CPU quota if that is smaller.
    /// Must be at least 1; when pinning, at most the number of CPUs to pin to.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(3).build()?;
    /// assert_eq!(rt.workers(), 3);
    /// assert!(PerCoreRuntime::builder().workers(0).build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Pins worker `i` to the `i`-th CPU of the affinity mask (see
    /// [`CpuBudget::cpus`]). Default: not pinned — the OS schedules worker
    /// threads on any CPU of the mask.
    ///
    /// A worker that cannot be pinned makes [`build`](PerCoreRuntimeBuilder::build) fail
    /// with [`BuildError::Pin`]; pinning is never silently skipped. Threads
    /// that a worker's runtime starts for `spawn_blocking` inherit the
    /// worker's pinning.
    ///
    /// Pin when the workers have their CPUs to themselves: a pinned worker
    /// keeps its cache warm, but cannot move away from another busy thread
    /// on its CPU, which lengthens tail latency on an oversubscribed machine.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntime};
    ///
    /// let budget = CpuBudget::detect();
    /// let rt = PerCoreRuntime::builder().workers(1).pin(true).build()?;
    /// assert_eq!(rt.cpus(), Some(&budget.cpus()[..1]));
    ///
    /// let too_many = budget.cpus().len() + 1;
    /// let err = PerCoreRuntime::builder().workers(too_many).pin(true).build().unwrap_err();
    /// assert!(err.to_string().starts_with("invalid `workers`"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Pins worker `i` to `cpus[i]`, CPUs you chose (for example, one NUMA
    /// node's). Implies [`pin(true)`](PerCoreRuntimeBuilder::pin); the number of workers
    /// defaults to the number of CPUs given.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{BuildError, CpuBudget, PerCoreRuntime};
    ///
    /// let first = CpuBudget::detect().cpus()[0];
    /// let rt = PerCoreRuntime::builder().pin_to_cpus([first]).build()?;
    /// assert_eq!(rt.workers(), 1);
    ///
    /// // A CPU the machine does not have: the build fails, nothing is left running.
    /// # #[cfg(target_os = "linux")] {
    /// let err = PerCoreRuntime::builder().pin_to_cpus([1023]).build().unwrap_err();
    /// assert!(matches!(err, BuildError::Pin { worker: 0, cpu: 1023, .. }));
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_to_cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.pin = true;
        self.pin_cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Worker threads are named `{prefix}-{index}`. Default: `per-core`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder().workers(1).thread_name_prefix("io").build()?;
    /// let name = rt.block_on(0, || async { std::thread::current().name().map(String::from) })?;
    /// assert_eq!(name.as_deref(), Some("io-0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// The stack size of worker threads, in bytes; at least 64 KiB.
    /// Default: Rust's default for spawned threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// assert!(PerCoreRuntime::builder().workers(1).thread_stack_size(4 << 20).build().is_ok());
    /// let err = PerCoreRuntime::builder().thread_stack_size(1024).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `thread_stack_size`: got 1024, expected at least 65536");
    /// ```
    pub fn thread_stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Where [`PerCoreRuntime::spawn`] puts tasks. Default:
    /// [`Placement::RoundRobin`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{PerCoreRuntime, Placement};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).placement(Placement::LeastLoaded).build()?;
    /// let busy = rt.spawn_on(0, || std::future::pending::<()>())?;
    /// // Worker 0 has a live task, worker 1 none: the next task goes to 1.
    /// assert_eq!(rt.spawn(|| async {})?.worker().index(), 1);
    /// busy.abort();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// How long a worker that runs out of work keeps looking for more before
    /// it parks its thread, at most 10 ms. Default: zero, park at once.
    ///
    /// A parked worker is woken by a syscall from whoever hands it work —
    /// another worker waking one of its tasks, a spawn from another thread —
    /// and runs again only when the OS has rescheduled its thread: tens of
    /// microseconds on a virtual machine, the whole cost of a message between
    /// two workers. A worker that is still spinning when the work arrives
    /// takes it within a microsecond or so, and the sender makes no syscall.
    /// Set it when tasks on different workers talk to each other often (a
    /// request and its reply within the spin time); leave it off when the
    /// workers share their CPUs with other busy threads, where a spinning
    /// worker takes CPU time from them.
    ///
    /// **What it costs**: while it spins, a worker keeps its CPU busy. An idle
    /// runtime costs nothing (each worker spins once, then parks), but a
    /// worker that is handed work every `t` spends up to `spin / t` of a CPU
    /// spinning — [`WorkerMetrics::spin_time`](crate::WorkerMetrics::spin_time)
    /// counts it. The cookbook page quotes measured figures.
    ///
    /// While it spins, the worker yields to its tokio runtime between two
    /// looks, so tokio's I/O driver, timers and `tokio::spawn`ed tasks keep
    /// running.
    ///
    /// Out of range, [`build`](PerCoreRuntimeBuilder::build) fails with
    /// [`BuildError::Config`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder()
    ///     .workers(2)
    ///     .spin_before_park(Duration::from_micros(50))
    ///     .build()?;
    /// let handle = rt.handle().clone();
    /// // A reply from worker 1 to worker 0, which is still spinning for it.
    /// let reply = rt.block_on(0, move || async move {
    ///     handle.spawn_on(1, || async { "pong" }).unwrap().await.unwrap()
    /// })?;
    /// assert_eq!(reply, "pong");
    ///
    /// let err = PerCoreRuntime::builder().spin_before_park(Duration::from_secs(1)).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `spin_before_park`: got 1s, expected between 0ns and 10ms");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spin_before_park(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Runs `hook` on each worker thread after its runtime is built and
    /// before it takes tasks, inside the runtime and its `LocalSet` (so it
    /// may create tokio resources or call `tokio::task::spawn_local`). If it
    /// panics, [`build`](PerCoreRuntimeBuilder::build) fails with
    /// [`BuildError::Hook`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let counter = started.clone();
    /// let rt = PerCoreRuntime::builder()
    ///     .workers(2)
    ///     .on_worker_start(move |_| { counter.fetch_add(1, Ordering::SeqCst); })
    ///     .build()?;
    /// assert_eq!(started.load(Ordering::SeqCst), 2);
    ///
    /// let err = PerCoreRuntime::builder().workers(1).on_worker_start(|_| panic!("no")).build().unwrap_err();
    /// assert_eq!(err.to_string(), "worker 0: `on_worker_start` panicked: no");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_worker_start(mut self, hook: impl Fn(WorkerId) + Send + Sync + 'static) -> Self {
        self.hooks.on_start = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` on each worker thread when it stops, after its tasks have
    /// ended, inside its runtime. A panic in it is caught and ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let stopped = Arc::new(AtomicUsize::new(0));
    /// let counter = stopped.clone();
    /// let rt = PerCoreRuntime::builder()
    ///     .workers(2)
    ///     .on_worker_stop(move |_| { counter.fetch_add(1, Ordering::SeqCst); })
    ///     .build()?;
    /// rt.shutdown(Duration::from_secs(1));
    /// assert_eq!(stopped.load(Ordering::SeqCst), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_worker_stop(mut self, hook: impl Fn(WorkerId) + Send + Sync + 'static) -> Self {
        self.hooks.on_stop = Some(Arc::new(hook));
        self
    }

    /// Adjusts the tokio runtime builder of each worker before its runtime
    /// is built: a current-thread builder with I/O and timers enabled
    /// (`enable_io`, `enable_time`; timers only in a build with the bare
    /// `--cfg loom`, where tokio has no I/O driver). Use it for
    /// `event_interval`, `max_blocking_threads`,
    /// `on_thread_park` and the like. If it panics, or the runtime fails to
    /// build, [`build`](PerCoreRuntimeBuilder::build) fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::PerCoreRuntime;
    ///
    /// let rt = PerCoreRuntime::builder()
    ///     .workers(1)
    ///     .configure_runtime(|_worker, b| {
    ///         b.max_blocking_threads(4).start_paused(true);
    ///     })
    ///     .build()?;
    /// let slept = rt.block_on(0, || async {
    ///     let start = tokio::time::Instant::now();
    ///     tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    ///     start.elapsed()
    /// })?;
    /// assert!(slept >= std::time::Duration::from_secs(3600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn configure_runtime(
        mut self,
        configure: impl Fn(WorkerId, &mut tokio::runtime::Builder) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.configure_runtime = Some(Arc::new(configure));
        self
    }

    /// Validates the settings, starts the worker threads and waits until
    /// every worker is ready (pinned, runtime built, `on_worker_start` run).
    /// On any failure, the workers already started are stopped and joined
    /// before the error is returned.
    ///
    /// # Errors
    ///
    /// - [`BuildError::Config`] for a setting out of range, naming it:
    ///   `workers` (0, or more than the CPUs to pin to), `thread_stack_size`
    ///   (below 64 KiB), `spin_before_park` (above 10 ms), `pin_to_cpus` (a CPU
    ///   number beyond what the OS can pin to).
    /// - [`BuildError::Pin`] if a worker could not be pinned to its CPU.
    /// - [`BuildError::Thread`] or [`BuildError::Runtime`] if a worker's thread
    ///   or tokio runtime could not start.
    /// - [`BuildError::Hook`] if `configure_runtime` or `on_worker_start`
    ///   panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{BuildError, PerCoreRuntime};
    ///
    /// let rt = PerCoreRuntime::builder().workers(2).build()?;
    /// assert_eq!(rt.block_on(1, || async { 1 + 1 })?, 2);
    ///
    /// match PerCoreRuntime::builder().workers(0).build() {
    ///     Err(BuildError::Config(err)) => assert_eq!(err.field(), "workers"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<PerCoreRuntime, BuildError> {
        if let Some(bytes) = self.stack_size {
            ConfigError::at_least("thread_stack_size", bytes, MIN_STACK_SIZE)?;
        }
        ConfigError::in_range("spin_before_park", self.spin, Duration::ZERO, MAX_SPIN)?;
        let cpus = if self.pin {
            let cpus = match &self.pin_cpus {
                Some(cpus) => cpus.clone(),
                None => CpuBudget::detect().cpus().to_vec(),
            };
            if let Some(&cpu) = cpus.iter().find(|&&cpu| cpu > cpus::MAX_CPU) {
                return Err(ConfigError::new(
                    "pin_to_cpus",
                    cpu,
                    format!("CPU numbers up to {}", cpus::MAX_CPU),
                )
                .into());
            }
            Some(cpus)
        } else {
            None
        };
        let workers = match (self.workers, &self.pin_cpus, &cpus) {
            (Some(n), _, _) => n,
            (None, Some(list), _) => list.len(),
            (None, None, _) => CpuBudget::detect().workers(),
        };
        ConfigError::at_least("workers", workers, 1)?;
        if let Some(cpus) = &cpus
            && workers > cpus.len()
        {
            return Err(ConfigError::new(
                "workers",
                workers,
                format!(
                    "at most {} when pinning (one worker per CPU to pin to)",
                    cpus.len()
                ),
            )
            .into());
        }
        PerCoreRuntime::start(crate::runtime::StartConfig {
            workers,
            cpus,
            name_prefix: self.name_prefix,
            stack_size: self.stack_size,
            placement: self.placement,
            spin: self.spin,
            hooks: self.hooks,
        })
    }
}

impl fmt::Debug for PerCoreRuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCoreRuntimeBuilder")
            .field("workers", &self.workers)
            .field("pin", &self.pin)
            .field("pin_cpus", &self.pin_cpus)
            .field("name_prefix", &self.name_prefix)
            .field("stack_size", &self.stack_size)
            .field("placement", &self.placement)
            .field("spin_before_park", &self.spin)
            .field("configure_runtime", &self.hooks.configure_runtime.is_some())
            .field("on_worker_start", &self.hooks.on_start.is_some())
            .field("on_worker_stop", &self.hooks.on_stop.is_some())
            .finish()
    }
}

/// A [`PerCoreRuntime`] could not start. When `build` returns it, every
/// worker that had started has been stopped and joined.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::{BuildError, PerCoreRuntime};
///
/// let err = PerCoreRuntime::builder().workers(0).build().unwrap_err();
/// assert!(matches!(err, BuildError::Config(_)));
/// assert_eq!(err.to_string(), "invalid `workers`: got 0, expected at least 1");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range.
    Config(ConfigError),
    /// A worker thread could not be pinned to its CPU.
    Pin {
        /// The worker.
        worker: usize,
        /// The CPU it was to be pinned to.
        cpu: usize,
        /// The operating system's error.
        source: io::Error,
    },
    /// A worker's tokio runtime failed to build.
    Runtime {
        /// The worker.
        worker: usize,
        /// tokio's error.
        source: io::Error,
    },
    /// A worker thread could not be spawned.
    Thread {
        /// The worker.
        worker: usize,
        /// The operating system's error.
        source: io::Error,
    },
    /// `configure_runtime` or `on_worker_start` panicked on a worker.
    Hook {
        /// The worker.
        worker: usize,
        /// Which hook: `"configure_runtime"` or `"on_worker_start"`.
        hook: &'static str,
        /// The panic's message.
        message: String,
    },
}

impl BuildError {
    pub(crate) fn hook_panicked(
        worker: usize,
        hook: &'static str,
        payload: &Box<dyn Any + Send>,
    ) -> Self {
        BuildError::Hook {
            worker,
            hook,
            message: panic_message(payload),
        }
    }
}

/// A panic's message, if it is a string.
pub(crate) fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&'static str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".to_string())
}

impl From<ConfigError> for BuildError {
    fn from(err: ConfigError) -> Self {
        BuildError::Config(err)
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(err) => fmt::Display::fmt(err, f),
            BuildError::Pin {
                worker,
                cpu,
                source,
            } => write!(f, "worker {worker}: cannot pin to cpu {cpu}: {source}"),
            BuildError::Runtime { worker, source } => {
                write!(
                    f,
                    "worker {worker}: cannot build its tokio runtime: {source}"
                )
            }
            BuildError::Thread { worker, source } => {
                write!(f, "worker {worker}: cannot spawn its thread: {source}")
            }
            BuildError::Hook {
                worker,
                hook,
                message,
            } => write!(f, "worker {worker}: `{hook}` panicked: {message}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Config(err) => Some(err),
            BuildError::Pin { source, .. }
            | BuildError::Runtime { source, .. }
            | BuildError::Thread { source, .. } => Some(source),
            BuildError::Hook { .. } => None,
        }
    }
}
