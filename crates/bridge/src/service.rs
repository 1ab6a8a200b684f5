//! Sync → async calls: a [`SyncClient`] that sync code calls and waits on,
//! and the [`ServiceReceiver`] whose [`serve`](ServiceReceiver::serve) answers
//! the calls with an async handler. Requests travel through the bridge's
//! [`channel`](crate::channel); each call's outcome comes back through a
//! [`CallSlot`] that the caller parks on.

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_patterns_core::{BlockingStrategy, ConfigError, RuntimeContext};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Handle;

use crate::channel::{ChannelBuilder, Receiver, Sender, WaitError, check_capacity};
use crate::error::CallError;
use crate::loom::thread::{self, Thread};
use crate::loom::{Arc, Mutex, MutexGuard, lock};

/// The queue capacity of a service built without
/// [`ServiceBuilder::capacity`].
const DEFAULT_CAPACITY: usize = 1024;

/// Creates a service that sync code can call: a [`SyncClient`] and the
/// [`ServiceReceiver`] that answers its calls, with room for `capacity`
/// queued calls and one call served at a time.
///
/// Use [`ServiceBuilder`] to serve calls concurrently or to get a
/// [`ConfigError`] instead of a panic.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::service;
///
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let (client, server) = service::<u32, u32>(16);
/// rt.spawn(server.serve(|n| async move { n * 2 }));
///
/// // Sync code, here a plain thread, calls and waits for the answer.
/// assert_eq!(client.call(21), Ok(42));
/// ```
///
/// # Panics
///
/// If `capacity` is 0 or above 16,777,216 (2^24), with the
/// [`ConfigError`]'s message.
///
/// ```should_panic
/// let _ = async_patterns_bridge::service::<u8, u8>(0); // invalid `capacity`: got 0
/// ```
pub fn service<Req, Resp>(capacity: usize) -> (SyncClient<Req, Resp>, ServiceReceiver<Req, Resp>) {
    ServiceBuilder::new()
        .capacity(capacity)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Configures a [`service`]: how many calls may wait in its queue, and how
/// many [`serve`](ServiceReceiver::serve) handles at once.
///
/// | setting | default | accepted |
/// |---|---|---|
/// | [`capacity`](Self::capacity) | 1024 | 1 to 16,777,216 (2^24) |
/// | [`concurrency`](Self::concurrency) | 1 | at least 1 |
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::ServiceBuilder;
///
/// let (client, server) = ServiceBuilder::<u64, u64>::new()
///     .capacity(64)
///     .concurrency(8)
///     .build()?;
/// # drop((client, server));
///
/// let err = ServiceBuilder::<u64, u64>::new().concurrency(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `concurrency`: got 0, expected at least 1");
/// # Ok::<(), async_patterns_bridge::ConfigError>(())
/// ```
pub struct ServiceBuilder<Req, Resp> {
    capacity: usize,
    concurrency: usize,
    /// The call's types; `fn` keeps the builder `Send + Sync` for any types.
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> ServiceBuilder<Req, Resp> {
    /// A builder with the defaults: room for 1024 queued calls, serving one
    /// call at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ServiceBuilder;
    ///
    /// let (client, server) = ServiceBuilder::<(), ()>::new().build()?;
    /// assert_eq!((client.capacity(), server.concurrency()), (1024, 1));
    /// # Ok::<(), async_patterns_bridge::ConfigError>(())
    /// ```
    pub fn new() -> Self {
        ServiceBuilder {
            capacity: DEFAULT_CAPACITY,
            concurrency: 1,
            types: PhantomData,
        }
    }

    /// How many calls may wait in the queue (validated by
    /// [`build`](Self::build): 1 to 2^24). A call made while the queue is
    /// full waits for room first.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ServiceBuilder;
    ///
    /// let (client, _server) = ServiceBuilder::<(), ()>::new().capacity(4).build()?;
    /// assert_eq!(client.capacity(), 4);
    /// # Ok::<(), async_patterns_bridge::ConfigError>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many calls [`serve`](ServiceReceiver::serve) handles at once (at
    /// least 1). With more than one, responses may complete out of order;
    /// each still goes to its own caller.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ServiceBuilder;
    ///
    /// let (_client, server) = ServiceBuilder::<(), ()>::new().concurrency(2).build()?;
    /// assert_eq!(server.concurrency(), 2);
    /// # Ok::<(), async_patterns_bridge::ConfigError>(())
    /// ```
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Validates the settings and creates the service.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `capacity` (0 or above 2^24) or `concurrency`
    /// (0).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::ServiceBuilder;
    ///
    /// let err = ServiceBuilder::<(), ()>::new().capacity(0).build().unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// ```
    #[allow(clippy::type_complexity)] // the pair, spelled out, reads best in the docs
    pub fn build(self) -> Result<(SyncClient<Req, Resp>, ServiceReceiver<Req, Resp>), ConfigError> {
        let capacity = check_capacity(self.capacity)?;
        let concurrency = ConfigError::at_least("concurrency", self.concurrency, 1)?;
        let (calls, rx) = ChannelBuilder::new().capacity(capacity).build()?;
        let home = Arc::new(std::sync::Mutex::new(HomeState {
            home: Home::NotServing,
            served: false,
            gone: false,
            waiters: Vec::new(),
            next_waiter: 0,
        }));
        Ok((
            SyncClient {
                calls,
                home: home.clone(),
            },
            ServiceReceiver {
                rx,
                concurrency,
                home: HomeGuard(home),
            },
        ))
    }
}

impl<Req, Resp> Default for ServiceBuilder<Req, Resp> {
    /// The same as [`ServiceBuilder::new`].
    fn default() -> Self {
        ServiceBuilder::new()
    }
}

impl<Req, Resp> Clone for ServiceBuilder<Req, Resp> {
    fn clone(&self) -> Self {
        ServiceBuilder {
            capacity: self.capacity,
            concurrency: self.concurrency,
            types: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for ServiceBuilder<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("capacity", &self.capacity)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// Where [`ServiceReceiver::serve`] runs, so that a caller driving a
/// current-thread runtime can tell whether its wait would stall the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// `serve` is not running (not yet, or no more).
    NotServing,
    /// `serve` is polled by this runtime.
    Runtime(tokio::runtime::Id),
    /// `serve` is polled outside any runtime (e.g. by a plain executor).
    NoRuntime,
}

/// What the clients know about the service's side.
struct HomeState {
    home: Home,
    /// `serve` has been polled at least once.
    served: bool,
    /// The [`ServiceReceiver`] is gone (dropped, or `serve` ended): the
    /// service will never be served (again).
    gone: bool,
    /// The [`SyncClient::served`] futures waiting for `served` or `gone`.
    waiters: Vec<(u64, Waker)>,
    next_waiter: u64,
}

impl HomeState {
    /// Whether [`SyncClient::served`] is done waiting.
    fn settled(&self) -> bool {
        self.served || self.gone
    }
}

/// `std`'s mutex even under loom: the home is read when a call starts and
/// written when `serve` starts and ends, never inside a hand-over the models
/// explore, and a loom mutex there only multiplies their interleavings.
type SharedHome = Arc<std::sync::Mutex<HomeState>>;

fn home_of(home: &SharedHome) -> std::sync::MutexGuard<'_, HomeState> {
    // Every update is a few plain assignments with nothing that can panic in
    // between: a poisoned lock still holds a consistent state.
    home.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The service's end of its [`HomeState`]: it records where `serve` runs
/// when `serve` is first polled, and, dropped (with an unserved
/// [`ServiceReceiver`], or when `serve` ends or is dropped), that the
/// service is gone.
struct HomeGuard(SharedHome);

impl HomeGuard {
    /// Marks the service as served from where the caller runs.
    fn serving_here(&self) {
        let here = match Handle::try_current() {
            Ok(handle) => Home::Runtime(handle.id()),
            Err(_) => Home::NoRuntime,
        };
        let woken = {
            let mut state = home_of(&self.0);
            state.home = here;
            state.served = true;
            std::mem::take(&mut state.waiters)
        };
        // Wake outside the lock: a woken future's first act is to take it.
        woken.into_iter().for_each(|(_, waker)| waker.wake());
    }
}

impl Drop for HomeGuard {
    fn drop(&mut self) {
        let woken = {
            let mut state = home_of(&self.0);
            state.home = Home::NotServing;
            state.gone = true;
            std::mem::take(&mut state.waiters)
        };
        woken.into_iter().for_each(|(_, waker)| waker.wake());
    }
}

/// The future of [`SyncClient::served`].
struct Served<'a> {
    home: &'a SharedHome,
    waiter: Option<u64>,
}

impl Future for Served<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = home_of(this.home);
        if state.settled() {
            this.waiter = None; // woken: its entry is gone already
            return Poll::Ready(());
        }
        let registered = this
            .waiter
            .and_then(|id| state.waiters.iter_mut().find(|(i, _)| *i == id));
        match registered {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => {
                let id = state.next_waiter;
                state.next_waiter += 1;
                state.waiters.push((id, cx.waker().clone()));
                this.waiter = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.waiter.take() {
            let mut state = home_of(self.home);
            if let Some(i) = state.waiters.iter().position(|(e, _)| *e == id) {
                state.waiters.swap_remove(i);
            }
        }
    }
}

/// The current-thread runtimes whose driving thread is waiting in a call
/// right now (a runtime appears once per waiting thread).
///
/// A call from such a thread may only wait for a service that runs on
/// another runtime *whose thread is not itself waiting*: otherwise two
/// runtimes could each wait for a service the other one must run. Checking
/// the target and registering the caller under one lock makes the closing
/// edge of any such cycle fail with `WouldDeadlock` instead.
static WAITING_RUNTIMES: std::sync::Mutex<Vec<tokio::runtime::Id>> =
    std::sync::Mutex::new(Vec::new());

/// Registration of a current-thread runtime in [`WAITING_RUNTIMES`] for the
/// length of one call.
struct CrossRuntimeWait(tokio::runtime::Id);

impl CrossRuntimeWait {
    /// Registers `here` as waiting for a service served at `home`, or `None`
    /// if that wait could deadlock.
    fn enter(here: tokio::runtime::Id, home: Home) -> Option<CrossRuntimeWait> {
        let mut waiting = WAITING_RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
        let safe = match home {
            Home::NotServing => false,
            Home::NoRuntime => true,
            Home::Runtime(there) => there != here && !waiting.contains(&there),
        };
        if !safe {
            return None;
        }
        waiting.push(here);
        Some(CrossRuntimeWait(here))
    }
}

impl Drop for CrossRuntimeWait {
    fn drop(&mut self) {
        let mut waiting = WAITING_RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = waiting.iter().position(|id| *id == self.0) {
            waiting.swap_remove(i);
        }
    }
}

/// What became of one call, shared by the caller and the service.
enum CallState<Req, Resp> {
    /// Waiting in the queue; the caller may still withdraw it.
    Queued(Req),
    /// The service took the request and is handling it.
    Taken,
    /// The service answered.
    Answered(Resp),
    /// The service ended without taking the request: it goes back.
    Returned(Req),
    /// The service dropped the request after taking it.
    Unanswered,
    /// The caller has finished with the call (answered, timed out or
    /// withdrawn); anything that arrives now is dropped.
    Finished,
}

/// One call's hand-off point: the service settles it and unparks the caller.
struct CallSlot<Req, Resp> {
    state: Mutex<CallState<Req, Resp>>,
    caller: Thread,
}

impl<Req, Resp> CallSlot<Req, Resp> {
    fn lock(&self) -> MutexGuard<'_, CallState<Req, Resp>> {
        // Every transition is a single assignment: a panic cannot leave the
        // state half-written, so a poisoned lock is still consistent.
        lock(&self.state)
    }

    /// Moves a call that is still `from` (as `is_from` tells) to `to`, and
    /// wakes the caller.
    fn settle(&self, is_from: impl Fn(&CallState<Req, Resp>) -> bool, to: CallState<Req, Resp>) {
        let mut state = self.lock();
        if is_from(&state) {
            *state = to;
            drop(state);
            self.caller.unpark();
        }
    }
}

/// A queued call, as the service's channel carries it. Dropped untaken (the
/// service closed or went away), it returns the request to its caller.
struct Call<Req, Resp>(Arc<CallSlot<Req, Resp>>);

impl<Req, Resp> Call<Req, Resp> {
    /// Takes the request for serving; `None` if the caller withdrew it.
    fn take(self) -> Option<(Req, Responder<Req, Resp>)> {
        let mut state = self.0.lock();
        match std::mem::replace(&mut *state, CallState::Taken) {
            CallState::Queued(req) => {
                drop(state);
                Some((req, Responder(Some(self.0.clone()))))
            }
            other => {
                *state = other;
                None
            }
        }
    }
}

impl<Req, Resp> Drop for Call<Req, Resp> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        match std::mem::replace(&mut *state, CallState::Finished) {
            CallState::Queued(req) => {
                *state = CallState::Returned(req);
                drop(state);
                self.0.caller.unpark();
            }
            other => *state = other,
        }
    }
}

