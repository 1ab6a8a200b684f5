//! [`Receiver`] and its builder: a durable pull consumer, created or bound,
//! whose messages are taken as [`Delivery`]s; its shutdown and metrics.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, GetStreamByNameErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::{self, ErrorCode};
use async_patterns_core::__private::lock;
use async_patterns_core::{ConfigError, DeadLetterReason, RetryPolicy};
use bytes::Bytes;
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::ack;
use crate::delivery::{BatchDelivery, Delivery, Inner};
use crate::error::{BuildError, ReceiveError, source};
use crate::metrics::{Counters, ReceiverMetrics};
use crate::puller::Puller;
use crate::shared::{End, Hook, KeyFn, Parts, Queued, Settings, Shared};

type Decode<T> = Arc<
    dyn Fn(&async_nats::Message) -> Result<T, Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync,
>;

const DEFAULT_LEASE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_IN_FLIGHT: usize = 1000;
const DEFAULT_PREFETCH: usize = 256;
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// In which order deliveries are handed out.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::Ordering;
///
/// // Messages of one subject one at a time, in order; subjects in parallel.
/// let by_subject = Ordering::per_key(|message: &async_nats::Message| message.subject.to_string());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Ordering {
    /// Any order, as many at once as `max_in_flight` allows (the default).
    #[default]
    Unordered,
    /// One at a time, in stream order, redeliveries included: the consumer is
    /// created with `max_ack_pending` 1, so the server delivers nothing else
    /// until the message in flight is committed or dead-lettered — across
    /// every process that shares the consumer.
    Strict,
    /// Messages with the same key are never in flight together in this
    /// receiver and are handed out in stream order; different keys run in
    /// parallel. A rolled-back message holds its key until it comes back (or
    /// its delay and one lease have passed, in case another process took
    /// it). The order holds within one receiver; processes sharing a consumer
    /// each keep it for what they receive.
    PerKey(KeyFn),
}

impl Ordering {
    /// Orders by a key computed from each received message (its subject, a
    /// header, part of its payload).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::Ordering;
    ///
    /// let by_customer = Ordering::per_key(|message: &async_nats::Message| {
    ///     message.headers.as_ref().and_then(|h| h.get("Customer")).map(|v| v.to_string())
    /// });
    /// ```
    pub fn per_key<K, F>(key: F) -> Ordering
    where
        K: Hash,
        F: Fn(&async_nats::Message) -> K + Send + Sync + 'static,
    {
        let hasher = std::collections::hash_map::RandomState::new();
        Ordering::PerKey(Arc::new(move |message| hasher.hash_one(key(message))))
    }
}

impl fmt::Debug for Ordering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ordering::Unordered => "Unordered",
            Ordering::Strict => "Strict",
            Ordering::PerKey(_) => "PerKey(..)",
        })
    }
}

/// Builds a [`Receiver`]; see [`Receiver::builder`]. Every setting but the
/// stream and consumer names has a default.
///
/// When the consumer exists, the receiver binds it and takes its ack wait
/// (the lease) and `max_ack_pending` (the in-flight limit); settings given
/// here must then match it — a mismatch is a [`BuildError::Config`] naming
/// the setting, never a silent change to a consumer other processes share.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::Receiver;
/// use async_patterns_core::RetryPolicy;
/// use std::time::Duration;
/// # use async_patterns_testkit::nats::NatsServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = NatsServer::start()?;
/// # let context = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
/// # context.create_stream(async_nats::jetstream::stream::Config {
/// #     name: "ORDERS".into(), subjects: vec!["orders.>".into()], ..Default::default()
/// # }).await?;
/// # context.create_stream(async_nats::jetstream::stream::Config {
/// #     name: "DEAD".into(), subjects: vec!["dead.>".into()], ..Default::default()
/// # }).await?;
/// let receiver = Receiver::builder(context)
///     .stream("ORDERS")
///     .consumer("billing")
///     .filter_subject("orders.eu.>")
///     .lease(Duration::from_secs(60))
///     .max_in_flight(64)
///     .max_attempts(5)
///     .retry_policy(RetryPolicy::builder().initial_delay(Duration::from_secs(1)).build()?)
///     .dead_letter_subject("dead.orders")
///     .decode(|message| String::from_utf8(message.payload.to_vec()))
///     .build()
///     .await?;
/// assert_eq!(receiver.metrics().in_flight, 0);
/// # Ok(())
/// # }
/// ```
pub struct ReceiverBuilder<T = Bytes> {
    context: jetstream::Context,
    stream: Option<String>,
    consumer: Option<String>,
    filter_subjects: Vec<String>,
    create_if_missing: bool,
    lease: Option<Duration>,
    max_in_flight: Option<usize>,
    prefetch: Option<usize>,
    max_attempts: u32,
    retry: RetryPolicy,
    dead_letter_subject: Option<String>,
    keep_alive: Option<Option<Duration>>,
    ack_timeout: Duration,
    confirm_acks: bool,
    disconnect_timeout: Duration,
    ordering: Ordering,
    decode: Decode<T>,
    after_dead_letter_published: Option<Hook>,
}

