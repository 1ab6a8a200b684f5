//! The retry driver: [`retry`] and its configurable form [`Retry`] run an
//! attempt with a fresh stream, acknowledge on success, wait out the
//! backoff of a [`RetryPolicy`] after a retryable failure, and when they give
//! up hand back the last error with every unacknowledged item.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use async_patterns_core::RetryPolicy;
use tokio::time::Instant;

use crate::metrics::LeaseMetrics;
use crate::receiver::{Lease, ReusableReceiver, ReusableStream};

/// Runs `op` with a fresh stream of `reusable` until it succeeds, retrying
/// every error as `policy` allows; see [`Retry`] to choose which errors are
/// retryable and to observe each attempt.
///
/// On success the attempt's items are acknowledged. After every attempt its
/// lease is revoked, so a stream the consumer still holds (a request body
/// hyper drops late) can take nothing more. A successful attempt ends the
/// run; with [`WhenFull::EndStream`](crate::WhenFull::EndStream) an attempt
/// carries at most one buffer's worth, so run until
/// [`is_drained`](ReusableReceiver::is_drained).
///
/// # Errors
///
/// When the policy gives up: a [`RetryError`] with the last error and, in
/// replay mode, every unacknowledged item.
///
/// # Cancel safety
///
/// As [`Retry::run`]'s: dropping the future mid-attempt revokes the
/// attempt's lease, as a failure would; nothing is lost.
///
/// # Examples
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, retry};
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, rx) = tokio::sync::mpsc::channel(16);
/// for i in 0..6 {
///     tx.send(i).await?;
/// }
/// drop(tx);
/// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
/// let policy = RetryPolicy::builder().initial_delay(Duration::from_millis(10)).build()?;
///
/// // A consumer that fails after 4 items on its first two calls.
/// let mut calls = 0;
/// let received = retry(&mut reusable, policy, |stream| {
///     calls += 1;
///     let fail = calls <= 2;
///     async move {
///         let items: Vec<i32> = stream.take(if fail { 4 } else { usize::MAX }).collect().await;
///         if fail { Err("unavailable") } else { Ok(items) }
///     }
/// })
/// .await
/// .map_err(|e| e.into_error())?;
/// assert_eq!(received, [0, 1, 2, 3, 4, 5]); // the failed attempts' items, replayed
/// # Ok(())
/// # }
/// ```
///
/// Giving up hands the unacknowledged items back:
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, rx) = tokio::sync::mpsc::channel(4);
/// tx.send("a").await?;
/// tx.send("b").await?;
/// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
/// let policy = RetryPolicy::builder().max_attempts(3).build()?;
///
/// let err = retry(&mut reusable, policy, |mut stream| async move {
///     stream.next().await;
///     Err::<(), _>("down")
/// })
/// .await
/// .unwrap_err();
/// assert_eq!((err.attempts(), err.reason()), (3, GiveUp::PolicyExhausted));
/// assert_eq!(err.into_parts(), ("down", vec!["a"])); // "b" is still in the channel
/// # Ok(())
/// # }
/// ```
pub async fn retry<T, R, E, F, Fut>(
    reusable: &mut ReusableReceiver<T>,
    policy: RetryPolicy,
    op: F,
) -> Result<R, RetryError<E, T>>
where
    F: FnMut(ReusableStream<T>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    Retry::new(policy).run(reusable, op).await
}

/// The retry driver with its options: which errors are retryable
/// ([`classify`](Self::classify)), and a callback for each attempt's outcome
/// ([`on_attempt`](Self::on_attempt)). [`retry`] is `Retry::new(policy).run(..)`.
///
/// Attempts are numbered from 1, as the policy's [`Backoff`] counts them;
/// the policy's attempt and time limits bound one `run`.
///
/// [`Backoff`]: async_patterns_core::Backoff
///
/// # Examples
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use async_patterns_reusable_receiver::{GiveUp, NextStep, Retry, ReusableReceiver};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #[derive(Debug, PartialEq)]
/// enum CallError { Unavailable, InvalidArgument }
///
/// let (tx, rx) = tokio::sync::mpsc::channel(4);
/// tx.send(1).await?;
/// drop(tx);
/// let mut reusable = ReusableReceiver::new(rx);
/// let mut log = Vec::new();
/// let mut errors = vec![CallError::InvalidArgument, CallError::Unavailable];
///
/// let err = Retry::new(RetryPolicy::default())
///     .classify(|e: &CallError| *e == CallError::Unavailable)
///     .on_attempt(|a| log.push((a.number(), a.metrics().delivered, a.next())))
///     .run(&mut reusable, |mut stream| {
///         let error = errors.pop().unwrap();
///         async move {
///             stream.next().await;
///             Err::<(), _>(error)
///         }
///     })
///     .await
///     .unwrap_err();
/// assert_eq!(err.reason(), GiveUp::NotRetryable);
/// assert_eq!(err.error(), &CallError::InvalidArgument);
/// assert!(matches!(log[0], (1, 1, NextStep::RetryAfter(_))));
/// assert_eq!(log[1], (2, 0, NextStep::GiveUp(GiveUp::NotRetryable)));
/// // Plain mode: the item the first attempt took and never confirmed is lost.
/// assert_eq!(reusable.metrics().lost, 1);
/// # Ok(())
/// # }
/// ```
pub struct Retry<E, C = fn(&E) -> bool, A = fn(&Attempt<'_, E>)> {
    policy: RetryPolicy,
    classify: C,
    on_attempt: A,
    _error: PhantomData<fn(&E)>,
}