/// The service's obligation to answer one taken call. Dropped without an
/// answer (the handler panicked or was cancelled), it tells the caller so.
struct Responder<Req, Resp>(Option<Arc<CallSlot<Req, Resp>>>);

impl<Req, Resp> Responder<Req, Resp> {
    fn respond(mut self, resp: Resp) {
        if let Some(slot) = self.0.take() {
            slot.settle(|s| matches!(s, CallState::Taken), CallState::Answered(resp));
        }
    }
}

impl<Req, Resp> Drop for Responder<Req, Resp> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.settle(|s| matches!(s, CallState::Taken), CallState::Unanswered);
        }
    }
}

/// The calling side of a [`service`]: `Clone + Send + Sync`; sync code calls
/// [`call`](Self::call) and waits for the async service's answer.
///
/// | calling thread | `call` |
/// |---|---|
/// | outside any runtime, `spawn_blocking` thread | parks until answered |
/// | multi-thread runtime worker | parks inside [`block_in_place`](tokio::task::block_in_place); the worker's other tasks move to another thread |
/// | thread driving a current-thread runtime, service served by *another* runtime (or outside any) | parks; every task of the caller's runtime stands still meanwhile |
/// | thread driving a current-thread runtime, service on the *same* runtime, not served yet, or served by a runtime whose own thread is waiting in such a call | [`CallError::WouldDeadlock`] at once, request handed back |
///
/// "Not served yet" means that no [`serve`](ServiceReceiver::serve) future
/// has been polled: until then nobody knows which runtime will run it — it
/// may be the caller's own. Async code on such a runtime (the task that
/// runs the sync code, say) can wait for that moment with
/// [`served`](Self::served)`.await`, which lets every task of its runtime,
/// the service's among them, go on meanwhile.
///
/// The third row is what a thread-per-core program needs (a sync callback on
/// one core calling a service on another), and it costs what a lock held
/// across cores costs: the caller's core runs nothing else until the answer
/// comes. The fourth row is what keeps it deadlock-free: a runtime never
/// waits for itself, and two current-thread runtimes never wait for each
/// other. What the crate cannot see is a handler that itself waits for the
/// caller's runtime (say, for a message only a task there would send); keep
/// such handlers off the call path.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::service;
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let (client, server) = service::<String, usize>(8);
/// tokio::spawn(server.serve(|s| async move { s.len() }));
///
/// // A sync callback running inside a task on a multi-thread runtime.
/// fn on_event(client: &async_patterns_bridge::SyncClient<String, usize>) -> usize {
///     client.call("hello".to_string()).unwrap()
/// }
/// let n = tokio::spawn(async move { on_event(&client) }).await.unwrap();
/// assert_eq!(n, 5);
/// # }
/// ```
pub struct SyncClient<Req, Resp> {
    calls: Sender<Call<Req, Resp>>,
    home: SharedHome,
}

