//! The receiver's background task: it pulls messages into the queue (never
//! more than the prefetch and in-flight limits leave room for), notices
//! lost pull requests and reconnections and pulls again, keeps the leases of
//! long deliveries alive with in-progress acks, and watches the connection.
//!
//! It pulls with its own requests rather than through async-nats' message
//! stream so that a message is only asked for when a handler has room for
//! it (a prefetched message's ack wait is already running), and so that a
//! slow handler, which does not poll, does not make the stream report
//! missed heartbeats.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::{StatusCode, Subject, Subscriber};
use async_patterns_core::__private::lock;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ack::AckInfo;
use crate::error::ReceiveError;
use crate::shared::{KeyState, Queued, Shared};

/// The server sends an idle heartbeat this often while a pull request waits.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A pull request lapses after this long (the server says so with a 408).
const EXPIRES: Duration = Duration::from_secs(10);
/// How often the task looks at the connection, the leases and the holds.
const TICK: Duration = Duration::from_millis(100);
/// After a failed pull, wait this long before the next.
const PULL_BACKOFF: Duration = Duration::from_millis(250);

/// The most messages taken from the pull inbox in one go.
const BURST: usize = 1024;

/// What the task does after it wakes.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Everything: the connection, leases, holds, and pulling.
    Periodic,
    /// Only see whether to pull.
    Pull,
    Nothing,
}

pub(crate) struct Puller {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    consumer: PullConsumer,
    inbox: Subject,
    subscriber: Option<Subscriber>,
    connects: u64,
    last_traffic: Instant,
    disconnected_since: Option<Instant>,
    next_pull: Instant,
    next_consumer_check: Instant,
    client: async_nats::Client,
    /// Messages taken from the inbox, not yet in the queue.
    arrived: Vec<Queued>,
}

