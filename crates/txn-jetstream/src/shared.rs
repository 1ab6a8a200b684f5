//! What a receiver's clones, its deliveries and its background task share:
//! the queue of received messages, the table of leases in flight, the
//! counters, and the acknowledgements sent to the server (confirmed, retried
//! through a reconnect, bounded by the lease).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::context::PublishErrorKind as NatsPublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::{Client, Subject};
use async_patterns_core::__private::lock;
use async_patterns_core::__private::loom::Mutex;
use async_patterns_core::{DeadLetterReason, Jitter, RetryPolicy};
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ack::{self, AckInfo};
use crate::dead_letter::{Facts, dead_letter_id};
use crate::error::{DeliveryError, ReceiveError, Source, message, source};
use crate::metrics::Counters;

/// The settings a built receiver runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) prefetch: usize,
    pub(crate) max_attempts: u32,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter_subject: String,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) ack_timeout: Duration,
    pub(crate) confirm_acks: bool,
    pub(crate) disconnect_timeout: Duration,
}

impl Settings {
    /// A delivery counts as expired a little before the server's ack wait
    /// runs out (which started when the server sent it), so that the two do
    /// not disagree about whose message it is.
    pub(crate) fn lease_margin(&self) -> Duration {
        (self.lease / 20).min(Duration::from_millis(500))
    }
}

/// A test hook run between publishing a dead letter and terminating the
/// original: the crash point the dead-letter order is designed for.
pub(crate) type Hook = Arc<dyn Fn() + Send + Sync>;

/// Computes the ordering key of a received message.
pub(crate) type KeyFn = Arc<dyn Fn(&async_nats::Message) -> u64 + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) context: async_nats::jetstream::Context,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) settings: Settings,
    pub(crate) key: Option<KeyFn>,
    pub(crate) counters: Counters,
    pub(crate) state: Mutex<State>,
    /// `begin` callers wait here for a message (or a key to free up).
    pub(crate) ready: Notify,
    /// The background task waits here for room to pull into.
    pub(crate) wake: Arc<Notify>,
    /// `shutdown_async` waits here for deliveries to end.
    pub(crate) ended: Notify,
    pub(crate) after_dead_letter_published: Option<Hook>,
    rng: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A message received from the server and not yet begun.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) message: async_nats::Message,
    pub(crate) info: AckInfo,
    pub(crate) received: Instant,
    pub(crate) received_at: SystemTime,
    pub(crate) key: Option<u64>,
}

/// A delivery's lease, while it is in flight.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) reply: Subject,
    pub(crate) deadline: Instant,
    pub(crate) renewed: Instant,
    pub(crate) renewing: bool,
}

/// Per-key ordering: a key is busy while a delivery of it is in flight, and
/// held after a rollback until that message comes back (or its delay and a
/// lease have passed, in case it went to another process).
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyState {
    Busy,
    Held {
        stream_sequence: u64,
        until: Instant,
    },
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) in_flight: usize,
    /// Messages asked for by pull requests and not yet received.
    pub(crate) requested: usize,
    /// Set when the background task was woken and has not run since, so
    /// that ending many deliveries wakes it once.
    pub(crate) puller_woken: bool,
    pub(crate) leases: HashMap<u64, Lease>,
    pub(crate) next_id: u64,
    pub(crate) keys: HashMap<u64, KeyState>,
    pub(crate) intake_closed: bool,
    /// Set once the background task has withdrawn its pull requests after
    /// the intake closed: nothing more will arrive.
    pub(crate) unsubscribed: bool,
    /// Every receiver handle is gone: nobody will begin what is queued.
    pub(crate) handles_dropped: bool,
    /// A shutdown waits for deliveries to end.
    pub(crate) shutting_down: bool,
    /// A final error (the consumer is gone).
    pub(crate) fatal: Option<ReceiveError>,
    /// Set while the connection has been down longer than the disconnect
    /// timeout.
    pub(crate) disconnected: bool,
}