impl<Req, Resp> SyncClient<Req, Resp> {
    /// Sends `req` to the service and waits for its response, in the way the
    /// calling thread's [`RuntimeContext`] allows (see the table on
    /// [`SyncClient`]). Waits for room first if the queue is full.
    ///
    /// # Errors
    ///
    /// [`WouldDeadlock`](CallError::WouldDeadlock) on a thread that drives a
    /// current-thread runtime, unless the service is served elsewhere (see
    /// the table on [`SyncClient`]); [`Closed`](CallError::Closed) if the service
    /// is gone or ends before answering (its task panicked, was aborted, or
    /// its receiver was dropped) — never a hang.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{service, CallError};
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let (client, server) = service::<u32, u32>(4);
    /// let task = rt.spawn(server.serve(|n| async move {
    ///     assert!(n < 10, "too big");
    ///     n + 1
    /// }));
    /// assert_eq!(client.call(1), Ok(2));
    /// // The handler panics: the call fails instead of hanging.
    /// assert_eq!(client.call(10), Err(CallError::Closed(None)));
    /// assert!(rt.block_on(task).unwrap_err().is_panic());
    /// assert_eq!(client.call(3), Err(CallError::Closed(Some(3))));
    /// ```
    ///
    /// # Panics
    ///
    /// Inside a [`LocalSet`](tokio::task::LocalSet) polled by a multi-thread
    /// worker (see [`RuntimeContext`]'s limits).
    pub fn call(&self, req: Req) -> Result<Resp, CallError<Req>> {
        self.call_until(req, None)
    }

