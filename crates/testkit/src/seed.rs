//! The seed recipe's reusable receiver, reproduced as published so that
//! tests and benchmarks can measure it beside `async-patterns-reusable-receiver`:
//! the stream's `Drop` sends the receiver back through a oneshot, and
//! `stream()` recovers it by spinning on `try_recv`.
//!
//! Its faults are kept on purpose: `stream()` busy-waits until the previous
//! stream is dropped (forever if it never is, and on a current-thread
//! runtime a stream dropped by another task of the same thread never is);
//! it panics if the oneshot is gone; and items the previous attempt pulled
//! are simply gone. Do not use it outside comparisons.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc::Receiver;
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

/// The recipe's `ReusableReceiver`.
#[derive(Debug)]
pub struct ReusableReceiver<T> {
    receiver: Option<Receiver<T>>,
    receiver_oneshot: Option<oneshot::Receiver<Receiver<T>>>,
}

/// The recipe's stream, which sends its receiver back when dropped.
#[derive(Debug)]
pub struct ReusableReceiverStream<T> {
    receiver: Option<Receiver<T>>,
    sender_oneshot: Option<oneshot::Sender<Receiver<T>>>,
}

impl<T> ReusableReceiver<T>
where
    T: Sync + Send + 'static,
{
    /// Wraps `receiver`.
    pub fn new(receiver: Receiver<T>) -> Self {
        Self {
            receiver: Some(receiver),
            receiver_oneshot: None,
        }
    }

    /// A stream over the receiver; spins until the previous stream was
    /// dropped.
    pub fn stream(&mut self) -> Pin<Box<dyn Stream<Item = T> + Send + Sync + 'static>> {
        if self.receiver.is_none() {
            self.recover_receiver();
        }
        let (sender_oneshot, receiver_oneshot) = oneshot::channel();
        self.receiver_oneshot = Some(receiver_oneshot);
        Box::pin(ReusableReceiverStream {
            receiver: self.receiver.take(),
            sender_oneshot: Some(sender_oneshot),
        })
    }

    fn recover_receiver(&mut self) {
        let mut receiver_oneshot = self
            .receiver_oneshot
            .take()
            .expect("unexpected situation, need to be fixed");
        loop {
            match receiver_oneshot.try_recv() {
                Err(TryRecvError::Closed) => panic!("unexpected situation, need to be fixed"),
                Err(TryRecvError::Empty) => {}
                Ok(receiver) => {
                    self.receiver = Some(receiver);
                    break;
                }
            }
        }
    }
}

impl<T> Drop for ReusableReceiverStream<T> {
    fn drop(&mut self) {
        let receiver = self
            .receiver
            .take()
            .expect("unexpected situation, need to be fixed");
        let sender_oneshot = self.sender_oneshot.take();
        let result = sender_oneshot
            .expect("unexpected situation, need to be fixed")
            .send(receiver);
        if result.is_err() {
            println!("the reusable receiver is gone");
        }
    }
}

impl<T> Stream for ReusableReceiverStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver
            .as_mut()
            .expect("unexpected situation, need to be fixed")
            .poll_recv(cx)
    }
}
