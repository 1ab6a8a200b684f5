//! The receive error of the batching channel; its send errors are the
//! workspace's shared ones from `async-patterns-core`, re-exported at the
//! crate root.

use std::fmt;

/// Why [`try_recv`](crate::BatchReceiver::try_recv) returned no batch.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, TryRecvError};
///
/// let (tx, mut rx) = async_patterns_batching::channel::<u8>(BatchConfig::builder().build().unwrap());
/// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
/// drop(tx);
/// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No batch is due yet: the current one is empty, or neither full nor
    /// old enough nor flushed.
    Empty,
    /// The channel is closed and every item was received.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "no batch is ready",
            TryRecvError::Closed => "channel closed",
        })
    }
}

impl std::error::Error for TryRecvError {}