    /// Like [`call`](Self::call), giving up after `timeout`. A request still
    /// queued at the deadline is withdrawn and handed back; one the service
    /// is already handling runs on and its response is dropped.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), plus [`Timeout`](CallError::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_bridge::{service, CallError};
    ///
    /// let (client, _server) = service::<u32, u32>(4); // never served
    /// let err = client.call_timeout(1, Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err, CallError::Timeout(Some(1)));
    /// ```
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    pub fn call_timeout(&self, req: Req, timeout: Duration) -> Result<Resp, CallError<Req>> {
        self.call_until(req, Instant::now().checked_add(timeout))
    }

    /// Waits until the service is served — until a
    /// [`serve`](ServiceReceiver::serve) future has been polled, which is
    /// when the service learns the runtime it runs on — or until it never
    /// can be (its [`ServiceReceiver`] was dropped, or `serve` ended), after
    /// which every call fails with [`Closed`](CallError::Closed). Completes
    /// at once if either has happened already.
    ///
    /// This is what a current-thread runtime needs before its sync code
    /// calls a service that another runtime serves: a call made before that
    /// runtime first polled `serve` is refused with
    /// [`WouldDeadlock`](CallError::WouldDeadlock), because the service might
    /// yet be spawned on the caller's own runtime. Awaiting `served` instead
    /// lets the caller's runtime go on — including a `serve` task of its own,
    /// which then makes the call refused for good reason. A thread that may
    /// block needs no such wait: its calls wait for the service anyway. So
    /// there is no blocking form; from sync code on a thread that may block,
    /// [`block_on`](crate::block_on)`(client.served())` does it.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only observes the service. Dropped
    /// before it completes, the future unregisters its waker and nothing
    /// else changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_bridge::{service, CallError};
    ///
    /// // A service on its own runtime, on another thread, not polled yet.
    /// let (client, server) = service::<u32, u32>(8);
    /// let (start, started) = std::sync::mpsc::channel::<()>();
    /// let service_thread = std::thread::spawn(move || {
    ///     started.recv().unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(server.serve(|n| async move { n * 2 }));
    /// });
    ///
    /// // Sync code on a current-thread runtime calls it.
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(async {
    ///     // Not served yet: it might be meant for this very runtime.
    ///     assert_eq!(client.call(1), Err(CallError::WouldDeadlock(1)));
    ///     start.send(()).unwrap();
    ///     client.served().await;
    ///     assert_eq!(client.call(2), Ok(4)); // served elsewhere: the call waits
    /// });
    /// drop(client); // `serve` returns
    /// service_thread.join().unwrap();
    /// ```
    pub fn served(&self) -> impl Future<Output = ()> + Send + '_ {
        Served {
            home: &self.home,
            waiter: None,
        }
    }

    fn call_until(&self, req: Req, deadline: Option<Instant>) -> Result<Resp, CallError<Req>> {
        match RuntimeContext::current().blocking_strategy() {
            BlockingStrategy::Direct => self.call_blocking(req, deadline),
            BlockingStrategy::BlockInPlace => {
                tokio::task::block_in_place(|| self.call_blocking(req, deadline))
            }
            _ => {
                // A current-thread runtime's own thread: wait only for a
                // service that another, non-waiting runtime serves.
                if self.is_closed() {
                    // Fails at once with the request handed back.
                    return self.call_blocking(req, deadline);
                }
                let here = Handle::current().id();
                let home = home_of(&self.home).home;
                match CrossRuntimeWait::enter(here, home) {
                    Some(_registered) => self.call_blocking(req, deadline),
                    None => Err(CallError::WouldDeadlock(req)),
                }
            }
        }
    }

    /// The call itself, on a thread that may park.
    fn call_blocking(&self, req: Req, deadline: Option<Instant>) -> Result<Resp, CallError<Req>> {
        let slot = Arc::new(CallSlot {
            state: Mutex::new(CallState::Queued(req)),
            caller: thread::current(),
        });
        if let Err(e) = self.calls.push_waiting(Call(slot.clone()), deadline) {
            let (call, timed_out) = match e {
                WaitError::Closed(call) => (call, false),
                WaitError::Timeout(call) => (call, true),
            };
            drop(call); // settles the slot as `Returned`
            let req = match std::mem::replace(&mut *slot.lock(), CallState::Finished) {
                CallState::Returned(req) => Some(req),
                _ => None,
            };
            return Err(if timed_out {
                CallError::Timeout(req)
            } else {
                CallError::Closed(req)
            });
        }
        loop {
            let mut state = slot.lock();
            match std::mem::replace(&mut *state, CallState::Finished) {
                CallState::Answered(resp) => return Ok(resp),
                CallState::Returned(req) => return Err(CallError::Closed(Some(req))),
                CallState::Unanswered => return Err(CallError::Closed(None)),
                pending => {
                    let left = match deadline {
                        None => None,
                        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                            Some(left) if !left.is_zero() => Some(left),
                            // Withdraw: the state stays `Finished`, so the
                            // service skips a queued call and drops the
                            // response of a taken one.
                            _ => {
                                return Err(CallError::Timeout(match pending {
                                    CallState::Queued(req) => Some(req),
                                    _ => None,
                                }));
                            }
                        },
                    };
                    *state = pending;
                    drop(state);
                    match left {
                        None => thread::park(),
                        Some(left) => thread::park_timeout(left),
                    }
                }
            }
        }
    }

