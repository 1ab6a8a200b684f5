//! Dead letters on the wire: the headers a dead-lettered message carries,
//! how the receiver writes them, and [`DeadLetter`], which reads them back
//! for whoever consumes the dead-letter stream.

use std::fmt;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_patterns_core::DeadLetterReason;
use bytes::Bytes;

use crate::time::{format_rfc3339, parse_rfc3339};

/// The names of the headers a dead letter carries, besides the original
/// message's own headers (its `Nats-*` headers are left out, so that the
/// original's de-duplication id and expectations do not apply to the copy).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::headers;
///
/// assert_eq!(headers::REASON, "Dead-Letter-Reason");
/// ```
pub mod headers {
    /// The stream the message was taken from.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::STREAM, "Dead-Letter-Stream");
    /// ```
    pub const STREAM: &str = "Dead-Letter-Stream";
    /// The consumer that gave up on it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::CONSUMER, "Dead-Letter-Consumer");
    /// ```
    pub const CONSUMER: &str = "Dead-Letter-Consumer";
    /// Its sequence number in that stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::SEQUENCE, "Dead-Letter-Sequence");
    /// ```
    pub const SEQUENCE: &str = "Dead-Letter-Sequence";
    /// The subject it was published on.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::SUBJECT, "Dead-Letter-Subject");
    /// ```
    pub const SUBJECT: &str = "Dead-Letter-Subject";
    /// How many times it was delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::ATTEMPTS, "Dead-Letter-Attempts");
    /// ```
    pub const ATTEMPTS: &str = "Dead-Letter-Attempts";
    /// Why: [`DeadLetterReason::as_label`](async_patterns_core::DeadLetterReason::as_label)
    /// (`max_attempts`, `failed`, `lease_expired`, `panicked`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::REASON, "Dead-Letter-Reason");
    /// ```
    pub const REASON: &str = "Dead-Letter-Reason";
    /// Why, in words: the reason's `Display` (`failed: <the handler's
    /// text>` for a `fail`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::REASON_TEXT, "Dead-Letter-Reason-Text");
    /// ```
    pub const REASON_TEXT: &str = "Dead-Letter-Reason-Text";
    /// When the original was stored in its stream (RFC 3339, UTC).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::PUBLISHED, "Dead-Letter-Published");
    /// ```
    pub const PUBLISHED: &str = "Dead-Letter-Published";
    /// When its last attempt was received by the consumer (RFC 3339, UTC).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::LAST_DELIVERED, "Dead-Letter-Last-Delivered");
    /// ```
    pub const LAST_DELIVERED: &str = "Dead-Letter-Last-Delivered";
    /// When it was dead-lettered (RFC 3339, UTC).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::TIME, "Dead-Letter-Time");
    /// ```
    pub const TIME: &str = "Dead-Letter-Time";
    /// The original's own de-duplication id (`Nats-Msg-Id`), if it had one.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::headers;
    ///
    /// assert_eq!(headers::MESSAGE_ID, "Dead-Letter-Message-Id");
    /// ```
    pub const MESSAGE_ID: &str = "Dead-Letter-Message-Id";
}

/// A message the receiver gave up on, read back from the dead-letter
/// subject: the original payload and headers, and the facts of its
/// delivery — where it came from, how often it was delivered, why it was
/// given up on, and when.
///
/// # Examples
///
/// ```
/// use async_patterns_core::DeadLetterReason;
/// use async_patterns_txn_jetstream::DeadLetter;
///
/// # fn read(message: async_nats::Message) -> Result<(), Box<dyn std::error::Error>> {
/// // `message` was taken from the dead-letter stream.
/// let dead = DeadLetter::from_message(&message)?;
/// if let DeadLetterReason::Failed(why) = dead.reason() {
///     eprintln!("{}#{} given up on after {} attempts: {why}",
///         dead.stream(), dead.stream_sequence(), dead.attempts());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    payload: Bytes,
    headers: HeaderMap,
    stream: String,
    consumer: String,
    stream_sequence: u64,
    subject: String,
    attempts: u32,
    reason: DeadLetterReason,
    published: Option<SystemTime>,
    last_delivered: Option<SystemTime>,
    dead_lettered: Option<SystemTime>,
}

