//! [`Publisher`]: feeds a stream fast and safely — a bounded window of
//! publishes awaiting the server's confirmation (backpressure), confirmations
//! taken in order, every message under a de-duplication id, a failed publish
//! retried under the same id so that it is stored once.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind as NatsKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, Subject};
use async_patterns_core::{ConfigError, RetryPolicy};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};

use crate::error::{PublishError, PublishErrorKind, Source, message, source};
use crate::metrics::PublisherMetrics;
use crate::shared::no_stream_stores;

const DEFAULT_WINDOW: usize = 256;
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A message to publish: subject, payload, headers, and the de-duplication
/// id the stream uses to store it once (`Nats-Msg-Id`; the publisher
/// assigns one when it has none).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::OutgoingMessage;
///
/// let message = OutgoingMessage::new("orders.eu", "{\"id\":7}")
///     .id("order-7")
///     .header("Trace-Id", "t-1");
/// assert_eq!(message.subject(), "orders.eu");
/// assert_eq!(message.message_id(), Some("order-7"));
///
/// // A (subject, payload) pair converts too.
/// let message: OutgoingMessage = ("orders.us", "{}").into();
/// assert_eq!(message.payload(), "{}");
/// ```
#[derive(Clone, PartialEq)]
pub struct OutgoingMessage {
    subject: Subject,
    payload: Bytes,
    headers: Option<HeaderMap>,
    id: Option<String>,
}

impl OutgoingMessage {
    /// A message of `payload` on `subject`, without headers or id.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// let message = OutgoingMessage::new("events.1", vec![1u8, 2, 3]);
    /// assert_eq!(message.payload().len(), 3);
    /// ```
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> OutgoingMessage {
        OutgoingMessage {
            subject: Subject::from(subject.into()),
            payload: payload.into(),
            headers: None,
            id: None,
        }
    }

    /// Sets the de-duplication id: within the stream's duplicate window, a
    /// second message with the same id is not stored again.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// let message = OutgoingMessage::new("orders.eu", "x").id("order-7");
    /// assert_eq!(message.message_id(), Some("order-7"));
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds a header.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// let message = OutgoingMessage::new("orders.eu", "x").header("Customer", "42");
    /// assert_eq!(message.header_map().unwrap().get("Customer").unwrap().as_str(), "42");
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .get_or_insert_with(HeaderMap::new)
            .append(name, value);
        self
    }

    /// Sets all headers at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// let mut headers = async_nats::HeaderMap::new();
    /// headers.insert("Customer", "42");
    /// let message = OutgoingMessage::new("orders.eu", "x").headers(headers);
    /// assert!(message.header_map().is_some());
    /// ```
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// The subject.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// assert_eq!(OutgoingMessage::new("a.b", "x").subject(), "a.b");
    /// ```
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// assert_eq!(OutgoingMessage::new("a.b", "x").payload(), "x");
    /// ```
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The de-duplication id, if set (a message handed back in a
    /// [`PublishError`] carries the id it was tried with).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// assert_eq!(OutgoingMessage::new("a.b", "x").message_id(), None);
    /// ```
    pub fn message_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The headers, if any (without the id, which travels as `Nats-Msg-Id`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::OutgoingMessage;
    ///
    /// assert!(OutgoingMessage::new("a.b", "x").header_map().is_none());
    /// ```
    pub fn header_map(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }

    fn to_publish(&self) -> PublishMessage {
        let mut publish = PublishMessage::build().payload(self.payload.clone());
        if let Some(headers) = &self.headers {
            publish = publish.headers(headers.clone());
        }
        if let Some(id) = &self.id {
            publish = publish.message_id(id);
        }
        publish
    }
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("subject", &self.subject)
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .field("headers", &self.headers)
            .finish()
    }
}

impl<S: Into<String>, P: Into<Bytes>> From<(S, P)> for OutgoingMessage {
    fn from((subject, payload): (S, P)) -> OutgoingMessage {
        OutgoingMessage::new(subject, payload)
    }
}

/// Builds a [`Publisher`]; see [`Publisher::builder`].
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::Publisher;
/// use std::time::Duration;
///
/// # async fn f(context: async_nats::jetstream::Context) -> Result<(), async_patterns_core::ConfigError> {
/// let publisher = Publisher::builder(context)
///     .window(512)
///     .ack_timeout(Duration::from_secs(2))
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PublisherBuilder {
    context: Context,
    window: usize,
    ack_timeout: Duration,
    retry: RetryPolicy,
}