    /// How many calls may wait in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let (client, _server) = async_patterns_bridge::service::<(), ()>(5);
    /// assert_eq!(client.capacity(), 5);
    /// ```
    pub fn capacity(&self) -> usize {
        self.calls.capacity()
    }

    /// Whether the service is gone: every call fails from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// let (client, server) = async_patterns_bridge::service::<(), ()>(5);
    /// assert!(!client.is_closed());
    /// drop(server);
    /// assert!(client.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.calls.is_closed()
    }
}

impl<Req, Resp> Clone for SyncClient<Req, Resp> {
    fn clone(&self) -> Self {
        SyncClient {
            calls: self.calls.clone(),
            home: self.home.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for SyncClient<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (served, waiters) = {
            let state = home_of(&self.home);
            (state.served, state.waiters.len())
        };
        f.debug_struct("SyncClient")
            .field("capacity", &self.capacity())
            .field("queued", &self.calls.len())
            .field("closed", &self.is_closed())
            .field("served", &served)
            .field("served_waiters", &waiters)
            .finish()
    }
}

/// The async side of a [`service`]: [`serve`](Self::serve) answers its calls.
///
/// If it is dropped, or the task running `serve` panics or is aborted, every
/// pending call ends with [`CallError::Closed`]: queued requests are handed
/// back, taken ones report `Closed(None)`.
///
/// # Examples
///
/// ```
/// use async_patterns_bridge::service;
///
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let (client, server) = service::<&str, String>(4);
/// let served = rt.spawn(server.serve(|name| async move { format!("hello, {name}") }));
/// assert_eq!(client.call("bridge").unwrap(), "hello, bridge");
/// drop(client); // the last client leaves: `serve` returns
/// rt.block_on(served).unwrap();
/// ```
pub struct ServiceReceiver<Req, Resp> {
    rx: Receiver<Call<Req, Resp>>,
    concurrency: usize,
    home: HomeGuard,
}

impl<Req, Resp> ServiceReceiver<Req, Resp> {
    /// Answers calls with `handler` until every [`SyncClient`] is dropped
    /// and the queue is empty, handling up to
    /// [`concurrency`](ServiceBuilder::concurrency) calls at once within
    /// this one future (no task is spawned, so neither the handler nor its
    /// futures need to be `Send` unless the `serve` future must be).
    ///
    /// A panic in `handler` or its future propagates out of `serve`; the
    /// calls it leaves behind end with [`CallError::Closed`]. Dropping the
    /// `serve` future (cancellation, task abort) does the same. A handler
    /// must not [`call`](SyncClient::call) its own service: with no free
    /// concurrency slot, it would wait for itself.
    ///
    /// The first poll records the runtime `serve` runs on (see
    /// [`SyncClient::served`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping `serve` before it completes ends the service, and leaves no
    /// caller waiting: every call it had not taken returns to its caller as
    /// [`CallError::Closed`]`(Some(request))`, every call it was handling
    /// ends as `Closed(None)` (the handler's future is dropped with it), and
    /// every later call fails with `Closed`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_patterns_bridge::ServiceBuilder;
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() {
    /// let (client, server) = ServiceBuilder::new().capacity(16).concurrency(4).build().unwrap();
    /// tokio::spawn(server.serve(|ms| async move {
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     ms
    /// }));
    /// let answers = tokio::task::spawn_blocking(move || {
    ///     let calls: Vec<_> = (1..=4)
    ///         .map(|i| {
    ///             let client = client.clone();
    ///             std::thread::spawn(move || client.call(i * 10).unwrap())
    ///         })
    ///         .collect();
    ///     calls.into_iter().map(|c| c.join().unwrap()).sum::<u64>()
    /// });
    /// assert_eq!(answers.await.unwrap(), 100);
    /// # }
    /// ```
    pub async fn serve<F, Fut>(self, mut handler: F)
    where
        F: FnMut(Req) -> Fut,
        Fut: Future<Output = Resp>,
    {
        let ServiceReceiver {
            mut rx,
            concurrency,
            home,
        } = self;
        // Recorded when `serve` is first polled, which is where it runs;
        // `home` dropped when `serve` ends or is dropped: the service is gone.
        home.serving_here();
        if concurrency == 1 {
            while let Some(call) = rx.recv().await {
                if let Some((req, responder)) = call.take() {
                    responder.respond(handler(req).await);
                }
            }
            return;
        }
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        poll_fn(|cx| {
            loop {
                let mut progress = false;
                while open && in_flight.len() < concurrency {
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some(call)) => {
                            if let Some((req, responder)) = call.take() {
                                let response = handler(req);
                                in_flight.push(async move { responder.respond(response.await) });
                            }
                            progress = true;
                        }
                        Poll::Ready(None) => open = false,
                        Poll::Pending => break,
                    }
                }
                while let Poll::Ready(Some(())) = in_flight.poll_next_unpin(cx) {
                    progress = true;
                }
                if !open && in_flight.is_empty() {
                    return Poll::Ready(());
                }
                if !progress {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }

    /// How many calls [`serve`](Self::serve) handles at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_client, server) = async_patterns_bridge::service::<(), ()>(5);
    /// assert_eq!(server.concurrency(), 1);
    /// ```
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }
}

impl<Req, Resp> fmt::Debug for ServiceReceiver<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceReceiver")
            .field("capacity", &self.rx.capacity())
            .field("queued", &self.rx.len())
            .field("concurrency", &self.concurrency)
            .finish()
    }
}
