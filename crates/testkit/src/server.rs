//! [`UploadServer`]: the tonic endpoint of the tests, with fault injection
//! and a record of every item id it received.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::upload_client::UploadClient;
use crate::proto::upload_server;
use crate::proto::{Item, Summary};

/// The metadata key under which an injected `UNAVAILABLE` carries how many
/// items the failed call had received; read it with [`received_count`].
const RECEIVED_KEY: &str = "x-received";

/// Which faults the server injects. Every fault applies to one call (one
/// attempt); calls are numbered from 1 in the order they reach the server.
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::Faults;
///
/// // UNAVAILABLE after 3 items on calls 1 and 2, then a dropped connection
/// // after 5 items on call 3 (`drop_after` counts calls too), and 1% of
/// // items fault at random, reproducibly.
/// let faults = Faults::none().fail_after(3, 2).drop_after(5, 3).random(0.01, 42);
/// # let _ = faults;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    fail_after: Option<(usize, u32)>,
    drop_after: Option<(usize, u32)>,
    random: Option<(f64, u64)>,
    random_calls: Option<(f64, u64)>,
    reject_prefix: Option<Vec<u8>>,
}

impl Faults {
    /// No faults: every call succeeds.
    pub fn none() -> Self {
        Faults::default()
    }

    /// Fail with `UNAVAILABLE` once `items` items were received, on each of
    /// the first `attempts` calls. The status carries the count under
    /// `x-received` (see [`received_count`]).
    pub fn fail_after(mut self, items: usize, attempts: u32) -> Self {
        self.fail_after = Some((items, attempts));
        self
    }

    /// Drop the TCP connection once `items` items were received, on each of
    /// the first `attempts` calls (those not failed by
    /// [`fail_after`](Self::fail_after) first). The client sees a transport
    /// error and no count.
    pub fn drop_after(mut self, items: usize, attempts: u32) -> Self {
        self.drop_after = Some((items, attempts));
        self
    }

    /// After each item received, fault with probability `rate` — half of the
    /// faults `UNAVAILABLE`, half a dropped connection — drawn from a
    /// generator seeded with `seed`, so a run is reproducible.
    pub fn random(mut self, rate: f64, seed: u64) -> Self {
        self.random = Some((rate.clamp(0.0, 1.0), seed));
        self
    }

    /// Fault each call with probability `rate` — half `UNAVAILABLE`, half a
    /// dropped connection — after a random number of items between 0 and
    /// 31 (or at the end of its stream, if that comes first), drawn from a
    /// generator seeded with `seed`. Unlike [`random`](Self::random), the
    /// rate is per call whatever the call's length.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::Faults;
    ///
    /// let faults = Faults::none().random_calls(0.2, 7); // 1 call in 5 fails
    /// # let _ = faults;
    /// ```
    pub fn random_calls(mut self, rate: f64, seed: u64) -> Self {
        self.random_calls = Some((rate.clamp(0.0, 1.0), seed));
        self
    }

    /// Reject, with the non-retryable `INVALID_ARGUMENT`, every call that
    /// sends an item whose payload starts with `prefix`: a poison item that
    /// no retry can get through.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::Faults;
    ///
    /// let faults = Faults::none().reject_payload_prefix(b"poison");
    /// # let _ = faults;
    /// ```
    pub fn reject_payload_prefix(mut self, prefix: &[u8]) -> Self {
        self.reject_prefix = Some(prefix.to_vec());
        self
    }
}

/// The kind of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call failed with `UNAVAILABLE`, carrying the received count.
    Unavailable,
    /// The connection was dropped mid-stream.
    DropConnection,
    /// A poison item was rejected with `INVALID_ARGUMENT` (see
    /// [`Faults::reject_payload_prefix`]).
    Rejected,
}

/// How one call ended, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// Still running, or its handler was dropped (the client went away)
    /// before it could finish.
    Unfinished,
    /// The request stream ended and the call returned its summary.
    Completed,
    /// The server injected this fault.
    Fault(FaultKind),
    /// Reading the request stream failed (the client reset the call, or
    /// the connection broke).
    StreamError(String),
}

