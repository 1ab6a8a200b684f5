//! What a stalled thread was doing: its time on a CPU, waiting for a CPU,
//! and off a CPU — read from the kernel's per-thread counters, sampled by
//! the watchdog thread and read again at the end of a slow poll.
//!
//! On Linux a thread's CPU time is its CPU-time clock
//! (`pthread_getcpuclockid`, exact even for a thread running at that
//! moment), and the time it spent runnable but waiting for a CPU is the run
//! delay in `/proc/thread-self/schedstat`, which the kernel adds up when the
//! thread gets a CPU back. Both can be read from any thread of the process.
//! Elsewhere, or where `schedstat` is missing (a kernel without
//! `CONFIG_SCHED_INFO`), nothing is known and nothing is guessed.
//!
//! A poll does not read the counters when it starts — that would cost two
//! system calls on every poll. Instead a thread reads its own counters at
//! the start of a watched poll only if it has not for a quarter threshold
//! (the common poll pays one comparison), and at the end of each slow poll;
//! and the watchdog samples each watched thread every look (a quarter
//! threshold). A slow poll's figures run from whichever of those samples is
//! nearest its start — the thread's own before it, or the watchdog's after
//! it — to its end. See [`StallTimes`] for what that gives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_core::__private::lock;

use crate::report::{StallClass, StallTimes};

/// How many samples a thread keeps: at one per look, a quarter threshold
/// apart, 16 thresholds of history.
const KEPT: usize = 64;

/// A thread's counters since it started, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    /// Time on a CPU.
    pub(crate) on_cpu: u64,
    /// Time runnable but waiting for a CPU, up to the last time it got one.
    pub(crate) run_delay: u64,
    /// Voluntary context switches: each time the thread blocked (slept, or
    /// waited in a system call, for a lock or for a page).
    pub(crate) blocked: u64,
}

/// The counters at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sample {
    /// When, on [`monotonic_ns`](crate::clock::monotonic_ns).
    pub(crate) at: u64,
    pub(crate) counters: Counters,
    /// Read by the thread itself, so it was running then (not waiting for a
    /// CPU): a wait counted after this sample began after it.
    pub(crate) own: bool,
    /// The thread was runnable (not blocked) then: if it makes no voluntary
    /// context switch after, it did not block.
    pub(crate) runnable: bool,
}

/// One thread's counters and the samples the watchdogs took of it. Made on
/// the thread itself; read and sampled from any thread.
#[derive(Debug)]
pub(crate) struct ThreadSamples {
    clocks: imp::ThreadClocks,
    kept: Mutex<Kept>,
}

/// Samples kept, the watchdog's apart from the thread's own: a thread takes
/// none of its own during a stall, so its last one before a long stall is
/// still there when the stall ends, however many looks the watchdog took.
#[derive(Debug)]
struct Kept {
    looks: Ring<LOOKS_KEPT>,
    own: Ring<OWN_KEPT>,
}

/// A thread's own samples kept.
const OWN_KEPT: usize = 4;

/// The watchdog's samples kept: at one per look, a quarter threshold apart,
/// 16 thresholds of history.
const LOOKS_KEPT: usize = KEPT;

#[derive(Debug)]
struct Ring<const N: usize> {
    samples: [Sample; N],
    /// Samples taken so far; the latest is at `(taken - 1) % N`.
    taken: usize,
}

impl<const N: usize> Ring<N> {
    const fn new() -> Ring<N> {
        Ring {
            samples: [Sample {
                at: 0,
                counters: Counters {
                    on_cpu: 0,
                    run_delay: 0,
                    blocked: 0,
                },
                own: false,
                runnable: false,
            }; N],
            taken: 0,
        }
    }

    fn push(&mut self, sample: Sample) {
        self.samples[self.taken % N] = sample;
        self.taken += 1;
    }

    /// The kept samples, oldest first.
    fn iter(&self) -> impl DoubleEndedIterator<Item = Sample> + '_ {
        (self.taken.saturating_sub(N)..self.taken).map(|i| self.samples[i % N])
    }

    fn last_two(&self) -> Option<(Sample, Sample)> {
        let last = self.taken.checked_sub(1)?;
        let before = last.checked_sub(1)?;
        Some((self.samples[before % N], self.samples[last % N]))
    }
}

