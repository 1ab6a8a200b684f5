//! [`CpuBudget`]: which CPUs the process may run on (its affinity mask, which
//! reflects `taskset` and a container's cpuset) and how many workers a
//! runtime gets by default (std's `available_parallelism`, which also applies
//! a cgroup CPU quota); and pinning the calling thread to one CPU.

use std::io;
use std::num::NonZeroUsize;

/// The CPUs this process may run on and how many of them it may keep busy:
/// where the default number of workers of a
/// [`PerCoreRuntime`](crate::PerCoreRuntime) and the CPUs it pins them to
/// come from.
///
/// - [`workers`](CpuBudget::workers) is
///   [`std::thread::available_parallelism`]: the CPUs of the affinity mask
///   (`taskset`, `numactl`, a container's cpuset), or fewer if the process's
///   cgroup CPU quota is smaller (`docker run --cpus 1.5` gives 1: std rounds
///   a fractional quota down, and a thread-per-core worker wants a whole CPU).
/// - [`cpus`](CpuBudget::cpus) is the affinity mask itself, read with
///   `sched_getaffinity`: *which* CPUs, something std does not tell. Pinned
///   workers go to its first CPUs, in order.
///
/// Where the mask cannot be read (not Linux), the CPUs are `0..workers`.
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::CpuBudget;
///
/// let budget = CpuBudget::detect();
/// assert!(budget.workers() >= 1);
/// assert!(budget.workers() <= budget.cpus().len());
/// assert_eq!(
///     budget.workers(),
///     std::thread::available_parallelism().map_or(1, |n| n.get()).min(budget.cpus().len())
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuBudget {
    cpus: Vec<usize>,
    workers: usize,
}

impl CpuBudget {
    /// Reads the affinity mask of the calling thread and std's
    /// `available_parallelism`. Never fails: what cannot be read is not a
    /// limit (and at least one worker is always allowed).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::CpuBudget;
    ///
    /// let budget = CpuBudget::detect();
    /// println!("CPUs {:?}: {} workers", budget.cpus(), budget.workers());
    /// ```
    pub fn detect() -> CpuBudget {
        let parallelism = std::thread::available_parallelism().ok();
        let cpus =
            affinity().unwrap_or_else(|_| (0..parallelism.map_or(1, NonZeroUsize::get)).collect());
        CpuBudget::new(cpus, parallelism)
    }

    fn new(cpus: Vec<usize>, parallelism: Option<NonZeroUsize>) -> CpuBudget {
        let by_mask = cpus.len().max(1);
        // std reads the mask too; the `min` only matters if the mask changed
        // between the two reads.
        let workers = parallelism.map_or(by_mask, |n| n.get().min(by_mask));
        CpuBudget { cpus, workers }
    }

    /// The CPUs of the affinity mask, ascending.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::CpuBudget;
    ///
    /// let cpus = CpuBudget::detect().cpus().to_vec();
    /// assert!(!cpus.is_empty());
    /// assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    /// ```
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The default number of workers: [`std::thread::available_parallelism`]
    /// (the CPUs in the affinity mask, or the cgroup CPU quota rounded down,
    /// at least 1, if that is smaller).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::{CpuBudget, PerCoreRuntime};
    ///
    /// let rt = PerCoreRuntime::builder().build()?;
    /// assert_eq!(rt.workers(), CpuBudget::detect().workers());
    /// # Ok::<(), async_patterns_per_core_runtime::BuildError>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// The largest CPU number that can be pinned to (the size of `cpu_set_t`).
#[cfg(target_os = "linux")]
pub(crate) const MAX_CPU: usize = libc::CPU_SETSIZE as usize - 1;
#[cfg(not(target_os = "linux"))]
pub(crate) const MAX_CPU: usize = usize::MAX;

/// The CPUs in the calling thread's affinity mask, ascending.
#[cfg(target_os = "linux")]
pub(crate) fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is a plain bit array: all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size and pointer describe
    // `set`, which lives for the duration of the call.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..=MAX_CPU)
        // SAFETY: `cpu` is below `CPU_SETSIZE`, inside the set's bit array.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn affinity() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reading the affinity mask is supported on Linux only",
    ))
}

/// Restricts the calling thread to `cpu`.
#[cfg(target_os = "linux")]
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu > MAX_CPU {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond the largest pinnable cpu {MAX_CPU}"),
        ));
    }
    // SAFETY: all zeroes is the empty set (see `affinity`).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu <= MAX_CPU` was checked, so the bit is inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; size and pointer describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning threads is supported on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_worker_count_is_stds_available_parallelism() {
        let budget = CpuBudget::detect();
        let std_says = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(budget.workers(), std_says.min(budget.cpus().len()));
    }

    #[test]
    fn the_worker_count_never_exceeds_the_mask_and_is_at_least_one() {
        let n = |k| NonZeroUsize::new(k);
        // A quota smaller than the mask (std already applied it).
        assert_eq!(CpuBudget::new(vec![0, 1, 2, 3], n(2)).workers(), 2);
        // The mask shrank between the two reads.
        assert_eq!(CpuBudget::new(vec![5], n(4)).workers(), 1);
        // std could not tell: the mask decides.
        assert_eq!(CpuBudget::new(vec![0, 1, 2], None).workers(), 3);
        assert_eq!(CpuBudget::new(Vec::new(), None).workers(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_beyond_cpu_setsize_is_an_error_not_a_panic() {
        let err = pin_current_thread(MAX_CPU + 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
