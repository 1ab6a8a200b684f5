//! [`BatchConfig`]: when a batch closes — by count, by weight, by age —
//! validated by its builder into a [`ConfigError`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_patterns_core::ConfigError;

type Weigher<T> = Arc<dyn Fn(&T) -> usize + Send + Sync>;

/// When a batch is closed and handed out: the configuration of the stream
/// adapters, [`batched`](crate::batched()) and
/// [`BatchExt::batched`](crate::BatchExt::batched). (The batching
/// [`channel`](crate::channel()) takes the same options from its
/// [`ChannelBuilder`](crate::ChannelBuilder).)
///
/// A batch closes as soon as one of these holds:
///
/// - it holds [`max_items`](BatchConfigBuilder::max_items) items
///   ([`FlushReason::Full`](crate::FlushReason::Full));
/// - the next item would take it over
///   [`max_weight`](BatchConfigBuilder::max_weight), or it has reached it
///   exactly ([`FlushReason::Weight`](crate::FlushReason::Weight)). The item
///   that did not fit opens the next batch. An item heavier than
///   `max_weight` on its own goes out alone, in a batch of its own, and is
///   counted in [`BatchMetrics::oversized`](crate::BatchMetrics::oversized);
/// - its first item has waited [`max_delay`](BatchConfigBuilder::max_delay)
///   ([`FlushReason::Deadline`](crate::FlushReason::Deadline));
/// - a [`Flusher`](crate::Flusher) asked for it, or the input ended.
///
/// A batch is never empty. Cloning is cheap (the weigher is shared).
///
/// # Examples
///
/// ```
/// use async_patterns_batching::BatchConfig;
/// use std::time::Duration;
///
/// let config = BatchConfig::builder()
///     .max_items(512)
///     .max_delay(Duration::from_millis(10))
///     .max_weight(64 * 1024, |line: &String| line.len())
///     .build()?;
/// assert_eq!(config.max_items(), 512);
/// assert_eq!(config.max_weight(), Some(64 * 1024));
///
/// // Invalid settings are rejected with the field and the accepted range.
/// let err = BatchConfig::<String>::builder().max_items(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `max_items`: got 0, expected at least 1");
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
pub struct BatchConfig<T> {
    pub(crate) max_items: usize,
    pub(crate) max_delay: Duration,
    pub(crate) max_weight: Option<usize>,
    pub(crate) weigher: Option<Weigher<T>>,
}

impl<T> BatchConfig<T> {
    /// A configuration that closes batches at `max_items` items or when the
    /// first item is `max_delay` old; shorthand for the
    /// [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `max_items` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use std::time::Duration;
    ///
    /// let config = BatchConfig::<u64>::new(100, Duration::from_millis(5))?;
    /// assert_eq!(config.max_delay(), Duration::from_millis(5));
    ///
    /// let err = BatchConfig::<u64>::new(0, Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err.field(), "max_items");
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn new(max_items: usize, max_delay: Duration) -> Result<Self, ConfigError> {
        Self::builder()
            .max_items(max_items)
            .max_delay(max_delay)
            .build()
    }

    /// A builder with the defaults: 1,024 items, 10 ms, no weight limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use std::time::Duration;
    ///
    /// let config = BatchConfig::<u8>::builder().build()?;
    /// assert_eq!(config.max_items(), 1024);
    /// assert_eq!(config.max_delay(), Duration::from_millis(10));
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn builder() -> BatchConfigBuilder<T> {
        BatchConfigBuilder {
            max_items: 1024,
            max_delay: Duration::from_millis(10),
            max_weight: None,
        }
    }

    /// The most items a batch holds.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use std::time::Duration;
    ///
    /// let config = BatchConfig::<u8>::new(7, Duration::from_millis(1))?;
    /// assert_eq!(config.max_items(), 7);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The longest the first item of a batch waits before the batch closes.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use std::time::Duration;
    ///
    /// let config = BatchConfig::<u8>::new(7, Duration::from_millis(1))?;
    /// assert_eq!(config.max_delay(), Duration::from_millis(1));
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The weight limit of a batch, if one was set.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    ///
    /// let config = BatchConfig::builder().max_weight(10, |s: &&str| s.len()).build()?;
    /// assert_eq!(config.max_weight(), Some(10));
    /// assert_eq!(BatchConfig::<u8>::builder().build()?.max_weight(), None);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_weight(&self) -> Option<usize> {
        self.max_weight
    }

    /// The weight of `item`: the weigher's answer, or 1 without a weigher.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    ///
    /// let config = BatchConfig::builder().max_weight(10, |s: &&str| s.len()).build()?;
    /// assert_eq!(config.weigh(&"abc"), 3);
    /// assert_eq!(BatchConfig::<&str>::builder().build()?.weigh(&"abc"), 1);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn weigh(&self, item: &T) -> usize {
        match &self.weigher {
            Some(weigher) => weigher(item),
            None => 1,
        }
    }

    /// A builder holding these settings.
    pub(crate) fn into_builder(self) -> BatchConfigBuilder<T> {
        BatchConfigBuilder {
            max_items: self.max_items,
            max_delay: self.max_delay,
            max_weight: self.max_weight.zip(self.weigher),
        }
    }

    /// Whether items must be weighed one by one (a weigher is set).
    pub(crate) fn weighs(&self) -> bool {
        self.weigher.is_some()
    }
}