thread_local! {
    static CURRENT: Option<Arc<ThreadSamples>> = imp::ThreadClocks::current().map(|clocks| {
        Arc::new(ThreadSamples {
            clocks,
            kept: Mutex::new(Kept {
                looks: Ring::new(),
                own: Ring::new(),
            }),
        })
    });
}

impl ThreadSamples {
    /// The calling thread's, or `None` where its counters cannot be read
    /// (or its thread-locals are being destroyed).
    pub(crate) fn current() -> Option<Arc<ThreadSamples>> {
        CURRENT.try_with(Clone::clone).ok().flatten()
    }

    /// The counters now (read from another thread), or `None` if the
    /// thread is gone.
    pub(crate) fn read(&self) -> Option<Sample> {
        let at = crate::clock::monotonic_ns();
        let counters = self.clocks.read(false)?;
        Some(Sample {
            at,
            counters,
            own: false,
            runnable: self.clocks.runnable() == Some(true),
        })
    }

    /// The counters now, read by the thread itself through files of its own
    /// (a `/proc` file read takes a lock in the kernel: the thread must not
    /// wait there for the watchdog).
    fn read_own(&self) -> Option<Sample> {
        let at = crate::clock::monotonic_ns();
        Some(Sample {
            at,
            counters: self.clocks.read(true)?,
            own: true,
            runnable: true,
        })
    }

    /// The watchdog reads the counters and keeps them; `None` if the thread
    /// is gone.
    pub(crate) fn sample(&self) -> Option<Sample> {
        let sample = self.read()?;
        lock(&self.kept).looks.push(sample);
        Some(sample)
    }

    /// The calling thread, which these samples are of, reads its counters
    /// and keeps them.
    pub(crate) fn sample_own(&self) -> Option<Sample> {
        let sample = self.read_own()?;
        lock(&self.kept).own.push(sample);
        Some(sample)
    }