impl<T> fmt::Debug for ReceiverBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverBuilder")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("filter_subjects", &self.filter_subjects)
            .field("lease", &self.lease)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_attempts", &self.max_attempts)
            .field("ordering", &self.ordering)
            .finish_non_exhaustive()
    }
}

impl ReceiverBuilder<Bytes> {
    /// A builder over `context` with the defaults: a 30 s lease,
    /// 1000 in flight, 256 prefetched, 10 attempts, core's default
    /// [`RetryPolicy`], keep-alive every third of the lease, confirmed acks
    /// with a 5 s timeout, unordered, items as [`Bytes`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::ReceiverBuilder;
    ///
    /// # async fn f(context: async_nats::jetstream::Context) {
    /// let builder = ReceiverBuilder::new(context).stream("ORDERS").consumer("workers");
    /// # }
    /// ```
    pub fn new(context: jetstream::Context) -> ReceiverBuilder<Bytes> {
        ReceiverBuilder {
            context,
            stream: None,
            consumer: None,
            filter_subjects: Vec::new(),
            create_if_missing: true,
            lease: None,
            max_in_flight: None,
            prefetch: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: RetryPolicy::default(),
            dead_letter_subject: None,
            keep_alive: None,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            confirm_acks: true,
            disconnect_timeout: DEFAULT_DISCONNECT_TIMEOUT,
            ordering: Ordering::Unordered,
            decode: Arc::new(|message| Ok(message.payload.clone())),
            after_dead_letter_published: None,
        }
    }
}

