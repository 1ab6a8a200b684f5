//! A ready retry classifier for `tonic::Status` (feature `tonic`).
//!
//! # Examples
//!
//! ```
//! use async_patterns_core::RetryPolicy;
//! use async_patterns_reusable_receiver::{Retry, tonic};
//!
//! let driver = Retry::new(RetryPolicy::default()).classify(tonic::is_retryable);
//! assert!(tonic::is_retryable(&::tonic::Status::unavailable("down")));
//! # let _ = driver;
//! ```

use ::tonic::{Code, Status};

/// The status codes [`is_retryable`] always retries: the server or the
/// network may do better on the next attempt.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::tonic::RETRYABLE_CODES;
///
/// assert!(RETRYABLE_CODES.contains(&tonic::Code::Unavailable));
/// assert!(!RETRYABLE_CODES.contains(&tonic::Code::InvalidArgument));
/// ```
pub const RETRYABLE_CODES: [Code; 4] = [
    Code::Unavailable,
    Code::ResourceExhausted,
    Code::Aborted,
    Code::DeadlineExceeded,
];

/// Whether a failed call is worth another attempt: a code of
/// [`RETRYABLE_CODES`], or `UNKNOWN` / `INTERNAL` caused by an I/O error —
/// how tonic reports a connection that broke mid-call ("transport error",
/// with a broken pipe or a reset underneath). Every other status —
/// `INVALID_ARGUMENT`, `PERMISSION_DENIED`, an application's own `UNKNOWN`
/// — is final.
///
/// With at-least-once delivery an attempt may be retried after the server
/// already processed part of it (`DEADLINE_EXCEEDED`, a dropped connection):
/// the server must tolerate the duplicates that replay mode documents.
///
/// # Examples
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use async_patterns_reusable_receiver::{Retry, tonic::is_retryable};
/// use std::io;
/// use tonic::Status;
///
/// assert!(is_retryable(&Status::unavailable("overloaded")));
/// assert!(!is_retryable(&Status::invalid_argument("bad item")));
/// assert!(!is_retryable(&Status::unknown("application error")));
/// let broken = Status::from_error(Box::new(io::Error::from(io::ErrorKind::BrokenPipe)));
/// assert!(is_retryable(&broken));
///
/// let driver = Retry::new(RetryPolicy::default()).classify(is_retryable);
/// # let _ = driver;
/// ```
pub fn is_retryable(status: &Status) -> bool {
    let code = status.code();
    RETRYABLE_CODES.contains(&code)
        || (matches!(code, Code::Unknown | Code::Internal) && caused_by_io_error(status))
}

fn caused_by_io_error(status: &Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(error) = cause {
        if error.is::<std::io::Error>() {
            return true;
        }
        cause = error.source();
    }
    false
}
