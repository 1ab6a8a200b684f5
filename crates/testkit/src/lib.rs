//! Test fixtures of the async-patterns workspace (not published).
//!
//! - [`UploadServer`]: a real tonic gRPC endpoint on `127.0.0.1` (port 0)
//!   serving the client-streaming `Upload(stream Item) returns (Summary)` of
//!   `proto/upload.proto`, with seeded, configurable [`Faults`]: fail the
//!   call with `UNAVAILABLE` after k items on the first m attempts, drop the
//!   connection mid-stream, or fault at random with a given rate. It records
//!   every item id it received, per call, so tests can assert at-least-once
//!   delivery and count losses; it shuts down on request or when dropped.
//! - [`nats`]: a real `nats-server` with JetStream
//!   ([`NatsServer`](nats::NatsServer)) on a free loopback port with a
//!   temporary store directory; stop, kill, restart on the same port and
//!   store; killed on drop and tied to this process so that no test leaves
//!   one running. A missing binary is an error that says how to install it.
//! - [`cpu`]: CPU time of the calling thread and of the whole process, to
//!   prove that a wait does not spin (wall time cannot tell).
//! - [`seed`]: the seed recipe's reusable receiver (a oneshot from `Drop`,
//!   recovered by spinning), reproduced as published for comparisons.
//!
//! The generated client and server are in [`proto`]; `build.rs` runs the
//! `protoc` that `protoc-bin-vendored` ships, so nothing needs installing.
//!
//! # Examples
//!
//! ```
//! use async_patterns_testkit::{Faults, UploadServer, proto::Item};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = UploadServer::start(Faults::none().fail_after(2, 1)).await?;
//! let mut client = server.client();
//! let items = |ids: std::ops::Range<u64>| {
//!     futures_util::stream::iter(ids.map(|id| Item { id, payload: vec![] }))
//! };
//!
//! // The first call fails after the server took two items...
//! let status = client.upload(items(0..5)).await.unwrap_err();
//! assert_eq!(status.code(), tonic::Code::Unavailable);
//! assert_eq!(async_patterns_testkit::received_count(&status), Some(2));
//! // ...the second goes through.
//! let summary = client.upload(items(2..5)).await?.into_inner();
//! assert_eq!(summary.received, 3);
//! assert_eq!(server.received_ids(), [0, 1, 2, 3, 4]);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod cpu;
pub mod nats;
pub mod seed;
mod server;

pub use server::{CallEnd, CallRecord, FaultKind, Faults, UploadServer, received_count};

/// The messages, client and server generated from `proto/upload.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("upload");
}
