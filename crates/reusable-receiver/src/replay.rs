//! At-least-once mode: [`ReplayConfig`] bounds the buffer of items yielded
//! to an attempt but not yet acknowledged, and [`WhenFull`] says what a
//! stream does when that buffer is full. The buffer itself is internal.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use async_patterns_core::ConfigError;

type Weigher<T> = Arc<dyn Fn(&T) -> usize + Send + Sync>;

/// What a stream in replay mode does when the replay buffer is full.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::{ReplayConfig, WhenFull};
///
/// let config = ReplayConfig::<u64>::builder()
///     .max_items(256)
///     .when_full(WhenFull::EndStream)
///     .build()?;
/// assert_eq!(config.when_full(), WhenFull::EndStream);
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Stop pulling new items until an acknowledgement makes room
    /// (backpressure reaches the senders through the bounded channel). Fits
    /// consumers that acknowledge as they go: a bidirectional stream whose
    /// server confirms progress, a local consumer. A client-streaming call
    /// that only acknowledges when it returns would wait forever once it has
    /// yielded `max_items` of a channel that stays open: use
    /// [`EndStream`](Self::EndStream) there.
    ///
    /// A full buffer never hides the end of the channel: a waiting stream
    /// watches the channel too (taking at most one item beyond the buffer
    /// out of it to do so), and ends once the channel is closed and nothing
    /// is held. An item that was taken out of the channel and not yet
    /// yielded — set aside by the weight bound — keeps the stream waiting
    /// for room, since it must be yielded before the stream may end.
    #[default]
    Wait,
    /// End the stream, so that the call can finish and acknowledge; the
    /// next stream carries on. Each attempt then carries at most one
    /// buffer's worth of items — a client-streaming call becomes a sequence
    /// of bounded batches: run attempts until
    /// [`is_drained`](crate::ReusableReceiver::is_drained).
    EndStream,
}

/// The bounds of the replay buffer of
/// [`ReusableReceiver::with_replay`](crate::ReusableReceiver::with_replay):
/// at most `max_items` unacknowledged items and, with a weigher, at most
/// `max_weight` of their total weight.
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::ReplayConfig;
///
/// // At most 1,000 items and 1 MiB of payload awaiting acknowledgement.
/// let config = ReplayConfig::builder()
///     .max_items(1_000)
///     .max_weight(1 << 20, |payload: &Vec<u8>| payload.len())
///     .build()?;
/// assert_eq!(config.max_weight(), Some(1 << 20));
///
/// let err = ReplayConfig::<Vec<u8>>::builder().max_items(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `max_items`: got 0, expected at least 1");
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
pub struct ReplayConfig<T> {
    max_items: usize,
    max_weight: Option<(usize, Weigher<T>)>,
    when_full: WhenFull,
}

impl<T> ReplayConfig<T> {
    /// Starts a builder: 1,024 items, no weight bound, [`WhenFull::Wait`];
    /// the same as [`ReplayConfigBuilder::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReplayConfig;
    ///
    /// let config = ReplayConfig::<String>::builder().build()?;
    /// assert_eq!(config.max_items(), 1_024);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn builder() -> ReplayConfigBuilder<T> {
        ReplayConfigBuilder::new()
    }

    /// The most unacknowledged items the buffer holds.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReplayConfig;
    ///
    /// let config = ReplayConfig::<u8>::builder().max_items(8).build()?;
    /// assert_eq!(config.max_items(), 8);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The most total weight of the unacknowledged items, if bounded.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReplayConfig;
    ///
    /// assert_eq!(ReplayConfig::<u8>::builder().build()?.max_weight(), None);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_weight(&self) -> Option<usize> {
        self.max_weight.as_ref().map(|(max, _)| *max)
    }

    /// What a stream does when the buffer is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, WhenFull};
    ///
    /// assert_eq!(ReplayConfig::<u8>::builder().build()?.when_full(), WhenFull::Wait);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }
}

impl<T> Clone for ReplayConfig<T> {
    fn clone(&self) -> Self {
        ReplayConfig {
            max_items: self.max_items,
            max_weight: self.max_weight.clone(),
            when_full: self.when_full,
        }
    }
}

impl<T> fmt::Debug for ReplayConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayConfig")
            .field("max_items", &self.max_items)
            .field("max_weight", &self.max_weight())
            .field("when_full", &self.when_full)
            .finish()
    }
}

/// Builds a validated [`ReplayConfig`]; see [`ReplayConfig::builder`].
///
/// # Examples
///
/// ```
/// use async_patterns_reusable_receiver::{ReplayConfig, WhenFull};
///
/// let config = ReplayConfig::builder()
///     .max_items(64)
///     .max_weight(4_096, |s: &String| s.len())
///     .when_full(WhenFull::EndStream)
///     .build()?;
/// assert_eq!((config.max_items(), config.max_weight()), (64, Some(4_096)));
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
pub struct ReplayConfigBuilder<T> {
    config: ReplayConfig<T>,
}

