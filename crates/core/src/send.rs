//! The errors of a failed send, shared by every channel of the workspace: each
//! hands back the value it could not deliver, so nothing is dropped silently.

use std::fmt;

const CLOSED: &str = "channel closed";

/// An asynchronous `send` failed because the receiver was closed or dropped;
/// the value is handed back.
///
/// # Examples
///
/// ```
/// use async_patterns_core::SendError;
///
/// let err = SendError("late");
/// assert_eq!(err.to_string(), "channel closed");
/// assert_eq!(format!("{err:?}"), "SendError(..)");
/// assert_eq!(err.into_inner(), "late");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::SendError;
    ///
    /// assert_eq!(SendError(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// A `try_send` could not send the value at once; the value is handed back,
/// with the reason.
///
/// # Examples
///
/// ```
/// use async_patterns_core::TrySendError;
///
/// let err = TrySendError::Full(3);
/// assert!(err.is_full());
/// assert_eq!(err.to_string(), "channel full");
/// assert_eq!(TrySendError::Closed(3).to_string(), "channel closed");
/// assert_eq!(err.into_inner(), 3);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The channel has no room now (for a channel with an overflow policy:
    /// the policy is to reject).
    Full(T),
    /// The receiver was closed or dropped.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::TrySendError;
    ///
    /// assert_eq!(TrySendError::Closed('c').into_inner(), 'c');
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Closed(value) => value,
        }
    }

    /// Whether the value was refused because the channel is full (so trying
    /// again later may succeed).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::TrySendError;
    ///
    /// assert!(TrySendError::Full(5).is_full());
    /// assert!(!TrySendError::Closed(5).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(err: SendError<T>) -> Self {
        TrySendError::Closed(err.0)
    }
}

/// A `send_blocking` did not send the value; the value is handed back, with
/// the reason.
///
/// # Examples
///
/// ```
/// use async_patterns_core::SendBlockingError;
///
/// let err = SendBlockingError::WouldDeadlock(1);
/// assert_eq!(
///     err.to_string(),
///     "waiting for room would deadlock: this thread drives a current-thread tokio runtime"
/// );
/// assert_eq!(format!("{err:?}"), "WouldDeadlock(..)");
/// assert_eq!(err.into_inner(), 1);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendBlockingError<T> {
    /// The receiver was closed or dropped.
    Closed(T),
    /// The channel is full and the calling thread drives a current-thread
    /// runtime: waiting for room would stop the receiver from ever making
    /// it, so the send was refused at once.
    WouldDeadlock(T),
}

impl<T> SendBlockingError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::SendBlockingError;
    ///
    /// assert_eq!(SendBlockingError::Closed('x').into_inner(), 'x');
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            SendBlockingError::Closed(value) | SendBlockingError::WouldDeadlock(value) => value,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CLOSED)
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "channel full",
            TrySendError::Closed(_) => CLOSED,
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> fmt::Debug for SendBlockingError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendBlockingError::Closed(_) => "Closed(..)",
            SendBlockingError::WouldDeadlock(_) => "WouldDeadlock(..)",
        })
    }
}

impl<T> fmt::Display for SendBlockingError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendBlockingError::Closed(_) => CLOSED,
            SendBlockingError::WouldDeadlock(_) => {
                "waiting for room would deadlock: this thread drives a current-thread tokio runtime"
            }
        })
    }
}

impl<T> std::error::Error for SendBlockingError<T> {}