fn every_error_is_retryable<E>(_: &E) -> bool {
    true
}

fn ignore_attempt<E>(_: &Attempt<'_, E>) {}

impl<E> Retry<E> {
    /// A driver following `policy`, retrying every error, reporting nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use async_patterns_reusable_receiver::Retry;
    ///
    /// let retry = Retry::<std::io::Error>::new(RetryPolicy::default());
    /// assert_eq!(retry.policy().max_attempts(), Some(10));
    /// ```
    pub fn new(policy: RetryPolicy) -> Self {
        Retry {
            policy,
            classify: every_error_is_retryable::<E>,
            on_attempt: ignore_attempt::<E>,
            _error: PhantomData,
        }
    }
}

impl<E, C, A> Retry<E, C, A> {
    /// Decides which errors are worth another attempt: `classify(&error)`
    /// returns `true` for a retryable error. The run gives up at the first
    /// error it rejects. With the `tonic` feature,
    /// [`tonic::is_retryable`](crate::tonic::is_retryable) is ready for
    /// `tonic::Status`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use async_patterns_reusable_receiver::Retry;
    /// use std::io;
    ///
    /// let retry = Retry::new(RetryPolicy::default())
    ///     .classify(|e: &io::Error| e.kind() == io::ErrorKind::ConnectionReset);
    /// # let _ = retry;
    /// ```
    pub fn classify<C2>(self, classify: C2) -> Retry<E, C2, A>
    where
        C2: FnMut(&E) -> bool,
    {
        Retry {
            policy: self.policy,
            classify,
            on_attempt: self.on_attempt,
            _error: PhantomData,
        }
    }

    /// Calls `on_attempt` after every attempt, with its outcome, its counts
    /// and what happens next — for logs, metrics, or a tracing event.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use async_patterns_reusable_receiver::Retry;
    ///
    /// let retry = Retry::new(RetryPolicy::default()).on_attempt(|attempt| {
    ///     if let Some(error) = attempt.error() {
    ///         eprintln!("attempt {} failed: {error}; next: {:?}", attempt.number(), attempt.next());
    ///     }
    /// });
    /// # let _: Retry<std::io::Error, _, _> = retry;
    /// ```
    pub fn on_attempt<A2>(self, on_attempt: A2) -> Retry<E, C, A2>
    where
        A2: FnMut(&Attempt<'_, E>),
    {
        Retry {
            policy: self.policy,
            classify: self.classify,
            on_attempt,
            _error: PhantomData,
        }
    }

    /// The policy this driver follows.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use async_patterns_reusable_receiver::Retry;
    ///
    /// let policy = RetryPolicy::builder().max_attempts(3).build()?;
    /// assert_eq!(Retry::<()>::new(policy.clone()).policy(), &policy);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Runs `op` with a fresh stream of `reusable` until it succeeds or the
    /// driver gives up; see [`retry`].
    ///
    /// # Cancel safety
    ///
    /// If the returned future is dropped during an attempt — or `op`'s
    /// future panics — that attempt's lease is revoked as if it had failed:
    /// its unacknowledged items are replayed to the next stream (replay
    /// mode) or counted as [`lost`](crate::ReceiverMetrics::lost) (plain
    /// mode), and items not yet yielded stay for the next stream. Dropped
    /// during a backoff, nothing is under way. Nothing is acknowledged
    /// unless an attempt returned `Ok`.
    ///
    /// # Errors
    ///
    /// A [`RetryError`] with the last error, the reason for giving up, and
    /// every unacknowledged item (replay mode).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use async_patterns_reusable_receiver::{Retry, ReusableReceiver};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send(5).await.unwrap();
    /// drop(tx);
    /// let mut reusable = ReusableReceiver::new(rx);
    /// let sum = Retry::new(RetryPolicy::default())
    ///     .run(&mut reusable, |stream| async move {
    ///         Ok::<i32, ()>(stream.fold(0, |a, b| async move { a + b }).await)
    ///     })
    ///     .await;
    /// assert_eq!(sum.ok(), Some(5));
    /// # }
    /// ```
    pub async fn run<T, R, F, Fut>(
        mut self,
        reusable: &mut ReusableReceiver<T>,
        mut op: F,
    ) -> Result<R, RetryError<E, T>>
    where
        C: FnMut(&E) -> bool,
        A: FnMut(&Attempt<'_, E>),
        F: FnMut(ReusableStream<T>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let mut backoff = self.policy.backoff();
        loop {
            let number = backoff.attempts();
            let stream = reusable.stream();
            let attempt = AttemptLease(Some(stream.lease()));
            let started = Instant::now();
            let result = op(stream).await;
            let elapsed = started.elapsed();
            match result {
                Ok(value) => {
                    let metrics = attempt.end(true);
                    (self.on_attempt)(&Attempt {
                        number,
                        result: Ok(()),
                        metrics,
                        next: NextStep::Done,
                        elapsed,
                    });
                    return Ok(value);
                }
                Err(error) => {
                    let metrics = attempt.end(false);
                    let decision = if !(self.classify)(&error) {
                        Err(GiveUp::NotRetryable)
                    } else {
                        backoff.next_delay().ok_or(GiveUp::PolicyExhausted)
                    };
                    (self.on_attempt)(&Attempt {
                        number,
                        result: Err(&error),
                        metrics,
                        next: match decision {
                            Ok(delay) => NextStep::RetryAfter(delay),
                            Err(reason) => NextStep::GiveUp(reason),
                        },
                        elapsed,
                    });
                    match decision {
                        Ok(delay) => tokio::time::sleep(delay).await,
                        Err(reason) => {
                            return Err(RetryError {
                                error,
                                reason,
                                attempts: number,
                                unacked: reusable.take_unacked(),
                            });
                        }
                    }
                }
            }
        }
    }
}

impl<E, C, A> fmt::Debug for Retry<E, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The lease of the attempt under way; revoked when dropped, so that an
/// attempt cancelled mid-way (the run's future dropped) ends like a failed one.
struct AttemptLease<T>(Option<Lease<T>>);

impl<T> AttemptLease<T> {
    fn end(mut self, ack_all: bool) -> LeaseMetrics {
        self.0.take().expect("ended once").end(ack_all)
    }
}

impl<T> Drop for AttemptLease<T> {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take() {
            lease.revoke();
        }
    }
}

/// What the driver does after an attempt.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::{GiveUp, NextStep};
/// use std::time::Duration;
///
/// let next = NextStep::RetryAfter(Duration::from_millis(100));
/// assert!(matches!(next, NextStep::RetryAfter(d) if d.as_millis() == 100));
/// assert_ne!(next, NextStep::GiveUp(GiveUp::NotRetryable));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NextStep {
    /// The attempt succeeded; the run returns its value.
    Done,
    /// Another attempt starts after this delay.
    RetryAfter(Duration),
    /// The run returns the error.
    GiveUp(GiveUp),
}

/// Why the driver gave up.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::GiveUp;
///
/// assert_eq!(GiveUp::PolicyExhausted.to_string(), "the retry policy is exhausted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUp {
    /// The classifier rejected the error.
    NotRetryable,
    /// The policy's attempt limit or time budget is spent.
    PolicyExhausted,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GiveUp::NotRetryable => "the error is not retryable",
            GiveUp::PolicyExhausted => "the retry policy is exhausted",
        })
    }
}