impl<T> ReplayConfigBuilder<T> {
    /// A builder with every option at its default: 1,024 items, no weight
    /// bound, [`WhenFull::Wait`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfigBuilder, WhenFull};
    ///
    /// let config = ReplayConfigBuilder::<u64>::new().build()?;
    /// assert_eq!((config.max_items(), config.max_weight()), (1_024, None));
    /// assert_eq!(config.when_full(), WhenFull::Wait);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn new() -> Self {
        ReplayConfigBuilder {
            config: ReplayConfig {
                max_items: 1_024,
                max_weight: None,
                when_full: WhenFull::Wait,
            },
        }
    }

    /// The most unacknowledged items; at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReplayConfig;
    ///
    /// let err = ReplayConfig::<u8>::builder().max_items(0).build().unwrap_err();
    /// assert_eq!(err.field(), "max_items");
    /// ```
    pub fn max_items(mut self, max_items: usize) -> Self {
        self.config.max_items = max_items;
        self
    }

    /// Also bounds the total weight of the unacknowledged items, each
    /// weighed once by `weigher` when it is pulled from the channel;
    /// `max_weight` is at least 1. An item heavier than `max_weight` on its
    /// own is admitted when the buffer is empty, so it cannot block forever.
    ///
    /// An item is weighed after it was taken out of the channel: one that
    /// does not fit is set aside, and comes next once an acknowledgement
    /// makes room. It is never lost: the stream does not end while it is
    /// set aside, and [`into_unacked`](crate::ReusableReceiver::into_unacked)
    /// and [`into_inner`](crate::ReusableReceiver::into_inner) hand it back.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReplayConfig;
    ///
    /// let err = ReplayConfig::builder()
    ///     .max_weight(0, |b: &Vec<u8>| b.len())
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `max_weight`: got 0, expected at least 1");
    /// ```
    pub fn max_weight(
        mut self,
        max_weight: usize,
        weigher: impl Fn(&T) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.config.max_weight = Some((max_weight, Arc::new(weigher)));
        self
    }

    /// What a stream does when the buffer is full; see [`WhenFull`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::{ReplayConfig, WhenFull};
    ///
    /// let config = ReplayConfig::<u8>::builder().when_full(WhenFull::EndStream).build()?;
    /// assert_eq!(config.when_full(), WhenFull::EndStream);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.config.when_full = when_full;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_items` or `max_weight` when it is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_reusable_receiver::ReplayConfig;
    ///
    /// assert!(ReplayConfig::<u8>::builder().max_items(1).build().is_ok());
    /// ```
    pub fn build(self) -> Result<ReplayConfig<T>, ConfigError> {
        let config = self.config;
        ConfigError::at_least("max_items", config.max_items, 1)?;
        if let Some((max_weight, _)) = &config.max_weight {
            ConfigError::at_least("max_weight", *max_weight, 1)?;
        }
        Ok(config)
    }
}

impl<T> Default for ReplayConfigBuilder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for ReplayConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayConfigBuilder")
            .field("config", &self.config)
            .finish()
    }
}

/// The items handed to attempts and not yet acknowledged, oldest first,
/// and the one item set aside because it did not fit the weight bound.
///
/// Items have absolute positions: `items[i]` is at `front + i`.
/// `items[..cursor]` were handed to the lease in force (or to none, between
/// leases: then `cursor` is 0); `items[cursor..]` wait to be replayed to it.
/// Every position below `delivered` was yielded to some lease at least once:
/// handing an item at a lower position again is a redelivery. A stream
/// takes items a chunk at a time, ahead of yielding them, so `delivered` is
/// advanced by the caller, once it knows how many a stream claimed
/// ([`mark_delivered`](Self::mark_delivered)); an item handed over and never
/// claimed (its stream was revoked or dropped first, or its `clone`
/// panicked) stays undelivered.
pub(crate) struct ReplayBuffer<T> {
    items: VecDeque<T>,
    /// The weight of each item of `items`, when a weigher is configured.
    weights: VecDeque<usize>,
    weight: usize,
    front: u64,
    cursor: usize,
    delivered: u64,
    /// An item taken from the channel that did not fit the weight bound; it
    /// comes next, before anything staged or still in the channel.
    parked: Option<T>,
    clone: fn(&T) -> T,
    config: ReplayConfig<T>,
}

/// What the buffer wants from the channel next.
pub(crate) enum Next<T> {
    /// A copy of the item at the cursor, handed to the lease (a replay, the
    /// parked item, or one just admitted); `redelivery` when an earlier
    /// lease was given it already.
    Yield { item: T, redelivery: bool },
    /// Pull the next item from the channel and [`admit`](ReplayBuffer::admit) it.
    Pull,
    /// The buffer is full.
    Full,
}

impl<T> ReplayBuffer<T> {
    pub(crate) fn new(config: ReplayConfig<T>, clone: fn(&T) -> T) -> Self {
        ReplayBuffer {
            items: VecDeque::with_capacity(config.max_items.min(1_024)),
            weights: VecDeque::new(),
            weight: 0,
            front: 0,
            cursor: 0,
            delivered: 0,
            parked: None,
            clone,
            config,
        }
    }

