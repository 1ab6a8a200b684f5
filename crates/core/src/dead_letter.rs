//! Why a transactional consumer gave up on an item: the reason a dead letter
//! carries, the same in the in-process channel and over a durable broker.

use std::fmt;

/// Why an item was dead-lettered instead of delivered again.
///
/// # Examples
///
/// ```
/// use async_patterns_core::DeadLetterReason;
///
/// let reason = DeadLetterReason::Failed("malformed header".into());
/// assert_eq!(reason.to_string(), "failed: malformed header");
/// assert_eq!(DeadLetterReason::MaxAttempts.to_string(), "delivered the maximum number of times");
/// assert_eq!(reason.as_label(), "failed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The item was delivered `max_attempts` times without being committed;
    /// the last attempt ended by a rollback (or a drop).
    MaxAttempts,
    /// The consumer gave up on it explicitly, with this reason
    /// (`fail(reason)`).
    Failed(String),
    /// The last attempt's lease ran out before the consumer ended it.
    LeaseExpired,
    /// The last attempt ended by a panic in the consumer while it held the
    /// delivery.
    Panicked,
}

impl DeadLetterReason {
    /// A short, stable label for metrics and headers: `max_attempts`,
    /// `failed`, `lease_expired` or `panicked`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::DeadLetterReason;
    ///
    /// assert_eq!(DeadLetterReason::LeaseExpired.as_label(), "lease_expired");
    /// ```
    pub fn as_label(&self) -> &'static str {
        match self {
            DeadLetterReason::MaxAttempts => "max_attempts",
            DeadLetterReason::Failed(_) => "failed",
            DeadLetterReason::LeaseExpired => "lease_expired",
            DeadLetterReason::Panicked => "panicked",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::MaxAttempts => f.write_str("delivered the maximum number of times"),
            DeadLetterReason::Failed(reason) => write!(f, "failed: {reason}"),
            DeadLetterReason::LeaseExpired => f.write_str("its lease expired on the last attempt"),
            DeadLetterReason::Panicked => f.write_str("the consumer panicked on the last attempt"),
        }
    }
}