impl PublisherBuilder {
    /// A builder over `context`: a window of 256, a 5 s ack timeout, and
    /// retries after 100 ms doubling up to 2 s, 5 attempts in all.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::PublisherBuilder;
    ///
    /// # async fn f(context: async_nats::jetstream::Context) -> Result<(), async_patterns_core::ConfigError> {
    /// let publisher = PublisherBuilder::new(context).build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(context: Context) -> PublisherBuilder {
        PublisherBuilder {
            context,
            window: DEFAULT_WINDOW,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            retry: RetryPolicy::builder()
                .initial_delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(2))
                .max_attempts(5)
                .build()
                .expect("valid default policy"),
        }
    }

    /// The most publishes sent and not yet confirmed (at least 1; default
    /// 256). A publish waits for room. Keep it within the JetStream
    /// context's own limit (`max_ack_inflight`, 5000 by default).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::PublisherBuilder) {
    /// let b = b.window(1024);
    /// # }
    /// ```
    pub fn window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// How long one attempt waits for its confirmation before it is retried
    /// (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::PublisherBuilder) {
    /// let b = b.ack_timeout(std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// When to retry a publish whose confirmation failed, and how often (the
    /// policy's `max_attempts` counts the first). Every retry uses the same
    /// id, so the stream stores the message once — provided the retries end
    /// within the stream's duplicate window (2 minutes by default).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// # fn f(b: async_patterns_txn_jetstream::PublisherBuilder) -> Result<(), async_patterns_core::ConfigError> {
    /// let b = b.retry_policy(RetryPolicy::builder().max_attempts(10).build()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a window of 0 or a zero ack timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::Publisher;
    ///
    /// # async fn f(context: async_nats::jetstream::Context) {
    /// let err = Publisher::builder(context).window(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `window`: got 0, expected at least 1");
    /// # }
    /// ```
    pub fn build(self) -> Result<Publisher, ConfigError> {
        ConfigError::at_least("window", self.window, 1)?;
        ConfigError::at_least("ack_timeout", self.ack_timeout, Duration::from_millis(1))?;
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        // The context's own timer bounds both the send and the wait for the
        // confirmation, so no timer of ours is needed per message.
        let mut context = self.context;
        context.set_timeout(self.ack_timeout);
        Ok(Publisher {
            context,
            window: self.window,
            ack_timeout: self.ack_timeout,
            retry: self.retry,
            id_prefix: format!("{:016x}", hasher.finish()),
            next_id: 0,
            pending: FuturesOrdered::new(),
            failed: VecDeque::new(),
            metrics: PublisherMetrics::default(),
        })
    }
}

/// A confirmation settled: the message, and what the server said.
struct Settled {
    message: OutgoingMessage,
    result: Result<PublishAck, Attempt>,
}

/// The client's own confirmation future (`PublishAckFuture`'s).
type Confirmation = <PublishAckFuture as std::future::IntoFuture>::IntoFuture;

/// The confirmation of one message in the window: the client's own future
/// (bounded by the context's timeout), carrying the message along.
struct Pending {
    confirmation: Option<Confirmation>,
    first: Option<Attempt>,
    message: Option<OutgoingMessage>,
}

impl Future for Pending {
    type Output = Settled;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Settled> {
        // `Pending` is `Unpin` (its future is boxed): plain field access.
        let this = &mut *self;
        let result = match (this.confirmation.as_mut(), this.first.take()) {
            (_, Some(failed)) => Err(failed),
            (Some(confirmation), None) => match confirmation.as_mut().poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(r) => r.map_err(classify),
            },
            (None, None) => Err(Attempt::Retry(message_error("polled after completion"))),
        };
        self.confirmation = None;
        std::task::Poll::Ready(Settled {
            message: self.message.take().expect("polled once after completion"),
            result,
        })
    }
}

