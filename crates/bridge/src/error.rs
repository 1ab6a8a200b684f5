//! The errors of the bridge's own tools: a failed call hands back the request
//! it could not deliver, a refused `block_on_local` the future. The channel's
//! errors are core's, shared by every channel of the workspace.

use std::fmt;

/// [`SyncClient::call`](crate::SyncClient::call) or
/// [`call_timeout`](crate::SyncClient::call_timeout) got no response. The
/// request is handed back whenever the service never took it.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::{service, CallError};
///
/// let (client, server) = service::<u32, u32>(4);
/// drop(server);
/// let err = client.call(7).unwrap_err();
/// assert_eq!(err, CallError::Closed(Some(7)));
/// assert_eq!(err.to_string(), "the service is closed");
/// assert_eq!(err.into_inner(), Some(7));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError<Req> {
    /// Refused at once: the calling thread drives a current-thread runtime
    /// and the service runs there too, is not served yet, or runs on a
    /// runtime that is itself waiting in such a call — waiting could stop
    /// the service. Nothing was sent. (Async code can await
    /// [`served`](crate::SyncClient::served) for a service that another
    /// runtime is about to serve.)
    WouldDeadlock(Req),
    /// The service ended (closed, dropped, or its task panicked or was
    /// cancelled) before answering. `Some(request)` if it never took the
    /// request, `None` if it dropped it after taking it.
    Closed(Option<Req>),
    /// The deadline of [`call_timeout`](crate::SyncClient::call_timeout)
    /// passed. `Some(request)` if the service had not taken the request yet
    /// (it is withdrawn and will not be served), `None` if it was being
    /// served (its response will be discarded).
    Timeout(Option<Req>),
}

/// [`block_on_local`](crate::block_on_local) was called on a thread that
/// drives a current-thread runtime, where a future that is not `Send` cannot
/// run to completion without stalling that runtime; the future is handed
/// back, not polled.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::block_on_local;
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let err = rt.block_on(async { block_on_local(async { 1 }) }).unwrap_err();
/// assert!(err.to_string().starts_with("cannot block on a future here"));
/// let future = err.into_inner();
/// assert_eq!(block_on_local(future).ok(), Some(1)); // outside any runtime
/// ```
pub struct BlockOnError<F>(pub F);

impl<Req> CallError<Req> {
    /// The request, if the service never took it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::CallError;
    ///
    /// assert_eq!(CallError::WouldDeadlock(1).into_inner(), Some(1));
    /// assert_eq!(CallError::<u8>::Closed(None).into_inner(), None);
    /// ```
    pub fn into_inner(self) -> Option<Req> {
        match self {
            CallError::WouldDeadlock(req) => Some(req),
            CallError::Closed(req) | CallError::Timeout(req) => req,
        }
    }
}

impl<F> BlockOnError<F> {
    /// The future, not polled.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::BlockOnError;
    ///
    /// let future = BlockOnError(async { 1 }).into_inner();
    /// assert_eq!(async_patterns_bridge::block_on(future), 1);
    /// ```
    pub fn into_inner(self) -> F {
        self.0
    }
}

impl<Req> fmt::Display for CallError<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::WouldDeadlock(_) => {
                "calling would deadlock: this thread drives a current-thread tokio runtime"
            }
            CallError::Closed(_) => "the service is closed",
            CallError::Timeout(_) => "timed out waiting for the service",
        })
    }
}

impl<Req> fmt::Debug for CallError<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let taken = |req: &Option<Req>| {
            if req.is_some() {
                "(Some(..))"
            } else {
                "(None)"
            }
        };
        match self {
            CallError::WouldDeadlock(_) => f.write_str("WouldDeadlock(..)"),
            CallError::Closed(req) => write!(f, "Closed{}", taken(req)),
            CallError::Timeout(req) => write!(f, "Timeout{}", taken(req)),
        }
    }
}

impl<F> fmt::Display for BlockOnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "cannot block on a future here: this thread drives a current-thread tokio runtime \
             and the future is not `Send`, so it cannot move to a helper thread",
        )
    }
}

impl<F> fmt::Debug for BlockOnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlockOnError(..)")
    }
}

impl<Req> std::error::Error for CallError<Req> {}
impl<F> std::error::Error for BlockOnError<F> {}
