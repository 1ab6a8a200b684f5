//! The errors of the crate: building a receiver or publisher
//! ([`BuildError`]), receiving ([`ReceiveError`]), ending a delivery
//! ([`DeliveryError`], [`BatchError`]) and publishing ([`PublishError`]).
//! Each says what happened to the message concerned, so that the caller
//! knows whether it can come back.

use std::fmt;
use std::sync::Arc;

use async_patterns_core::ConfigError;

/// The error behind a failed NATS operation, shared so that errors stay
/// `Clone`.
pub(crate) type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

pub(crate) fn source(error: impl std::error::Error + Send + Sync + 'static) -> Source {
    Arc::new(error)
}

pub(crate) fn message(text: impl Into<String>) -> Source {
    Arc::new(Text(text.into()))
}

#[derive(Debug)]
struct Text(String);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Text {}

/// Building a [`Receiver`](crate::Receiver) or [`Publisher`](crate::Publisher)
/// failed: a setting was out of range, or the server refused or lacked
/// something the setting names.
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
/// let client = async_nats::connect(server.url()).await?;
/// let context = async_nats::jetstream::new(client);
/// let err = Receiver::builder(context)
///     .stream("NO_SUCH_STREAM")
///     .consumer("workers")
///     .build()
///     .await
///     .unwrap_err();
/// assert!(matches!(err, BuildError::StreamNotFound { .. }));
/// assert_eq!(err.to_string(), "stream `NO_SUCH_STREAM` not found");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range, missing, or does not match the existing
    /// consumer it would bind.
    Config(ConfigError),
    /// The server runs without JetStream (or the account has none).
    NoJetStream,
    /// The stream does not exist; the receiver does not create streams.
    StreamNotFound {
        /// The stream name given to the builder.
        stream: String,
    },
    /// The consumer does not exist and the builder was told not to create it
    /// ([`create_if_missing(false)`](crate::ReceiverBuilder::create_if_missing)).
    ConsumerNotFound {
        /// The stream name.
        stream: String,
        /// The consumer name.
        consumer: String,
    },
    /// No stream stores the dead-letter subject, so a dead letter could not
    /// be kept; create one (see
    /// [`dead_letter_subject`](crate::ReceiverBuilder::dead_letter_subject)).
    NoDeadLetterStream {
        /// The dead-letter subject.
        subject: String,
    },
    /// A request to the server failed (timed out, connection lost, or
    /// refused with an error other than the ones above).
    Request(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => e.fmt(f),
            BuildError::NoJetStream => {
                f.write_str("the server has no JetStream (start it with -js)")
            }
            BuildError::StreamNotFound { stream } => write!(f, "stream `{stream}` not found"),
            BuildError::ConsumerNotFound { stream, consumer } => {
                write!(f, "consumer `{consumer}` not found on stream `{stream}`")
            }
            BuildError::NoDeadLetterStream { subject } => write!(
                f,
                "no stream stores the dead-letter subject `{subject}`: create one that does"
            ),
            BuildError::Request(e) => write!(f, "request to the server failed: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Config(e) => Some(e),
            BuildError::Request(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

/// [`Receiver::begin`](crate::Receiver::begin) could not wait for a message.
///
/// None of these loses a message: what was received and not begun goes back
/// to the server (it is redelivered when its lease runs out, at the latest).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::ReceiveError;
///
/// let err = ReceiveError::ConsumerDeleted;
/// assert_eq!(err.to_string(), "the consumer was deleted");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The consumer (or its stream) was deleted; the receiver is finished.
    ConsumerDeleted,
    /// The connection has been down for longer than the receiver's
    /// [`disconnect_timeout`](crate::ReceiverBuilder::disconnect_timeout).
    /// Not final: the client keeps reconnecting, and `begin` receives again
    /// once it has — unless the client itself was closed (drained or
    /// dropped), which is final.
    Disconnected,
    /// The server refused the pull requests (for a reason other than the
    /// above); the text is the server's.
    Refused(String),
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::ConsumerDeleted => f.write_str("the consumer was deleted"),
            ReceiveError::Disconnected => f.write_str("disconnected from the server"),
            ReceiveError::Refused(why) => write!(f, "the server refused to deliver: {why}"),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// Ending a [`Delivery`](crate::Delivery) did not happen as asked. Each
/// variant says where the message is now.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::DeliveryError;
///
/// let err = DeliveryError::LeaseExpired;
/// assert_eq!(
///     err.to_string(),
///     "the delivery's lease expired before it was ended: the message is not yours any more"
/// );
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The lease (the consumer's ack wait, renewed by in-progress acks) ran
    /// out before the delivery was ended, so nothing was sent: the server has
    /// delivered the message again, or will.
    LeaseExpired,
    /// The receiver was shut down and handed the message back to the server
    /// before the handler ended it; nothing was sent.
    ShutDown,
    /// The server did not confirm within the receiver's
    /// [`ack_timeout`](crate::ReceiverBuilder::ack_timeout) (it was
    /// unreachable, or the consumer is gone). The acknowledgement may or may
    /// not have arrived: the message is either ended as asked or delivered
    /// again — never lost.
    Unconfirmed(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// The dead letter could not be published (no stream stores the
    /// dead-letter subject, or the server did not confirm in time). The
    /// original message was not terminated: it is delivered again.
    DeadLetter(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::LeaseExpired => f.write_str(
                "the delivery's lease expired before it was ended: the message is not yours any more",
            ),
            DeliveryError::ShutDown => {
                f.write_str("the receiver shut down and handed the message back before it was ended")
            }
            DeliveryError::Unconfirmed(e) => {
                write!(f, "the server did not confirm in time ({e}): the message may be delivered again")
            }
            DeliveryError::DeadLetter(e) => write!(
                f,
                "the dead letter was not published ({e}): the message will be delivered again"
            ),
        }
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeliveryError::Unconfirmed(e) | DeliveryError::DeadLetter(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Ending a [`BatchDelivery`](crate::BatchDelivery) failed for some of its
/// messages; the others ended as asked.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::{BatchError, DeliveryError};
///
/// let err = BatchError::new(3, vec![(17, DeliveryError::LeaseExpired)]);
/// assert_eq!(err.ended(), 3);
/// assert_eq!(err.to_string(), "1 of 4 deliveries did not end as asked (first: stream sequence 17: \
///     the delivery's lease expired before it was ended: the message is not yours any more)");
/// ```
#[derive(Debug, Clone)]
pub struct BatchError {
    ended: usize,
    failed: Vec<(u64, DeliveryError)>,
}

impl BatchError {
    /// A batch where `ended` deliveries ended as asked and `failed` (stream
    /// sequence, error) did not.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{BatchError, DeliveryError};
    ///
    /// let err = BatchError::new(0, vec![(1, DeliveryError::ShutDown)]);
    /// assert_eq!(err.failed().len(), 1);
    /// ```
    pub fn new(ended: usize, failed: Vec<(u64, DeliveryError)>) -> BatchError {
        BatchError { ended, failed }
    }

    /// How many deliveries ended as asked.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::BatchError;
    ///
    /// assert_eq!(BatchError::new(2, vec![]).ended(), 2);
    /// ```
    pub fn ended(&self) -> usize {
        self.ended
    }

    /// The deliveries that did not, by stream sequence, with why.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{BatchError, DeliveryError};
    ///
    /// let err = BatchError::new(0, vec![(9, DeliveryError::LeaseExpired)]);
    /// assert_eq!(err.failed()[0].0, 9);
    /// ```
    pub fn failed(&self) -> &[(u64, DeliveryError)] {
        &self.failed
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} deliveries did not end as asked",
            self.failed.len(),
            self.failed.len() + self.ended
        )?;
        if let Some((sequence, e)) = self.failed.first() {
            write!(f, " (first: stream sequence {sequence}: {e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for BatchError {}

/// A publish was not confirmed by the server; the messages concerned are
/// handed back ([`into_inner`](Self::into_inner)).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::{OutgoingMessage, PublishError, PublishErrorKind};
///
/// let err = PublishError::new(PublishErrorKind::NoStream, vec![OutgoingMessage::new("orders.1", "x")]);
/// assert_eq!(err.kind(), PublishErrorKind::NoStream);
/// assert_eq!(err.to_string(), "1 message not published: no stream stores the subject");
/// assert_eq!(err.into_inner()[0].subject(), "orders.1");
/// ```
pub struct PublishError {
    kind: PublishErrorKind,
    messages: Vec<crate::OutgoingMessage>,
    source: Option<Source>,
}

/// Why a publish failed.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::PublishErrorKind;
///
/// assert_eq!(PublishErrorKind::Unconfirmed.to_string(), "the server did not confirm in time");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// No stream stores the subject (the server answered "no responders").
    NoStream,
    /// The server did not confirm within the publisher's `ack_timeout`, after
    /// every retry. The message may or may not be stored; publishing it again
    /// under the same id within the stream's duplicate window stores it at
    /// most once.
    Unconfirmed,
    /// The server refused the message (too large, a failed expectation
    /// header, a stream limit); retrying does not help.
    Rejected,
}

impl fmt::Display for PublishErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishErrorKind::NoStream => "no stream stores the subject",
            PublishErrorKind::Unconfirmed => "the server did not confirm in time",
            PublishErrorKind::Rejected => "the server rejected the message",
        })
    }
}

impl PublishError {
    /// An error of `kind` handing back `messages`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{PublishError, PublishErrorKind};
    ///
    /// let err = PublishError::new(PublishErrorKind::Rejected, vec![]);
    /// assert!(err.messages().is_empty());
    /// ```
    pub fn new(kind: PublishErrorKind, messages: Vec<crate::OutgoingMessage>) -> PublishError {
        PublishError {
            kind,
            messages,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: Source) -> PublishError {
        self.source = Some(source);
        self
    }

    /// Why.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{PublishError, PublishErrorKind};
    ///
    /// assert_eq!(PublishError::new(PublishErrorKind::NoStream, vec![]).kind(), PublishErrorKind::NoStream);
    /// ```
    pub fn kind(&self) -> PublishErrorKind {
        self.kind
    }

    /// The messages that were not published.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{OutgoingMessage, PublishError, PublishErrorKind};
    ///
    /// let err = PublishError::new(PublishErrorKind::NoStream, vec![OutgoingMessage::new("a", "1")]);
    /// assert_eq!(err.messages().len(), 1);
    /// ```
    pub fn messages(&self) -> &[crate::OutgoingMessage] {
        &self.messages
    }

    /// Hands back the messages that were not published, to publish again or
    /// keep elsewhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::{OutgoingMessage, PublishError, PublishErrorKind};
    ///
    /// let err = PublishError::new(PublishErrorKind::Unconfirmed, vec![OutgoingMessage::new("a", "1")]);
    /// let back = err.into_inner();
    /// assert_eq!(back[0].payload(), "1");
    /// ```
    pub fn into_inner(self) -> Vec<crate::OutgoingMessage> {
        self.messages
    }

    pub(crate) fn merge(&mut self, other: PublishError) {
        self.messages.extend(other.messages);
    }
}

impl fmt::Debug for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishError")
            .field("kind", &self.kind)
            .field("messages", &self.messages.len())
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.messages.len();
        write!(
            f,
            "{n} message{} not published: {}",
            if n == 1 { "" } else { "s" },
            self.kind
        )?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