/// The outcome of one attempt, as [`Retry::on_attempt`] sees it.
///
/// # Examples
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use async_patterns_reusable_receiver::{NextStep, Retry, ReusableReceiver};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::mpsc::channel(4);
/// tx.send(1).await.unwrap();
/// drop(tx);
/// let mut reusable = ReusableReceiver::new(rx);
/// let mut seen = None;
/// Retry::new(RetryPolicy::default())
///     .on_attempt(|a| seen = Some((a.number(), a.is_success(), a.metrics().acked, a.next())))
///     .run(&mut reusable, |stream| async move { Ok::<_, ()>(stream.count().await) })
///     .await
///     .unwrap();
/// assert_eq!(seen, Some((1, true, 1, NextStep::Done)));
/// # }
/// ```
#[derive(Debug)]
pub struct Attempt<'a, E> {
    number: u32,
    result: Result<(), &'a E>,
    metrics: LeaseMetrics,
    next: NextStep,
    elapsed: Duration,
}

impl<E> Attempt<'_, E> {
    /// The attempt's number, from 1.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{Retry, ReusableReceiver};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// # let mut reusable = ReusableReceiver::new(rx);
    /// let mut seen = Vec::new();
    /// let mut calls = 0;
    /// Retry::new(RetryPolicy::default())
    ///     .on_attempt(|a| seen.push(a.number()))
    ///     .run(&mut reusable, |_stream| {
    ///         calls += 1;
    ///         let result = if calls <= 2 { Err("unavailable") } else { Ok(()) };
    ///         async move { result }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(seen, [1, 2, 3]);
    /// # }
    /// ```
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether the attempt succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{Retry, ReusableReceiver};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// # let mut reusable = ReusableReceiver::new(rx);
    /// let mut seen = Vec::new();
    /// let mut calls = 0;
    /// Retry::new(RetryPolicy::default())
    ///     .on_attempt(|a| seen.push(a.is_success()))
    ///     .run(&mut reusable, |_stream| {
    ///         calls += 1;
    ///         let result = if calls <= 2 { Err("unavailable") } else { Ok(()) };
    ///         async move { result }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(seen, [false, false, true]);
    /// # }
    /// ```
    pub fn is_success(&self) -> bool {
        self.result.is_ok()
    }

    /// The attempt's error, if it failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{Retry, ReusableReceiver};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// # let mut reusable = ReusableReceiver::new(rx);
    /// let mut seen = Vec::new();
    /// let mut calls = 0;
    /// Retry::new(RetryPolicy::default())
    ///     .on_attempt(|a| seen.push(a.error().copied()))
    ///     .run(&mut reusable, |_stream| {
    ///         calls += 1;
    ///         let result = if calls <= 2 { Err("unavailable") } else { Ok(()) };
    ///         async move { result }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(seen, [Some("unavailable"), Some("unavailable"), None]);
    /// # }
    /// ```
    pub fn error(&self) -> Option<&E> {
        self.result.err()
    }

    /// The counts of the attempt's lease when it ended: items delivered,
    /// acknowledged (all of them after a success), and whether the consumer
    /// had dropped the stream by then.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{ReplayConfig, Retry, ReusableReceiver};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send(1).await?;
    /// tx.send(2).await?;
    /// drop(tx);
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let mut seen = Vec::new();
    /// let mut calls = 0;
    /// Retry::new(RetryPolicy::default())
    ///     .on_attempt(|a| {
    ///         let m = a.metrics();
    ///         seen.push((m.delivered, m.redelivered, m.acked));
    ///     })
    ///     .run(&mut reusable, |stream| {
    ///         calls += 1;
    ///         let fail = calls == 1;
    ///         async move {
    ///             let items: Vec<i32> = stream.collect().await;
    ///             if fail { Err("reset") } else { Ok(items) }
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// // The first attempt took both and failed; the second got them again.
    /// assert_eq!(seen, [(2, 0, 0), (2, 2, 2)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics(&self) -> LeaseMetrics {
        self.metrics.clone()
    }

    /// What the driver does next.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::{Jitter, RetryPolicy};
    /// # use async_patterns_reusable_receiver::{GiveUp, NextStep, Retry, ReusableReceiver};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// # let mut reusable = ReusableReceiver::new(rx);
    /// let policy = RetryPolicy::builder()
    ///     .initial_delay(Duration::from_millis(10))
    ///     .jitter(Jitter::None)
    ///     .max_attempts(2)
    ///     .build()?;
    /// let mut seen = Vec::new();
    /// let _ = Retry::new(policy)
    ///     .on_attempt(|a| seen.push(a.next()))
    ///     .run(&mut reusable, |_stream| async { Err::<(), _>("unavailable") })
    ///     .await;
    /// assert_eq!(seen, [
    ///     NextStep::RetryAfter(Duration::from_millis(10)),
    ///     NextStep::GiveUp(GiveUp::PolicyExhausted),
    /// ]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn next(&self) -> NextStep {
        self.next
    }

    /// How long the attempt ran, on tokio's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{Retry, ReusableReceiver};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    /// # let mut reusable = ReusableReceiver::new(rx);
    /// let mut took = None;
    /// Retry::new(RetryPolicy::default())
    ///     .on_attempt(|a| took = Some(a.elapsed()))
    ///     .run(&mut reusable, |_stream| async {
    ///         tokio::time::sleep(Duration::from_millis(250)).await;
    ///         Ok::<(), ()>(())
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(took, Some(Duration::from_millis(250)));
    /// # }
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// The driver gave up: the last error, why, after how many attempts, and
/// every item yielded but never acknowledged (replay mode; empty in plain
/// mode, where [`ReceiverMetrics::lost`](crate::ReceiverMetrics::lost) counts
/// them). Nothing is silently lost: items still in the channel stay there,
/// for the next run or for [`ReusableReceiver::into_inner`].
///
/// # Examples
///
/// ```
/// use async_patterns_core::RetryPolicy;
/// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, retry};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, rx) = tokio::sync::mpsc::channel(4);
/// tx.send(1).await?;
/// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
/// let policy = RetryPolicy::builder().max_attempts(2).build()?;
/// let err = retry(&mut reusable, policy, |mut stream| async move {
///     stream.next().await;
///     Err::<(), _>(std::io::Error::other("reset"))
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.to_string(), "gave up after 2 attempts: the retry policy is exhausted");
/// assert_eq!(err.unacked(), [1]);
/// assert_eq!(err.into_error().to_string(), "reset");
/// # Ok(())
/// # }
/// ```
pub struct RetryError<E, T> {
    error: E,
    reason: GiveUp,
    attempts: u32,
    unacked: Vec<T>,
}