impl<T> ReceiverBuilder<T> {
    /// The stream to consume (required). The receiver never creates streams.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.stream("ORDERS");
    /// # }
    /// ```
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = Some(name.into());
        self
    }

    /// The durable consumer's name (required); processes that use the same
    /// name share the work.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.consumer("workers");
    /// # }
    /// ```
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Only messages on this subject (wildcards allowed); call again for
    /// several. Used when the consumer is created; when it exists, must match
    /// its filter.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.filter_subject("orders.eu.>").filter_subject("orders.us.>");
    /// # }
    /// ```
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subjects.push(subject.into());
        self
    }

    /// Whether to create the consumer when it does not exist (the default);
    /// with `false`, a missing consumer is [`BuildError::ConsumerNotFound`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.create_if_missing(false);
    /// # }
    /// ```
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// How long a delivery is the handler's before the server delivers it
    /// again: the consumer's ack wait (default 30 s, at least 1 ms). The
    /// receiver renews it while the handler works (see
    /// [`keep_alive`](Self::keep_alive)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.lease(std::time::Duration::from_secs(60));
    /// # }
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The most messages this receiver holds at once, received and not ended
    /// (default 1000, or the existing consumer's `max_ack_pending`). When
    /// the receiver creates the consumer, it is also the consumer's
    /// `max_ack_pending`, which the server applies to every process sharing
    /// it; when it binds one, it limits this receiver alone.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.max_in_flight(32);
    /// # }
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// The most messages received and not yet begun (default 256, or the
    /// in-flight limit if lower). A received message's ack wait is already
    /// running, so a large prefetch with slow handlers lets leases run out
    /// in the queue (those messages are skipped and delivered again).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.prefetch(16);
    /// # }
    /// ```
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// The most deliveries of one message (default 10, at least 1): a
    /// rollback on the last one dead-letters it with
    /// [`DeadLetterReason::MaxAttempts`], and a message delivered once more
    /// than this (its last lease ran out) is dead-lettered with
    /// [`DeadLetterReason::LeaseExpired`] without reaching a handler.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.max_attempts(3);
    /// # }
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The delays between attempts after a rollback (a nak with the delay
    /// the policy gives that attempt, jitter included). The policy's own
    /// attempt and time limits do not apply: `max_attempts` does.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::RetryPolicy;
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) -> Result<(), async_patterns_core::ConfigError> {
    /// let b = b.retry_policy(RetryPolicy::builder()
    ///     .initial_delay(std::time::Duration::from_millis(500))
    ///     .build()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Where dead letters are published (default
    /// `dead_letter.<stream>.<consumer>`). A stream must store this subject
    /// ([`BuildError::NoDeadLetterStream`] otherwise), and this consumer must
    /// not receive it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.dead_letter_subject("dead.orders");
    /// # }
    /// ```
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// How often the lease of a delivery in flight is renewed with an
    /// in-progress ack (default: a third of the lease; shorter than the
    /// lease). `None` turns renewal off: a handler that takes longer than
    /// the lease then loses the message, unless it calls
    /// [`Delivery::extend`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.keep_alive(Some(std::time::Duration::from_secs(5)));
    /// # }
    /// ```
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = Some(interval);
        self
    }

    /// How long ending a delivery waits for the server's confirmation,
    /// retrying through a reconnect, before it gives up with
    /// [`DeliveryError::Unconfirmed`](crate::DeliveryError::Unconfirmed)
    /// (default 5 s; never past the lease).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.ack_timeout(std::time::Duration::from_secs(2));
    /// # }
    /// ```
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Whether `commit`, `rollback`, `retry_after` and the termination of a
    /// dead-lettered message wait for the server to confirm (the default;
    /// JetStream's double ack). Off, they return once the ack is handed to
    /// the connection — faster, but a lost ack means a redelivery. Dead
    /// letters are always confirmed before the original is terminated.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.confirm_acks(false);
    /// # }
    /// ```
    pub fn confirm_acks(mut self, confirm: bool) -> Self {
        self.confirm_acks = confirm;
        self
    }

    /// After how long without a connection [`Receiver::begin`] reports
    /// [`ReceiveError::Disconnected`] instead of waiting (default 10 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.disconnect_timeout(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    pub fn disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.disconnect_timeout = timeout;
        self
    }

    /// In which order deliveries are handed out (default
    /// [`Ordering::Unordered`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::Ordering;
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.ordering(Ordering::Strict);
    /// # }
    /// ```
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Decodes each message into the item a [`Delivery`] dereferences to. A
    /// message that does not decode is dead-lettered at once with
    /// [`DeadLetterReason::Failed`] (`cannot decode: …`) and never reaches a
    /// handler.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(b: async_patterns_txn_jetstream::ReceiverBuilder) {
    /// let b = b.decode(|message| -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    ///     Ok(std::str::from_utf8(&message.payload)?.parse()?)
    /// });
    /// # }
    /// ```
    pub fn decode<U, E, F>(self, decode: F) -> ReceiverBuilder<U>
    where
        F: Fn(&async_nats::Message) -> Result<U, E> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        ReceiverBuilder {
            context: self.context,
            stream: self.stream,
            consumer: self.consumer,
            filter_subjects: self.filter_subjects,
            create_if_missing: self.create_if_missing,
            lease: self.lease,
            max_in_flight: self.max_in_flight,
            prefetch: self.prefetch,
            max_attempts: self.max_attempts,
            retry: self.retry,
            dead_letter_subject: self.dead_letter_subject,
            keep_alive: self.keep_alive,
            ack_timeout: self.ack_timeout,
            confirm_acks: self.confirm_acks,
            disconnect_timeout: self.disconnect_timeout,
            ordering: self.ordering,
            decode: Arc::new(move |message| decode(message).map_err(Into::into)),
            after_dead_letter_published: self.after_dead_letter_published,
        }
    }

    /// Test hook: runs between publishing a dead letter and terminating the
    /// original, where a crash must duplicate and never lose.
    #[doc(hidden)]
    pub fn __after_dead_letter_published(
        mut self,
        hook: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.after_dead_letter_published = Some(Arc::new(hook));
        self
    }

    /// Checks the settings, finds the stream, binds or creates the consumer,
    /// checks that a stream stores the dead-letter subject, and starts the
    /// receiver's background task (on the current tokio runtime).
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for a setting out of range or that does not
    /// match the existing consumer; [`BuildError::NoJetStream`],
    /// [`BuildError::StreamNotFound`], [`BuildError::ConsumerNotFound`],
    /// [`BuildError::NoDeadLetterStream`]; [`BuildError::Request`] when the
    /// server did not answer (timed out, connection down).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, nothing runs; the consumer may have been
    /// created (a durable consumer stays until deleted).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{BuildError, Receiver};
    /// # use async_patterns_testkit::nats::NatsServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = NatsServer::start()?;
    /// # let context = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    /// let err = Receiver::builder(context).stream("ORDERS").build().await.unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `consumer`: got none, expected a durable consumer name");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build(self) -> Result<Receiver<T>, BuildError> {
        let stream_name = valid_name("stream", self.stream.as_deref())?;
        let consumer_name = valid_name("consumer", self.consumer.as_deref())?;
        ConfigError::at_least("max_attempts", self.max_attempts, 1)?;
        if let Some(n) = self.max_in_flight {
            ConfigError::at_least("max_in_flight", n, 1)?;
        }
        if let Some(lease) = self.lease {
            ConfigError::at_least("lease", lease, Duration::from_millis(1))?;
        }
        ConfigError::at_least("ack_timeout", self.ack_timeout, Duration::from_millis(1))?;
        ConfigError::at_least(
            "disconnect_timeout",
            self.disconnect_timeout,
            Duration::from_millis(1),
        )?;
        let strict = matches!(self.ordering, Ordering::Strict);
        if strict && self.max_in_flight.is_some_and(|n| n != 1) {
            return Err(ConfigError::new(
                "max_in_flight",
                self.max_in_flight.unwrap_or(1),
                "1 (or unset) with Ordering::Strict",
            )
            .into());
        }

        let stream = self
            .context
            .get_stream(&stream_name)
            .await
            .map_err(|e| match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    BuildError::StreamNotFound {
                        stream: stream_name.clone(),
                    }
                }
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED
                        || j.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT =>
                {
                    BuildError::NoJetStream
                }
                _ if no_responders(&e) => BuildError::NoJetStream,
                _ => BuildError::Request(source(e)),
            })?;

        // Bind the consumer, or create it.
        let existing = match stream.consumer_info(&consumer_name).await {
            Ok(info) => Some(info.config),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
            Err(e) => return Err(BuildError::Request(source(e))),
        };
        let (lease, max_in_flight, filters, create) = match &existing {
            Some(config) => {
                let (lease, max_in_flight) = bind(&self, strict, config)?;
                (lease, max_in_flight, config_filters(config), None)
            }
            None if !self.create_if_missing => {
                return Err(BuildError::ConsumerNotFound {
                    stream: stream_name,
                    consumer: consumer_name,
                });
            }
            None => {
                let lease = self.lease.unwrap_or(DEFAULT_LEASE);
                let max_in_flight = if strict {
                    1
                } else {
                    self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT)
                };
                let mut config = pull::Config {
                    durable_name: Some(consumer_name.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: lease,
                    // Unlimited: the receiver counts attempts and dead-letters,
                    // so the server never silently stops delivering a message.
                    max_deliver: -1,
                    max_ack_pending: i64::try_from(max_in_flight).unwrap_or(i64::MAX),
                    ..Default::default()
                };
                match self.filter_subjects.as_slice() {
                    [] => {}
                    [one] => config.filter_subject = one.clone(),
                    many => config.filter_subjects = many.to_vec(),
                }
                (
                    lease,
                    max_in_flight,
                    self.filter_subjects.clone(),
                    Some(config),
                )
            }
        };

        let prefetch = match self.prefetch {
            Some(n) => {
                ConfigError::at_least("prefetch", n, 1)?;
                if n > max_in_flight {
                    return Err(ConfigError::new(
                        "prefetch",
                        n,
                        format!("at most max_in_flight ({max_in_flight})"),
                    )
                    .into());
                }
                n
            }
            None => DEFAULT_PREFETCH.min(max_in_flight),
        };
        let keep_alive = match self.keep_alive {
            None => Some(lease / 3),
            Some(None) => None,
            Some(Some(interval)) => {
                if interval.is_zero() || interval >= lease {
                    return Err(ConfigError::new(
                        "keep_alive",
                        format!("{interval:?}"),
                        format!("more than zero and shorter than the lease ({lease:?})"),
                    )
                    .into());
                }
                Some(interval)
            }
        };

        // The dead letters need a stream, and must not come back here.
        let dead_letter_subject = self
            .dead_letter_subject
            .clone()
            .unwrap_or_else(|| format!("dead_letter.{stream_name}.{consumer_name}"));
        let publishable = !dead_letter_subject.is_empty()
            && dead_letter_subject
                .split('.')
                .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace));
        if !publishable {
            return Err(ConfigError::new(
                "dead_letter_subject",
                format!("{dead_letter_subject:?}"),
                "a subject to publish to: dot-separated tokens, no wildcards or whitespace",
            )
            .into());
        }
        let dead_letter_stream = match self
            .context
            .stream_by_subject(dead_letter_subject.clone())
            .await
        {
            Ok(name) => name,
            Err(e) => {
                return Err(match e.kind() {
                    GetStreamByNameErrorKind::NotFound => BuildError::NoDeadLetterStream {
                        subject: dead_letter_subject,
                    },
                    _ => BuildError::Request(source(e)),
                });
            }
        };
        if dead_letter_stream == stream_name
            && (filters.is_empty()
                || filters
                    .iter()
                    .any(|f| subject_matches(f, &dead_letter_subject)))
        {
            return Err(ConfigError::new(
                "dead_letter_subject",
                &dead_letter_subject,
                "a subject this consumer does not receive (its dead letters would come back to it)",
            )
            .into());
        }

        // Every check passed: only now create the consumer, if it is new.
        if let Some(config) = create {
            stream
                .create_consumer(config)
                .await
                .map_err(|e| BuildError::Request(source(e)))?;
        }
        let consumer: PullConsumer = stream
            .get_consumer(&consumer_name)
            .await
            .map_err(|e| BuildError::Request(Arc::from(e)))?;
        let client = self.context.client();
        let inbox: async_nats::Subject = client.new_inbox().into();
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BuildError::Request(source(e)))?;

        let settings = Settings {
            lease,
            max_in_flight,
            prefetch,
            max_attempts: self.max_attempts,
            retry: self.retry,
            dead_letter_subject,
            keep_alive,
            ack_timeout: self.ack_timeout,
            confirm_acks: self.confirm_acks,
            disconnect_timeout: self.disconnect_timeout,
        };
        let key = match self.ordering {
            Ordering::PerKey(f) => Some(f),
            _ => None,
        };
        let shared = Arc::new(Shared::new(
            client,
            self.context,
            stream_name,
            consumer_name,
            settings,
            key,
            self.after_dead_letter_published,
        ));
        tokio::spawn(Puller::new(&shared, consumer, inbox, subscriber).run());
        Ok(Receiver {
            handle: Arc::new(Handle {
                shared,
                decode: self.decode,
            }),
        })
    }
}

