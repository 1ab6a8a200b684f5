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

#[cfg(not(async_patterns_loom))]
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed_for: Option<Instant>,
}

#[cfg(not(async_patterns_loom))]
impl Deadline {
    pub(crate) fn new() -> Self {
        Deadline::default()
    }

    /// Waits for `at`, registering the task's waker with the timer.
    ///
    /// Re-arming a tokio timer takes the time driver's lock, and under load
    /// batches close by count long before their deadline; so a timer armed
    /// for an earlier instant is left to fire early, and re-armed for `at`
    /// only then. One timer operation per `max_delay`, not per batch.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, like any tokio
    /// timer.
    pub(crate) fn poll_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        use std::future::Future;

        let sleep = match &mut self.sleep {
            Some(sleep) => sleep,
            None => {
                self.armed_for = Some(at);
                self.sleep.insert(Box::pin(tokio::time::sleep_until(at)))
            }
        };
        let earlier_still_running =
            self.armed_for.is_some_and(|armed| armed < at) && !sleep.is_elapsed();
        if self.armed_for != Some(at) && !earlier_still_running {
            sleep.as_mut().reset(at);
            self.armed_for = Some(at);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) if self.armed_for == Some(at) => Poll::Ready(()),
            Poll::Ready(()) => {
                // Fired for an earlier batch: wait for this one.
                sleep.as_mut().reset(at);
                self.armed_for = Some(at);
                sleep.as_mut().poll(cx)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(async_patterns_loom)]
#[derive(Debug)]
pub(crate) struct Deadline;

#[cfg(async_patterns_loom)]
impl Deadline {
    pub(crate) fn new() -> Self {
        Deadline
    }

    pub(crate) fn poll_until(&mut self, _at: Instant, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}
