//! [`Batch`], what every adapter and the channel hand out, with its
//! [`FlushReason`]; and the buffer pool that lets a consumed batch's `Vec`
//! go back to the batcher so that steady state allocates nothing per batch.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use tokio::time::Instant;

use async_patterns_core::__private::lock;
use async_patterns_core::__private::loom::{Arc, Mutex};

/// Why a batch was closed.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::FlushReason;
///
/// assert_eq!(FlushReason::Deadline.to_string(), "deadline");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushReason {
    /// It reached `max_items`.
    Full,
    /// It reached `max_weight`, the next item would have taken it over, or it
    /// holds a single item heavier than `max_weight`.
    Weight,
    /// Its first item had waited `max_delay`.
    Deadline,
    /// A [`Flusher`](crate::Flusher) asked for it.
    Flush,
    /// The input ended (every sender dropped, the stream ended, or the
    /// channel was closed): this is the tail.
    Closed,
}

impl FlushReason {
    /// Every reason, in declaration order.
    pub(crate) const ALL: [FlushReason; 5] = [
        FlushReason::Full,
        FlushReason::Weight,
        FlushReason::Deadline,
        FlushReason::Flush,
        FlushReason::Closed,
    ];
}

impl fmt::Display for FlushReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushReason::Full => "full",
            FlushReason::Weight => "weight",
            FlushReason::Deadline => "deadline",
            FlushReason::Flush => "flush",
            FlushReason::Closed => "closed",
        })
    }
}

/// A closed batch that has not been handed out yet.
pub(crate) struct Sealed<T> {
    pub(crate) items: Vec<T>,
    pub(crate) reason: FlushReason,
    pub(crate) weight: usize,
    pub(crate) oldest: Instant,
    /// How old the first item was when the batch closed.
    pub(crate) age: Duration,
}

/// A batch of items, in the order they arrived; never empty.
///
/// It derefs to `[T]`. When it is dropped, its buffer goes back to the
/// batcher that made it (its items are dropped first), so that the next
/// batches reuse it instead of allocating: consume a batch by reference or
/// with [`drain`](Self::drain) to keep that reuse. [`into_vec`](Self::into_vec)
/// and by-value iteration take the buffer for good; hand it back with
/// `recycle` on the adapter or receiver if you like.
///
/// # Examples
///
/// ```
/// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_patterns_core::ConfigError> {
/// let config = BatchConfig::new(2, Duration::from_secs(1))?;
/// let mut batches = futures::stream::iter(["a", "b", "c"]).batched(config);
///
/// let first = batches.next().await.unwrap();
/// assert_eq!(&*first, ["a", "b"]);
/// assert_eq!(first.reason(), FlushReason::Full);
/// assert_eq!(first.weight(), 2); // without a weigher, each item weighs 1
///
/// let tail = batches.next().await.unwrap();
/// assert_eq!(tail.into_vec(), ["c"]);
/// # Ok(())
/// # }
/// ```
pub struct Batch<T> {
    items: Vec<T>,
    reason: FlushReason,
    weight: usize,
    oldest: Instant,
    pool: Option<Arc<Pool<T>>>,
}

impl<T> Batch<T> {
    pub(crate) fn new(sealed: Sealed<T>, pool: Option<Arc<Pool<T>>>) -> Self {
        Batch {
            items: sealed.items,
            reason: sealed.reason,
            weight: sealed.weight,
            oldest: sealed.oldest,
            pool,
        }
    }

    /// Why the batch was closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::new(10, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter([1, 2]).batched(config);
    /// // The input ended before the batch was full.
    /// assert_eq!(batches.next().await.unwrap().reason(), FlushReason::Closed);
    /// # }
    /// ```
    pub fn reason(&self) -> FlushReason {
        self.reason
    }

    /// The sum of the weights of the items (their number when no weigher is
    /// configured).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::builder().max_weight(5, |s: &&str| s.len()).build().unwrap();
    /// let mut batches = futures::stream::iter(["ab", "cd", "ef"]).batched(config);
    /// let first = batches.next().await.unwrap();
    /// // "ef" would have taken the batch over 5 bytes.
    /// assert_eq!((&*first, first.weight(), first.reason()), (&["ab", "cd"][..], 4, FlushReason::Weight));
    /// # }
    /// ```
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// When the oldest item (the first) joined the batch, on tokio's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// let config = BatchConfig::new(10, Duration::from_millis(5)).unwrap();
    /// let mut batches = futures::stream::iter([1]).batched(config);
    /// assert_eq!(batches.next().await.unwrap().oldest(), start);
    /// # }
    /// ```
    pub fn oldest(&self) -> Instant {
        self.oldest
    }