    pub(crate) fn when_full(&self) -> WhenFull {
        self.config.when_full
    }

    /// The absolute position of the next item handed to the lease.
    pub(crate) fn cursor_position(&self) -> u64 {
        self.front + self.cursor as u64
    }

    /// The next item for the lease in force, if the buffer decides it.
    pub(crate) fn next(&mut self) -> Next<T> {
        if let Some(item) = self.items.get(self.cursor) {
            // Cloned before the cursor moves: a panicking `clone` changes nothing.
            let item = (self.clone)(item);
            let redelivery = self.cursor_position() < self.delivered;
            self.cursor += 1;
            return Next::Yield { item, redelivery };
        }
        if self.items.len() >= self.config.max_items {
            return Next::Full;
        }
        match self.parked.take() {
            Some(item) => self.admit(item),
            None => Next::Pull,
        }
    }

    /// Takes `item`, just pulled from the channel (or parked), into the
    /// buffer and returns the copy to hand over — or parks it if it does not
    /// fit the weight bound.
    pub(crate) fn admit(&mut self, item: T) -> Next<T> {
        let mut weight = None;
        let item = match &self.config.max_weight {
            None => item,
            Some((max, weigher)) => {
                // Parked while the user's weigher runs, so that a panic there
                // loses nothing.
                let w = weigher(self.parked.insert(item));
                if !self.items.is_empty() && self.weight.saturating_add(w) > *max {
                    return Next::Full;
                }
                weight = Some(w);
                self.parked.take().expect("parked above")
            }
        };
        self.items.push_back(item);
        if let Some(w) = weight {
            self.weights.push_back(w);
            self.weight += w;
        }
        // The item is in the buffer before `clone` runs: if it panics, the
        // item is simply next in line, not yet delivered.
        let item = (self.clone)(self.items.back().expect("pushed above"));
        self.cursor += 1;
        Next::Yield {
            item,
            redelivery: false,
        }
    }

    /// Every position below `end` was yielded to a lease.
    pub(crate) fn mark_delivered(&mut self, end: u64) {
        self.delivered = self.delivered.max(end);
    }

    /// Removes the `n` oldest items, which the lease in force yielded and
    /// its consumer confirmed. `n <= cursor`.
    pub(crate) fn acknowledge(&mut self, n: usize) {
        debug_assert!(n <= self.cursor);
        self.items.drain(..n);
        if !self.weights.is_empty() {
            self.weight -= self.weights.drain(..n).sum::<usize>();
        }
        self.front += n as u64;
        self.cursor -= n;
    }

    /// The lease ended: everything unacknowledged is replayed to the next.
    pub(crate) fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Takes `n` items handed to the lease in force back (its stream was
    /// dropped before yielding them): they are next in line again.
    pub(crate) fn unhand(&mut self, n: usize) {
        debug_assert!(n <= self.cursor);
        self.cursor -= n;
    }

    /// How many more items the buffer can take, by count.
    pub(crate) fn room(&self) -> usize {
        self.config.max_items.saturating_sub(self.items.len())
    }

    /// Whether the buffer refuses new items until an acknowledgement.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= self.config.max_items || self.parked.is_some()
    }

    /// Items yielded to a lease and not acknowledged, given that positions
    /// below `delivered` (at least the buffer's own mark) were yielded.
    pub(crate) fn unacked(&self, delivered: u64) -> usize {
        let delivered = delivered.max(self.delivered);
        (delivered.saturating_sub(self.front) as usize).min(self.items.len())
    }

    /// Items in the buffer never yielded: admitted for a stream that did not
    /// claim them.
    pub(crate) fn undelivered(&self, delivered: u64) -> usize {
        self.items.len() - self.unacked(delivered)
    }

    /// Whether nothing is in the buffer or set aside.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.parked.is_none()
    }

    /// Whether an item is set aside.
    pub(crate) fn has_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Takes the items yielded and not acknowledged, oldest first (the lease
    /// in force was retired: nothing is handed to a lease). Items admitted
    /// and never yielded, and the parked item, stay: they come next.
    pub(crate) fn take_unacked(&mut self) -> Vec<T> {
        debug_assert_eq!(self.cursor, 0);
        let n = self.unacked(self.delivered);
        self.take_front(n)
    }

    /// Empties the buffer, oldest first; the parked item stays.
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        self.take_front(self.items.len())
    }

    fn take_front(&mut self, n: usize) -> Vec<T> {
        self.front += n as u64;
        self.cursor = self.cursor.saturating_sub(n);
        if !self.weights.is_empty() {
            self.weight -= self.weights.drain(..n).sum::<usize>();
        }
        self.items.drain(..n).collect()
    }

    /// Takes the parked item.
    pub(crate) fn take_parked(&mut self) -> Option<T> {
        self.parked.take()
    }
}
