//! [`RetryPolicy`] and [`Backoff`]: exponential backoff with a cap, jitter, a
//! maximum number of attempts and a maximum elapsed time, measured on tokio's
//! clock so that tests under `tokio::time::pause()` are deterministic.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;

/// How a backoff delay is randomised, so that many clients failing at once
/// do not retry in lockstep.
///
/// Jitter only ever shortens a delay, so a jittered delay never exceeds the
/// policy's [`max_delay`](RetryPolicyBuilder::max_delay).
///
/// # Examples
///
/// ```
/// use async_patterns_core::{Jitter, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .initial_delay(Duration::from_millis(100))
///     .jitter(Jitter::Proportional(0.25))
///     .build()
///     .unwrap();
/// let first = policy.backoff().next_delay().unwrap();
/// assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// The exact exponential delay.
    None,
    /// Uniform between zero and the exponential delay ("full jitter").
    Full,
    /// Uniform between `(1 - f)` times and exactly the exponential delay, for
    /// `f` in `0.0..=1.0`. `Proportional(0.5)` is "equal jitter".
    Proportional(f64),
}

/// When and how often to retry: exponential backoff with a cap, jitter, a
/// maximum number of attempts and a maximum elapsed time.
///
/// A policy is a cheap, cloneable description; [`backoff`](Self::backoff)
/// starts one retry sequence.
///
/// The delay before retry `n` (1 for the first retry) is
/// `initial_delay * multiplier^(n-1)`, capped at `max_delay`, then jittered.
/// The sequence gives up when `max_attempts` attempts have been made, or when
/// waiting the next delay would start the next attempt after `max_elapsed`
/// (counted from [`backoff`](Self::backoff)).
///
/// # Examples
///
/// ```
/// use async_patterns_core::{Jitter, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .initial_delay(Duration::from_millis(10))
///     .multiplier(2.0)
///     .max_delay(Duration::from_millis(50))
///     .jitter(Jitter::None)
///     .max_attempts(5)
///     .build()
///     .unwrap();
/// let mut backoff = policy.backoff();
/// let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay()).collect();
/// assert_eq!(
///     delays,
///     [10, 20, 40, 50].map(Duration::from_millis), // 4 retries after the first attempt
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    seed: Option<u64>,
}

impl Default for RetryPolicy {
    /// 100 ms doubling up to 10 s, equal jitter, at most 10 attempts, no time
    /// limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().max_attempts(), Some(10));
    /// ```
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Proportional(0.5),
            max_attempts: Some(10),
            max_elapsed: None,
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// Starts a builder with the [`Default`] settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let err = RetryPolicy::builder().max_attempts(0).build().unwrap_err();
    /// assert_eq!(err.field(), "max_attempts");
    /// ```
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: RetryPolicy::default(),
        }
    }

    /// Starts a retry sequence; its elapsed time counts from now, on tokio's
    /// clock ([`tokio::time::Instant`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let backoff = RetryPolicy::default().backoff();
    /// assert_eq!(backoff.attempts(), 1);
    /// ```
    pub fn backoff(&self) -> Backoff {
        let seed = self.seed.unwrap_or_else(random_seed);
        Backoff {
            policy: self.clone(),
            attempts: 1,
            started: Instant::now(),
            rng: SplitMix64(seed),
        }
    }

    /// The delay before retry `retry` (1 for the first retry) before jitter:
    /// `initial_delay * multiplier^(retry-1)`, capped at `max_delay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::builder()
    ///     .initial_delay(Duration::from_secs(1))
    ///     .max_delay(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.base_delay(1), Duration::from_secs(1));
    /// assert_eq!(policy.base_delay(3), Duration::from_secs(4));
    /// assert_eq!(policy.base_delay(30), Duration::from_secs(5));
    /// ```
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        // `try_from_secs_f64` fails on overflow and infinity; both mean "past the cap".
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay before the first retry, before jitter.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// assert_eq!(RetryPolicy::default().initial_delay(), Duration::from_millis(100));
    /// ```
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// The cap on every delay, jittered or not.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// assert_eq!(RetryPolicy::default().max_delay(), Duration::from_secs(10));
    /// ```
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The factor between consecutive delays.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().multiplier(), 2.0);
    /// ```
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The jitter applied to each delay.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::{Jitter, RetryPolicy};
    ///
    /// assert_eq!(RetryPolicy::default().jitter(), Jitter::Proportional(0.5));
    /// ```
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The most attempts (the first one included), or `None` for no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let policy = RetryPolicy::builder().unlimited_attempts().build().unwrap();
    /// assert_eq!(policy.max_attempts(), None);
    /// ```
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The time budget of a retry sequence, or `None` for no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().max_elapsed(), None);
    /// ```
    pub fn max_elapsed(&self) -> Option<std::time::Duration> {
        self.max_elapsed
    }
}

