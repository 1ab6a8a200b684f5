//! The errors of acknowledging through a [`Lease`](crate::Lease).

use std::fmt;

/// Why [`Lease::ack`](crate::Lease::ack) or
/// [`Lease::ack_all`](crate::Lease::ack_all) refused an acknowledgement.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::{AckError, ReusableReceiver};
///
/// let (_tx, rx) = tokio::sync::mpsc::channel::<u32>(4);
/// let mut reusable = ReusableReceiver::new(rx);
/// let lease = reusable.stream().lease();
/// assert_eq!(
///     lease.ack(3),
///     Err(AckError::NotYielded { requested: 3, yielded: 0 })
/// );
/// let _next = reusable.stream(); // revokes the first lease
/// assert_eq!(lease.ack_all(), Err(AckError::Revoked { generation: lease.generation() }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckError {
    /// The lease was revoked — a newer stream took over, or the attempt was
    /// ended — so its unconfirmed items already belong to the next attempt.
    Revoked {
        /// The generation of the revoked lease.
        generation: u64,
    },
    /// More items were acknowledged than the lease's stream yielded.
    NotYielded {
        /// The count that was acknowledged.
        requested: u64,
        /// How many items the stream had yielded.
        yielded: u64,
    },
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::Revoked { generation } => write!(f, "lease {generation} was revoked"),
            AckError::NotYielded { requested, yielded } => write!(
                f,
                "cannot acknowledge {requested} items: the stream yielded {yielded}"
            ),
        }
    }
}

impl std::error::Error for AckError {}
