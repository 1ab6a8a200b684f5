//! The errors of sending: each hands the unsent value back.

use std::fmt;

use async_patterns_core::WouldDeadlock;

/// The channel is closed (its receiver closed it or was dropped), so the
/// value was not sent; here it is back.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{SendError, TransactionalChannel};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = TransactionalChannel::new::<u32>(4);
/// drop(rx);
/// let err = tx.send(7).await.unwrap_err();
/// assert_eq!(err, SendError(7));
/// assert_eq!(err.to_string(), "channel closed");
/// assert_eq!(err.into_inner(), 7);
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::SendError;
    ///
    /// assert_eq!(SendError("late").into_inner(), "late");
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError").finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// [`Sender::try_send`](crate::Sender::try_send) could not send the value at
/// once; here it is back, with the reason.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{TransactionalChannel, TrySendError};
///
/// let (tx, rx) = TransactionalChannel::new::<u32>(1);
/// tx.try_send(1).unwrap();
/// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
/// drop(rx);
/// let err = tx.try_send(3).unwrap_err();
/// assert_eq!(err.to_string(), "channel closed");
/// assert_eq!(err.into_inner(), 3);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// Every slot of the capacity is taken by an item not yet committed.
    Full(T),
    /// The receiver closed the channel or was dropped.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TrySendError;
    ///
    /// assert_eq!(TrySendError::Full(5).into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Closed(value) => value,
        }
    }

    /// Whether the value was refused because the channel is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::TrySendError;
    ///
    /// assert!(TrySendError::Full(5).is_full());
    /// assert!(!TrySendError::Closed(5).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
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

/// [`Sender::send_blocking`](crate::Sender::send_blocking) did not send the
/// value; here it is back, with the reason.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{SendBlockingError, TransactionalChannel};
///
/// let (tx, _rx) = TransactionalChannel::new::<u32>(1);
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// // Waiting on the thread that drives the runtime could never end.
/// let err = rt.block_on(async { tx.send_blocking(1) }).unwrap_err();
/// assert!(matches!(err, SendBlockingError::WouldDeadlock(1)));
/// assert_eq!(
///     err.to_string(),
///     "blocking send refused: this thread drives a current-thread tokio runtime"
/// );
/// assert_eq!(err.into_inner(), 1);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendBlockingError<T> {
    /// The receiver closed the channel or was dropped.
    Closed(T),
    /// The calling thread drives a current-thread runtime: blocking it would
    /// stop the tasks that could make room, so the send was refused at once.
    WouldDeadlock(T),
}

impl<T> SendBlockingError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_channel::SendBlockingError;
    ///
    /// assert_eq!(SendBlockingError::Closed('x').into_inner(), 'x');
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            SendBlockingError::Closed(value) | SendBlockingError::WouldDeadlock(value) => value,
        }
    }
}

impl<T> fmt::Debug for SendBlockingError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendBlockingError::Closed(_) => f.write_str("Closed(..)"),
            SendBlockingError::WouldDeadlock(_) => f.write_str("WouldDeadlock(..)"),
        }
    }
}

impl<T> fmt::Display for SendBlockingError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendBlockingError::Closed(_) => "channel closed",
            SendBlockingError::WouldDeadlock(_) => {
                "blocking send refused: this thread drives a current-thread tokio runtime"
            }
        })
    }
}

impl<T> std::error::Error for SendBlockingError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendBlockingError::WouldDeadlock(_) => Some(&WouldDeadlock),
            SendBlockingError::Closed(_) => None,
        }
    }
}
