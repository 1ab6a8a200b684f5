//! The errors of a failed send or receive, shared by every channel of the
//! workspace: each failed send hands back the value it could not deliver, so
//! nothing is dropped silently.

use std::fmt;

const CLOSED: &str = "channel closed";
const WOULD_DEADLOCK: &str =
    "waiting for room would deadlock: this thread drives a current-thread tokio runtime";

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
/// # What `send_blocking` means, in every crate
///
/// Every channel of the workspace with a `send_blocking(value)` gives it the
/// same meaning, so that sync code (a callback, a `Drop`, a sync trait
/// method) may call it from anywhere:
///
/// | the calling thread | room in the channel | no room |
/// |---|---|---|
/// | a plain thread, a `spawn_blocking` thread | sent at once | waits for room |
/// | a multi-thread runtime's worker | sent at once | waits inside [`block_in_place`](https://docs.rs/tokio/latest/tokio/task/fn.block_in_place.html), so the worker's other tasks move elsewhere |
/// | a thread driving a current-thread runtime | sent at once | refused at once: [`WouldDeadlock(value)`](SendBlockingError::WouldDeadlock) |
///
/// It refuses only where waiting could deadlock — the receiver may be a task
/// of the very runtime this thread drives, which cannot run while the thread
/// waits — and never refuses a send that needs no wait. A closed channel
/// gives [`Closed(value)`](SendBlockingError::Closed) everywhere.
/// `send_timeout` follows the same table, with a deadline on the wait
/// ([`SendTimeoutError`]).
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
            SendBlockingError::WouldDeadlock(_) => WOULD_DEADLOCK,
        })
    }
}

impl<T> std::error::Error for SendBlockingError<T> {}

/// A `send_timeout` did not send the value; the value is handed back, with
/// the reason.
///
/// # Examples
///
/// ```
/// use async_patterns_core::SendTimeoutError;
///
/// let err = SendTimeoutError::Timeout(4);
/// assert_eq!(err.to_string(), "timed out waiting for room in the channel");
/// assert_eq!(format!("{err:?}"), "Timeout(..)");
/// assert!(err.is_timeout());
/// assert_eq!(err.into_inner(), 4);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendTimeoutError<T> {
    /// The channel stayed full until the timeout.
    Timeout(T),
    /// The receiver was closed or dropped.
    Closed(T),
    /// The channel is full and the calling thread drives a current-thread
    /// runtime: waiting would stop the receiver from ever making room, so
    /// the send was refused at once (see [`SendBlockingError`]).
    WouldDeadlock(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::SendTimeoutError;
    ///
    /// assert_eq!(SendTimeoutError::Closed('x').into_inner(), 'x');
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(value)
            | SendTimeoutError::Closed(value)
            | SendTimeoutError::WouldDeadlock(value) => value,
        }
    }

    /// Whether the send gave up because the timeout elapsed (so trying again
    /// later may succeed).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::SendTimeoutError;
    ///
    /// assert!(SendTimeoutError::Timeout(1).is_timeout());
    /// assert!(!SendTimeoutError::Closed(1).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(_))
    }
}

impl<T> From<SendBlockingError<T>> for SendTimeoutError<T> {
    fn from(err: SendBlockingError<T>) -> Self {
        match err {
            SendBlockingError::Closed(value) => SendTimeoutError::Closed(value),
            SendBlockingError::WouldDeadlock(value) => SendTimeoutError::WouldDeadlock(value),
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "Timeout(..)",
            SendTimeoutError::Closed(_) => "Closed(..)",
            SendTimeoutError::WouldDeadlock(_) => "WouldDeadlock(..)",
        })
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "timed out waiting for room in the channel",
            SendTimeoutError::Closed(_) => CLOSED,
            SendTimeoutError::WouldDeadlock(_) => WOULD_DEADLOCK,
        })
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

/// A `try_recv` found nothing to receive now. tokio's names: `Empty` may
/// change later, `Disconnected` will not.
///
/// # Examples
///
/// ```
/// use async_patterns_core::TryRecvError;
///
/// assert_eq!(TryRecvError::Empty.to_string(), "receiving on an empty channel");
/// assert_eq!(
///     TryRecvError::Disconnected.to_string(),
///     "receiving on a closed channel"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is ready now; the channel is still open, so something may
    /// come later.
    Empty,
    /// The channel is closed (every sender dropped, or the receiver closed
    /// it) and everything it held has been received: nothing will come.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "receiving on an empty channel",
            TryRecvError::Disconnected => "receiving on a closed channel",
        })
    }
}

impl std::error::Error for TryRecvError {}