/// Builds a validated [`RetryPolicy`]; see [`RetryPolicy::builder`].
///
/// # Examples
///
/// ```
/// use async_patterns_core::{Jitter, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .initial_delay(Duration::from_millis(50))
///     .max_delay(Duration::from_secs(2))
///     .jitter(Jitter::Full)
///     .max_attempts(8)
///     .max_elapsed(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(policy.max_attempts(), Some(8));
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicyBuilder {
    /// A builder with the [`Default`] settings of [`RetryPolicy`], the same
    /// as [`RetryPolicy::builder`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::{RetryPolicy, RetryPolicyBuilder};
    ///
    /// let policy = RetryPolicyBuilder::new().build()?;
    /// assert_eq!(policy.max_attempts(), RetryPolicy::default().max_attempts());
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn new() -> Self {
        RetryPolicy::builder()
    }

    /// The delay before the first retry; must be greater than zero (a zero
    /// delay would retry in a busy loop).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let err = RetryPolicy::builder().initial_delay(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `initial_delay`: got 0ns, expected at least 1ns");
    /// ```
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.policy.initial_delay = delay;
        self
    }

    /// The cap on every delay; must be at least `initial_delay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let err = RetryPolicy::builder()
    ///     .initial_delay(Duration::from_secs(2))
    ///     .max_delay(Duration::from_secs(1))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "max_delay");
    /// ```
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = delay;
        self
    }

    /// The factor between consecutive delays; a finite number, at least 1.0
    /// (1.0 gives a constant delay).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// assert!(RetryPolicy::builder().multiplier(1.5).build().is_ok());
    /// assert!(RetryPolicy::builder().multiplier(0.5).build().is_err());
    /// ```
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.policy.multiplier = multiplier;
        self
    }

    /// How each delay is randomised; `Proportional(f)` needs `f` in
    /// `0.0..=1.0`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::{Jitter, RetryPolicy};
    ///
    /// let err = RetryPolicy::builder().jitter(Jitter::Proportional(2.0)).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `jitter`: got 2.0, expected between 0.0 and 1.0");
    /// ```
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// The most attempts, the first one included; at least 1 (1 means never
    /// retry).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let mut backoff = RetryPolicy::builder().max_attempts(1).build().unwrap().backoff();
    /// assert_eq!(backoff.next_delay(), None);
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = Some(attempts);
        self
    }

    /// Retries without an attempt limit (bound the sequence with
    /// [`max_elapsed`](Self::max_elapsed) or by dropping it).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let policy = RetryPolicy::builder().unlimited_attempts().build().unwrap();
    /// assert_eq!(policy.max_attempts(), None);
    /// ```
    pub fn unlimited_attempts(mut self) -> Self {
        self.policy.max_attempts = None;
        self
    }

    /// The time budget of a retry sequence; greater than zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::builder().max_elapsed(Duration::from_secs(5)).build().unwrap();
    /// assert_eq!(policy.max_elapsed(), Some(Duration::from_secs(5)));
    /// ```
    pub fn max_elapsed(mut self, budget: Duration) -> Self {
        self.policy.max_elapsed = Some(budget);
        self
    }

    /// Seeds the jitter so that the sequence of delays is reproducible (for
    /// tests and simulations). Without a seed each [`Backoff`] draws a fresh
    /// random one.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let policy = RetryPolicy::builder().seed(7).build().unwrap();
    /// let a: Vec<_> = { let mut b = policy.backoff(); std::iter::from_fn(|| b.next_delay()).collect() };
    /// let b: Vec<_> = { let mut b = policy.backoff(); std::iter::from_fn(|| b.next_delay()).collect() };
    /// assert_eq!(a, b);
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.seed = Some(seed);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// assert!(RetryPolicy::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        let p = self.policy;
        ConfigError::at_least("initial_delay", p.initial_delay, Duration::from_nanos(1))?;
        ConfigError::at_least("max_delay", p.max_delay, p.initial_delay)?;
        if !(p.multiplier.is_finite() && p.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "multiplier",
                format!("{:?}", p.multiplier),
                "a finite number, at least 1.0",
            ));
        }
        if let Jitter::Proportional(f) = p.jitter {
            ConfigError::in_range("jitter", f, 0.0, 1.0)?;
        }
        if let Some(attempts) = p.max_attempts {
            ConfigError::at_least("max_attempts", attempts, 1)?;
        }
        if let Some(budget) = p.max_elapsed {
            ConfigError::at_least("max_elapsed", budget, Duration::from_nanos(1))?;
        }
        Ok(p)
    }
}

