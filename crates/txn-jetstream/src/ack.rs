//! What JetStream says about a delivery, read from its ack reply subject,
//! and the bodies of the acknowledgements the receiver sends back.
//!
//! The reply subject of a delivered message is
//! `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<published ns>.<pending>`
//! (servers before 2.9) or
//! `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<published ns>.<pending>[.<token>…]`.
//! Parsed here rather than through `async_nats::jetstream::Message::info`,
//! whose timestamp type changes with the client's `chrono` feature.

use std::time::Duration;

use bytes::Bytes;

/// The delivery facts of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckInfo {
    /// How many times the message has been delivered, this time included.
    pub(crate) delivered: u64,
    pub(crate) stream_sequence: u64,
    pub(crate) consumer_sequence: u64,
    /// When the message was stored in the stream, in nanoseconds since the
    /// Unix epoch.
    pub(crate) published_nanos: i128,
    /// Messages the consumer still had to deliver after this one.
    pub(crate) pending: u64,
}

impl AckInfo {
    /// Parses a `$JS.ACK.…` reply subject; `None` if it is not one.
    pub(crate) fn parse(reply: &str) -> Option<AckInfo> {
        let rest = reply.strip_prefix("$JS.ACK.")?;
        let tokens: Vec<&str> = rest.split('.').collect();
        // The tokens after stream and consumer.
        let numbers = match tokens.len() {
            7 => &tokens[2..7],
            n if n >= 9 => &tokens[4..9],
            _ => return None,
        };
        Some(AckInfo {
            delivered: numbers[0].parse().ok()?,
            stream_sequence: numbers[1].parse().ok()?,
            consumer_sequence: numbers[2].parse().ok()?,
            published_nanos: numbers[3].parse().ok()?,
            pending: numbers[4].parse().ok()?,
        })
    }

    /// The attempt number as the handler sees it (saturating at `u32::MAX`).
    pub(crate) fn attempt(&self) -> u32 {
        u32::try_from(self.delivered).unwrap_or(u32::MAX)
    }
}

pub(crate) const ACK: Bytes = Bytes::from_static(b"+ACK");
pub(crate) const PROGRESS: Bytes = Bytes::from_static(b"+WPI");

/// `-NAK`, with a redelivery delay when there is one.
pub(crate) fn nak(delay: Duration) -> Bytes {
    if delay.is_zero() {
        Bytes::from_static(b"-NAK")
    } else {
        Bytes::from(format!("-NAK {{\"delay\":{}}}", delay.as_nanos()))
    }
}

/// `+TERM` with a reason, which the server puts in its terminated advisory.
pub(crate) fn term(reason: &str) -> Bytes {
    Bytes::from(format!("+TERM {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_reply_subjects_are_parsed() {
        let info =
            AckInfo::parse("$JS.ACK._.ACCHASH.ORDERS.workers.3.1042.77.1733486400123456789.12.tok")
                .expect("parsed");
        assert_eq!(
            info,
            AckInfo {
                delivered: 3,
                stream_sequence: 1042,
                consumer_sequence: 77,
                published_nanos: 1_733_486_400_123_456_789,
                pending: 12,
            }
        );
        assert_eq!(info.attempt(), 3);
    }

    #[test]
    fn legacy_reply_subjects_are_parsed() {
        let info =
            AckInfo::parse("$JS.ACK.ORDERS.workers.1.5.5.1733486400000000000.0").expect("parsed");
        assert_eq!(info.delivered, 1);
        assert_eq!(info.stream_sequence, 5);
    }

    #[test]
    fn other_subjects_are_not_deliveries() {
        assert_eq!(AckInfo::parse("_INBOX.abc"), None);
        assert_eq!(AckInfo::parse("$JS.ACK.ORDERS.workers.x.5.5.1.0"), None);
        assert_eq!(AckInfo::parse("$JS.ACK.a.b.c"), None);
    }

    #[test]
    fn nak_carries_its_delay_in_nanoseconds() {
        assert_eq!(nak(Duration::ZERO), Bytes::from_static(b"-NAK"));
        assert_eq!(
            nak(Duration::from_millis(1500)),
            Bytes::from_static(b"-NAK {\"delay\":1500000000}")
        );
        assert_eq!(term("failed"), Bytes::from_static(b"+TERM failed"));
    }
}