impl<E, T> RetryError<E, T> {
    /// The last attempt's error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(2).build()?;
    /// let err = retry(&mut reusable, policy, |mut stream| async move {
    ///     stream.next().await;
    ///     Err::<(), _>("unavailable")
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.error(), &"unavailable");
    /// # Ok(())
    /// # }
    /// ```
    pub fn error(&self) -> &E {
        &self.error
    }

    /// Why the driver gave up.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(2).build()?;
    /// let err = retry(&mut reusable, policy, |mut stream| async move {
    ///     stream.next().await;
    ///     Err::<(), _>("unavailable")
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.reason(), GiveUp::PolicyExhausted);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reason(&self) -> GiveUp {
        self.reason
    }

    /// How many attempts were made.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(2).build()?;
    /// let err = retry(&mut reusable, policy, |mut stream| async move {
    ///     stream.next().await;
    ///     Err::<(), _>("unavailable")
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.attempts(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The unacknowledged items, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(2).build()?;
    /// let err = retry(&mut reusable, policy, |mut stream| async move {
    ///     stream.next().await;
    ///     Err::<(), _>("unavailable")
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.unacked(), ['a']);
    /// # Ok(())
    /// # }
    /// ```
    pub fn unacked(&self) -> &[T] {
        &self.unacked
    }

    /// Takes the last error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(2).build()?;
    /// let err = retry(&mut reusable, policy, |mut stream| async move {
    ///     stream.next().await;
    ///     Err::<(), _>("unavailable")
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.into_error(), "unavailable");
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_error(self) -> E {
        self.error
    }

    /// Takes the unacknowledged items, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// use async_patterns_reusable_receiver::{ReplayConfig, ReusableReceiver, retry};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(1).build()?;
    /// let err = retry(&mut reusable, policy, |mut s| async move {
    ///     s.next().await;
    ///     Err::<(), _>(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.into_unacked(), ['a']);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_unacked(self) -> Vec<T> {
        self.unacked
    }

    /// Takes the last error and the unacknowledged items.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_core::RetryPolicy;
    /// # use async_patterns_reusable_receiver::{GiveUp, ReplayConfig, ReusableReceiver, retry};
    /// # use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = tokio::sync::mpsc::channel(4);
    /// tx.send('a').await?;
    /// let mut reusable = ReusableReceiver::with_replay(rx, ReplayConfig::builder().build()?);
    /// let policy = RetryPolicy::builder().max_attempts(2).build()?;
    /// let err = retry(&mut reusable, policy, |mut stream| async move {
    ///     stream.next().await;
    ///     Err::<(), _>("unavailable")
    /// })
    /// .await
    /// .unwrap_err();
    /// let (error, unacked) = err.into_parts();
    /// assert_eq!((error, unacked), ("unavailable", vec!['a']));
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_parts(self) -> (E, Vec<T>) {
        (self.error, self.unacked)
    }
}

impl<E: fmt::Debug, T> fmt::Debug for RetryError<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryError")
            .field("error", &self.error)
            .field("reason", &self.reason)
            .field("attempts", &self.attempts)
            .field("unacked", &self.unacked.len())
            .finish()
    }
}

impl<E, T> fmt::Display for RetryError<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "gave up after {} attempt{plural}: {}",
            self.attempts, self.reason
        )
    }
}

impl<E: std::error::Error + 'static, T> std::error::Error for RetryError<E, T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