/// Checks an existing consumer against the builder; returns the lease and
/// in-flight limit to run with.
fn bind<T>(
    builder: &ReceiverBuilder<T>,
    strict: bool,
    config: &jetstream::consumer::Config,
) -> Result<(Duration, usize), BuildError> {
    if config.deliver_subject.is_some() {
        return Err(ConfigError::new(
            "consumer",
            builder.consumer.as_deref().unwrap_or_default(),
            "a pull consumer (this one is a push consumer)",
        )
        .into());
    }
    if config.ack_policy != AckPolicy::Explicit {
        return Err(ConfigError::new(
            "consumer",
            format!("{:?} ack policy", config.ack_policy),
            "a consumer with the explicit ack policy",
        )
        .into());
    }
    if config.max_deliver > 0
        && u64::try_from(config.max_deliver).unwrap_or(0) <= u64::from(builder.max_attempts)
    {
        return Err(ConfigError::new(
            "max_attempts",
            builder.max_attempts,
            format!(
                "less than the consumer's max_deliver ({}), so that a message whose last lease ran out comes back to be dead-lettered",
                config.max_deliver
            ),
        )
        .into());
    }
    let lease = config.ack_wait;
    if let Some(asked) = builder.lease
        && asked != lease
    {
        return Err(ConfigError::new(
            "lease",
            format!("{asked:?}"),
            format!("the existing consumer's ack wait, {lease:?} (update the consumer, or leave the lease unset)"),
        )
        .into());
    }
    let pending = usize::try_from(config.max_ack_pending)
        .ok()
        .filter(|&n| n > 0);
    if strict && pending != Some(1) {
        return Err(ConfigError::new(
            "ordering",
            "Strict",
            format!(
                "a consumer with max_ack_pending 1 (this one has {})",
                config.max_ack_pending
            ),
        )
        .into());
    }
    let filters = config_filters(config);
    if !builder.filter_subjects.is_empty() && builder.filter_subjects != filters {
        return Err(ConfigError::new(
            "filter_subject",
            builder.filter_subjects.join(", "),
            format!("the existing consumer's filter ({})", filters.join(", ")),
        )
        .into());
    }
    let max_in_flight = builder
        .max_in_flight
        .or(pending)
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    Ok((lease, max_in_flight))
}

