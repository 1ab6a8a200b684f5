//! [`ChannelBuilder`]: the batching channel with every option — how many
//! items it holds, and when a batch closes — validated into a
//! [`ConfigError`].

use std::fmt;
use std::time::Duration;

use async_patterns_core::ConfigError;

use crate::channel::{Receiver, Sender, with_config};
use crate::{BatchConfig, BatchConfigBuilder};

/// `max_items` when neither it nor the capacity is set.
const DEFAULT_MAX_ITEMS: usize = 1024;

/// Builds a batching channel with options; [`build`](Self::build) validates
/// them. Every option has a default:
///
/// | option | default |
/// |---|---|
/// | [`capacity`](Self::capacity) | twice `max_items` |
/// | [`max_items`](Self::max_items) | 1,024, or the capacity if that is smaller |
/// | [`max_delay`](Self::max_delay) | 10 ms |
/// | [`max_weight`](Self::max_weight) | none |
///
/// [`channel(capacity)`](crate::channel()) is the shorthand for batches of
/// up to `capacity` items closed after 10 ms.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{ChannelBuilder, FlushReason};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_patterns_core::ConfigError> {
/// let (tx, mut rx) = ChannelBuilder::<String>::new()
///     .capacity(1_000)
///     .max_items(100)
///     .max_delay(Duration::from_millis(5))
///     .max_weight(64 * 1024, |line: &String| line.len())
///     .build()?;
/// tx.send("one line".to_string()).await.unwrap();
/// drop(tx);
/// let batch = rx.recv().await.unwrap();
/// assert_eq!((batch.len(), batch.weight(), batch.reason()), (1, 8, FlushReason::Closed));
///
/// // Invalid settings are refused, naming the setting and the range.
/// let err = ChannelBuilder::<u8>::new().max_items(8).capacity(4).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `capacity`: got 4, expected at least max_items (8)");
/// # Ok(())
/// # }
/// ```
pub struct ChannelBuilder<T> {
    batch: BatchConfigBuilder<T>,
    max_items: Option<usize>,
    capacity: Option<usize>,
}

