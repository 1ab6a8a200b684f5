//! [`CpuBudget`]: which CPUs the process may run on (its affinity mask, which
//! reflects `taskset` and a container's cpuset) and how much CPU time it may
//! use (a cgroup CPU quota), and so how many workers a runtime gets by
//! default; and pinning the calling thread to one CPU.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The CPUs this process may run on and the CPU time it may use: where the
/// default number of workers of a [`PerCoreRuntime`](crate::PerCoreRuntime)
/// comes from.
///
/// Two limits apply, and **the smaller one wins**:
///
/// - the *affinity mask* of the calling thread (`sched_getaffinity`), which
///   reflects `taskset`, `numactl` and a container's cpuset: threads can run
///   on these CPUs only;
/// - the *CPU quota* of the process's cgroup (`cpu.max` in cgroup v2,
///   `cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1; the smallest along the
///   cgroup's ancestors), e.g. `docker run --cpus 1.5`: the process may use
///   that many CPUs' worth of time, whichever CPUs it runs on. A fractional
///   quota is rounded down (at least 1): a thread-per-core worker wants a
///   whole CPU, and a worker more than the quota allows would be throttled.
///
/// Pinned workers go to the first CPUs of the affinity mask, in order.
/// Where the mask cannot be read (not Linux), the CPUs are `0..n` with `n`
/// from [`std::thread::available_parallelism`].
///
/// # Examples
///
/// ```
/// use async_patterns_per_core_runtime::CpuBudget;
///
/// let budget = CpuBudget::detect();
/// assert!(budget.workers() >= 1);
/// assert!(budget.workers() <= budget.cpus().len());
/// if let Some(quota) = budget.quota() {
///     assert!(budget.workers() <= quota.floor().max(1.0) as usize);
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBudget {
    cpus: Vec<usize>,
    quota: Option<f64>,
}

impl CpuBudget {
    /// Reads the affinity mask of the calling thread and the CPU quota of the
    /// process's cgroup. Never fails: what cannot be read is not a limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::CpuBudget;
    ///
    /// let budget = CpuBudget::detect();
    /// println!("{} CPUs, quota {:?}: {} workers", budget.cpus().len(), budget.quota(), budget.workers());
    /// ```
    pub fn detect() -> CpuBudget {
        CpuBudget {
            cpus: affinity().unwrap_or_else(|_| fallback_cpus()),
            quota: cgroup_quota(Path::new("/")),
        }
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

    /// The cgroup CPU quota in CPUs (`1.5` for 150 ms per 100 ms), or `None`
    /// when there is none or it cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_per_core_runtime::CpuBudget;
    ///
    /// if let Some(quota) = CpuBudget::detect().quota() {
    ///     assert!(quota > 0.0);
    /// }
    /// ```
    pub fn quota(&self) -> Option<f64> {
        self.quota
    }

    /// The default number of workers: the number of CPUs in the affinity
    /// mask, or the quota rounded down (at least 1) if that is smaller.
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
        let by_mask = self.cpus.len().max(1);
        match self.quota {
            // Truncation is the rounding down described above.
            Some(quota) => by_mask.min((quota.floor() as usize).max(1)),
            None => by_mask,
        }
    }
}

fn fallback_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
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

/// The CPU quota of the process's cgroup, in CPUs: the smallest quota found
/// in the cgroup and its ancestors, cgroup v2 and v1 alike. `root` is `/`
/// except in tests, which build a fake `/proc` and `/sys`.
pub(crate) fn cgroup_quota(root: &Path) -> Option<f64> {
    let cgroups = fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    let mut smallest: Option<f64> = None;
    for line in cgroups.lines() {
        // `hierarchy-id:controllers:path`
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let quota = if id == "0" && controllers.is_empty() {
            cgroup_dir(root, &mountinfo, "cgroup2", None, path)
                .and_then(|dir| along_ancestors(&dir, read_cpu_max))
        } else if controllers.split(',').any(|c| c == "cpu") {
            cgroup_dir(root, &mountinfo, "cgroup", Some("cpu"), path)
                .and_then(|dir| along_ancestors(&dir, read_cfs_quota))
        } else {
            None
        };
        if let Some(q) = quota {
            smallest = Some(smallest.map_or(q, |s| s.min(q)));
        }
    }
    smallest
}

