//! CPU time of the calling thread and of the whole process, read from the
//! kernel's clocks. A wait that parks costs (almost) no CPU time however long
//! it lasts; a wait that spins costs as much CPU time as wall time, so these
//! clocks tell the two apart where wall time cannot.

use std::time::Duration;

/// CPU time consumed so far by the calling thread (user and system).
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::cpu;
///
/// let before = cpu::thread_time();
/// std::thread::sleep(std::time::Duration::from_millis(20));
/// // Sleeping is parking: almost no CPU time.
/// assert!(cpu::thread_time() - before < std::time::Duration::from_millis(15));
/// ```
pub fn thread_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed so far by every thread of the process (user and
/// system).
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::cpu;
///
/// let before = cpu::process_time();
/// let mut x = 0u64;
/// for i in 0..10_000_000u64 {
///     x = std::hint::black_box(x.wrapping_add(i));
/// }
/// assert!(cpu::process_time() > before);
/// ```
pub fn process_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call, and
    // `id` is one of the CPU-time clocks every Linux kernel provides.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({id}) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_thread_accumulates_cpu_time_and_sleeping_one_does_not() {
        let start = thread_time();
        let spin_until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let busy = thread_time() - start;
        // The thread may be descheduled on a loaded machine, hence the margin.
        assert!(busy >= Duration::from_millis(3), "busy loop used {busy:?}");

        let start = thread_time();
        std::thread::sleep(Duration::from_millis(30));
        let idle = thread_time() - start;
        assert!(idle < Duration::from_millis(10), "sleep used {idle:?}");
    }

    #[test]
    fn process_time_is_at_least_this_threads_time() {
        assert!(process_time() >= thread_time());
    }
}