    /// How long ago the oldest item joined the batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt, FlushReason};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = BatchConfig::new(10, Duration::from_millis(5)).unwrap();
    /// let mut batches = futures::stream::iter([1]).chain(futures::stream::pending()).batched(config);
    /// let batch = batches.next().await.unwrap();
    /// assert_eq!(batch.reason(), FlushReason::Deadline);
    /// assert_eq!(batch.age(), Duration::from_millis(5));
    /// # }
    /// ```
    pub fn age(&self) -> Duration {
        Instant::now().saturating_duration_since(self.oldest)
    }

    /// Takes the items, buffer and all; the buffer does not go back to the
    /// batcher.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::new(3, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter(0..3).batched(config);
    /// let items: Vec<i32> = batches.next().await.unwrap().into_vec();
    /// assert_eq!(items, [0, 1, 2]);
    /// # }
    /// ```
    pub fn into_vec(mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }

    /// Removes and yields the items in order, keeping the buffer so that it
    /// goes back to the batcher when the batch is dropped. Items the
    /// iterator did not yield are dropped with it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_batching::{BatchConfig, BatchExt};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BatchConfig::new(3, Duration::from_secs(1)).unwrap();
    /// let mut batches = futures::stream::iter(["x".to_string(), "y".to_string()]).batched(config);
    /// let mut batch = batches.next().await.unwrap();
    /// let owned: Vec<String> = batch.drain().collect();
    /// assert_eq!(owned, ["x", "y"]);
    /// assert!(batch.is_empty());
    /// # }
    /// ```
    pub fn drain(&mut self) -> std::vec::Drain<'_, T> {
        self.items.drain(..)
    }
}

impl<T> Deref for Batch<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> DerefMut for Batch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

impl<T> AsRef<[T]> for Batch<T> {
    fn as_ref(&self) -> &[T] {
        &self.items
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    /// Iterates by value. The buffer goes with the iterator and is not
    /// reused; use [`Batch::drain`] to keep it.
    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl<'a, T> IntoIterator for &'a Batch<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut Batch<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter_mut()
    }
}

impl<T> Drop for Batch<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.put(std::mem::take(&mut self.items));
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("items", &self.items)
            .field("reason", &self.reason)
            .field("weight", &self.weight)
            .field("oldest", &self.oldest)
            .finish()
    }
}

/// How many spare buffers a batcher keeps: one being filled, one in the
/// consumer's hands and one on its way back cover the steady state; a few
/// more absorb bursts of closed batches waiting in the channel.
const POOL_SIZE: usize = 4;

/// Spare, empty buffers for the next batches. Bounded in count and in the
/// capacity of each buffer, so it never holds more than a few batches' worth
/// of memory.
pub(crate) struct Pool<T> {
    spare: Mutex<Vec<Vec<T>>>,
    max_capacity: usize,
}

impl<T> Pool<T> {
    pub(crate) fn new(max_items: usize) -> Self {
        Pool {
            spare: Mutex::new(Vec::new()),
            // A buffer that grew by doubling up to `max_items` items has at
            // most twice that capacity; anything bigger came from elsewhere.
            max_capacity: max_items.saturating_mul(2),
        }
    }

    /// A buffer for the next batch: a spare one, or an unallocated one that
    /// grows as items arrive — never `max_items` reserved up front.
    pub(crate) fn take(&self) -> Vec<T> {
        lock(&self.spare).pop().unwrap_or_default()
    }

    /// Keeps `buf` for a later batch; its items are dropped first, outside
    /// the lock.
    pub(crate) fn put(&self, mut buf: Vec<T>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        let mut spare = lock(&self.spare);
        if spare.len() < POOL_SIZE {
            spare.push(buf);
        }
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("spare", &lock(&self.spare).len())
            .finish()
    }
}