/// The directory of cgroup `path` and its mount point, found through
/// `/proc/self/mountinfo` (`id parent dev root mount-point opts... - fstype
/// source super-opts`). When the cgroup path is outside the mount's root (a
/// container that sees its host's path), the mount point itself is used.
fn cgroup_dir(
    root: &Path,
    mountinfo: &str,
    fstype: &str,
    controller: Option<&str>,
    path: &str,
) -> Option<(PathBuf, PathBuf)> {
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after = after.split_whitespace();
        if after.next() != Some(fstype) {
            continue;
        }
        let super_opts = after.nth(1).unwrap_or("");
        if let Some(c) = controller
            && !super_opts.split(',').any(|o| o == c)
        {
            continue;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        let (Some(mount_root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mount = root.join(mount_point.trim_start_matches('/'));
        let relative = path
            .strip_prefix(mount_root)
            .map(|rest| rest.trim_start_matches('/'))
            .unwrap_or("");
        return Some((mount.join(relative), mount));
    }
    None
}

/// The smallest quota read by `read` in `dir` and its parents up to `mount`.
fn along_ancestors(
    (dir, mount): &(PathBuf, PathBuf),
    read: fn(&Path) -> Option<f64>,
) -> Option<f64> {
    let mut smallest: Option<f64> = None;
    let mut current = Some(dir.as_path());
    while let Some(d) = current {
        if let Some(q) = read(d) {
            smallest = Some(smallest.map_or(q, |s| s.min(q)));
        }
        if d == mount {
            break;
        }
        current = d.parent().filter(|p| p.starts_with(mount));
    }
    smallest
}

/// cgroup v2 `cpu.max`: `max 100000` (no limit) or `150000 100000`.
fn read_cpu_max(dir: &Path) -> Option<f64> {
    parse_cpu_max(&fs::read_to_string(dir.join("cpu.max")).ok()?)
}

pub(crate) fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// cgroup v1 `cpu.cfs_quota_us` (`-1`: no limit) over `cpu.cfs_period_us`.
fn read_cfs_quota(dir: &Path) -> Option<f64> {
    let quota: f64 = fs::read_to_string(dir.join("cpu.cfs_quota_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let period: f64 = fs::read_to_string(dir.join("cpu.cfs_period_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> FakeRoot {
            let dir = std::env::temp_dir()
                .join(format!("per-core-runtime-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("proc/self")).unwrap();
            FakeRoot(dir)
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cpu_max_parses_limit_and_unlimited() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn cgroup_v2_quota_is_read_from_the_process_cgroup_and_its_ancestors() {
        let root = FakeRoot::new("v2");
        root.write("proc/self/cgroup", "0::/app/worker\n");
        root.write(
            "proc/self/mountinfo",
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        root.write("sys/fs/cgroup/app/worker/cpu.max", "max 100000\n");
        root.write("sys/fs/cgroup/app/cpu.max", "250000 100000\n");
        root.write("sys/fs/cgroup/cpu.max", "max 100000\n");
        assert_eq!(cgroup_quota(&root.0), Some(2.5));
    }

    #[test]
    fn cgroup_v1_quota_is_read_from_the_cpu_controller_mount() {
        let root = FakeRoot::new("v1");
        root.write(
            "proc/self/cgroup",
            "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
        );
        root.write(
            "proc/self/mountinfo",
            "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n\
             41 30 0:36 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
        );
        root.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n");
        root.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        assert_eq!(cgroup_quota(&root.0), Some(0.5));
    }

    #[test]
    fn no_quota_files_means_no_quota() {
        let root = FakeRoot::new("none");
        root.write("proc/self/cgroup", "0::/\n");
        root.write(
            "proc/self/mountinfo",
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(cgroup_quota(&root.0), None);
    }

    #[test]
    fn the_smaller_of_mask_and_quota_wins_rounded_down_at_least_one() {
        let budget = |cpus: usize, quota| CpuBudget {
            cpus: (0..cpus).collect(),
            quota,
        };
        assert_eq!(budget(8, None).workers(), 8);
        assert_eq!(budget(8, Some(2.5)).workers(), 2);
        assert_eq!(budget(2, Some(6.0)).workers(), 2);
        assert_eq!(budget(4, Some(0.5)).workers(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_beyond_cpu_setsize_is_an_error_not_a_panic() {
        let err = pin_current_thread(MAX_CPU + 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