/// Publishes to JetStream with a bounded window of unconfirmed messages.
///
/// [`publish`](Self::publish) sends a message and returns once it is sent
/// (waiting for room in the window first); its confirmation is awaited later,
/// in order, while the next messages go out. [`publish_all`](Self::publish_all)
/// and [`publish_stream`](Self::publish_stream) take whole batches and wait
/// for every confirmation; [`flush`](Self::flush) waits for those
/// outstanding. A confirmation that times out (or a connection lost
/// mid-way) is retried under the same de-duplication id; messages that
/// still fail are handed back in a [`PublishError`] — never dropped.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::{OutgoingMessage, Publisher};
/// # use async_patterns_testkit::nats::NatsServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = NatsServer::start()?;
/// let context = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
/// context.create_stream(async_nats::jetstream::stream::Config {
///     name: "EVENTS".into(),
///     subjects: vec!["events.>".into()],
///     ..Default::default()
/// }).await?;
///
/// let mut publisher = Publisher::builder(context).build()?;
/// publisher
///     .publish_all((0..1000).map(|i| OutgoingMessage::new(format!("events.{}", i % 4), "e")))
///     .await?;
/// assert_eq!(publisher.metrics().confirmed, 1000);
/// # Ok(())
/// # }
/// ```
pub struct Publisher {
    context: Context,
    window: usize,
    ack_timeout: Duration,
    retry: RetryPolicy,
    id_prefix: String,
    next_id: u64,
    pending: FuturesOrdered<Pending>,
    failed: VecDeque<(PublishErrorKind, OutgoingMessage, Source)>,
    metrics: PublisherMetrics,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("window", &self.window)
            .field("ack_timeout", &self.ack_timeout)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A [`PublisherBuilder`] over `context`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::Publisher;
    ///
    /// # async fn f(context: async_nats::jetstream::Context) -> Result<(), async_patterns_core::ConfigError> {
    /// let publisher = Publisher::builder(context).window(64).build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(context: jetstream::Context) -> PublisherBuilder {
        PublisherBuilder::new(context)
    }

    /// Sends `message` once the window has room, and returns once it is
    /// sent; its confirmation is awaited by later calls (in order).
    ///
    /// # Errors
    ///
    /// A [`PublishError`] handing back the earlier messages whose
    /// confirmation failed since the last error was reported (this message,
    /// if its own send failed for good). The publisher stays usable.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped while it waits for room, the message is not
    /// sent (and dropped with the future); dropped later, it was sent and its
    /// confirmation is awaited as usual.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(mut publisher: async_patterns_txn_jetstream::Publisher) -> Result<(), Box<dyn std::error::Error>> {
    /// publisher.publish(("orders.eu", "order 1")).await?;
    /// publisher.publish(("orders.eu", "order 2")).await?;
    /// publisher.flush().await?; // both confirmed
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish(
        &mut self,
        message: impl Into<OutgoingMessage>,
    ) -> Result<(), PublishError> {
        let mut message = message.into();
        if message.id.is_none() {
            message.id = Some(format!("{}-{}", self.id_prefix, self.next_id));
            self.next_id += 1;
        }
        while self.pending.len() >= self.window {
            self.settle_next().await;
        }
        let sent = send(&self.context, &message).await;
        self.metrics.sent += 1;
        self.metrics.in_flight += 1;
        let (confirmation, first) = match sent {
            Ok(future) => (Some(std::future::IntoFuture::into_future(future)), None),
            Err(failed) => (None, Some(failed)),
        };
        self.pending.push_back(Pending {
            confirmation,
            first,
            message: Some(message),
        });
        self.take_failures()
    }

    /// Publishes every message of `messages` through the window, then waits
    /// for every confirmation.
    ///
    /// # Errors
    ///
    /// A [`PublishError`] handing back every message that failed (and any
    /// earlier failure not yet reported); the others are stored.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped half-way, the messages not yet sent are
    /// dropped with the iterator; those sent are confirmed by later calls.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(mut publisher: async_patterns_txn_jetstream::Publisher) -> Result<(), Box<dyn std::error::Error>> {
    /// let batch = vec![("orders.eu", "1"), ("orders.us", "2")];
    /// publisher.publish_all(batch).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_all<I>(&mut self, messages: I) -> Result<(), PublishError>
    where
        I: IntoIterator,
        I::Item: Into<OutgoingMessage>,
    {
        let mut failures: Option<PublishError> = None;
        for message in messages {
            if let Err(e) = self.publish(message).await {
                absorb(&mut failures, e);
            }
        }
        if let Err(e) = self.flush().await {
            absorb(&mut failures, e);
        }
        failures.map_or(Ok(()), Err)
    }

    /// As [`publish_all`](Self::publish_all), for a stream of messages (for
    /// example the batches of a batching adapter, flattened).
    ///
    /// # Errors
    ///
    /// As [`publish_all`](Self::publish_all).
    ///
    /// # Cancel safety
    ///
    /// As [`publish_all`](Self::publish_all).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::stream;
    /// # async fn f(mut publisher: async_patterns_txn_jetstream::Publisher) -> Result<(), Box<dyn std::error::Error>> {
    /// let messages = stream::iter((0..10).map(|i| (format!("events.{i}"), "e")));
    /// publisher.publish_stream(messages).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_stream<S>(&mut self, messages: S) -> Result<(), PublishError>
    where
        S: Stream,
        S::Item: Into<OutgoingMessage>,
    {
        let mut messages = std::pin::pin!(messages);
        let mut failures: Option<PublishError> = None;
        while let Some(message) = messages.next().await {
            if let Err(e) = self.publish(message).await {
                absorb(&mut failures, e);
            }
        }
        if let Err(e) = self.flush().await {
            absorb(&mut failures, e);
        }
        failures.map_or(Ok(()), Err)
    }

    /// Waits for the confirmation of every message sent.
    ///
    /// # Errors
    ///
    /// A [`PublishError`] handing back every message whose confirmation
    /// failed and was not reported yet.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropped before it completes, the
    /// confirmations not yet awaited stay pending and are awaited by the next
    /// call.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(mut publisher: async_patterns_txn_jetstream::Publisher) -> Result<(), Box<dyn std::error::Error>> {
    /// publisher.publish(("orders.eu", "1")).await?;
    /// publisher.flush().await?;
    /// assert_eq!(publisher.in_flight(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        while !self.pending.is_empty() {
            self.settle_next().await;
        }
        self.take_failures()
    }

    /// Messages sent and not yet confirmed.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(publisher: async_patterns_txn_jetstream::Publisher) {
    /// assert!(publisher.in_flight() <= 256);
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A snapshot of what this publisher has done.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(publisher: async_patterns_txn_jetstream::Publisher) {
    /// let m = publisher.metrics();
    /// println!("{} sent, {} confirmed, {} retried", m.sent, m.confirmed, m.retried);
    /// # }
    /// ```
    pub fn metrics(&self) -> PublisherMetrics {
        PublisherMetrics {
            in_flight: self.pending.len() as u64,
            ..self.metrics.clone()
        }
    }

    async fn settle_next(&mut self) {
        let Some(settled) = self.pending.next().await else {
            return;
        };
        let Settled { message, result } = settled;
        let (message, result, retries) = match result {
            Ok(ack) => (message, Ok(ack), 0),
            Err(failed) => retry(&self.context, message, failed, &self.retry).await,
        };
        self.metrics.in_flight = self.metrics.in_flight.saturating_sub(1);
        self.metrics.retried += retries;
        match result {
            Ok(ack) => {
                self.metrics.confirmed += 1;
                if ack.duplicate {
                    self.metrics.duplicates += 1;
                }
            }
            Err((kind, source)) => self.failed.push_back((kind, message, source)),
        }
    }

    fn take_failures(&mut self) -> Result<(), PublishError> {
        let Some((kind, first, source)) = self.failed.pop_front() else {
            return Ok(());
        };
        let mut messages = vec![first];
        messages.extend(self.failed.drain(..).map(|(_, m, _)| m));
        self.metrics.handed_back += messages.len() as u64;
        Err(PublishError::new(kind, messages).with_source(source))
    }
}

