//! One harness over the three batchers, so that every behaviour test runs
//! against the stream adapter, the mpsc adapter and the batching channel.

#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::task::{Context, Poll};

use async_patterns_batching::{
    Batch, BatchConfig, BatchExt, BatchMetrics, Batched, BatchedMpsc, ChannelBuilder, Flusher,
    Receiver, Sender,
};
use async_patterns_core::outcome::{Outcome, Summary};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BatchExt::batched` over an `UnboundedReceiverStream`.
    Stream,
    /// `batched(mpsc::Receiver, config)`.
    Mpsc,
    /// The batching channel, `ChannelBuilder::new().batch_config(config)`.
    Channel,
}

pub const KINDS: [Kind; 3] = [Kind::Stream, Kind::Mpsc, Kind::Channel];

/// Capacity of the tokio channel behind the mpsc adapter in tests.
pub const MPSC_CAPACITY: usize = 100_000;

/// Capacity of the batching channel in the tests that run every batcher.
pub const CHANNEL_CAPACITY: usize = 100_000;

pub enum Tx<T> {
    Unbounded(mpsc::UnboundedSender<T>),
    Bounded(mpsc::Sender<T>),
    Batch(Sender<T>),
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        match self {
            Tx::Unbounded(tx) => Tx::Unbounded(tx.clone()),
            Tx::Bounded(tx) => Tx::Bounded(tx.clone()),
            Tx::Batch(tx) => Tx::Batch(tx.clone()),
        }
    }
}

impl<T> Tx<T> {
    /// Sends `item`; false if the batcher is gone.
    pub async fn send(&self, item: T) -> bool {
        match self {
            Tx::Unbounded(tx) => tx.send(item).is_ok(),
            Tx::Bounded(tx) => tx.send(item).await.is_ok(),
            Tx::Batch(tx) => tx.send(item).await.is_ok(),
        }
    }

    /// Sends every item of `items`, in order (one lock per run of items
    /// for the channel).
    pub async fn send_many(&self, mut items: Vec<T>) -> bool {
        match self {
            Tx::Batch(tx) => tx.send_many(&mut items).await.is_ok(),
            _ => {
                for item in items {
                    if !self.send(item).await {
                        return false;
                    }
                }
                true
            }
        }
    }
}

pub enum Rx<T> {
    Stream(Batched<UnboundedReceiverStream<T>>),
    Mpsc(BatchedMpsc<T>),
    Channel(Receiver<T>),
}

pub fn pair<T: Send + 'static>(kind: Kind, config: BatchConfig<T>) -> (Tx<T>, Rx<T>) {
    match kind {
        Kind::Stream => {
            let (tx, rx) = mpsc::unbounded_channel();
            (
                Tx::Unbounded(tx),
                Rx::Stream(UnboundedReceiverStream::new(rx).batched(config)),
            )
        }
        Kind::Mpsc => {
            let (tx, rx) = mpsc::channel(MPSC_CAPACITY);
            (
                Tx::Bounded(tx),
                Rx::Mpsc(async_patterns_batching::batched(rx, config)),
            )
        }
        Kind::Channel => {
            let (tx, rx) = ChannelBuilder::new()
                .batch_config(config)
                .capacity(CHANNEL_CAPACITY)
                .build()
                .expect("valid channel");
            (Tx::Batch(tx), Rx::Channel(rx))
        }
    }
}

impl<T> Rx<T> {
    pub fn flusher(&self) -> Flusher {
        match self {
            Rx::Stream(rx) => rx.flusher(),
            Rx::Mpsc(rx) => rx.flusher(),
            Rx::Channel(rx) => rx.flusher(),
        }
    }

    pub fn metrics(&self) -> BatchMetrics {
        match self {
            Rx::Stream(rx) => rx.metrics(),
            Rx::Mpsc(rx) => rx.metrics(),
            Rx::Channel(rx) => rx.metrics(),
        }
    }

    pub fn outcome(&mut self) -> Outcome<Summary<BatchMetrics>> {
        match self {
            Rx::Stream(rx) => rx.outcome(),
            Rx::Mpsc(rx) => rx.outcome(),
            Rx::Channel(rx) => rx.outcome(),
        }
    }

    /// Takes the batcher apart: what it buffered, then what its input
    /// still holds, in order.
    pub fn into_remainder(self) -> Vec<T> {
        match self {
            Rx::Stream(rx) => {
                let (mut items, rest) = rx.into_remainder();
                let mut rest = rest.into_inner();
                while let Ok(item) = rest.try_recv() {
                    items.push(item);
                }
                items
            }
            Rx::Mpsc(rx) => {
                let (mut items, mut rest) = rx.into_remainder();
                while let Ok(item) = rest.try_recv() {
                    items.push(item);
                }
                items
            }
            Rx::Channel(rx) => rx.into_remainder(),
        }
    }
}

impl<T> Stream for Rx<T> {
    type Item = Batch<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch<T>>> {
        match self.get_mut() {
            Rx::Stream(rx) => Pin::new(rx).poll_next(cx),
            Rx::Mpsc(rx) => Pin::new(rx).poll_next(cx),
            Rx::Channel(rx) => Pin::new(rx).poll_next(cx),
        }
    }
}

/// A current-thread runtime on paused time.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}