impl State {
    /// Room for more messages: prefetch and in-flight limits together.
    pub(crate) fn room(&self, settings: &Settings) -> usize {
        let buffered = self.queue.len() + self.requested;
        let by_prefetch = settings.prefetch.saturating_sub(buffered);
        let by_in_flight = settings
            .max_in_flight
            .saturating_sub(buffered + self.in_flight);
        by_prefetch.min(by_in_flight)
    }

    /// Whether a pull request is worth sending now: at least half the
    /// prefetch is free, or nothing at all is queued or on its way. (Pulling
    /// whenever a single slot frees would cost the server a pull request per
    /// message.)
    pub(crate) fn wants_pull(&self, settings: &Settings) -> bool {
        let room = self.room(settings);
        room > 0
            && (room >= settings.prefetch.div_ceil(2)
                || (self.requested == 0 && self.queue.is_empty()))
    }

    /// Takes the first queued message whose key is free, in queue order, and
    /// drops (counting them) those whose lease ran out while they waited.
    pub(crate) fn pop(
        &mut self,
        now: Instant,
        settings: &Settings,
        expired: &mut u64,
    ) -> Option<Queued> {
        let stale_after = settings.lease.saturating_sub(settings.lease_margin());
        let mut i = 0;
        while i < self.queue.len() {
            let q = &self.queue[i];
            if now.saturating_duration_since(q.received) >= stale_after {
                // The server has delivered it again (or will); it is not ours.
                self.queue.remove(i);
                *expired += 1;
                continue;
            }
            let free = match q.key.and_then(|k| self.keys.get(&k)) {
                None => true,
                Some(KeyState::Busy) => false,
                Some(KeyState::Held {
                    stream_sequence,
                    until,
                }) => *stream_sequence == q.info.stream_sequence || now >= *until,
            };
            if free {
                return self.queue.remove(i);
            }
            i += 1;
        }
        None
    }

    /// Registers a delivery of `q`: its lease, its key, the in-flight count.
    pub(crate) fn start(&mut self, q: &Queued, reply: Subject, settings: &Settings) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = q.received + settings.lease.saturating_sub(settings.lease_margin());
        self.leases.insert(
            id,
            Lease {
                reply,
                deadline,
                renewed: q.received,
                renewing: false,
            },
        );
        if let Some(k) = q.key {
            self.keys.insert(k, KeyState::Busy);
        }
        self.in_flight += 1;
        id
    }
}

/// The lease table's bookkeeping. A delivery ends in two steps, each under
/// the lock: its lease is taken out of the table ([`State::take_lease`]:
/// from then on no keep-alive renews it and no shutdown takes it back),
/// and, once the server has answered, it stops counting in flight
/// ([`State::finish`]). A shutdown takes back every lease still in the table
/// ([`State::revoke_all`]), and stops counting those itself. So each delivery
/// leaves the in-flight count exactly once, whoever gets to it first.
impl State {
    pub(crate) fn take_lease(&mut self, id: u64) -> Option<Lease> {
        self.leases.remove(&id)
    }

    /// A delivery whose lease was taken has ended: it no longer counts in
    /// flight, and its key is free, or held until `hold`'s instant for the
    /// rolled-back message of that stream sequence.
    pub(crate) fn finish(&mut self, key: Option<u64>, hold: Option<(u64, Instant)>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(k) = key {
            match hold {
                Some((stream_sequence, until)) => {
                    self.keys.insert(
                        k,
                        KeyState::Held {
                            stream_sequence,
                            until,
                        },
                    );
                }
                None => {
                    self.keys.remove(&k);
                }
            }
        }
    }

    /// Takes back every delivery still holding its lease (a shutdown's
    /// deadline): they no longer count in flight, and their keys are free.
    pub(crate) fn revoke_all(&mut self) -> Vec<Lease> {
        let leases: Vec<Lease> = self.leases.drain().map(|(_, lease)| lease).collect();
        self.in_flight = self.in_flight.saturating_sub(leases.len());
        self.keys.retain(|_, k| !matches!(k, KeyState::Busy));
        leases
    }

    /// Records a confirmed in-progress ack sent at `sent`; false if the
    /// lease is no longer in the table.
    pub(crate) fn renewed(&mut self, id: u64, sent: Instant, lease: Duration) -> bool {
        match self.leases.get_mut(&id) {
            Some(l) => {
                l.renewing = false;
                l.renewed = sent;
                l.deadline = sent + lease;
                true
            }
            None => false,
        }
    }
}