/// Sends one message; the confirmation is awaited by the future returned.
/// Both are bounded by the context's timeout (the publisher's ack timeout).
async fn send(context: &Context, message: &OutgoingMessage) -> Result<PublishAckFuture, Attempt> {
    context
        .send_publish(message.subject.clone(), message.to_publish())
        .await
        .map_err(classify)
}

fn absorb(into: &mut Option<PublishError>, e: PublishError) {
    match into {
        Some(existing) => existing.merge(e),
        None => *into = Some(e),
    }
}

/// How an attempt failed.
enum Attempt {
    Retry(Source),
    Fatal(PublishErrorKind, Source),
}

fn classify(e: async_nats::jetstream::context::PublishError) -> Attempt {
    match e.kind() {
        NatsKind::StreamNotFound => Attempt::Fatal(PublishErrorKind::NoStream, source(e)),
        NatsKind::WrongLastMessageId
        | NatsKind::WrongLastSequence
        | NatsKind::MaxPayloadExceeded => Attempt::Fatal(PublishErrorKind::Rejected, source(e)),
        NatsKind::Other
            if std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<jetstream::Error>().is_some()) =>
        {
            // The server answered with an error: a limit, a bad header.
            Attempt::Fatal(PublishErrorKind::Rejected, source(e))
        }
        _ => Attempt::Retry(source(e)),
    }
}

/// A message whose first attempt failed: retried under the same id, as the
/// retry policy allows, one attempt at a time (the window waits meanwhile:
/// backpressure while the server is away). Returns the retries made.
async fn retry(
    context: &Context,
    message: OutgoingMessage,
    first: Attempt,
    policy: &RetryPolicy,
) -> (
    OutgoingMessage,
    Result<PublishAck, (PublishErrorKind, Source)>,
    u64,
) {
    let mut backoff = policy.backoff();
    let mut retries = 0;
    let mut failed = first;
    loop {
        let error = match failed {
            Attempt::Fatal(PublishErrorKind::NoStream, error)
                if !no_stream_stores(context, message.subject()).await =>
            {
                // JetStream is starting up (or was not reachable): retry.
                error
            }
            Attempt::Fatal(kind, error) => return (message, Err((kind, error)), retries),
            Attempt::Retry(error) => error,
        };
        let Some(delay) = backoff.next_delay() else {
            return (
                message,
                Err((PublishErrorKind::Unconfirmed, error)),
                retries,
            );
        };
        tokio::time::sleep(delay).await;
        retries += 1;
        failed = match send(context, &message).await {
            Ok(future) => match future.await {
                Ok(ack) => return (message, Ok(ack), retries),
                Err(e) => classify(e),
            },
            Err(e) => e,
        };
    }
}

fn message_error(text: &str) -> Source {
    message(text)
}
