//! CPU placement: the default worker count follows the affinity mask, pinned
//! workers run on their CPU (checked with `sched_getaffinity` from inside
//! their tasks), and pinning failures are errors.
// Not under miri: it pins threads, reads the affinity mask with libc and
// runs `taskset`.
#![cfg(all(target_os = "linux", not(miri)))]

use std::path::{Path, PathBuf};
use std::process::Command;

use async_patterns_per_core_runtime::{BuildError, CpuBudget, PerCoreRuntime};

/// The CPUs the calling thread may run on, read with `sched_getaffinity`.
fn thread_affinity() -> Vec<usize> {
    // SAFETY: all zeroes is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; size and pointer describe `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below `CPU_SETSIZE`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

#[test]
fn the_cpu_budget_is_the_affinity_mask_of_the_calling_thread() {
    assert_eq!(CpuBudget::detect().cpus(), thread_affinity());
}

#[test]
fn pinned_workers_run_their_tasks_on_their_own_cpu() {
    let mask = thread_affinity();
    let workers = mask.len().min(2);
    let rt = PerCoreRuntime::builder()
        .workers(workers)
        .pin(true)
        .build()
        .unwrap();
    assert_eq!(rt.cpus(), Some(&mask[..workers]));
    let handles = rt
        .spawn_on_all(|id| async move {
            tokio::task::yield_now().await;
            (
                id.index(),
                PerCoreRuntime::current_worker(),
                thread_affinity(),
            )
        })
        .unwrap();
    for handle in handles {
        let (index, current, affinity) = handle.join().unwrap();
        assert_eq!(current.map(|w| w.index()), Some(index));
        assert_eq!(affinity, [mask[index]], "worker {index}");
    }
}

#[test]
fn unpinned_workers_may_run_anywhere_in_the_mask() {
    let mask = thread_affinity();
    let rt = PerCoreRuntime::builder().workers(1).build().unwrap();
    assert_eq!(rt.cpus(), None);
    assert_eq!(
        rt.block_on(0, || async { thread_affinity() }).unwrap(),
        mask
    );
}

#[test]
fn pinning_to_a_cpu_that_does_not_exist_fails_the_build() {
    let cpu = libc::CPU_SETSIZE as usize - 1;
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if online > cpu {
        eprintln!("skipped: this machine has cpu {cpu}");
        return;
    }
    match PerCoreRuntime::builder().pin_to_cpus([cpu]).build() {
        Err(BuildError::Pin {
            worker: 0,
            cpu: failed,
            source,
        }) => {
            assert_eq!(failed, cpu);
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        }
        other => panic!("expected a pinning error, got {other:?}"),
    }
}

#[test]
fn a_pinning_failure_on_a_later_worker_fails_the_build_naming_that_worker() {
    let first = thread_affinity()[0];
    let err = PerCoreRuntime::builder()
        .pin_to_cpus([first, libc::CPU_SETSIZE as usize - 1])
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Pin { worker: 1, .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("worker 1: cannot pin to cpu 1023: ")
    );
}

#[test]
fn cpus_beyond_cpu_setsize_are_a_config_error() {
    let err = PerCoreRuntime::builder()
        .pin_to_cpus([libc::CPU_SETSIZE as usize])
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `pin_to_cpus`: got 1024, expected CPU numbers up to 1023"
    );
}

#[test]
fn more_pinned_workers_than_cpus_is_a_config_error() {
    let cpus = thread_affinity().len();
    let err = PerCoreRuntime::builder()
        .workers(cpus + 1)
        .pin(true)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid `workers`: got {}, expected at most {cpus} when pinning (one worker per CPU to pin to)",
            cpus + 1
        )
    );
}

const CHILD: &str = "PER_CORE_RUNTIME_TASKSET_CPU";

fn taskset() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("taskset"))
                .collect()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/taskset")])
        .find(|p| Path::new(p).is_file())
}

/// Re-runs this very test under `taskset -c <one cpu>`; the child checks that
/// the defaults follow the one-CPU mask.
#[test]
fn workers_default_to_the_affinity_mask_under_taskset() {
    if let Some(cpu) = std::env::var_os(CHILD) {
        let cpu: usize = cpu.to_str().unwrap().parse().unwrap();
        assert_eq!(thread_affinity(), [cpu]);
        // std reads the same mask: the default comes from it.
        assert_eq!(std::thread::available_parallelism().unwrap().get(), 1);
        let budget = CpuBudget::detect();
        assert_eq!(budget.cpus(), [cpu]);
        assert_eq!(budget.workers(), 1);
        let rt = PerCoreRuntime::new().unwrap();
        assert_eq!(rt.workers(), 1);
        let pinned = PerCoreRuntime::builder().pin(true).build().unwrap();
        assert_eq!(pinned.cpus(), Some(&[cpu][..]));
        assert_eq!(
            pinned.block_on(0, || async { thread_affinity() }).unwrap(),
            [cpu]
        );
        println!("child under taskset checked cpu {cpu}");
        return;
    }
    let Some(taskset) = taskset() else {
        eprintln!(
            "skipped: `taskset` (util-linux) is not installed, so the mask cannot be narrowed"
        );
        return;
    };
    let cpu = thread_affinity()[0];
    let output = Command::new(taskset)
        .arg("-c")
        .arg(cpu.to_string())
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "workers_default_to_the_affinity_mask_under_taskset",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, cpu.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("child under taskset checked cpu {cpu}")),
        "the child did not run the checks:\n{stdout}\n{stderr}"
    );
}