    /// Like [`sample_own`](Self::sample_own), but gives up rather than wait
    /// for the watchdog, which may hold the samples: for the start of a poll.
    pub(crate) fn try_sample_own(&self) -> bool {
        let Some(sample) = self.read_own() else {
            return false;
        };
        match self.kept.try_lock() {
            Ok(mut kept) => {
                kept.own.push(sample);
                true
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                p.into_inner().own.push(sample);
                true
            }
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    /// The watchdog's last two samples, the latest last.
    pub(crate) fn last_two(&self) -> Option<(Sample, Sample)> {
        lock(&self.kept).looks.last_two()
    }

    /// The watchdog's latest sample.
    pub(crate) fn latest(&self) -> Option<Sample> {
        lock(&self.kept).looks.iter().next_back()
    }

    /// Where to start the figures of a stall that began at `start` (a
    /// reading that may lag by up to `lag`): the sample nearest to it among
    /// the thread's own taken at most `recent` before or after it (the
    /// thread was running then, so no wait for a CPU was under way) and the
    /// watchdog's taken after it.
    pub(crate) fn start_of(&self, start: u64, lag: u64, recent: u64) -> Option<Sample> {
        let kept = lock(&self.kept);
        let distance = |s: &Sample| s.at.abs_diff(start);
        let own = kept.own.iter().filter(|s| distance(s) <= recent);
        let looks = kept
            .looks
            .iter()
            .filter(|s| s.at > start.saturating_add(lag));
        own.chain(looks).min_by_key(distance)
    }

    /// Whether the thread is runnable (running, or waiting for a CPU) right
    /// now; `None` if that cannot be told.
    pub(crate) fn runnable(&self) -> Option<bool> {
        self.clocks.runnable()
    }
}

/// The figures of a stall from `first`, a sample taken after it began, to
/// `last`, one taken at or after its end (or now, while it lasts).
pub(crate) fn split(first: Sample, last: Sample) -> StallTimes {
    let on_cpu = last.counters.on_cpu.saturating_sub(first.counters.on_cpu);
    let run_queue = last
        .counters
        .run_delay
        .saturating_sub(first.counters.run_delay);
    // A wait for a CPU is counted whole when it ends, also the part of it
    // before `first`: the figures then reach back to where it began.
    let measured = last
        .at
        .saturating_sub(first.at)
        .max(on_cpu.saturating_add(run_queue));
    let times = StallTimes {
        measured: Duration::from_nanos(measured),
        on_cpu: Duration::from_nanos(on_cpu),
        run_queue: Duration::from_nanos(run_queue),
        off_cpu: Duration::ZERO,
        stolen: Duration::ZERO,
        // Not blocked only if runnable at the first sample and no voluntary
        // context switch since (a thread already asleep makes none).
        blocked: !first.runnable || last.counters.blocked != first.counters.blocked,
    };
    rest(times)
}

/// Splits what is measured beyond the time on and waiting for a CPU: off a
/// CPU if the thread blocked meanwhile; otherwise it never left the CPU of
/// its own accord, and the time was taken from it (a hypervisor's steal).
fn rest(mut times: StallTimes) -> StallTimes {
    // The counters and the wall clock are read a few microseconds apart:
    // the rest is never negative.
    let rest = times
        .measured
        .saturating_sub(times.on_cpu + times.run_queue);
    if times.blocked {
        (times.off_cpu, times.stolen) = (rest, Duration::ZERO);
    } else {
        (times.off_cpu, times.stolen) = (Duration::ZERO, rest);
    }
    times
}

/// `times` of a stall of `stall`, from a first sample that may precede the
/// stall by a little (the thread's own, at most half a threshold before):
/// what is measured is at most the stall.
pub(crate) fn fit(mut times: StallTimes, stall: Duration) -> StallTimes {
    times.measured = times.measured.min(stall);
    rest(times)
}

/// The class of a stall of `stall` over `threshold` with `times`.
///
/// Descheduled when the stall less its time waiting for a CPU and the time
/// taken from it is under the threshold (the machine, not the task, made it
/// long). The task's own when
/// the measured time on and off a CPU alone reaches the threshold: CPU-bound
/// when it spent at least as long on a CPU as off one (sleeping, in a system
/// call, on a lock), blocked when less. Unknown otherwise — the part of the
/// stall that was not measured decides, and it is not guessed — and without
/// figures.
pub(crate) fn classify(
    stall: Duration,
    times: Option<&StallTimes>,
    threshold: Duration,
) -> StallClass {
    let Some(times) = times else {
        return StallClass::Unknown;
    };
    if stall.saturating_sub(times.run_queue + times.stolen) < threshold {
        StallClass::Descheduled
    } else if times.on_cpu + times.off_cpu < threshold {
        StallClass::Unknown
    } else if times.on_cpu >= times.off_cpu {
        StallClass::CpuBound
    } else {
        StallClass::Blocked
    }
}

/// Raises the calling thread's (the watchdog's) scheduling priority to nice
/// −10 where the process may (`CAP_SYS_NICE`, or `RLIMIT_NICE`); leaves it
/// as it is otherwise. The watchdog sleeps between looks and a look takes
/// microseconds, so this costs the other threads nothing; it makes its
/// samples come on time on a busy machine, where the figures matter most.
pub(crate) fn raise_priority() {
    imp::raise_priority();
}

#[cfg(all(target_os = "linux", not(miri)))]
mod imp {
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    use super::Counters;

    pub(super) fn raise_priority() {
        // SAFETY: `gettid` cannot fail; `setpriority` on our own thread id
        // only changes this thread's nice value, and fails harmlessly
        // (EACCES) without the privilege.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, -10);
        }
    }

    /// A thread's CPU-time clock and its `schedstat` and `stat` files, which
    /// keep naming that thread whichever thread reads them. The thread reads
    /// its own `schedstat` through a file of its own: reading a `/proc` file
    /// takes that file's lock in the kernel, which the watchdog may hold.
    #[derive(Debug)]
    pub(super) struct ThreadClocks {
        cpu: libc::clockid_t,
        schedstat: File,
        own_schedstat: File,
        status: File,
        own_status: File,
        stat: File,
    }

    impl ThreadClocks {
        /// The calling thread's.
        pub(super) fn current() -> Option<ThreadClocks> {
            let mut cpu: libc::clockid_t = 0;
            // SAFETY: `pthread_self()` is the calling thread, alive during the
            // call; `cpu` is writable. The clock id names the thread's kernel
            // id: once the thread is gone, reading it fails (EINVAL) rather
            // than reading freed memory.
            if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut cpu) } != 0 {
                return None;
            }
            let clocks = ThreadClocks {
                cpu,
                schedstat: File::open("/proc/thread-self/schedstat").ok()?,
                own_schedstat: File::open("/proc/thread-self/schedstat").ok()?,
                status: File::open("/proc/thread-self/status").ok()?,
                own_status: File::open("/proc/thread-self/status").ok()?,
                stat: File::open("/proc/thread-self/stat").ok()?,
            };
            clocks.read(true).map(|_| clocks)
        }