impl<T> ChannelBuilder<T> {
    /// A builder with the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    ///
    /// let (tx, _rx) = ChannelBuilder::<u64>::new().build()?;
    /// assert_eq!(tx.capacity(), 2048);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn new() -> Self {
        ChannelBuilder {
            batch: BatchConfig::builder(),
            max_items: None,
            capacity: None,
        }
    }

    /// How many items the channel holds — staged by the senders, or taken
    /// by the receiver and not handed out yet — before `send` waits: at
    /// least 1 and at least `max_items` (default: twice `max_items`). Never
    /// more than this many items are in the channel.
    ///
    /// Senders reserve room a few items at a time (one reservation per
    /// chunk instead of one shared counter update per item); room a sender
    /// reserved and has not used yet counts as taken. The chunk is sized so
    /// that all such room together stays below `capacity - max_items`: a
    /// full batch always fits, but a sender may wait, or `try_send` report
    /// `Full`, with up to that many items fewer in the channel. A capacity
    /// equal to `max_items` reserves item by item and is exact.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    ///
    /// let (tx, _rx) = ChannelBuilder::<u64>::new().capacity(64).build()?;
    /// assert_eq!(tx.capacity(), 64); // and batches of up to 64 items
    ///
    /// let err = ChannelBuilder::<u64>::new().capacity(0).build().unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The most items a batch holds (at least 1; default 1,024, or the
    /// capacity if that is smaller). A batch is never allocated at this
    /// size up front: its buffer grows as items arrive and is then reused.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    ///
    /// assert!(ChannelBuilder::<u8>::new().max_items(1).build().is_ok());
    /// assert_eq!(ChannelBuilder::<u8>::new().max_items(0).build().unwrap_err().field(), "max_items");
    /// ```
    pub fn max_items(mut self, max_items: usize) -> Self {
        self.max_items = Some(max_items);
        self
    }

    /// The longest the first item of a batch waits before the batch closes
    /// (default 10 ms). Zero closes each batch as soon as the receiver looks
    /// and finds nothing more ready. A delay too long to be represented
    /// means "never".
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{ChannelBuilder, FlushReason};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), async_patterns_core::ConfigError> {
    /// let (tx, mut rx) = ChannelBuilder::new().max_delay(Duration::from_millis(50)).build()?;
    /// tx.send(1).await.unwrap();
    /// let batch = rx.recv().await.unwrap();
    /// assert_eq!((batch.reason(), batch.age()), (FlushReason::Deadline, Duration::from_millis(50)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.batch = self.batch.max_delay(max_delay);
        self
    }

    /// Limits the total weight of a batch to `max_weight` (at least 1), each
    /// item weighing `weigher(&item)` — bytes, rows, cost units. The weigher
    /// is called once per item, by the sender, outside any lock; it should
    /// be cheap and pure. An item heavier than `max_weight` on its own goes
    /// out alone, in a batch of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{ChannelBuilder, FlushReason};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), async_patterns_core::ConfigError> {
    /// let (tx, mut rx) = ChannelBuilder::new().max_weight(10, |s: &&str| s.len()).build()?;
    /// tx.send_many(&mut vec!["abcd", "efgh", "ijkl"]).await.unwrap();
    /// let batch = rx.recv().await.unwrap();
    /// // "ijkl" would have taken the batch over 10 bytes.
    /// assert_eq!((&*batch, batch.reason()), (&["abcd", "efgh"][..], FlushReason::Weight));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_weight<F>(mut self, max_weight: usize, weigher: F) -> Self
    where
        F: Fn(&T) -> usize + Send + Sync + 'static,
    {
        self.batch = self.batch.max_weight(max_weight, weigher);
        self
    }

    /// Takes `max_items`, `max_delay` and `max_weight` (with its weigher)
    /// from `config`, so that the channel batches exactly as an adapter with
    /// that configuration would.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, ChannelBuilder};
    /// use std::time::Duration;
    ///
    /// let config = BatchConfig::<String>::new(100, Duration::from_millis(5))?;
    /// // The same limits for a stream adapter and for a channel.
    /// let (tx, _rx) = ChannelBuilder::new().batch_config(config.clone()).build()?;
    /// assert_eq!(tx.capacity(), 200);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn batch_config(mut self, config: BatchConfig<T>) -> Self {
        self.max_items = Some(config.max_items());
        self.batch = config.into_builder();
        self
    }

    /// Validates the options and creates the channel.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid option: `max_items` 0,
    /// `max_weight` 0, `capacity` 0, or a `capacity` below `max_items`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::ChannelBuilder;
    ///
    /// let err = ChannelBuilder::<u8>::new().capacity(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `capacity`: got 0, expected at least 1");
    ///
    /// let (tx, rx) = ChannelBuilder::<u8>::new().capacity(16).max_items(4).build()?;
    /// assert_eq!((tx.capacity(), rx.capacity()), (16, 16));
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<(Sender<T>, Receiver<T>), ConfigError> {
        if let Some(capacity) = self.capacity {
            ConfigError::at_least("capacity", capacity, 1)?;
        }
        let max_items = match (self.max_items, self.capacity) {
            (Some(max_items), _) => max_items,
            (None, Some(capacity)) => capacity.min(DEFAULT_MAX_ITEMS),
            (None, None) => DEFAULT_MAX_ITEMS,
        };
        let config = self.batch.max_items(max_items).build()?;
        let capacity = match self.capacity {
            Some(capacity) if capacity < max_items => {
                return Err(ConfigError::new(
                    "capacity",
                    capacity,
                    format!("at least max_items ({max_items})"),
                ));
            }
            Some(capacity) => capacity,
            None => max_items.saturating_mul(2),
        };
        Ok(with_config(config, capacity))
    }
}

impl<T> Default for ChannelBuilder<T> {
    fn default() -> Self {
        ChannelBuilder::new()
    }
}

impl<T> fmt::Debug for ChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("batch", &self.batch)
            .field("max_items", &self.max_items)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_items_defaults_to_a_smaller_capacity() {
        let (tx, _rx) = ChannelBuilder::<u8>::new().capacity(10).build().unwrap();
        assert_eq!(tx.capacity(), 10);
        assert_eq!(tx.shared.config.max_items(), 10);
    }

    #[test]
    fn capacity_defaults_to_twice_max_items_and_saturates() {
        let (tx, _rx) = ChannelBuilder::<u8>::new().max_items(3).build().unwrap();
        assert_eq!(tx.capacity(), 6);
        let (tx, _rx) = ChannelBuilder::<u8>::new()
            .max_items(usize::MAX)
            .build()
            .unwrap();
        assert_eq!(tx.capacity(), usize::MAX);
    }

    #[test]
    fn zero_max_items_is_named_before_capacity() {
        let err = ChannelBuilder::<u8>::new()
            .max_items(0)
            .capacity(5)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_items");
    }
}