/// How a delivery ends.
#[derive(Debug, Clone)]
pub(crate) enum End {
    Commit,
    Nak(Duration),
    DeadLetter(DeadLetterReason),
}

/// The parts of a delivered message that ending it needs.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) id: u64,
    pub(crate) reply: Subject,
    pub(crate) subject: Subject,
    pub(crate) headers: Option<async_nats::HeaderMap>,
    pub(crate) payload: Bytes,
    pub(crate) info: AckInfo,
    pub(crate) received_at: SystemTime,
    pub(crate) key: Option<u64>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        context: async_nats::jetstream::Context,
        stream: String,
        consumer: String,
        settings: Settings,
        key: Option<KeyFn>,
        after_dead_letter_published: Option<Hook>,
    ) -> Shared {
        Shared {
            client,
            context,
            stream,
            consumer,
            settings,
            key,
            counters: Counters::default(),
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            wake: Arc::new(Notify::new()),
            ended: Notify::new(),
            after_dead_letter_published,
            rng: AtomicU64::new(random_seed()),
        }
    }

    /// Wakes the background task if there is room to pull into and it has
    /// not been woken already. Call with the state locked.
    pub(crate) fn maybe_wake_puller(&self, state: &mut State) {
        if !state.puller_woken && !state.intake_closed && state.wants_pull(&self.settings) {
            state.puller_woken = true;
            self.wake.notify_one();
        }
    }

    /// Ends the bookkeeping of delivery `id`: removes its lease, frees or
    /// holds its key, and lowers the in-flight count. Returns the lease, or
    /// `None` if a shutdown took it back already (and did the bookkeeping).
    pub(crate) fn take_lease(&self, id: u64) -> Option<Lease> {
        lock(&self.state).take_lease(id)
    }

    /// The in-flight bookkeeping after a delivery ended (or was abandoned).
    pub(crate) fn release(&self, key: Option<u64>, hold: Option<(u64, Duration)>) {
        let hold =
            hold.map(|(sequence, delay)| (sequence, Instant::now() + delay + self.settings.lease));
        let mut state = lock(&self.state);
        state.finish(key, hold);
        self.maybe_wake_puller(&mut state);
        let shutting_down = state.shutting_down;
        drop(state);
        if key.is_some() {
            self.ready.notify_waiters();
        }
        if shutting_down {
            self.ended.notify_waiters();
        }
    }

    /// The delay before the next attempt after `attempt` was rolled back.
    pub(crate) fn retry_delay(&self, attempt: u32) -> Duration {
        let policy = &self.settings.retry;
        let base = policy.base_delay(attempt.max(1));
        let low = match policy.jitter() {
            Jitter::None => return base,
            Jitter::Full => Duration::ZERO,
            Jitter::Proportional(f) => base.mul_f64(1.0 - f),
            _ => return base,
        };
        low + (base - low).mul_f64(self.next_fraction())
    }

    fn next_fraction(&self) -> f64 {
        // SplitMix64 over a shared counter: plenty for spreading retries.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Ends a delivery whose lease this caller holds (already taken from the
    /// table): sends what `how` asks and waits for the server to confirm.
    pub(crate) async fn finish(
        &self,
        parts: &Parts,
        how: End,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        match how {
            End::Commit => {
                self.acknowledge(&parts.reply, ack::ACK, deadline)
                    .await
                    .map_err(DeliveryError::Unconfirmed)?;
                Counters::add(&self.counters.committed, 1);
                Ok(())
            }
            End::Nak(delay) => {
                self.acknowledge(&parts.reply, ack::nak(delay), deadline)
                    .await
                    .map_err(DeliveryError::Unconfirmed)?;
                Counters::add(&self.counters.rolled_back, 1);
                Ok(())
            }
            End::DeadLetter(reason) => self.dead_letter(parts, &reason, deadline).await,
        }
    }

    /// Publishes the dead letter (confirmed, under an id that makes a second
    /// copy a duplicate), then terminates the original: a crash in between
    /// leaves the original to be delivered and dead-lettered again — stored
    /// once — and never loses it.
    pub(crate) async fn dead_letter(
        &self,
        parts: &Parts,
        reason: &DeadLetterReason,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let facts = Facts {
            stream: &self.stream,
            consumer: &self.consumer,
            stream_sequence: parts.info.stream_sequence,
            subject: parts.subject.as_str(),
            attempts: parts.info.attempt(),
            reason,
            published: crate::time::from_nanos(parts.info.published_nanos),
            last_delivered: parts.received_at,
            now: SystemTime::now(),
        };
        let headers = facts.headers(parts.headers.as_ref());
        let id = dead_letter_id(&self.stream, &self.consumer, parts.info.stream_sequence);
        let give_up = (Instant::now() + self.settings.ack_timeout).min(deadline);
        let mut pause = Duration::from_millis(50);
        loop {
            let publish = PublishMessage::build()
                .payload(parts.payload.clone())
                .headers(headers.clone())
                .message_id(&id);
            let remaining = give_up.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(remaining, async {
                let confirmation = self
                    .context
                    .send_publish(self.settings.dead_letter_subject.clone(), publish)
                    .await?;
                confirmation.await
            })
            .await;
            let error: Source = match attempt {
                Ok(Ok(_)) => break,
                Ok(Err(e))
                    if e.kind() == NatsPublishErrorKind::StreamNotFound
                        && no_stream_stores(&self.context, &self.settings.dead_letter_subject)
                            .await =>
                {
                    return Err(DeliveryError::DeadLetter(message(format!(
                        "no stream stores the dead-letter subject `{}`",
                        self.settings.dead_letter_subject
                    ))));
                }
                Ok(Err(e)) => source(e),
                Err(_) => message("timed out"),
            };
            if Instant::now() + pause >= give_up {
                return Err(DeliveryError::DeadLetter(error));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        if let Some(hook) = &self.after_dead_letter_published {
            hook();
        }
        self.acknowledge(&parts.reply, ack::term(reason.as_label()), deadline)
            .await
            .map_err(DeliveryError::Unconfirmed)?;
        Counters::add(&self.counters.dead_lettered, 1);
        Ok(())
    }

    /// Sends an acknowledgement body to a delivery's reply subject. With
    /// confirmations on, waits for the server's reply, retrying (through a
    /// reconnect) until the ack timeout or `deadline`, whichever is first.
    pub(crate) async fn acknowledge(
        &self,
        reply: &Subject,
        body: Bytes,
        deadline: Instant,
    ) -> Result<(), Source> {
        let give_up = (Instant::now() + self.settings.ack_timeout).min(deadline);
        if !self.settings.confirm_acks {
            // Almost always there is room on the connection at once: no timer.
            if let Some(sent) = self
                .client
                .publish(reply.clone(), body.clone())
                .now_or_never()
            {
                return sent.map_err(source);
            }
            let remaining = give_up.saturating_duration_since(Instant::now());
            return match tokio::time::timeout(remaining, self.client.publish(reply.clone(), body))
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(source(e)),
                Err(_) => Err(message("timed out")),
            };
        }
        let mut pause = Duration::from_millis(20);
        loop {
            let remaining = give_up.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(message("timed out"));
            }
            // The outer timeout bounds the whole request, the wait for room
            // on the connection included; the client's own timer is off.
            let request = async_nats::Request::new()
                .payload(body.clone())
                .timeout(None);
            let error = match tokio::time::timeout(
                remaining,
                self.client.send_request(reply.clone(), request),
            )
            .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => source(e),
                Err(_) => message("timed out"),
            };
            if Instant::now() + pause >= give_up {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Restarts the lease of delivery `id` with an in-progress ack
    /// (confirmed), and records the new deadline.
    pub(crate) async fn renew(&self, id: u64) -> Result<(), DeliveryError> {
        let (reply, deadline) = {
            let mut state = lock(&self.state);
            let Some(lease) = state.leases.get_mut(&id) else {
                return Err(DeliveryError::ShutDown);
            };
            if Instant::now() >= lease.deadline {
                return Err(DeliveryError::LeaseExpired);
            }
            lease.renewing = true;
            (lease.reply.clone(), lease.deadline)
        };
        let sent = Instant::now();
        let result = self.acknowledge(&reply, ack::PROGRESS, deadline).await;
        let effective = self
            .settings
            .lease
            .saturating_sub(self.settings.lease_margin());
        let mut state = lock(&self.state);
        match result {
            // Recorded unless the delivery ended or was taken back meanwhile.
            Ok(()) => {
                state.renewed(id, sent, effective);
                Ok(())
            }
            Err(e) => match state.leases.get_mut(&id) {
                Some(lease) => {
                    lease.renewing = false;
                    if Instant::now() >= lease.deadline {
                        Err(DeliveryError::LeaseExpired)
                    } else {
                        Err(DeliveryError::Unconfirmed(e))
                    }
                }
                None => Err(DeliveryError::Unconfirmed(e)),
            },
        }
    }

    /// The ordering key of a received message.
    pub(crate) fn key_of(&self, message: &async_nats::Message) -> Option<u64> {
        self.key.as_ref().map(|f| f(message))
    }
}

/// After a publish found no stream ("no responders"): whether that is so,
/// or JetStream is only not answering yet (a server starting up after a
/// restart answers "no responders" too, until its streams are loaded).
pub(crate) async fn no_stream_stores(
    context: &async_nats::jetstream::Context,
    subject: &str,
) -> bool {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    matches!(
        context
            .stream_by_subject(subject)
            .await
            .map_err(|e| e.kind()),
        Err(GetStreamByNameErrorKind::NotFound)
    )
}

fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            lease: Duration::from_secs(10),
            max_in_flight: 8,
            prefetch: 4,
            max_attempts: 3,
            retry: RetryPolicy::default(),
            dead_letter_subject: "dead".into(),
            keep_alive: None,
            ack_timeout: Duration::from_secs(1),
            confirm_acks: true,
            disconnect_timeout: Duration::from_secs(1),
        }
    }

    fn queued(sequence: u64, key: Option<u64>, received: Instant) -> Queued {
        Queued {
            message: async_nats::Message {
                subject: "s".into(),
                reply: None,
                payload: Bytes::new(),
                headers: None,
                status: None,
                description: None,
                length: 0,
            },
            info: AckInfo {
                delivered: 1,
                stream_sequence: sequence,
                consumer_sequence: sequence,
                published_nanos: 0,
                pending: 0,
            },
            received,
            received_at: SystemTime::now(),
            key,
        }
    }

    #[test]
    fn room_respects_prefetch_and_in_flight_together() {
        let s = settings();
        let mut state = State::default();
        assert_eq!(state.room(&s), 4);
        state.requested = 3;
        assert_eq!(state.room(&s), 1);
        assert!(!state.wants_pull(&s), "less than half the prefetch is free");
        state.requested = 0;
        state.in_flight = 6;
        assert_eq!(state.room(&s), 2);
        assert!(state.wants_pull(&s), "half the prefetch is free");
        state.in_flight = 7;
        assert!(state.wants_pull(&s), "nothing queued, nothing on its way");
        state.queue.push_back(queued(1, None, Instant::now()));
        assert_eq!(state.room(&s), 0);
        state.in_flight = 6;
        assert_eq!(state.room(&s), 1);
        assert!(
            !state.wants_pull(&s),
            "a message is queued: wait for half the prefetch"
        );
        state.in_flight = 8;
        assert_eq!(state.room(&s), 0);
        assert!(!state.wants_pull(&s));
    }

    #[tokio::test(start_paused = true)]
    async fn pop_keeps_key_order_and_skips_busy_and_held_keys() {
        let s = settings();
        let now = Instant::now();
        let mut state = State::default();
        for (seq, key) in [(1, 7), (2, 7), (3, 8), (4, 7)] {
            state.queue.push_back(queued(seq, Some(key), now));
        }
        let mut expired = 0;
        let first = state.pop(now, &s, &mut expired).expect("seq 1");
        assert_eq!(first.info.stream_sequence, 1);
        state.start(&first, "r".into(), &s);
        // Key 7 is busy: the next free message is seq 3 (key 8).
        let next = state.pop(now, &s, &mut expired).expect("seq 3");
        assert_eq!(next.info.stream_sequence, 3);
        state.start(&next, "r".into(), &s);
        assert!(state.pop(now, &s, &mut expired).is_none(), "both keys busy");
        // Seq 1 rolled back: key 7 is held for it; seq 2 waits.
        state.keys.insert(
            7,
            KeyState::Held {
                stream_sequence: 1,
                until: now + Duration::from_secs(5),
            },
        );
        assert!(state.pop(now, &s, &mut expired).is_none());
        // Seq 1 comes back: it goes first.
        state.queue.push_back(queued(1, Some(7), now));
        assert_eq!(
            state
                .pop(now, &s, &mut expired)
                .expect("seq 1 again")
                .info
                .stream_sequence,
            1
        );
        // A held key frees itself when the hold runs out.
        state.keys.insert(
            7,
            KeyState::Held {
                stream_sequence: 1,
                until: now + Duration::from_secs(5),
            },
        );
        let later = now + Duration::from_secs(5);
        assert_eq!(
            state
                .pop(later, &s, &mut expired)
                .expect("seq 2")
                .info
                .stream_sequence,
            2
        );
        assert_eq!(expired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_whose_lease_ran_out_in_the_queue_are_dropped_and_counted() {
        let s = settings();
        let start = Instant::now();
        let mut state = State::default();
        state.queue.push_back(queued(1, None, start));
        state
            .queue
            .push_back(queued(2, None, start + Duration::from_secs(5)));
        let mut expired = 0;
        let at = start + Duration::from_secs(10);
        assert_eq!(
            state
                .pop(at, &s, &mut expired)
                .expect("seq 2")
                .info
                .stream_sequence,
            2
        );
        assert_eq!(expired, 1);
    }

    #[test]
    fn lease_margin_is_a_twentieth_capped_at_half_a_second() {
        let mut s = settings();
        assert_eq!(s.lease_margin(), Duration::from_millis(500));
        s.lease = Duration::from_secs(2);
        assert_eq!(s.lease_margin(), Duration::from_millis(100));
    }
}

#[cfg(all(test, async_patterns_loom))]
mod loom {
    //! The lease table under loom: a delivery ending, a shutdown taking back
    //! what is in flight, and a keep-alive renewing, racing.
    use super::*;
    use async_patterns_core::__private::loom::{Arc, AtomicUsize, Mutex, Ordering};

    fn lease() -> Lease {
        let now = Instant::now();
        Lease {
            reply: "r".into(),
            deadline: now + Duration::from_secs(10),
            renewed: now,
            renewing: false,
        }
    }

    #[test]
    fn loom_each_delivery_leaves_the_in_flight_count_once() {
        ::loom::model(|| {
            let state = Arc::new(Mutex::new(State::default()));
            {
                let mut s = lock(&state);
                s.leases.insert(0, lease());
                s.leases.insert(1, lease());
                s.keys.insert(7, KeyState::Busy);
                s.in_flight = 2;
            }
            let released = Arc::new(AtomicUsize::new(0));

            // Delivery 0 is committed: lease out, then (after the server
            // answered) the bookkeeping.
            let ender = {
                let (state, released) = (state.clone(), released.clone());
                ::loom::thread::spawn(move || {
                    let taken = lock(&state).take_lease(0);
                    if taken.is_some() {
                        lock(&state).finish(Some(7), None);
                        released.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            // The keep-alive renews delivery 1.
            let renewer = {
                let state = state.clone();
                ::loom::thread::spawn(move || {
                    let now = Instant::now();
                    lock(&state).renewed(1, now, Duration::from_secs(10));
                })
            };
            // The shutdown's deadline: take back whatever is left.
            let revoked = lock(&state).revoke_all().len();
            released.fetch_add(revoked, Ordering::SeqCst);
            ender.join().unwrap();
            renewer.join().unwrap();

            let s = lock(&state);
            assert_eq!(
                released.load(Ordering::SeqCst),
                2,
                "each delivery released once"
            );
            assert_eq!(s.in_flight, 0);
            assert!(s.leases.is_empty());
            assert!(s.keys.is_empty(), "no key left busy");
        });
    }
}