        pub(super) fn read(&self, own: bool) -> Option<Counters> {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; a clock id of a
            // thread that is gone makes the call fail, which is checked.
            if unsafe { libc::clock_gettime(self.cpu, &mut ts) } != 0 {
                return None;
            }
            let on_cpu = (ts.tv_sec as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(ts.tv_nsec as u64);
            let mut buf = [0_u8; 96];
            let (schedstat, status) = if own {
                (&self.own_schedstat, &self.own_status)
            } else {
                (&self.schedstat, &self.status)
            };
            let n = schedstat.read_at(&mut buf, 0).ok()?;
            // "<on cpu ns> <run delay ns> <timeslices>\n"
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            let run_delay = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
            let mut buf = [0_u8; 2048];
            let n = status.read_at(&mut buf, 0).ok()?;
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            let blocked = text
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            Some(Counters {
                on_cpu,
                run_delay,
                blocked,
            })
        }

        pub(super) fn runnable(&self) -> Option<bool> {
            let mut buf = [0_u8; 512];
            let n = self.stat.read_at(&mut buf, 0).ok()?;
            // "<tid> (<name>) <state> ...": the name may hold anything, so
            // the state follows the last ')'.
            let text = &buf[..n];
            let close = text.iter().rposition(|b| *b == b')')?;
            let state = text[close + 1..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())?;
            Some(*state == b'R')
        }
    }
}

#[cfg(any(not(target_os = "linux"), miri))]
mod imp {
    use super::Counters;

    pub(super) fn raise_priority() {}

    /// No per-thread counters on this platform.
    #[derive(Debug)]
    pub(super) struct ThreadClocks;

    impl ThreadClocks {
        pub(super) fn current() -> Option<ThreadClocks> {
            None
        }

        pub(super) fn read(&self, _own: bool) -> Option<Counters> {
            None
        }