/// One call the server handled: its number, the ids it received in order,
/// and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// 1 for the first call that reached the server.
    pub attempt: u32,
    /// Every item id this call received, in order.
    pub ids: Vec<u64>,
    /// How the call ended.
    pub end: CallEnd,
}

/// The count an injected `UNAVAILABLE` reports: how many items the failed
/// call had received. `None` for any other status.
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::received_count;
///
/// let mut status = tonic::Status::unavailable("injected");
/// status.metadata_mut().insert("x-received", "7".parse().unwrap());
/// assert_eq!(received_count(&status), Some(7));
/// assert_eq!(received_count(&tonic::Status::internal("boom")), None);
/// ```
pub fn received_count(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RECEIVED_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[derive(Debug, Default)]
struct Log {
    calls: Vec<CallRecord>,
    received: Vec<u64>,
    rng: u64,
}

#[derive(Debug)]
struct State {
    faults: Faults,
    log: Mutex<Log>,
    // A duplicate of each accepted socket, by peer address, so that a
    // handler can shut down the connection its call came in on.
    connections: Mutex<HashMap<SocketAddr, std::net::TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn begin_call(&self) -> usize {
        let mut log = lock(&self.log);
        let attempt = log.calls.len() as u32 + 1;
        log.calls.push(CallRecord {
            attempt,
            ids: Vec::new(),
            end: CallEnd::Unfinished,
        });
        log.calls.len() - 1
    }

    fn record(&self, call: usize, id: u64) {
        let mut log = lock(&self.log);
        log.calls[call].ids.push(id);
        log.received.push(id);
    }

    fn end(&self, call: usize, end: CallEnd) {
        lock(&self.log).calls[call].end = end;
    }

    /// The planned fault of call `call` (0-based) once `received` items came in.
    fn planned_fault(&self, call: usize, received: usize) -> Option<FaultKind> {
        let attempt = call as u32 + 1;
        let hits = |plan: Option<(usize, u32)>| {
            plan.is_some_and(|(items, attempts)| attempt <= attempts && received >= items)
        };
        if hits(self.faults.fail_after) {
            Some(FaultKind::Unavailable)
        } else if hits(self.faults.drop_after) {
            Some(FaultKind::DropConnection)
        } else {
            None
        }
    }

    /// For [`Faults::random_calls`]: whether call `call` faults, and after
    /// how many items, decided once when it begins.
    fn planned_call_fault(&self) -> Option<(usize, FaultKind)> {
        let (rate, _) = self.faults.random_calls?;
        let mut log = lock(&self.log);
        let draw = splitmix(&mut log.rng);
        let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
        if fraction >= rate {
            return None;
        }
        let at = (splitmix(&mut log.rng) % 32) as usize;
        let kind = if draw & 1 == 0 {
            FaultKind::Unavailable
        } else {
            FaultKind::DropConnection
        };
        Some((at, kind))
    }

    fn random_fault(&self) -> Option<FaultKind> {
        let (rate, _) = self.faults.random?;
        let mut log = lock(&self.log);
        let draw = splitmix(&mut log.rng);
        let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
        let kind = if draw & 1 == 0 {
            FaultKind::Unavailable
        } else {
            FaultKind::DropConnection
        };
        (fraction < rate).then_some(kind)
    }

    fn drop_connection(&self, peer: Option<SocketAddr>) {
        let socket = peer.and_then(|p| lock(&self.connections).remove(&p));
        if let Some(socket) = socket {
            // Both directions: the client's next read sees the end of the
            // connection, its next write an error.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
struct Service {
    state: Arc<State>,
}

#[tonic::async_trait]
impl upload_server::Upload for Service {
    async fn upload(&self, request: Request<Streaming<Item>>) -> Result<Response<Summary>, Status> {
        let state = &self.state;
        let peer = request.remote_addr();
        let call = state.begin_call();
        let call_fault = state.planned_call_fault();
        let mut items = request.into_inner();
        let mut received = 0usize;
        let mut last_id = 0;
        loop {
            let planned = state
                .planned_fault(call, received)
                .or(call_fault.and_then(|(at, kind)| (received >= at).then_some(kind)));
            let fault = match planned {
                Some(kind) => Some(kind),
                None => match items.message().await {
                    Ok(Some(item)) => {
                        let poison = state
                            .faults
                            .reject_prefix
                            .as_ref()
                            .is_some_and(|prefix| item.payload.starts_with(prefix));
                        if poison {
                            state.end(call, CallEnd::Fault(FaultKind::Rejected));
                            return Err(Status::invalid_argument(format!(
                                "item {} is malformed",
                                item.id
                            )));
                        }
                        state.record(call, item.id);
                        received += 1;
                        last_id = item.id;
                        state.random_fault()
                    }
                    // A call planned to fail fails even if its stream ends first.
                    Ok(None) if call_fault.is_some() => call_fault.map(|(_, kind)| kind),
                    Ok(None) => {
                        state.end(call, CallEnd::Completed);
                        return Ok(Response::new(Summary {
                            received: received as u64,
                            last_id,
                        }));
                    }
                    Err(status) => {
                        state.end(call, CallEnd::StreamError(status.message().to_string()));
                        return Err(status);
                    }
                },
            };
            if let Some(kind) = fault {
                state.end(call, CallEnd::Fault(kind));
                if kind == FaultKind::DropConnection {
                    state.drop_connection(peer);
                }
                let mut status =
                    Status::unavailable(format!("injected {kind:?} after {received} items"));
                status
                    .metadata_mut()
                    .insert(RECEIVED_KEY, received.to_string().parse().expect("ascii"));
                return Err(status);
            }
        }
    }
}

/// A tonic server of the `Upload` service on `127.0.0.1` (port 0), with
/// [`Faults`] injected and every received item id recorded.
///
/// Dropping it stops the server; [`shutdown`](Self::shutdown) also waits
/// until it has stopped.
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::{CallEnd, Faults, UploadServer, proto::Item};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = UploadServer::start(Faults::none()).await?;
/// let items = futures_util::stream::iter((0..3).map(|id| Item { id, payload: vec![] }));
/// let summary = server.client().upload(items).await?.into_inner();
/// assert_eq!((summary.received, summary.last_id), (3, 2));
/// assert_eq!(server.calls()[0].end, CallEnd::Completed);
/// # Ok(())
/// # }
/// ```
pub struct UploadServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl UploadServer {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// If the listener cannot be bound.
    pub async fn start(faults: Faults) -> io::Result<UploadServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seed = faults
            .random
            .or(faults.random_calls)
            .map_or(0, |(_, seed)| seed);
        let state = Arc::new(State {
            faults,
            log: Mutex::new(Log {
                rng: seed,
                ..Log::default()
            }),
            connections: Mutex::new(HashMap::new()),
        });
        let accepting = Arc::clone(&state);
        let incoming = futures_util::stream::unfold(listener, move |listener| {
            let state = Arc::clone(&accepting);
            async move {
                let accepted = accept(&listener, &state).await;
                Some((accepted, listener))
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let service = upload_server::UploadServer::new(Service {
            state: Arc::clone(&state),
        });
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    // A dropped sender stops the server too.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(UploadServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client of this server over a lazily connected channel, which
    /// reconnects after a dropped connection.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn client(&self) -> UploadClient<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .tcp_nodelay(true);
        UploadClient::new(endpoint.connect_lazy())
    }

    /// Every item id received, by every call, in arrival order.
    pub fn received_ids(&self) -> Vec<u64> {
        lock(&self.state.log).received.clone()
    }

    /// Every call handled so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.state.log).calls.clone()
    }

    /// Stops accepting calls, lets running ones finish, and waits until the
    /// server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for UploadServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for UploadServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadServer")
            .field("addr", &self.addr)
            .field("faults", &self.state.faults)
            .finish_non_exhaustive()
    }
}

async fn accept(
    listener: &tokio::net::TcpListener,
    state: &State,
) -> io::Result<tokio::net::TcpStream> {
    let (stream, peer) = listener.accept().await?;
    stream.set_nodelay(true)?;
    // Leave tokio's reactor to duplicate the socket, then come back.
    let stream = stream.into_std()?;
    lock(&state.connections).insert(peer, stream.try_clone()?);
    tokio::net::TcpStream::from_std(stream)
}
