//! The detector's clock: nanoseconds as a `u64`, cheap enough to read twice
//! per poll.
//!
//! `Instant::now()` costs 20–40 ns on common virtual machines, which alone
//! would use most of the per-poll budget. On Linux the detector therefore
//! reads `CLOCK_MONOTONIC_COARSE` (a few nanoseconds, updated every kernel
//! tick) whenever its resolution is fine enough for the threshold — at most a
//! tenth of it — and `CLOCK_MONOTONIC` (what `Instant` reads) otherwise. Both
//! count from the same origin, so readings of either compare with the
//! [`monotonic_ns`] timestamps of CPU samples; elsewhere the detector counts
//! from an `Instant` of its own.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A monotonic clock returning nanoseconds, never 0 (0 means "no time" in
/// the detector's atomics). All detectors share one epoch, so a clock is a
/// single flag, cheap to keep anywhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    coarse: bool,
}

/// An instant and the monotonic clock's reading at it, to map readings to
/// instants.
struct Epoch {
    instant: Instant,
    monotonic_ns: u64,
}

fn epoch() -> &'static Epoch {
    static EPOCH: OnceLock<Epoch> = OnceLock::new();
    EPOCH.get_or_init(|| {
        let instant = Instant::now();
        Epoch {
            instant,
            // Elsewhere readings count from `instant`, plus one.
            monotonic_ns: coarse::precise_ns().unwrap_or(1),
        }
    })
}

impl Clock {
    /// A clock whose resolution is at most a tenth of `threshold`.
    pub(crate) fn for_threshold(threshold: Duration) -> Clock {
        let coarse = coarse::resolution().is_some_and(|res| res.saturating_mul(10) <= threshold);
        epoch();
        Clock { coarse }
    }

    /// The clock a detector chose, from its flag.
    pub(crate) fn from_coarse(coarse: bool) -> Clock {
        Clock { coarse }
    }

    /// Whether the coarse clock is in use.
    pub(crate) fn is_coarse(&self) -> bool {
        self.coarse
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        if self.coarse {
            coarse::now_ns()
        } else {
            monotonic_ns()
        }
    }

    /// How far a reading may lag the time it was taken at: the coarse
    /// clock's tick, or 0.
    pub(crate) fn lag_ns(&self) -> u64 {
        if self.coarse {
            coarse::resolution().map_or(0, |r| r.as_nanos() as u64)
        } else {
            0
        }
    }

    /// The instant of a reading, for reports.
    pub(crate) fn instant_of(&self, ns: u64) -> Instant {
        let epoch = epoch();
        let offset = Duration::from_nanos(ns.saturating_sub(epoch.monotonic_ns));
        epoch.instant.checked_add(offset).unwrap_or(epoch.instant)
    }
}

/// The precise monotonic clock, never 0: `CLOCK_MONOTONIC` on Linux (the
/// coarse clock's origin), the time since the detectors' epoch elsewhere.
#[inline]
pub(crate) fn monotonic_ns() -> u64 {
    coarse::precise_ns().unwrap_or_else(|| {
        // `+ 1` keeps readings non-zero; the offset cancels in durations.
        epoch().instant.elapsed().as_nanos() as u64 + 1
    })
}

// Miri cannot call `clock_getres`: under it the detector uses `Instant`.
#[cfg(all(target_os = "linux", not(miri)))]
mod coarse {
    use std::time::Duration;

    pub(super) fn resolution() -> Option<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    #[inline]
    pub(super) fn now_ns() -> u64 {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }

    #[inline]
    pub(super) fn precise_ns() -> Option<u64> {
        Some(read(libc::CLOCK_MONOTONIC))
    }

    #[inline]
    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; both clocks exist on
        // every Linux since 2.6.32, and on failure `ts` simply stays zeroed.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
            .max(1)
    }
}

#[cfg(any(not(target_os = "linux"), miri))]
mod coarse {
    use std::time::Duration;

    pub(super) fn resolution() -> Option<Duration> {
        None
    }

    pub(super) fn now_ns() -> u64 {
        unreachable!("the coarse clock is only selected on Linux")
    }

    pub(super) fn precise_ns() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_monotonic_and_non_zero_on_both_clocks() {
        for threshold in [Duration::from_micros(1), Duration::from_secs(10)] {
            let clock = Clock::for_threshold(threshold);
            let a = clock.now_ns();
            std::thread::sleep(Duration::from_millis(30));
            let b = clock.now_ns();
            assert!(a >= 1 && b > a, "{a} {b} (coarse: {})", clock.is_coarse());
            // Both clocks advance at the real rate, within the coarse tick.
            let elapsed = Duration::from_nanos(b - a);
            assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
        }
    }

    #[test]
    fn a_long_threshold_uses_the_coarse_clock_on_linux() {
        let clock = Clock::for_threshold(Duration::from_secs(1));
        assert_eq!(clock.is_coarse(), cfg!(all(target_os = "linux", not(miri))));
        assert!(!Clock::for_threshold(Duration::from_nanos(10)).is_coarse());
    }

    #[test]
    fn readings_map_back_to_instants() {
        let clock = Clock::for_threshold(Duration::from_secs(1));
        let before = Instant::now();
        let ns = clock.now_ns();
        let at = clock.instant_of(ns);
        // Within the coarse clock's tick of the real time.
        let diff = if at > before {
            at - before
        } else {
            before - at
        };
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }
}