/// One retry sequence of a [`RetryPolicy`]: counts attempts, tracks elapsed
/// time and produces the delay before each retry.
///
/// A `Backoff` starts with the first attempt under way
/// ([`attempts`](Self::attempts) is 1). After an attempt fails, call
/// [`next_delay`](Self::next_delay) (or [`wait`](Self::wait), which also
/// sleeps): `Some(delay)` means "retry after `delay`" and counts the next
/// attempt; `None` means the policy gives up.
///
/// # Examples
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let policy = RetryPolicy::builder()
///     .initial_delay(Duration::from_millis(10))
///     .max_attempts(4)
///     .build()
///     .unwrap();
/// let mut backoff = policy.backoff();
/// let mut calls = 0;
/// let result = loop {
///     calls += 1;
///     let outcome: Result<u32, &str> = if calls < 3 { Err("unavailable") } else { Ok(calls) };
///     match outcome {
///         Ok(v) => break Ok(v),
///         Err(e) => {
///             if backoff.wait().await.is_none() {
///                 break Err(e);
///             }
///         }
///     }
/// };
/// assert_eq!(result, Ok(3));
/// assert_eq!(backoff.attempts(), 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    attempts: u32,
    started: Instant,
    rng: SplitMix64,
}

impl Backoff {
    /// Called after an attempt failed: the delay to wait before the next
    /// attempt, or `None` if the policy gives up (attempt limit reached, or
    /// the delay would start the next attempt after `max_elapsed`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::{Jitter, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::builder()
    ///     .initial_delay(Duration::from_millis(1))
    ///     .jitter(Jitter::None)
    ///     .max_attempts(2)
    ///     .build()
    ///     .unwrap();
    /// let mut backoff = policy.backoff();
    /// assert_eq!(backoff.next_delay(), Some(Duration::from_millis(1)));
    /// assert_eq!(backoff.next_delay(), None);
    /// ```
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        let delay = self.jittered(self.policy.base_delay(self.attempts));
        if let Some(budget) = self.policy.max_elapsed
            && self.elapsed().saturating_add(delay) > budget
        {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }

    /// Like [`next_delay`](Self::next_delay), and sleeps for the delay on
    /// tokio's clock before returning it.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in one respect: the attempt is counted when the wait
    /// starts, so if the future is dropped during the sleep the next call
    /// waits for the attempt after it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut backoff = RetryPolicy::builder().max_attempts(2).build().unwrap().backoff();
    /// let start = tokio::time::Instant::now();
    /// let slept = backoff.wait().await.unwrap();
    /// // tokio's timer rounds a deadline up to the next millisecond.
    /// assert!(start.elapsed() >= slept);
    /// assert!(start.elapsed() <= slept + Duration::from_millis(1));
    /// assert_eq!(backoff.wait().await, None);
    /// # }
    /// ```
    pub async fn wait(&mut self) -> Option<Duration> {
        let delay = self.next_delay()?;
        tokio::time::sleep(delay).await;
        Some(delay)
    }

    /// Attempts counted so far: 1 when the sequence starts, one more for each
    /// delay handed out.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let mut backoff = RetryPolicy::default().backoff();
    /// backoff.next_delay();
    /// assert_eq!(backoff.attempts(), 2);
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the sequence started, on tokio's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let backoff = RetryPolicy::default().backoff();
    /// assert!(backoff.elapsed() < std::time::Duration::from_secs(60));
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Starts over: one attempt, elapsed time from now. Use it after a
    /// success when the same `Backoff` guards a long-lived connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let mut backoff = RetryPolicy::default().backoff();
    /// backoff.next_delay();
    /// backoff.reset();
    /// assert_eq!(backoff.attempts(), 1);
    /// ```
    pub fn reset(&mut self) {
        self.attempts = 1;
        self.started = Instant::now();
    }

    /// The policy this sequence follows.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    ///
    /// let policy = RetryPolicy::default();
    /// assert_eq!(policy.backoff().policy(), &policy);
    /// ```
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn jittered(&mut self, delay: Duration) -> Duration {
        let low = match self.policy.jitter {
            Jitter::None => return delay,
            Jitter::Full => Duration::ZERO,
            Jitter::Proportional(f) => delay.mul_f64(1.0 - f),
        };
        let span = delay - low;
        // `mul_f64` of a fraction in [0, 1) cannot exceed `span`.
        low + span.mul_f64(self.rng.next_fraction())
    }
}

/// A small, fast, seedable generator for jitter (SplitMix64); statistical
/// quality is ample for spreading retries and needs no dependency.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn next_fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn random_seed() -> u64 {
    // `RandomState` is seeded from the OS once per process and varied per
    // instance, which is all the unpredictability jitter needs.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_stays_below_one() {
        let mut rng = SplitMix64(u64::MAX);
        for _ in 0..10_000 {
            let f = rng.next_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn base_delay_saturates_at_cap_for_huge_retry_numbers() {
        let policy = RetryPolicy::builder()
            .initial_delay(Duration::from_secs(1))
            .multiplier(10.0)
            .max_delay(Duration::from_secs(60))
            .build()
            .unwrap();
        assert_eq!(policy.base_delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(policy.base_delay(0), Duration::from_secs(1));
    }

    #[test]
    fn nan_multiplier_is_rejected() {
        let err = RetryPolicy::builder()
            .multiplier(f64::NAN)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "multiplier");
    }
}
