//! Helpers shared by the integration tests: a CPU loop measured in CPU
//! time, and CPU hogs pinned beside the runtime.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The calling thread's CPU time.
#[cfg(target_os = "linux")]
pub fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the thread CPU clock
    // exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A CPU loop of `d` of CPU time: however busy the machine, the thread
/// computes for `d` (its wall time is longer when it shares a CPU).
/// Elsewhere than on Linux, a loop of `d` of wall time.
#[cfg(not(target_os = "linux"))]
pub fn spin_cpu(d: Duration) {
    spin_for(d)
}

/// A CPU loop of `d` of CPU time: however busy the machine, the thread
/// computes for `d` (its wall time is longer when it shares a CPU).
#[cfg(target_os = "linux")]
pub fn spin_cpu(d: Duration) {
    let start = cpu_time();
    while cpu_time() - start < d {
        for _ in 0..1_000 {
            std::hint::spin_loop();
        }
    }
}

/// A loop of `d` of wall time.
pub fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Pins the calling thread to `cpu`; false if the system refuses.
#[cfg(target_os = "linux")]
pub fn pin_to(cpu: usize) -> bool {
    // SAFETY: `set` is a valid, writable cpu set for the calls.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The CPUs this process may run on.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a valid, writable cpu set for the calls.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}

/// Threads that spin until dropped, each pinned to a CPU of its own
/// (round robin over the allowed CPUs).
#[cfg(target_os = "linux")]
pub struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

#[cfg(target_os = "linux")]
impl CpuHogs {
    /// `n` hogs; hog `i` is pinned to the `i`-th allowed CPU.
    pub fn start(n: usize) -> CpuHogs {
        CpuHogs::pinned(&allowed_cpus(), n)
    }

    /// `n` hogs, all pinned to `cpu`.
    pub fn on(cpu: usize, n: usize) -> CpuHogs {
        CpuHogs::pinned(&[cpu], n)
    }

    fn pinned(cpus: &[usize], n: usize) -> CpuHogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                let cpu = cpus[i % cpus.len()];
                std::thread::Builder::new()
                    .name(format!("cpu-hog-{i}"))
                    .spawn(move || {
                        pin_to(cpu);
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                    .unwrap()
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

#[cfg(target_os = "linux")]
impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Lowers the calling thread's priority to the lowest (nice 19): any
/// runnable thread of normal priority on its CPU goes first.
#[cfg(target_os = "linux")]
pub fn lowest_priority() {
    // SAFETY: `gettid` cannot fail; `setpriority` on our own thread id only
    // changes this thread's nice value (raising it needs no privilege).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        assert_eq!(libc::setpriority(libc::PRIO_PROCESS, tid, 19), 0);
    }
}