        pub(super) fn runnable(&self) -> Option<bool> {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A sample of a thread that has blocked `blocked` times so far.
    fn sample_b(at_ms: u64, on_cpu_ms: u64, run_delay_ms: u64, blocked: u64) -> Sample {
        Sample {
            at: at_ms * MS,
            counters: Counters {
                on_cpu: on_cpu_ms * MS,
                run_delay: run_delay_ms * MS,
                blocked,
            },
            own: false,
            runnable: true,
        }
    }

    /// A sample, as if the thread blocked before each one (so the rest of
    /// the time counts as off a CPU).
    fn sample(at_ms: u64, on_cpu_ms: u64, run_delay_ms: u64) -> Sample {
        sample_b(at_ms, on_cpu_ms, run_delay_ms, at_ms)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A sample as recorded (nanoseconds).
    fn recorded(at: u64, on_cpu: u64, run_delay: u64, blocked: u64, own: bool) -> Sample {
        Sample {
            at,
            counters: Counters {
                on_cpu,
                run_delay,
                blocked,
            },
            own,
            runnable: true,
        }
    }

    // Samples recorded from the tests of `tests/descheduled.rs` (a 20 ms
    // threshold, two CPU hogs pinned one per CPU, a loaded shared machine),
    // with the poll's start and the class each report got.

    #[test]
    fn recorded_a_100ms_sleep_is_blocked() {
        let start = 6_592_700_069_770;
        let first = recorded(6_592_700_139_519, 112_338, 5_874, 2, true);
        let end = recorded(6_592_808_067_187, 147_902, 7_836_340, 3, true);
        let times = split(first, end);
        assert_eq!(times.on_cpu, Duration::from_nanos(35_564));
        assert_eq!(times.run_queue, Duration::from_nanos(7_830_466));
        assert_eq!(times.measured, Duration::from_nanos(107_927_668));
        assert_eq!(times.off_cpu, Duration::from_nanos(100_061_638));
        assert_eq!(times.stolen, Duration::ZERO);
        let stall = Duration::from_nanos(end.at - start);
        assert_eq!(classify(stall, Some(&times), ms(20)), StallClass::Blocked);
    }

    #[test]
    fn recorded_a_100ms_cpu_loop_on_a_shared_cpu_is_cpu_bound() {
        // 100 ms of CPU took 520 ms beside the hogs, never blocking.
        let start = 6_591_176_172_310;
        let first = recorded(6_591_176_268_804, 140_704, 5_432_403, 0, true);
        let end = recorded(6_591_696_171_397, 100_196_367, 425_279_351, 0, true);
        let times = split(first, end);
        assert_eq!(times.on_cpu, Duration::from_nanos(100_055_663));
        assert_eq!(times.run_queue, Duration::from_nanos(419_846_948));
        // The CPU clock read a moment after the wall clock: nothing left.
        assert_eq!(times.measured, times.on_cpu + times.run_queue);
        assert_eq!(times.off_cpu + times.stolen, Duration::ZERO);
        let stall = Duration::from_nanos(end.at - start);
        assert_eq!(classify(stall, Some(&times), ms(20)), StallClass::CpuBound);
    }

    #[test]
    fn recorded_a_100ms_wait_for_a_held_mutex_is_blocked() {
        let start = 6_592_963_670_511;
        let first = recorded(6_592_963_744_258, 96_969, 59_317, 0, true);
        let end = recorded(6_593_064_038_118, 201_544, 110_704, 2, true);
        let times = split(first, end);
        assert_eq!(times.on_cpu, Duration::from_nanos(104_575));
        assert_eq!(times.run_queue, Duration::from_nanos(51_387));
        assert_eq!(times.off_cpu, Duration::from_nanos(100_137_898));
        let stall = Duration::from_nanos(end.at - start);
        assert_eq!(classify(stall, Some(&times), ms(20)), StallClass::Blocked);
    }

    #[test]
    fn recorded_a_poll_kept_off_its_cpu_is_descheduled() {
        // 2 ms of work at nice 19 beside two hogs on its CPU: 64 ms. The
        // thread's own sample 1 ms before the poll started.
        let start = 6_593_329_281_385;
        let first = recorded(6_593_328_215_982, 352_701, 73_558_180, 2, true);
        let end = recorded(6_593_392_989_892, 2_442_592, 136_242_553, 2, true);
        let stall = Duration::from_nanos(end.at - start);
        let times = fit(split(first, end), stall);
        assert_eq!(times.on_cpu, Duration::from_nanos(2_089_891));
        assert_eq!(times.run_queue, Duration::from_nanos(62_684_373));
        assert_eq!(times.measured, stall);
        assert_eq!(stall - times.run_queue, Duration::from_nanos(1_024_134));
        assert_eq!(
            classify(stall, Some(&times), ms(20)),
            StallClass::Descheduled
        );
    }

    #[test]
    fn a_wait_that_began_before_the_first_sample_widens_what_is_measured() {
        // Sampled 5 ms into a 30 ms wait for a CPU, which Linux counts whole
        // when it ends.
        let times = split(sample(5, 0, 0), sample(31, 1, 30));
        assert_eq!(times.measured, ms(31));
        assert_eq!(times.off_cpu, Duration::ZERO);
        assert_eq!(times.run_queue, ms(30));
    }

    #[test]
    fn a_stall_the_run_queue_explains_is_descheduled() {
        // 43 ms stall of a 1 ms poll that waited 41 ms for a CPU.
        let times = split(sample(0, 0, 0), sample(42, 1, 41));
        assert_eq!(
            classify(ms(43), Some(&times), ms(20)),
            StallClass::Descheduled
        );
        // The same wait in a 70 ms stall leaves 29 ms of the task's own.
        let times = split(sample(0, 0, 0), sample(69, 28, 41));
        assert_eq!(classify(ms(70), Some(&times), ms(20)), StallClass::CpuBound);
    }

    #[test]
    fn cpu_bound_and_blocked_are_told_by_the_time_on_a_cpu() {
        // A 100 ms spin sharing a CPU with a hog: half on it, half waiting.
        let spin = split(sample(0, 0, 0), sample(100, 51, 49));
        assert_eq!(classify(ms(100), Some(&spin), ms(20)), StallClass::CpuBound);
        // A 100 ms sleep, or a wait for a held std Mutex: off the CPU.
        let sleep = split(sample(0, 0, 0), sample(100, 0, 2));
        assert_eq!(classify(ms(100), Some(&sleep), ms(20)), StallClass::Blocked);
    }

    #[test]
    fn time_a_thread_that_never_blocked_lost_is_taken_from_it() {
        // 0.2 ms of CPU in a 22 ms poll, no wait for a CPU, and not one
        // voluntary context switch: the time was taken from the thread.
        let times = split(sample_b(0, 0, 0, 7), sample_b(22, 0, 0, 7));
        assert_eq!(times.stolen, ms(22));
        assert_eq!(times.off_cpu, Duration::ZERO);
        assert_eq!(
            classify(ms(22), Some(&times), ms(20)),
            StallClass::Descheduled
        );
        // The same after it blocked once: off the CPU, its own.
        let times = split(sample_b(0, 0, 0, 7), sample_b(22, 0, 0, 8));
        assert_eq!(times.off_cpu, ms(22));
        assert_eq!(classify(ms(22), Some(&times), ms(20)), StallClass::Blocked);
        // Asleep already when first sampled: it makes no switch, and still
        // it is blocked.
        let asleep = Sample {
            runnable: false,
            ..sample_b(0, 0, 0, 8)
        };
        let times = split(asleep, sample_b(22, 0, 0, 8));
        assert_eq!(times.off_cpu, ms(22));
        assert_eq!(times.stolen, Duration::ZERO);
    }

    #[test]
    fn what_is_measured_is_at_most_the_stall() {
        // The first sample was the thread's own, 3 ms before the poll.
        let times = fit(split(sample(0, 0, 0), sample(53, 1, 2)), ms(50));
        assert_eq!(times.measured, ms(50));
        assert_eq!(times.off_cpu, ms(47));
    }

    #[test]
    fn without_figures_the_class_is_unknown() {
        assert_eq!(classify(ms(500), None, ms(20)), StallClass::Unknown);
    }

    #[test]
    fn a_stall_mostly_unmeasured_is_not_classified() {
        // 60 ms, of which the figures cover 16 ms, all waiting for a CPU:
        // the 44 ms before the first sample decide, and are not known.
        let times = split(sample(44, 0, 0), sample(60, 0, 16));
        assert_eq!(classify(ms(60), Some(&times), ms(20)), StallClass::Unknown);
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn a_thread_is_sampled_from_another_thread() {
        let samples = std::thread::spawn(|| {
            let samples = ThreadSamples::current().expect("Linux has the counters");
            let start = std::time::Instant::now();
            while start.elapsed() < ms(30) {
                std::hint::spin_loop();
            }
            samples
        })
        .join()
        .unwrap();
        // The thread is gone: its counters cannot be read any more.
        assert!(samples.read().is_none());

        let mine = ThreadSamples::current().unwrap();
        let first = mine.sample().unwrap();
        assert!(mine.last_two().is_none());
        let start = std::time::Instant::now();
        while start.elapsed() < ms(30) {
            std::hint::spin_loop();
        }
        let last = mine.sample().unwrap();
        assert_eq!(mine.last_two(), Some((first, last)));
        let times = split(first, last);
        // Spinning: mostly on a CPU (the rest waiting for one, if busy).
        assert!(times.on_cpu + times.run_queue >= ms(25), "{times:?}");
        assert_eq!(mine.runnable(), Some(true));
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn a_stall_starts_from_the_sample_nearest_its_start() {
        let mine = ThreadSamples::current().unwrap();
        let own = mine.sample_own().unwrap();
        let look = mine.sample().unwrap();
        // The thread's own sample near the start (either side), or the
        // watchdog's after it: whichever is nearer.
        assert_eq!(mine.start_of(own.at + 1, 0, u64::MAX), Some(own));
        assert_eq!(mine.start_of(own.at - 1, 5, u64::MAX), Some(own));
        assert_eq!(mine.start_of(look.at - 1, 0, u64::MAX), Some(look));
        assert_eq!(mine.start_of(look.at - 1, 0, 0), Some(look));
        // A look within the clock's lag of the start may precede it.
        assert_eq!(mine.start_of(look.at - 1, 5, 0), None);
        // Nothing after, and the own sample too far.
        assert_eq!(mine.start_of(look.at + 10, 0, 5), None);
        // However many looks follow, the own sample stays.
        for _ in 0..2 * KEPT {
            mine.sample().unwrap();
        }
        assert_eq!(mine.start_of(own.at, 0, u64::MAX), Some(own));
    }
}
