//! The errors of the batching channel. Each send error hands the unsent
//! items back; none requires `T: Debug`.

use std::fmt;

/// The channel is closed (the receiver was closed or dropped): the items
/// come back.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, SendError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = async_patterns_batching::channel(BatchConfig::builder().build().unwrap());
/// drop(rx);
/// let err = tx.send("lost?").await.unwrap_err();
/// assert_eq!(err.to_string(), "channel closed");
/// assert_eq!(err.into_inner(), "lost?");
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The items that were not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::SendError;
    ///
    /// assert_eq!(SendError(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SendError").finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`try_send`](crate::BatchSender::try_send) did not send; the item
/// comes back either way.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, TrySendError};
///
/// let config = BatchConfig::builder().max_items(1).capacity(1).build().unwrap();
/// let (tx, rx) = async_patterns_batching::channel(config);
/// assert_eq!(tx.try_send(1), Ok(()));
/// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
/// drop(rx);
/// assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The channel holds `capacity` items.
    Full(T),
    /// The receiver was closed or dropped.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The item that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::TrySendError;
    ///
    /// assert_eq!(TrySendError::Full(4).into_inner(), 4);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(item) | TrySendError::Closed(item) => item,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.debug_tuple("Full").finish_non_exhaustive(),
            TrySendError::Closed(_) => f.debug_tuple("Closed").finish_non_exhaustive(),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "channel full",
            TrySendError::Closed(_) => "channel closed",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(err: SendError<T>) -> Self {
        TrySendError::Closed(err.0)
    }
}

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