/// The facts of a dead letter, for writing its headers.
pub(crate) struct Facts<'a> {
    pub(crate) stream: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) stream_sequence: u64,
    pub(crate) subject: &'a str,
    pub(crate) attempts: u32,
    pub(crate) reason: &'a DeadLetterReason,
    pub(crate) published: Option<SystemTime>,
    pub(crate) last_delivered: SystemTime,
    pub(crate) now: SystemTime,
}

impl Facts<'_> {
    /// The dead letter's headers: the original's (without `Nats-*`) and ours.
    pub(crate) fn headers(&self, original: Option<&HeaderMap>) -> HeaderMap {
        let mut out = HeaderMap::new();
        if let Some(original) = original {
            for (name, values) in original.iter() {
                let name: &str = name.as_ref();
                if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
                    if name.eq_ignore_ascii_case("Nats-Msg-Id")
                        && let Some(id) = values.first()
                    {
                        out.insert(headers::MESSAGE_ID, id.as_str());
                    }
                    continue;
                }
                for value in values {
                    out.append(name, value.as_str());
                }
            }
        }
        out.insert(headers::STREAM, self.stream);
        out.insert(headers::CONSUMER, self.consumer);
        out.insert(headers::SEQUENCE, self.stream_sequence.to_string().as_str());
        out.insert(headers::SUBJECT, self.subject);
        out.insert(headers::ATTEMPTS, self.attempts.to_string().as_str());
        out.insert(headers::REASON, self.reason.as_label());
        out.insert(
            headers::REASON_TEXT,
            one_line(&self.reason.to_string()).as_str(),
        );
        if let Some(published) = self.published {
            out.insert(headers::PUBLISHED, format_rfc3339(published).as_str());
        }
        out.insert(
            headers::LAST_DELIVERED,
            format_rfc3339(self.last_delivered).as_str(),
        );
        out.insert(headers::TIME, format_rfc3339(self.now).as_str());
        out
    }
}

/// The de-duplication id of the dead letter of one message of one consumer:
/// the same on every attempt, so that a dead letter published twice (a crash
/// between publishing it and terminating the original) is stored once.
pub(crate) fn dead_letter_id(stream: &str, consumer: &str, stream_sequence: u64) -> String {
    format!("dead-letter:{stream}:{consumer}:{stream_sequence}")
}

/// Header values cannot hold line breaks.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

impl DeadLetter {
    /// Reads a dead letter from a message taken from the dead-letter subject
    /// (a core NATS message, as a subscriber or a JetStream consumer of the
    /// dead-letter stream receives it).
    ///
    /// # Errors
    ///
    /// [`NotADeadLetter`] when a header this crate writes is missing or
    /// malformed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_txn_jetstream::DeadLetter;
    ///
    /// let message = async_nats::Message {
    ///     subject: "dead.orders".into(),
    ///     reply: None,
    ///     payload: "x".into(),
    ///     headers: None,
    ///     status: None,
    ///     description: None,
    ///     length: 1,
    /// };
    /// let err = DeadLetter::from_message(&message).unwrap_err();
    /// assert_eq!(err.to_string(), "not a dead letter: no `Dead-Letter-Stream` header");
    /// ```
    pub fn from_message(message: &async_nats::Message) -> Result<DeadLetter, NotADeadLetter> {
        let empty = HeaderMap::new();
        Self::from_parts(message.headers.as_ref().unwrap_or(&empty), &message.payload)
    }

    /// Reads a dead letter from a message read back from the dead-letter
    /// stream by sequence (`Stream::get_raw_message`, as an audit or a
    /// replay tool does).
    ///
    /// # Errors
    ///
    /// [`NotADeadLetter`] when a header this crate writes is missing or
    /// malformed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use async_patterns_txn_jetstream::DeadLetter;
    ///
    /// # async fn audit(context: async_nats::jetstream::Context) -> Result<(), Box<dyn std::error::Error>> {
    /// let stream = context.get_stream("DEAD").await?;
    /// let last = stream.get_info().await?.state.last_sequence;
    /// for sequence in 1..=last {
    ///     let raw = stream.get_raw_message(sequence).await?;
    ///     let letter = DeadLetter::from_stream_message(&raw)?;
    ///     println!(
    ///         "{}/{}: {} attempts, {:?}",
    ///         letter.stream(),
    ///         letter.stream_sequence(),
    ///         letter.attempts(),
    ///         letter.reason()
    ///     );
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_stream_message(
        message: &async_nats::jetstream::message::StreamMessage,
    ) -> Result<DeadLetter, NotADeadLetter> {
        Self::from_parts(&message.headers, &message.payload)
    }

