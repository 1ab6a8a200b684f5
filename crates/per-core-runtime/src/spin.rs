//! How long a worker that ran out of work spins before it parks: the
//! budget the builder's `spin_before_park` allows, adapted to what spinning
//! has been worth lately, so that it costs CPU only where it saves wake-ups.
//!
//! - Work that arrived within the allowance after the worker ran out (a
//!   reply from another worker) says a spin would catch the next one: the
//!   budget grows back towards the allowance.
//! - Work that took longer says spinning would only burn CPU: the budget
//!   halves, down to no spinning at all, so that a worker handed work every
//!   millisecond soon parks at once, as it would without the option.
//! - A spin during which the worker lost its CPU — the OS ran another thread
//!   on it, most often the very thread that would answer, which the spin
//!   kept waiting — says the CPUs are oversubscribed: there spinning only
//!   delays the answer, so the worker parks at once for the next
//!   [`COOLDOWN`] times it runs out of work, then tries spinning again.

use std::time::Duration;

/// How many times a worker that lost its CPU while spinning parks at once
/// before it tries spinning again.
pub(crate) const COOLDOWN: u32 = 256;

/// A spin shorter than this is not worth starting.
const MIN_SPIN: Duration = Duration::from_micros(1);

/// A gap this long between two looks of a spin means the thread was off
/// its CPU (a look takes well under a microsecond; giving way to the OS
/// when nobody else waits for the CPU, a few).
pub(crate) const PREEMPTED: Duration = Duration::from_micros(50);

/// How a spin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpinEnd {
    /// Work arrived.
    Found,
    /// The budget ran out.
    TimedOut,
    /// The thread lost its CPU while spinning (another thread ran on it).
    Preempted,
}

/// How many times the OS has switched the calling thread out while it could
/// still run (preempted it, or ran another thread when it yielded): on
/// Linux, `getrusage(RUSAGE_THREAD)`'s involuntary context switches. `None`
/// where it cannot be read; the spin then relies on the time gaps alone.
pub(crate) fn involuntary_switches() -> Option<u64> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: `rusage` is plain data; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable `rusage` for the duration of
        // the call; RUSAGE_THREAD reads the calling thread's counters.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        (rc == 0).then(|| u64::try_from(usage.ru_nivcsw).unwrap_or(0))
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        None
    }
}

/// The spin budget of one worker.
#[derive(Debug, Clone)]
pub(crate) struct SpinBudget {
    /// The builder's `spin_before_park`.
    allowance: Duration,
    /// How long the next spin may last.
    current: Duration,
    /// How many more times to park at once after losing the CPU.
    cooldown: u32,
}

impl SpinBudget {
    pub(crate) fn new(allowance: Duration) -> Self {
        SpinBudget {
            allowance,
            current: allowance,
            cooldown: 0,
        }
    }

    /// Whether spinning is enabled at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.allowance.is_zero()
    }

    /// How long the next spin may last (zero: park at once).
    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    /// A spin ended.
    pub(crate) fn spun(&mut self, end: SpinEnd) {
        if end == SpinEnd::Preempted {
            self.current = Duration::ZERO;
            self.cooldown = COOLDOWN;
        }
    }

    /// Work arrived `idle` after the worker ran out of it (spinning, parked,
    /// or both).
    pub(crate) fn worked_after(&mut self, idle: Duration) {
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return;
        }
        self.current = if idle <= self.allowance {
            (self.current * 2)
                .max(self.allowance / 8)
                .min(self.allowance)
        } else {
            let half = self.current / 2;
            if half < MIN_SPIN {
                Duration::ZERO
            } else {
                half
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWANCE: Duration = Duration::from_micros(64);

    #[test]
    fn replies_within_the_allowance_keep_the_full_budget() {
        let mut budget = SpinBudget::new(ALLOWANCE);
        for _ in 0..10 {
            budget.spun(SpinEnd::Found);
            budget.worked_after(Duration::from_micros(3));
            assert_eq!(budget.current(), ALLOWANCE);
        }
    }

    #[test]
    fn work_that_comes_later_than_the_allowance_soon_stops_the_spinning() {
        let mut budget = SpinBudget::new(ALLOWANCE);
        let mut spins = Vec::new();
        for _ in 0..8 {
            spins.push(budget.current());
            budget.spun(SpinEnd::TimedOut);
            budget.worked_after(Duration::from_millis(1));
        }
        let us = |d: &Duration| d.as_micros();
        assert_eq!(
            spins.iter().map(us).collect::<Vec<_>>(),
            [64, 32, 16, 8, 4, 2, 1, 0]
        );
        budget.worked_after(Duration::from_millis(1));
        assert_eq!(budget.current(), Duration::ZERO);
    }

    #[test]
    fn losing_the_cpu_while_spinning_stops_it_for_a_while_then_fast_replies_bring_it_back() {
        let mut budget = SpinBudget::new(ALLOWANCE);
        budget.spun(SpinEnd::Preempted);
        for _ in 0..COOLDOWN {
            assert_eq!(budget.current(), Duration::ZERO);
            budget.worked_after(Duration::from_micros(10));
        }
        let mut spins = Vec::new();
        for _ in 0..5 {
            budget.worked_after(Duration::from_micros(10));
            spins.push(budget.current().as_micros());
        }
        assert_eq!(spins, [8, 16, 32, 64, 64]);
    }

    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn involuntary_switches_are_read_on_linux() {
        let before = involuntary_switches().expect("getrusage(RUSAGE_THREAD)");
        assert!(involuntary_switches().unwrap() >= before);
    }

    #[test]
    fn a_zero_allowance_never_spins() {
        let mut budget = SpinBudget::new(Duration::ZERO);
        assert!(!budget.enabled());
        budget.worked_after(Duration::ZERO);
        assert_eq!(budget.current(), Duration::ZERO);
    }
}