fn config_filters(config: &jetstream::consumer::Config) -> Vec<String> {
    if config.filter_subjects.is_empty() {
        if config.filter_subject.is_empty() {
            Vec::new()
        } else {
            vec![config.filter_subject.clone()]
        }
    } else {
        config.filter_subjects.clone()
    }
}

/// Whether a JetStream API request found no responder: the server has no
/// JetStream.
fn no_responders(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{RequestError, RequestErrorKind};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<RequestError>()
            .is_some_and(|r| r.kind() == RequestErrorKind::NoResponders)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn valid_name(field: &'static str, name: Option<&str>) -> Result<String, ConfigError> {
    let Some(name) = name else {
        return Err(ConfigError::new(
            field,
            "none",
            if field == "stream" {
                "a stream name"
            } else {
                "a durable consumer name"
            },
        ));
    };
    let bad = name.is_empty()
        || name.chars().any(|c| {
            matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
        });
    if bad {
        return Err(ConfigError::new(
            field,
            format!("{name:?}"),
            "a non-empty name without `.`, `*`, `>`, slashes or whitespace",
        ));
    }
    Ok(name.to_owned())
}

/// Whether a subject filter (with `*` and `>` wildcards) matches a subject.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Takes messages from a durable JetStream pull consumer as [`Delivery`]s:
/// the words of txn-channel — `begin`, `commit`, `rollback`, `retry_after`,
/// `fail`, `attempt` — over a queue that is durable and shared by
/// processes.
///
/// Cheap to clone: clones share the consumer's work (and one background
/// task that pulls messages and keeps leases alive). When the last clone is
/// dropped, the messages it had received and not handed out go back to the
/// server at once.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::Receiver;
/// # use async_patterns_testkit::nats::NatsServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = NatsServer::start()?;
/// let client = async_nats::connect(server.url()).await?;
/// let context = async_nats::jetstream::new(client);
/// context.create_stream(async_nats::jetstream::stream::Config {
///     name: "ORDERS".into(),
///     subjects: vec!["orders.>".into(), "dead.orders".into()],
///     ..Default::default()
/// }).await?;
/// for i in 0..3 {
///     context.publish(format!("orders.{i}"), "order".into()).await?.await?;
/// }
///
/// let receiver = Receiver::builder(context)
///     .stream("ORDERS")
///     .consumer("workers")
///     .filter_subject("orders.>")
///     .dead_letter_subject("dead.orders")
///     .build()
///     .await?;
/// for _ in 0..3 {
///     let delivery = receiver.begin().await?.expect("open");
///     tokio::spawn(async move { delivery.commit().await }).await??;
/// }
/// assert_eq!(receiver.metrics().committed, 3);
/// # Ok(())
/// # }
/// ```
pub struct Receiver<T = Bytes> {
    handle: Arc<Handle<T>>,
}

struct Handle<T> {
    shared: Arc<Shared>,
    decode: Decode<T>,
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        // The last receiver is gone: the background task stops pulling and
        // hands back what no handler will begin now.
        {
            let mut state = lock(&self.shared.state);
            state.intake_closed = true;
            state.handles_dropped = true;
        }
        self.shared.wake.notify_one();
        self.shared.ready.notify_waiters();
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            handle: self.handle.clone(),
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("stream", &self.handle.shared.stream)
            .field("consumer", &self.handle.shared.consumer)
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// What `begin` found.
enum Take {
    Got,
    Closed,
    Wait,
}

impl Receiver<Bytes> {
    /// A [`ReceiverBuilder`] over `context`, with the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::Receiver;
    ///
    /// # async fn f(context: async_nats::jetstream::Context) -> Result<(), Box<dyn std::error::Error>> {
    /// let receiver = Receiver::builder(context)
    ///     .stream("ORDERS")
    ///     .consumer("workers")
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(context: jetstream::Context) -> ReceiverBuilder<Bytes> {
        ReceiverBuilder::new(context)
    }
}

impl<T> Receiver<T> {
    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Takes the next message as a [`Delivery`], waiting until one arrives.
    /// `Ok(None)` once the receiver is closed (by [`close`](Self::close) or
    /// [`shutdown_async`](Self::shutdown_async)) and everything it had
    /// received has been handed out.
    ///
    /// Messages whose lease ran out while they waited here are skipped (the
    /// server delivers them again); messages delivered more than
    /// `max_attempts` times, and those the decode hook rejects, are
    /// dead-lettered in the background without reaching a handler.
    ///
    /// # Errors
    ///
    /// [`ReceiveError::ConsumerDeleted`] once the consumer is gone (after the
    /// messages already received are handed out);
    /// [`ReceiveError::Disconnected`] while the connection has been down for
    /// longer than the disconnect timeout (not final); and
    /// [`ReceiveError::Refused`].
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a message is taken only when the method
    /// returns it, so dropping the future (in a `select!`) loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// while let Some(delivery) = receiver.begin().await? {
    ///     tokio::spawn(async move {
    ///         // … work …
    ///         delivery.commit().await
    ///     });
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn begin(&self) -> Result<Option<Delivery<T>>, ReceiveError> {
        loop {
            let mut taken = None;
            if !self
                .take(1, &mut |queued, id| taken = Some((queued, id)))
                .await?
            {
                return Ok(None);
            }
            let (queued, id) = taken.expect("took one");
            if let Some(delivery) = self.deliver(queued, id) {
                return Ok(Some(delivery));
            }
        }
    }

    /// Takes up to `max` messages at once — those already received, at
    /// least one — as a [`BatchDelivery`]; waits until there is one.
    /// `Ok(None)` once closed and drained, as for [`begin`](Self::begin).
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin).
    ///
    /// # Panics
    ///
    /// If `max` is 0.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`begin`](Self::begin).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// while let Some(batch) = receiver.begin_batch(256).await? {
    ///     batch.commit_all().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn begin_batch(&self, max: usize) -> Result<Option<BatchDelivery<T>>, ReceiveError> {
        assert!(
            max > 0,
            "begin_batch(0): a batch holds at least one delivery"
        );
        loop {
            let mut taken = Vec::new();
            if !self
                .take(max, &mut |queued, id| taken.push((queued, id)))
                .await?
            {
                return Ok(None);
            }
            let batch: Vec<Delivery<T>> = taken
                .into_iter()
                .filter_map(|(queued, id)| self.deliver(queued, id))
                .collect();
            if !batch.is_empty() {
                return Ok(Some(BatchDelivery::from_deliveries(batch)));
            }
        }
    }

    /// Waits for at least one message and takes up to `max`, handing each
    /// to `each`; `false` once the receiver is closed and drained.
    async fn take(
        &self,
        max: usize,
        each: &mut (impl FnMut(Queued, u64) + Send),
    ) -> Result<bool, ReceiveError> {
        let shared = self.shared();
        // Only register for a wake-up when nothing is ready.
        match self.try_take(max, each)? {
            Take::Got => return Ok(true),
            Take::Closed => return Ok(false),
            Take::Wait => {}
        }
        loop {
            let notified = shared.ready.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.try_take(max, each)? {
                Take::Got => return Ok(true),
                Take::Closed => return Ok(false),
                Take::Wait => notified.await,
            }
        }
    }

    fn try_take(
        &self,
        max: usize,
        each: &mut impl FnMut(Queued, u64),
    ) -> Result<Take, ReceiveError> {
        let shared = self.shared();
        let now = Instant::now();
        let mut expired = 0;
        let mut taken = 0;
        let mut state = lock(&shared.state);
        while taken < max {
            let Some(queued) = state.pop(now, &shared.settings, &mut expired) else {
                break;
            };
            let reply = queued
                .message
                .reply
                .clone()
                .expect("queued messages have a reply subject");
            let id = state.start(&queued, reply, &shared.settings);
            each(queued, id);
            taken += 1;
        }
        let outcome = if taken > 0 {
            shared.maybe_wake_puller(&mut state);
            Ok(Take::Got)
        } else if let Some(fatal) = state.fatal.clone().filter(|_| state.queue.is_empty()) {
            Err(fatal)
        } else if state.disconnected {
            Err(ReceiveError::Disconnected)
        } else if state.intake_closed && state.unsubscribed && state.queue.is_empty() {
            Ok(Take::Closed)
        } else {
            shared.maybe_wake_puller(&mut state);
            Ok(Take::Wait)
        };
        drop(state);
        if expired > 0 {
            Counters::add(&shared.counters.expired, expired);
        }
        outcome
    }

    /// Turns a taken message into a delivery, or dead-letters it in the
    /// background (delivered too often, or undecodable).
    fn deliver(&self, queued: Queued, id: u64) -> Option<Delivery<T>> {
        let shared = self.shared();
        let Queued {
            message,
            info,
            received_at,
            key,
            ..
        } = queued;
        let decoded = if info.delivered > u64::from(shared.settings.max_attempts) {
            Err(DeadLetterReason::LeaseExpired)
        } else {
            (self.handle.decode)(&message)
                .map_err(|e| DeadLetterReason::Failed(format!("cannot decode: {e}")))
        };
        let async_nats::Message {
            subject,
            reply,
            payload,
            headers,
            ..
        } = message;
        let parts = Parts {
            id,
            reply: reply.expect("queued messages have a reply subject"),
            subject,
            headers,
            payload,
            info,
            received_at,
            key,
        };
        let inner = Inner::new(shared.clone(), parts);
        match decoded {
            Ok(item) => {
                Counters::add(&shared.counters.delivered, 1);
                if info.delivered > 1 {
                    Counters::add(&shared.counters.redelivered, 1);
                }
                Some(Delivery::new(item, inner))
            }
            Err(reason) => {
                tokio::spawn(inner.dead_letter_now(reason));
                None
            }
        }
    }

    /// Stops pulling: the background task withdraws its pull requests (a
    /// message already on its way still arrives); what was received can
    /// still be begun, and `begin` then returns `Ok(None)`. Deliveries in
    /// flight are unaffected. Applies to every clone.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) -> Result<(), Box<dyn std::error::Error>> {
    /// receiver.close();
    /// while let Some(delivery) = receiver.begin().await? {
    ///     delivery.commit().await?;
    /// }
    /// assert!(receiver.is_closed());
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(&self) {
        let shared = self.shared();
        lock(&shared.state).intake_closed = true;
        shared.wake.notify_one();
        shared.ready.notify_waiters();
    }

    /// Whether [`close`](Self::close) or a shutdown was called.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) {
    /// assert!(!receiver.is_closed());
    /// receiver.close();
    /// assert!(receiver.is_closed());
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        lock(&self.shared().state).intake_closed
    }

    /// A snapshot of what this receiver (all its clones) has done.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) {
    /// let m = receiver.metrics();
    /// println!("{} committed, {} dead-lettered, {} in flight", m.committed, m.dead_lettered, m.in_flight);
    /// # }
    /// ```
    pub fn metrics(&self) -> ReceiverMetrics {
        let shared = self.shared();
        let (in_flight, queued) = {
            let state = lock(&shared.state);
            (state.in_flight as u64, state.queue.len() as u64)
        };
        shared.counters.snapshot(in_flight, queued)
    }

    /// Stops gracefully: stops pulling, hands the messages received and not
    /// begun back to the server at once, lets the deliveries in flight end
    /// until `timeout`, then hands the rest back (their handlers' later
    /// `commit` or `rollback` is [`DeliveryError::ShutDown`](crate::DeliveryError::ShutDown)),
    /// and reports what ended how. "Handed back" is a nak without delay: the
    /// message goes to another consumer at once.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, the receiver stays closed; deliveries not
    /// yet handed back stay with their handlers, and messages whose hand-back
    /// was not sent come back when their lease runs out.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(receiver: async_patterns_txn_jetstream::Receiver) {
    /// let report = receiver.shutdown_async(std::time::Duration::from_secs(10)).await;
    /// println!("{} committed while shutting down, {} handed back", report.committed, report.handed_back);
    /// # }
    /// ```
    pub async fn shutdown_async(&self, timeout: Duration) -> ShutdownReport {
        let shared = self.shared();
        let deadline = Instant::now() + timeout;
        let before = shared.counters.snapshot(0, 0);
        {
            let mut state = lock(&shared.state);
            state.intake_closed = true;
            state.shutting_down = true;
        }
        shared.wake.notify_one();
        shared.ready.notify_waiters();
        // Hand the queue back only once the pull requests are withdrawn, or
        // the server would deliver it straight back to them.
        let withdrawn = Instant::now() + shared.settings.ack_timeout;
        loop {
            let notified = shared.ended.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if lock(&shared.state).unsubscribed {
                break;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(withdrawn.min(deadline)) => break,
            }
        }
        let queued: Vec<Queued> = lock(&shared.state).queue.drain(..).collect();
        let mut report = ShutdownReport::default();
        let (sent, unsent) = hand_back(shared, queued).await;
        report.returned = sent;
        report.unconfirmed += unsent;

        loop {
            let notified = shared.ended.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if lock(&shared.state).in_flight == 0 {
                break;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let after = shared.counters.snapshot(0, 0);
        report.committed = after.committed - before.committed;
        report.rolled_back = after.rolled_back - before.rolled_back;
        report.dead_lettered = after.dead_lettered - before.dead_lettered;

        // Take back what is still in flight.
        let revoked: Vec<async_nats::Subject> = lock(&shared.state)
            .revoke_all()
            .into_iter()
            .map(|lease| lease.reply)
            .collect();
        shared.ended.notify_waiters();
        let results = join_all(revoked.iter().map(|reply| {
            shared.acknowledge(
                reply,
                ack::nak(Duration::ZERO),
                Instant::now() + shared.settings.ack_timeout,
            )
        }))
        .await;
        for result in results {
            match result {
                Ok(()) => report.handed_back += 1,
                Err(_) => report.unconfirmed += 1,
            }
        }
        Counters::add(
            &shared.counters.rolled_back,
            report.handed_back + report.returned,
        );
        report
    }
}

/// Naks queued messages without delay; returns how many the server
/// confirmed and how many it did not (those come back after their lease).
async fn hand_back(shared: &Shared, queued: Vec<Queued>) -> (u64, u64) {
    let until = Instant::now() + shared.settings.ack_timeout;
    let results = join_all(queued.iter().filter_map(|q| {
        q.message
            .reply
            .as_ref()
            .map(|reply| shared.acknowledge(reply, ack::nak(Duration::ZERO), until))
    }))
    .await;
    let sent = results.iter().filter(|r| r.is_ok()).count() as u64;
    (sent, results.len() as u64 - sent)
}

/// What a [`Receiver::shutdown_async`] did.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::ShutdownReport;
///
/// let report = ShutdownReport::default();
/// assert_eq!(report.handed_back, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Deliveries in flight that were committed before the deadline.
    pub committed: u64,
    /// Deliveries in flight that were rolled back before the deadline.
    pub rolled_back: u64,
    /// Deliveries in flight that were dead-lettered before the deadline.
    pub dead_lettered: u64,
    /// Deliveries still in flight at the deadline, handed back to the server
    /// (confirmed).
    pub handed_back: u64,
    /// Messages received and never begun, handed back at once (confirmed).
    pub returned: u64,
    /// Hand-backs the server did not confirm: those messages come back when
    /// their lease runs out.
    pub unconfirmed: u64,
}

impl Inner {
    /// Dead-letters a message that never reached a handler.
    pub(crate) async fn dead_letter_now(self, reason: DeadLetterReason) {
        // Failures leave the message to come back after its lease.
        let _ = self.end(End::DeadLetter(reason)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_filters_match_like_nats() {
        assert!(subject_matches("orders.>", "orders.eu.1"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*", "orders.eu"));
        assert!(!subject_matches("orders.*", "orders.eu.1"));
        assert!(subject_matches("orders.eu", "orders.eu"));
        assert!(!subject_matches("orders.eu", "orders.us"));
        assert!(subject_matches(">", "anything.at.all"));
    }

    #[test]
    fn names_with_subject_characters_are_rejected() {
        assert!(valid_name("stream", Some("ORDERS")).is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            let err = valid_name("stream", Some(bad)).unwrap_err();
            assert_eq!(err.field(), "stream");
        }
        assert_eq!(valid_name("consumer", None).unwrap_err().value(), "none");
    }
}
