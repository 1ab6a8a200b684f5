//! [`DeliveryError`]: ending a delivery failed because the item is not its
//! holder's to end any more.

use std::fmt;

/// Ending (or extending) an [`OwnedDelivery`](crate::OwnedDelivery) failed:
/// the item is no longer yours.
///
/// # Examples
///
/// ```
/// use async_patterns_txn_channel::{ChannelBuilder, DeliveryError};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (tx, mut rx) = ChannelBuilder::new().lease(Duration::from_secs(30)).build().unwrap();
/// tx.send("job").await.unwrap();
///
/// let slow = rx.begin_owned().await.unwrap();
/// tokio::time::sleep(Duration::from_secs(31)).await; // longer than the lease
/// assert_eq!(slow.commit(), Err(DeliveryError::LeaseExpired));
/// assert_eq!(
///     DeliveryError::LeaseExpired.to_string(),
///     "the delivery's lease expired: the item was given back and is no longer yours"
/// );
///
/// // The item was given back, and is delivered again.
/// let again = rx.begin_owned().await.unwrap();
/// assert_eq!((*again, again.attempt()), ("job", 2));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The delivery was not ended (or extended) within its
    /// [lease](crate::ChannelBuilder::lease): the item went back to the
    /// queue — to be delivered again, or dead-lettered if that was its last
    /// attempt — and whatever this holder did with it does not count.
    LeaseExpired,
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::LeaseExpired => f.write_str(
                "the delivery's lease expired: the item was given back and is no longer yours",
            ),
        }
    }
}

impl std::error::Error for DeliveryError {}