impl Puller {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        consumer: PullConsumer,
        inbox: Subject,
        subscriber: Subscriber,
    ) -> Puller {
        Puller {
            shared: shared.clone(),
            wake: shared.wake.clone(),
            consumer,
            inbox,
            subscriber: Some(subscriber),
            connects: shared
                .client
                .statistics()
                .connects
                .load(std::sync::atomic::Ordering::Relaxed),
            last_traffic: Instant::now(),
            disconnected_since: None,
            next_pull: Instant::now(),
            next_consumer_check: Instant::now(),
            client: shared.client.clone(),
            arrived: Vec::new(),
        }
    }

    /// Runs until every receiver handle and delivery is gone (it holds the
    /// shared state itself, so that it can hand back what a dropped receiver
    /// had queued).
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        let mut work = Work::Periodic;
        loop {
            match work {
                Work::Periodic => self.maintain(&shared, true).await,
                Work::Pull => self.maintain(&shared, false).await,
                Work::Nothing => {}
            }
            // Two references: this task's and the local clone.
            if Arc::strong_count(&shared) <= 2 && lock(&shared.state).intake_closed {
                return;
            }
            work = tokio::select! {
                message = next(&mut self.subscriber) => match message {
                    // A message only fills the queue; a status may call for
                    // a new pull request.
                    Some(message) => {
                        let mut pull = self.receive(&shared, message);
                        // Take the rest of a burst too, so that the queue is
                        // locked (and `begin` woken) once for all of it.
                        for _ in 0..BURST {
                            let Some(Some(message)) =
                                self.subscriber.as_mut().and_then(|s| s.next().now_or_never())
                            else {
                                break;
                            };
                            pull |= self.receive(&shared, message);
                        }
                        self.flush_arrived(&shared);
                        if pull { Work::Pull } else { Work::Nothing }
                    }
                    // The client is closed for good.
                    None => {
                        self.subscriber = None;
                        let mut state = lock(&shared.state);
                        state.fatal.get_or_insert(ReceiveError::Disconnected);
                        state.unsubscribed = true;
                        drop(state);
                        shared.ready.notify_waiters();
                        shared.ended.notify_waiters();
                        Work::Pull
                    }
                },
                () = self.wake.notified() => Work::Pull,
                _ = tick.tick() => Work::Periodic,
            };
        }
    }

    /// Stops receiving: unsubscribing withdraws the pull requests still
    /// waiting (the server delivers only to a request whose inbox has
    /// interest, and the UNSUB travels before any later nak on the same
    /// connection); what had already arrived joins the queue. If every
    /// receiver handle is gone, the queue is handed back to the server.
    async fn close(&mut self, shared: &Arc<Shared>) {
        if let Some(mut subscriber) = self.subscriber.take() {
            let _ = subscriber.unsubscribe().await;
            while let Some(message) = subscriber.next().await {
                self.receive_after_close(shared, message);
            }
            self.flush_arrived(shared);
        }
        let returned: Vec<Queued> = {
            let mut state = lock(&shared.state);
            state.requested = 0;
            state.unsubscribed = true;
            if state.handles_dropped {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        shared.ready.notify_waiters();
        shared.ended.notify_waiters();
        for queued in returned {
            self.hand_back(queued.message);
        }
    }

    fn receive_after_close(&mut self, shared: &Arc<Shared>, message: async_nats::Message) {
        if matches!(message.status, None | Some(StatusCode::OK)) {
            self.enqueue(shared, message);
        }
    }

    /// Naks a message no handler will begin, so that another consumer gets
    /// it at once.
    fn hand_back(&self, message: async_nats::Message) {
        if let Some(reply) = message.reply {
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = client.publish(reply, crate::ack::nak(Duration::ZERO)).await;
            });
        }
    }

    /// Everything but receiving: a new pull request when there is room and,
    /// on each tick, the connection, lost pulls, leases and holds.
    async fn maintain(&mut self, shared: &Arc<Shared>, periodic: bool) {
        let now = Instant::now();
        let intake_closed = {
            let mut state = lock(&shared.state);
            state.puller_woken = false;
            state.intake_closed
        };
        if intake_closed && !lock(&shared.state).unsubscribed {
            self.close(shared).await;
        }
        if periodic {
            self.watch_connection(shared, now);
            self.keep_leases_alive(shared, now);
            self.expire_holds(shared, now);
        }
        if self.subscriber.is_some() && !intake_closed {
            self.pull(shared, now).await;
        }
    }

    fn watch_connection(&mut self, shared: &Arc<Shared>, now: Instant) {
        use async_nats::connection::State as Connection;
        let connects = shared
            .client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut state = lock(&shared.state);
        if connects != self.connects {
            // A new connection: the server forgot the pull requests of the old.
            self.connects = connects;
            state.requested = 0;
            self.next_pull = now;
        }
        if state.requested > 0
            && now.saturating_duration_since(self.last_traffic) > HEARTBEAT * 2 + TICK * 5
        {
            // Neither a message nor a heartbeat: the requests are lost.
            state.requested = 0;
        }
        let connected = shared.client.connection_state() == Connection::Connected;
        if connected {
            self.disconnected_since = None;
            if state.disconnected {
                state.disconnected = false;
            }
        } else {
            let since = *self.disconnected_since.get_or_insert(now);
            if !state.disconnected
                && now.saturating_duration_since(since) >= shared.settings.disconnect_timeout
            {
                state.disconnected = true;
                drop(state);
                shared.ready.notify_waiters();
            }
        }
    }

    /// Sends in-progress acks for deliveries whose lease was last renewed
    /// more than the keep-alive interval ago.
    fn keep_leases_alive(&mut self, shared: &Arc<Shared>, now: Instant) {
        let Some(interval) = shared.settings.keep_alive else {
            return;
        };
        let due: Vec<u64> = {
            let state = lock(&shared.state);
            state
                .leases
                .iter()
                .filter(|(_, lease)| {
                    !lease.renewing
                        && now.saturating_duration_since(lease.renewed) >= interval
                        && now < lease.deadline
                })
                .map(|(id, _)| *id)
                .collect()
        };
        for id in due {
            let shared = shared.clone();
            tokio::spawn(async move {
                // A failure is retried on a later tick; an expiry shows when
                // the delivery is ended.
                let _ = shared.renew(id).await;
            });
        }
    }

    /// Wakes `begin` callers when a held key's hold has run out.
    fn expire_holds(&mut self, shared: &Arc<Shared>, now: Instant) {
        let mut state = lock(&shared.state);
        let before = state.keys.len();
        state
            .keys
            .retain(|_, k| !matches!(k, KeyState::Held { until, .. } if now >= *until));
        let freed = state.keys.len() != before;
        drop(state);
        if freed {
            shared.ready.notify_waiters();
        }
    }

    async fn pull(&mut self, shared: &Arc<Shared>, now: Instant) {
        if now < self.next_pull {
            return;
        }
        let batch = {
            let state = lock(&shared.state);
            if state.fatal.is_some() || !state.wants_pull(&shared.settings) {
                return;
            }
            state.room(&shared.settings)
        };
        let request = BatchConfig {
            batch,
            expires: Some(EXPIRES),
            idle_heartbeat: HEARTBEAT,
            ..BatchConfig::default()
        };
        let sent = tokio::time::timeout(
            shared.settings.ack_timeout,
            self.consumer.request_batch(request, self.inbox.clone()),
        )
        .await;
        match sent {
            Ok(Ok(())) => {
                let mut state = lock(&shared.state);
                if state.requested == 0 {
                    self.last_traffic = Instant::now();
                }
                state.requested += batch;
            }
            _ => self.next_pull = Instant::now() + PULL_BACKOFF,
        }
    }

    /// Takes in what arrived on the pull inbox; returns whether it may call
    /// for a new pull request (a status, not a message).
    fn receive(&mut self, shared: &Arc<Shared>, message: async_nats::Message) -> bool {
        self.last_traffic = Instant::now();
        match message.status {
            None | Some(StatusCode::OK) => {
                self.enqueue(shared, message);
                return false;
            }
            Some(StatusCode::IDLE_HEARTBEAT) => return false,
            Some(StatusCode::TIMEOUT) | Some(StatusCode::REQUEST_TERMINATED) => {
                let description = message.description.clone().unwrap_or_default();
                let lapsed = pending_messages(&message);
                let mut state = lock(&shared.state);
                state.requested = match lapsed {
                    Some(n) => state.requested.saturating_sub(n),
                    None => 0,
                };
                let fatal = if description.eq_ignore_ascii_case("Consumer Deleted") {
                    Some(ReceiveError::ConsumerDeleted)
                } else if description.starts_with("Exceeded MaxRequest")
                    || description.eq_ignore_ascii_case("Consumer is push based")
                {
                    Some(ReceiveError::Refused(description))
                } else {
                    None
                };
                if let Some(fatal) = fatal {
                    state.fatal.get_or_insert(fatal);
                    drop(state);
                    shared.ready.notify_waiters();
                } else if message.status == Some(StatusCode::REQUEST_TERMINATED) {
                    // "Exceeded MaxWaiting", a leadership change, …: try again soon.
                    self.next_pull = Instant::now() + PULL_BACKOFF;
                }
            }
            Some(StatusCode::NOT_FOUND) => lock(&shared.state).requested = 0,
            Some(StatusCode::NO_RESPONDERS) => {
                // Nothing answers pull requests: JetStream is restarting, or
                // the consumer is gone. Ask which, in the background.
                lock(&shared.state).requested = 0;
                self.next_pull = Instant::now() + PULL_BACKOFF;
                self.check_consumer(shared);
            }
            Some(_) => {
                lock(&shared.state).requested = 0;
                self.next_pull = Instant::now() + PULL_BACKOFF;
            }
        }
        true
    }

    /// A message arrived: it joins the queue at the next `flush_arrived`.
    fn enqueue(&mut self, shared: &Arc<Shared>, message: async_nats::Message) {
        let Some(info) = message.reply.as_deref().and_then(AckInfo::parse) else {
            // Not a JetStream delivery; nothing to acknowledge.
            return;
        };
        let key = shared.key_of(&message);
        self.arrived.push(Queued {
            message,
            info,
            received: Instant::now(),
            received_at: SystemTime::now(),
            key,
        });
    }

    /// Moves what arrived into the queue, under one lock, and wakes `begin`.
    fn flush_arrived(&mut self, shared: &Arc<Shared>) {
        if self.arrived.is_empty() {
            return;
        }
        let mut state = lock(&shared.state);
        state.requested = state.requested.saturating_sub(self.arrived.len());
        state.queue.extend(self.arrived.drain(..));
        drop(state);
        shared.ready.notify_waiters();
    }

    fn check_consumer(&mut self, shared: &Arc<Shared>) {
        let now = Instant::now();
        if now < self.next_consumer_check {
            return;
        }
        self.next_consumer_check = now + Duration::from_secs(1);
        let consumer = self.consumer.clone();
        let weak = Arc::downgrade(shared);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let result = consumer.get_info().await;
            if let Some(shared) = weak.upgrade()
                && let Err(e) = result
                && matches!(
                    e.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                )
            {
                lock(&shared.state)
                    .fatal
                    .get_or_insert(ReceiveError::ConsumerDeleted);
                shared.ready.notify_waiters();
            }
            wake.notify_one();
        });
    }
}

/// The next message of the subscription, or never when there is none.
async fn next(subscriber: &mut Option<Subscriber>) -> Option<async_nats::Message> {
    match subscriber {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// How many messages of a pull request were left undelivered, from a status
/// message's `Nats-Pending-Messages` header.
fn pending_messages(message: &async_nats::Message) -> Option<usize> {
    message
        .headers
        .as_ref()?
        .get("Nats-Pending-Messages")?
        .as_str()
        .parse()
        .ok()
}