    fn from_parts(all: &HeaderMap, payload: &Bytes) -> Result<DeadLetter, NotADeadLetter> {
        let get = |name: &'static str| -> Result<&str, NotADeadLetter> {
            all.get(name)
                .map(|v| v.as_str())
                .ok_or(NotADeadLetter { header: name })
        };
        let parse_u64 = |name: &'static str| -> Result<u64, NotADeadLetter> {
            get(name)?
                .parse()
                .map_err(|_| NotADeadLetter { header: name })
        };
        let time = |name: &'static str| -> Result<Option<SystemTime>, NotADeadLetter> {
            match all.get(name) {
                None => Ok(None),
                Some(v) => parse_rfc3339(v.as_str())
                    .map(Some)
                    .ok_or(NotADeadLetter { header: name }),
            }
        };
        let mut original = HeaderMap::new();
        for (name, values) in all.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Dead-Letter-") || name.starts_with("Nats-") {
                continue;
            }
            for value in values {
                original.append(name, value.as_str());
            }
        }
        let stream = get(headers::STREAM)?.to_owned();
        let consumer = get(headers::CONSUMER)?.to_owned();
        let stream_sequence = parse_u64(headers::SEQUENCE)?;
        let subject = get(headers::SUBJECT)?.to_owned();
        let attempts =
            u32::try_from(parse_u64(headers::ATTEMPTS)?).map_err(|_| NotADeadLetter {
                header: headers::ATTEMPTS,
            })?;
        let label = get(headers::REASON)?;
        let text = get(headers::REASON_TEXT)?;
        let reason = match label {
            "max_attempts" => DeadLetterReason::MaxAttempts,
            "lease_expired" => DeadLetterReason::LeaseExpired,
            "panicked" => DeadLetterReason::Panicked,
            "failed" => {
                DeadLetterReason::Failed(text.strip_prefix("failed: ").unwrap_or(text).to_owned())
            }
            _ => {
                return Err(NotADeadLetter {
                    header: headers::REASON,
                });
            }
        };
        Ok(DeadLetter {
            payload: payload.clone(),
            headers: original,
            stream,
            consumer,
            stream_sequence,
            subject,
            attempts,
            reason,
            published: time(headers::PUBLISHED)?,
            last_delivered: time(headers::LAST_DELIVERED)?,
            dead_lettered: time(headers::TIME)?,
        })
    }

    /// The original payload.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// let bytes: &[u8] = dead.payload();
    /// # }
    /// ```
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The original's headers (without its `Nats-*` headers).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// let trace = dead.headers().get("Trace-Id");
    /// # }
    /// ```
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The stream the original was taken from.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// println!("from {}", dead.stream());
    /// # }
    /// ```
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer that gave up on it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// println!("by {}", dead.consumer());
    /// # }
    /// ```
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The original's sequence number in its stream.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// println!("#{}", dead.stream_sequence());
    /// # }
    /// ```
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// The subject the original was published on.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// println!("on {}", dead.subject());
    /// # }
    /// ```
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// How many times it was delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// assert!(dead.attempts() >= 1);
    /// # }
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why it was given up on.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::DeadLetterReason;
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// let poisoned = matches!(dead.reason(), DeadLetterReason::Failed(_));
    /// # }
    /// ```
    pub fn reason(&self) -> &DeadLetterReason {
        &self.reason
    }

    /// When the original was stored in its stream.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// let age = dead.published().and_then(|t| t.elapsed().ok());
    /// # }
    /// ```
    pub fn published(&self) -> Option<SystemTime> {
        self.published
    }

    /// When its last attempt was received. (JetStream does not tell a
    /// consumer when the first attempt was; [`published`](Self::published)
    /// is the earliest time known.)
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// let last = dead.last_delivered();
    /// # }
    /// ```
    pub fn last_delivered(&self) -> Option<SystemTime> {
        self.last_delivered
    }

    /// When it was dead-lettered.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(dead: async_patterns_txn_jetstream::DeadLetter) {
    /// let when = dead.dead_lettered();
    /// # }
    /// ```
    pub fn dead_lettered(&self) -> Option<SystemTime> {
        self.dead_lettered
    }
}

