//! The timer that closes a batch at `max_delay`: one tokio `Sleep`, boxed
//! once per batcher and reset for each batch, so that timing allocates
//! nothing per batch. Under loom, which cannot drive tokio's clock, it never
//! fires; the loom models close batches by count, flush and close instead.

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// When the batch whose first item arrived at `oldest` must close, or `None`
/// if `max_delay` is too long to represent (the batch then never expires).
pub(crate) fn expiry(oldest: Instant, max_delay: Duration) -> Option<Instant> {
    oldest.checked_add(max_delay)
}

#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed_for: Option<Instant>,
}

#[cfg(not(loom))]
impl Deadline {
    pub(crate) fn new() -> Self {
        Deadline::default()
    }

    /// Waits for `at`, registering the task's waker with the timer.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, like any tokio
    /// timer.
    pub(crate) fn poll_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        use std::future::Future;

        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if self.armed_for != Some(at) {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        self.armed_for = Some(at);
        sleep.as_mut().poll(cx)
    }
}

#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Deadline;

#[cfg(loom)]
impl Deadline {
    pub(crate) fn new() -> Self {
        Deadline
    }

    pub(crate) fn poll_until(&mut self, _at: Instant, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}
