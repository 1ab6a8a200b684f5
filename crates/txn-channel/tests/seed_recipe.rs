//! The seed recipe's consumer loop — peek with `recv`, process, `commit` on
//! success, no commit on failure so that the next `recv` returns the same
//! item — run against this crate.
//!
//! The recipe wrote `Pin::new(&mut receiver).recv()` because its receiver
//! wrapped a `Peekable` stream; this receiver is `Unpin` and needs no pin,
//! and its `commit` is not async (the item is already at hand).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_patterns_txn_channel::channel;

/// Fails every third call, so some items need a second try.
fn do_some_processing(value: &u32, calls: &AtomicU32) -> bool {
    let _ = value;
    calls.fetch_add(1, Ordering::Relaxed) % 3 != 2
}

#[tokio::test]
async fn seed_recipe_loop_delivers_every_item_once_committed_in_order() {
    let (sender, mut receiver) = channel(100);
    tokio::spawn(async move {
        for i in 0..1_000_u32 {
            sender.send(i).await.unwrap();
        }
    });

    let calls = Arc::new(AtomicU32::new(0));
    let mut committed = Vec::new();
    loop {
        let value = receiver.recv().await;
        let Some(value) = value else { break };
        // do some processing with the value
        let success = do_some_processing(value, &calls);
        if success {
            // if this processing is successful then commit
            committed.push(receiver.commit().expect("an item is held"));
        } else {
            // if this processing failed or need to be reconfigured
            // no commit so the next call to recv will be the same unprocessed data
        }
    }

    assert_eq!(committed, (0..1_000).collect::<Vec<_>>());
    // Every third call failed and was retried.
    assert_eq!(calls.load(Ordering::Relaxed), 1_000 + 499);
}

#[tokio::test]
async fn seed_recipe_recv_returns_the_same_item_until_committed() {
    let (sender, mut receiver) = channel(4);
    sender.send("first").await.unwrap();
    sender.send("second").await.unwrap();

    for _ in 0..3 {
        assert_eq!(receiver.recv().await, Some(&"first"));
    }
    assert_eq!(receiver.commit(), Some("first"));
    assert_eq!(receiver.recv().await, Some(&"second"));
    // Each `recv` without a commit counted as one delivery.
    let delivery = receiver.begin().await.unwrap();
    assert_eq!((*delivery, delivery.attempt()), ("second", 2));
}