/// A message lacks a header every dead letter carries (or holds a value
/// that does not parse).
///
/// # Examples
///
/// ```
/// use async_patterns_txn_jetstream::NotADeadLetter;
///
/// # fn f(err: NotADeadLetter) {
/// println!("{err} ({})", err.header());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotADeadLetter {
    header: &'static str,
}

impl NotADeadLetter {
    /// The header that was missing or malformed.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(err: async_patterns_txn_jetstream::NotADeadLetter) {
    /// assert!(err.header().starts_with("Dead-Letter-"));
    /// # }
    /// ```
    pub fn header(&self) -> &'static str {
        self.header
    }
}

impl fmt::Display for NotADeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a dead letter: no `{}` header", self.header)
    }
}

impl std::error::Error for NotADeadLetter {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn facts(reason: &DeadLetterReason) -> Facts<'_> {
        Facts {
            stream: "ORDERS",
            consumer: "workers",
            stream_sequence: 42,
            subject: "orders.eu",
            attempts: 5,
            reason,
            published: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            last_delivered: UNIX_EPOCH + Duration::from_secs(1_700_000_010),
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_011),
        }
    }

    fn message(headers: HeaderMap) -> async_nats::Message {
        async_nats::Message {
            subject: "dead.orders".into(),
            reply: None,
            payload: Bytes::from_static(b"payload"),
            headers: Some(headers),
            status: None,
            description: None,
            length: 7,
        }
    }

    #[test]
    fn headers_round_trip_every_reason() {
        for reason in [
            DeadLetterReason::MaxAttempts,
            DeadLetterReason::Failed("bad\nrecord".into()),
            DeadLetterReason::LeaseExpired,
            DeadLetterReason::Panicked,
        ] {
            let mut original = HeaderMap::new();
            original.insert("Trace-Id", "t-1");
            original.insert("Nats-Msg-Id", "order-42");
            original.insert("Nats-Expected-Stream", "ORDERS");
            let headers = facts(&reason).headers(Some(&original));
            assert!(headers.get("Nats-Expected-Stream").is_none());
            let dead = DeadLetter::from_message(&message(headers)).expect("a dead letter");
            let expected = match &reason {
                // Line breaks cannot travel in a header.
                DeadLetterReason::Failed(_) => DeadLetterReason::Failed("bad record".into()),
                other => other.clone(),
            };
            assert_eq!(dead.reason(), &expected);
            assert_eq!(dead.stream(), "ORDERS");
            assert_eq!(dead.consumer(), "workers");
            assert_eq!(dead.stream_sequence(), 42);
            assert_eq!(dead.subject(), "orders.eu");
            assert_eq!(dead.attempts(), 5);
            assert_eq!(
                dead.published(),
                Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            );
            assert_eq!(
                dead.dead_lettered(),
                Some(UNIX_EPOCH + Duration::from_secs(1_700_000_011))
            );
            assert_eq!(
                dead.headers().get("Trace-Id").map(|v| v.as_str()),
                Some("t-1")
            );
            assert!(dead.headers().get(headers::MESSAGE_ID).is_none());
            assert_eq!(dead.payload(), &Bytes::from_static(b"payload"));
        }
    }

    #[test]
    fn the_originals_message_id_is_kept_under_a_header_of_ours() {
        let mut original = HeaderMap::new();
        original.insert("Nats-Msg-Id", "order-42");
        let headers = facts(&DeadLetterReason::MaxAttempts).headers(Some(&original));
        assert_eq!(
            headers.get(headers::MESSAGE_ID).map(|v| v.as_str()),
            Some("order-42")
        );
        assert!(headers.get("Nats-Msg-Id").is_none());
    }

    #[test]
    fn a_malformed_header_is_named() {
        let mut headers = facts(&DeadLetterReason::MaxAttempts).headers(None);
        headers.insert(headers::ATTEMPTS, "many");
        let err = DeadLetter::from_message(&message(headers)).unwrap_err();
        assert_eq!(err.header(), headers::ATTEMPTS);
    }
}