impl<T> Clone for BatchConfig<T> {
    fn clone(&self) -> Self {
        BatchConfig {
            max_items: self.max_items,
            max_delay: self.max_delay,
            max_weight: self.max_weight,
            weigher: self.weigher.clone(),
        }
    }
}

impl<T> fmt::Debug for BatchConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConfig")
            .field("max_items", &self.max_items)
            .field("max_delay", &self.max_delay)
            .field("max_weight", &self.max_weight)
            .finish_non_exhaustive()
    }
}

/// Builds a [`BatchConfig`]; [`build`](Self::build) validates every setting.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::BatchConfig;
/// use std::time::Duration;
///
/// let config = BatchConfig::<Vec<u8>>::builder()
///     .max_items(100)
///     .max_delay(Duration::from_millis(50))
///     .max_weight(1 << 20, |frame| frame.len())
///     .build()?;
/// assert_eq!(config.max_weight(), Some(1 << 20));
///
/// let err = BatchConfig::<u8>::builder().max_items(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `max_items`: got 0, expected at least 1");
/// # Ok::<(), async_patterns_core::ConfigError>(())
/// ```
pub struct BatchConfigBuilder<T> {
    max_items: usize,
    max_delay: Duration,
    max_weight: Option<(usize, Weigher<T>)>,
}

impl<T> Default for BatchConfigBuilder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> BatchConfigBuilder<T> {
    /// A builder with the default settings (1,024 items, 10 ms, no weight
    /// bound), the same as [`BatchConfig::builder`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfigBuilder;
    ///
    /// let config = BatchConfigBuilder::<u8>::new().build()?;
    /// assert_eq!(config.max_items(), 1024);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn new() -> Self {
        BatchConfig::builder()
    }

    /// The most items a batch holds (at least 1; default 1,024). A batch is
    /// never allocated at this size up front: its buffer grows as items
    /// arrive and is then reused.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    ///
    /// assert!(BatchConfig::<u8>::builder().max_items(1).build().is_ok());
    /// assert!(BatchConfig::<u8>::builder().max_items(0).build().is_err());
    /// ```
    pub fn max_items(mut self, max_items: usize) -> Self {
        self.max_items = max_items;
        self
    }

    /// The longest the first item of a batch waits before the batch closes
    /// (default 10 ms). Zero closes each batch as soon as the input has
    /// nothing more ready. A delay too long to be represented means "never".
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    /// use std::time::Duration;
    ///
    /// let config = BatchConfig::<u8>::builder().max_delay(Duration::ZERO).build()?;
    /// assert_eq!(config.max_delay(), Duration::ZERO);
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Limits the total weight of a batch to `max_weight` (at least 1), each
    /// item weighing `weigher(&item)` — bytes, rows, cost units.
    ///
    /// The weigher is called once per item, outside any lock, and should be
    /// cheap and pure. An item heavier than `max_weight` on its own goes out
    /// alone in a batch of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    ///
    /// let config = BatchConfig::builder().max_weight(1500, |p: &Vec<u8>| p.len()).build()?;
    /// assert_eq!(config.weigh(&vec![0; 40]), 40);
    ///
    /// let err = BatchConfig::builder().max_weight(0, |p: &Vec<u8>| p.len()).build().unwrap_err();
    /// assert_eq!(err.field(), "max_weight");
    /// # Ok::<(), async_patterns_core::ConfigError>(())
    /// ```
    pub fn max_weight<F>(mut self, max_weight: usize, weigher: F) -> Self
    where
        F: Fn(&T) -> usize + Send + Sync + 'static,
    {
        self.max_weight = Some((max_weight, Arc::new(weigher)));
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting: `max_items` 0 or
    /// `max_weight` 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::BatchConfig;
    ///
    /// let err = BatchConfig::<u8>::builder().max_items(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `max_items`: got 0, expected at least 1");
    /// ```
    pub fn build(self) -> Result<BatchConfig<T>, ConfigError> {
        let max_items = ConfigError::at_least("max_items", self.max_items, 1)?;
        let (max_weight, weigher) = match self.max_weight {
            Some((limit, weigher)) => (
                Some(ConfigError::at_least("max_weight", limit, 1)?),
                Some(weigher),
            ),
            None => (None, None),
        };
        Ok(BatchConfig {
            max_items,
            max_delay: self.max_delay,
            max_weight,
            weigher,
        })
    }
}

impl<T> fmt::Debug for BatchConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConfigBuilder")
            .field("max_items", &self.max_items)
            .field("max_delay", &self.max_delay)
            .field("max_weight", &self.max_weight.as_ref().map(|(w, _)| w))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_max_items_is_rejected_before_max_weight() {
        let err = BatchConfig::<u8>::builder()
            .max_items(0)
            .max_weight(0, |_| 1)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_items");
    }

    #[test]
    fn zero_max_weight_is_rejected() {
        let err = BatchConfig::<u8>::builder()
            .max_weight(0, |_| 1)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `max_weight`: got 0, expected at least 1"
        );
    }
}
