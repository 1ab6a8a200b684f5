//! Stack capture (Linux, feature `stack-capture`): the watchdog sends the
//! stuck thread a real-time signal; the signal handler, running on that
//! thread, copies the interrupted instruction pointer and the chain of
//! frame records (frame pointers) into a preallocated static buffer; the
//! watchdog reads the buffer and symbolises the addresses later, on its own
//! thread.
//!
//! The handler calls no function at all — no libc, no unwinder, no
//! allocator, no lock: it reads the interrupted context the kernel hands it
//! (`ucontext_t`), loads and stores atomics, and reads words of the
//! interrupted thread's own stack between its stack pointer and the top of
//! the stack recorded when the thread was first watched. That is
//! async-signal-safe on every count (POSIX allows a handler plain memory
//! accesses and lock-free atomics), so a thread interrupted inside `malloc`,
//! the dynamic loader or an unwinder cannot deadlock or corrupt anything.
//! The price is that only frames that keep a frame record are seen; see
//! [`BlockingDetectorBuilder::capture_stacks`](crate::BlockingDetectorBuilder::capture_stacks) for exactly what is captured.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::detector::lock;

/// The most addresses one capture records.
const MAX_FRAMES: usize = 128;

/// How long the watchdog waits for the handler to start.
const CAPTURE_TIMEOUT: Duration = Duration::from_millis(250);

/// How much longer it waits once the handler has started (it runs at most
/// `MAX_FRAMES` steps, but the thread may be descheduled meanwhile).
const FINISH_TIMEOUT: Duration = Duration::from_secs(1);

const IDLE: u32 = 0;
const REQUESTED: u32 = 1;
const CAPTURING: u32 = 2;
const DONE: u32 = 3;

/// The buffer the signal handler writes into; static, so that the handler
/// never allocates.
struct CaptureArea {
    /// `IDLE` → `REQUESTED` (watchdog) → `CAPTURING` → `DONE` (handler) →
    /// `IDLE` (watchdog). A handler whose request the watchdog gave up on
    /// still ends in `DONE`; the next capture resets it.
    state: AtomicU32,
    /// The request being served; the signal carries it (`si_value`), so a
    /// late signal of an earlier request is ignored.
    request: AtomicU64,
    /// The target thread's stack, `[stack_low, stack_high)`.
    stack_low: AtomicUsize,
    stack_high: AtomicUsize,
    len: AtomicUsize,
    frames: [AtomicUsize; MAX_FRAMES],
}

static AREA: CaptureArea = CaptureArea {
    state: AtomicU32::new(IDLE),
    request: AtomicU64::new(0),
    stack_low: AtomicUsize::new(0),
    stack_high: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    frames: [const { AtomicUsize::new(0) }; MAX_FRAMES],
};

/// One capture at a time, across all detectors of the process.
static CAPTURE_LOCK: Mutex<u64> = Mutex::new(0);

/// The signal the handler is installed for, once installed.
static INSTALLED: Mutex<Option<i32>> = Mutex::new(None);

/// A thread's stack, `[low, high)`, recorded on the thread itself when it is
/// first watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StackBounds {
    pub(crate) low: usize,
    pub(crate) high: usize,
}

impl StackBounds {
    /// The calling thread's stack, from `pthread_getattr_np`; `None` if the
    /// system does not say.
    pub(crate) fn current() -> Option<StackBounds> {
        // SAFETY: all-zero is a valid bit pattern for the opaque attribute
        // object, which `pthread_getattr_np` initialises before we read it.
        let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `pthread_self()` is the calling thread, alive during the
        // call; `attr` is writable. On success it must be destroyed (below).
        if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
            return None;
        }
        let mut addr: *mut c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: `attr` was initialised by `pthread_getattr_np`; `addr` and
        // `size` are writable.
        let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
        // SAFETY: `attr` was initialised and is not used after this.
        unsafe { libc::pthread_attr_destroy(&mut attr) };
        let low = addr as usize;
        (rc == 0 && size > 0).then(|| StackBounds {
            low,
            high: low.saturating_add(size),
        })
    }
}

/// A stack captured from a stuck thread, innermost frame first; `Display`
/// writes one frame per line.
///
/// The capture keeps addresses — the interrupted instruction, then return
/// addresses from the chain of frame records (see
/// [`BlockingDetectorBuilder::capture_stacks`](crate::BlockingDetectorBuilder::capture_stacks) for exactly which frames that
/// includes); they are resolved to symbols, files and lines the first time
/// the frames are looked at.
///
/// # Examples
///
/// ```
/// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport};
/// # use std::sync::{mpsc, Mutex};
/// # use std::time::Duration;
/// # let (tx, rx) = mpsc::channel::<BlockingReport>();
/// # let tx = Mutex::new(tx);
/// # let mut builder = tokio::runtime::Builder::new_current_thread();
/// # let detector = BlockingDetector::builder()
/// #     .threshold(Duration::from_millis(100))
/// #     .capture_stacks(true)
/// #     .handler(move |r: &BlockingReport| {
/// #         let _ = tx.lock().unwrap().send(r.clone());
/// #     })
/// #     .install(builder.enable_time())?;
/// # let rt = builder.build()?;
/// # rt.block_on(async {
/// #     tokio::time::sleep(Duration::from_millis(10)).await;
/// #     tokio::spawn(async { std::thread::sleep(Duration::from_millis(300)) }).await.unwrap();
/// # });
/// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
/// let stack = stuck.stack().expect("a stack");
/// // One line per frame: "  0: clock_nanosleep ...", "  1: ...".
/// let text = stack.to_string();
/// assert_eq!(text.lines().count(), stack.frames().len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
pub struct StackTrace {
    addresses: Vec<usize>,
    frames: OnceLock<Vec<StackFrame>>,
}

impl StackTrace {
    /// The frames, innermost first, resolved on the first call (which reads
    /// the binaries' debug information: call it off the hot path). An
    /// inlined function gets a frame of its own, with the address of the
    /// frame it was inlined into.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// # use std::sync::{mpsc, Mutex};
    /// # use std::time::Duration;
    /// # #[inline(never)]
    /// # fn load_config_synchronously() {
    /// #     std::thread::sleep(Duration::from_millis(300));
    /// # }
    /// # let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// # let tx = Mutex::new(tx);
    /// # let mut builder = tokio::runtime::Builder::new_current_thread();
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(100))
    /// #     .capture_stacks(true)
    /// #     .handler(move |r: &BlockingReport| {
    /// #         let _ = tx.lock().unwrap().send(r.clone());
    /// #     })
    /// #     .install(builder.enable_time())?;
    /// # let rt = builder.build()?;
    /// # rt.block_on(async {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// # });
    /// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// // A `Stuck` report of a thread stuck in `load_config_synchronously`:
    /// let stack = stuck.stack().expect("a stack");
    /// assert!(stack.frames().iter().any(|f| {
    ///     f.symbol().is_some_and(|s| s.contains("load_config_synchronously"))
    /// }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn frames(&self) -> &[StackFrame] {
        self.frames.get_or_init(|| symbolise(&self.addresses))
    }

    /// The raw addresses, innermost first: the interrupted instruction, then
    /// return addresses.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// # use std::sync::{mpsc, Mutex};
    /// # use std::time::Duration;
    /// # #[inline(never)]
    /// # fn load_config_synchronously() {
    /// #     std::thread::sleep(Duration::from_millis(300));
    /// # }
    /// # let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// # let tx = Mutex::new(tx);
    /// # let mut builder = tokio::runtime::Builder::new_current_thread();
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(100))
    /// #     .capture_stacks(true)
    /// #     .handler(move |r: &BlockingReport| {
    /// #         let _ = tx.lock().unwrap().send(r.clone());
    /// #     })
    /// #     .install(builder.enable_time())?;
    /// # let rt = builder.build()?;
    /// # rt.block_on(async {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// # });
    /// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// // A `Stuck` report of a thread stuck in `load_config_synchronously`:
    /// let stack = stuck.stack().expect("a stack");
    /// assert!(stack.addresses().len() >= 2);
    /// // The first is the interrupted instruction.
    /// assert_eq!(stack.frames()[0].ip(), stack.addresses()[0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn addresses(&self) -> &[usize] {
        &self.addresses
    }
}

impl fmt::Display for StackTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, frame) in self.frames().iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {i:>3}: {frame}")?;
        }
        Ok(())
    }
}

/// One frame of a [`StackTrace`].
///
/// # Examples
///
/// ```
/// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport};
/// # use std::sync::{mpsc, Mutex};
/// # use std::time::Duration;
/// # let (tx, rx) = mpsc::channel::<BlockingReport>();
/// # let tx = Mutex::new(tx);
/// # let mut builder = tokio::runtime::Builder::new_current_thread();
/// # let detector = BlockingDetector::builder()
/// #     .threshold(Duration::from_millis(100))
/// #     .capture_stacks(true)
/// #     .handler(move |r: &BlockingReport| {
/// #         let _ = tx.lock().unwrap().send(r.clone());
/// #     })
/// #     .install(builder.enable_time())?;
/// # let rt = builder.build()?;
/// # rt.block_on(async {
/// #     tokio::time::sleep(Duration::from_millis(10)).await;
/// #     tokio::spawn(async { std::thread::sleep(Duration::from_millis(300)) }).await.unwrap();
/// # });
/// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
/// let stack = stuck.stack().expect("a stack");
/// // One line per frame: "  0: clock_nanosleep ...", "  1: ...".
/// let text = stack.to_string();
/// assert_eq!(text.lines().count(), stack.frames().len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
pub struct StackFrame {
    ip: usize,
    symbol: Option<String>,
    file: Option<PathBuf>,
    line: Option<u32>,
}

impl StackFrame {
    /// The instruction address: the interrupted instruction for the
    /// innermost frame, a return address (the instruction after the call)
    /// for the others.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// # use std::sync::{mpsc, Mutex};
    /// # use std::time::Duration;
    /// # #[inline(never)]
    /// # fn load_config_synchronously() {
    /// #     std::thread::sleep(Duration::from_millis(300));
    /// # }
    /// # let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// # let tx = Mutex::new(tx);
    /// # let mut builder = tokio::runtime::Builder::new_current_thread();
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(100))
    /// #     .capture_stacks(true)
    /// #     .handler(move |r: &BlockingReport| {
    /// #         let _ = tx.lock().unwrap().send(r.clone());
    /// #     })
    /// #     .install(builder.enable_time())?;
    /// # let rt = builder.build()?;
    /// # rt.block_on(async {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// # });
    /// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// // A `Stuck` report of a thread stuck in `load_config_synchronously`:
    /// let stack = stuck.stack().expect("a stack");
    /// assert!(stack.frames().iter().all(|f| f.ip() != 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ip(&self) -> usize {
        self.ip
    }

    /// The demangled function name, if the binary has symbols.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// # use std::sync::{mpsc, Mutex};
    /// # use std::time::Duration;
    /// # #[inline(never)]
    /// # fn load_config_synchronously() {
    /// #     std::thread::sleep(Duration::from_millis(300));
    /// # }
    /// # let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// # let tx = Mutex::new(tx);
    /// # let mut builder = tokio::runtime::Builder::new_current_thread();
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(100))
    /// #     .capture_stacks(true)
    /// #     .handler(move |r: &BlockingReport| {
    /// #         let _ = tx.lock().unwrap().send(r.clone());
    /// #     })
    /// #     .install(builder.enable_time())?;
    /// # let rt = builder.build()?;
    /// # rt.block_on(async {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// # });
    /// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// // A `Stuck` report of a thread stuck in `load_config_synchronously`:
    /// let stack = stuck.stack().expect("a stack");
    /// assert!(stack.frames().iter().any(|f| f.symbol().is_some()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn symbol(&self) -> Option<&str> {
        self.symbol.as_deref()
    }

    /// The source file, if the binary has debug info.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// # use std::sync::{mpsc, Mutex};
    /// # use std::time::Duration;
    /// # #[inline(never)]
    /// # fn load_config_synchronously() {
    /// #     std::thread::sleep(Duration::from_millis(300));
    /// # }
    /// # let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// # let tx = Mutex::new(tx);
    /// # let mut builder = tokio::runtime::Builder::new_current_thread();
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(100))
    /// #     .capture_stacks(true)
    /// #     .handler(move |r: &BlockingReport| {
    /// #         let _ = tx.lock().unwrap().send(r.clone());
    /// #     })
    /// #     .install(builder.enable_time())?;
    /// # let rt = builder.build()?;
    /// # rt.block_on(async {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// # });
    /// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// // A `Stuck` report of a thread stuck in `load_config_synchronously`:
    /// let stack = stuck.stack().expect("a stack");
    /// // Where the binaries have debug info (std's line tables, at least).
    /// let with_debug_info = stack.frames().iter().filter(|f| f.file().is_some());
    /// assert!(with_debug_info.count() > 0, "{stack}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The source line, if the binary has debug info.
    ///
    /// # Examples
    ///
    /// ```
    /// # use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// # use std::sync::{mpsc, Mutex};
    /// # use std::time::Duration;
    /// # #[inline(never)]
    /// # fn load_config_synchronously() {
    /// #     std::thread::sleep(Duration::from_millis(300));
    /// # }
    /// # let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// # let tx = Mutex::new(tx);
    /// # let mut builder = tokio::runtime::Builder::new_current_thread();
    /// # let detector = BlockingDetector::builder()
    /// #     .threshold(Duration::from_millis(100))
    /// #     .capture_stacks(true)
    /// #     .handler(move |r: &BlockingReport| {
    /// #         let _ = tx.lock().unwrap().send(r.clone());
    /// #     })
    /// #     .install(builder.enable_time())?;
    /// # let rt = builder.build()?;
    /// # rt.block_on(async {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// # });
    /// # let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// // A `Stuck` report of a thread stuck in `load_config_synchronously`:
    /// let stack = stuck.stack().expect("a stack");
    /// // Where the binaries have debug info (std's line tables, at least).
    /// let with_debug_info = stack.frames().iter().filter(|f| f.line().is_some());
    /// assert!(with_debug_info.count() > 0, "{stack}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn line(&self) -> Option<u32> {
        self.line
    }
}

impl fmt::Display for StackFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(symbol) => f.write_str(symbol)?,
            None => write!(f, "{:#x}", self.ip)?,
        }
        if let Some(file) = &self.file {
            write!(f, " at {}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        Ok(())
    }
}

/// The calling thread's kernel id.
pub(crate) fn current_tid() -> i32 {
    // SAFETY: `gettid` takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Installs the signal handler (once per process) and returns its signal.
pub(crate) fn install_handler(signal: Option<i32>) -> io::Result<i32> {
    let signal = signal.unwrap_or_else(|| libc::SIGRTMIN() + 4);
    if !(libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "signal {signal} is not a real-time signal ({}..={})",
                libc::SIGRTMIN(),
                libc::SIGRTMAX()
            ),
        ));
    }
    let mut installed = lock(&INSTALLED);
    if *installed == Some(signal) {
        return Ok(signal);
    }
    // SAFETY: `sigaction` is plain old data, for which all-zero is valid.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `current` is writable.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.sa_sigaction != libc::SIG_DFL {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("signal {signal} already has a handler"),
        ));
    }
    if let Some(other) = *installed {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("stack capture already uses signal {other}"),
        ));
    }
    // SAFETY: as above, all-zero is a valid `sigaction`.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) = on_signal;
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid, writable signal set.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised; its handler is an `extern "C"`
    // function with the `SA_SIGINFO` signature that calls no function and
    // only accesses memory as `on_signal` describes.
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    *installed = Some(signal);
    Ok(signal)
}

/// The fields of a queued signal's `siginfo_t` (`si_code == SI_QUEUE`) on
/// 64-bit Linux: the kernel's `struct siginfo` with its `_rt` member, whose
/// union starts at offset 16.
#[repr(C)]
struct QueuedSignal {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: usize,
}

// `QueuedSignal` is read out of, and written into, a `siginfo_t`.
const _: () = assert!(
    std::mem::size_of::<QueuedSignal>() <= std::mem::size_of::<libc::siginfo_t>()
        && std::mem::align_of::<QueuedSignal>() <= std::mem::align_of::<libc::siginfo_t>()
);

/// The registers the walk starts from: the interrupted instruction, frame
/// pointer and stack pointer.
#[derive(Debug, Clone, Copy)]
struct Registers {
    ip: usize,
    fp: usize,
    sp: usize,
}

/// The interrupted context's registers.
///
/// # Safety
///
/// `context` is the `ucontext_t` the kernel passed to an `SA_SIGINFO`
/// handler that is still running.
#[cfg(target_arch = "x86_64")]
unsafe fn registers(context: *const c_void) -> Registers {
    // SAFETY: guaranteed by the caller: a valid `ucontext_t`.
    let gregs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    Registers {
        ip: gregs[libc::REG_RIP as usize] as usize,
        fp: gregs[libc::REG_RBP as usize] as usize,
        sp: gregs[libc::REG_RSP as usize] as usize,
    }
}

/// The interrupted context's registers.
///
/// # Safety
///
/// `context` is the `ucontext_t` the kernel passed to an `SA_SIGINFO`
/// handler that is still running.
#[cfg(target_arch = "aarch64")]
unsafe fn registers(context: *const c_void) -> Registers {
    // SAFETY: guaranteed by the caller: a valid `ucontext_t`.
    let mcontext = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext };
    Registers {
        ip: mcontext.pc as usize,
        fp: mcontext.regs[29] as usize,
        sp: mcontext.sp as usize,
    }
}

/// Whether this architecture's stacks can be captured.
const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Walks the chain of frame records from `regs.fp`, calling `push` with the
/// interrupted instruction and then each return address, until `push`
/// returns `false`, the chain leaves `[max(regs.sp, bounds.low),
/// bounds.high)`, a record is misaligned, or a record is not above the one
/// before (so the walk ends, even on a cycle). A frame record is two words:
/// the caller's frame pointer, then the return address (x86_64 and aarch64
/// alike).
///
/// # Safety
///
/// Every aligned word in `[max(regs.sp, bounds.low), bounds.high)` must be
/// readable for the duration of the call.
unsafe fn walk(regs: Registers, bounds: StackBounds, mut push: impl FnMut(usize) -> bool) {
    const WORD: usize = std::mem::size_of::<usize>();
    if regs.ip == 0 || !push(regs.ip) {
        return;
    }
    if !(bounds.low..bounds.high).contains(&regs.sp) {
        return; // not on the stack we know (an alternate signal stack)
    }
    let low = regs.sp;
    let mut fp = regs.fp;
    loop {
        let in_bounds = fp >= low
            && fp
                .checked_add(2 * WORD)
                .is_some_and(|end| end <= bounds.high);
        if !in_bounds || !fp.is_multiple_of(WORD) {
            return;
        }
        // SAFETY: `fp` and `fp + WORD` are aligned words inside the range
        // the caller guarantees readable. They are read with atomic loads,
        // never written; a word that is no frame record (the register held
        // something else) is only ever used as a number.
        let (next, ret) = unsafe { (read_word(fp), read_word(fp + WORD)) };
        if ret == 0 || !push(ret) || next <= fp {
            return;
        }
        fp = next;
    }
}

/// Reads the word at `addr` with a relaxed atomic load.
///
/// # Safety
///
/// `addr` is aligned and readable for the duration of the call.
#[inline(always)]
unsafe fn read_word(addr: usize) -> usize {
    let ptr = std::ptr::with_exposed_provenance::<AtomicUsize>(addr);
    // SAFETY: guaranteed by the caller. An atomic load (a plain load on
    // x86_64 and aarch64): the interrupted thread writes its frame records
    // itself and is stopped in this handler, so those words do not change;
    // a word that is not a frame record may belong to a value another
    // thread writes concurrently, and an atomic load gives some value of it
    // — which is all the walk needs — where a plain read would be a data
    // race.
    unsafe { (*ptr).load(Relaxed) }
}

/// The signal handler. It calls no function: it loads and stores atomics of
/// the static [`AREA`], reads the `siginfo_t` and `ucontext_t` the kernel
/// passed, and reads the interrupted thread's stack (see [`walk`]). Every
/// one of those is allowed in a signal handler; none can block.
extern "C" fn on_signal(_signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    if info.is_null() || context.is_null() {
        return;
    }
    // SAFETY: with `SA_SIGINFO`, `info` points to the kernel's `siginfo_t`
    // for this signal, valid while the handler runs; `QueuedSignal` is its
    // layout on 64-bit Linux (its size is checked above).
    let (code, value) = unsafe {
        let queued = &*info.cast::<QueuedSignal>();
        (queued.code, queued.value)
    };
    if code != libc::SI_QUEUE
        || AREA
            .state
            .compare_exchange(REQUESTED, CAPTURING, Acquire, Relaxed)
            .is_err()
    {
        return; // not ours, or nobody waits for it any more
    }
    if AREA.request.load(Relaxed) as usize != value {
        // A late signal of a request the watchdog gave up on.
        AREA.state.store(REQUESTED, Release);
        return;
    }
    if SUPPORTED {
        let bounds = StackBounds {
            low: AREA.stack_low.load(Relaxed),
            high: AREA.stack_high.load(Relaxed),
        };
        let mut len = 0;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        // SAFETY: `context` is the `ucontext_t` of this `SA_SIGINFO`
        // handler. The bounds are the stack of the thread the request is
        // for (recorded on it, `pthread_getattr_np`), and the signal was
        // sent to that thread (`rt_tgsigqueueinfo` by thread id), which is
        // the one running this handler: every word from its interrupted
        // stack pointer up to the top of its stack is mapped (a thread's
        // stack is mapped from its lowest used page up). If the thread id
        // was reused by another thread since, its stack pointer lies
        // outside those bounds — unless the new thread got the same stack
        // back from the allocator's cache, which is then mapped alike.
        unsafe {
            walk(registers(context), bounds, |address| {
                AREA.frames[len].store(address, Relaxed);
                len += 1;
                len < MAX_FRAMES
            });
        }
        AREA.len.store(len, Relaxed);
    }
    AREA.state.store(DONE, Release);
}

/// Captures the stack of thread `tid` of this process, whose stack is
/// `bounds`, with `signal`; `None` on an unsupported architecture, if the
/// thread is gone or did not answer in time, or while the handler of an
/// abandoned capture is still running.
pub(crate) fn capture(tid: i32, signal: i32, bounds: Option<StackBounds>) -> Option<StackTrace> {
    if !SUPPORTED {
        return None;
    }
    Some(StackTrace {
        addresses: capture_addresses(tid, signal, bounds)?,
        frames: OnceLock::new(),
    })
}

fn capture_addresses(tid: i32, signal: i32, bounds: Option<StackBounds>) -> Option<Vec<usize>> {
    let mut last_request = lock(&CAPTURE_LOCK);
    match AREA.state.load(Acquire) {
        // The handler of a capture given up on is still writing.
        CAPTURING => return None,
        // It finished after the watchdog gave up on it.
        DONE => AREA.state.store(IDLE, Relaxed),
        _ => {}
    }
    *last_request += 1;
    let request = *last_request;
    let bounds = bounds.unwrap_or(StackBounds { low: 0, high: 0 });
    AREA.stack_low.store(bounds.low, Relaxed);
    AREA.stack_high.store(bounds.high, Relaxed);
    AREA.len.store(0, Relaxed);
    AREA.request.store(request, Relaxed);
    AREA.state.store(REQUESTED, Release);
    if !send(tid, signal, request as usize) {
        AREA.state.store(IDLE, Release);
        return None;
    }
    let start = Instant::now();
    let mut spins = 0_u32;
    loop {
        let state = AREA.state.load(Acquire);
        if state == DONE {
            break;
        }
        let waited = start.elapsed();
        if state == REQUESTED && waited >= CAPTURE_TIMEOUT {
            // The handler never ran; a late signal finds the request gone.
            if AREA
                .state
                .compare_exchange(REQUESTED, IDLE, Acquire, Relaxed)
                .is_ok()
            {
                return None;
            }
            continue;
        }
        if state == CAPTURING && waited >= CAPTURE_TIMEOUT + FINISH_TIMEOUT {
            // Left to finish on its own; the next capture waits for that.
            return None;
        }
        // The handler takes microseconds: yield a few times, then sleep.
        spins += 1;
        if spins < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let len = AREA.len.load(Relaxed).min(MAX_FRAMES);
    let addresses = AREA.frames[..len].iter().map(|f| f.load(Relaxed)).collect();
    AREA.state.store(IDLE, Release);
    Some(addresses)
}

/// Sends `signal` to thread `tid` of this process with `value` attached
/// (`si_code == SI_QUEUE`), as `pthread_sigqueue` does.
fn send(tid: i32, signal: i32, value: usize) -> bool {
    // SAFETY: `siginfo_t` is plain old data, for which all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `getpid` and `getuid` cannot fail.
    let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    // SAFETY: `QueuedSignal` is the layout of a queued signal's `siginfo_t`
    // on 64-bit Linux and fits in it (checked above); `info` is writable and
    // aligned for it (both hold pointer-sized fields).
    unsafe {
        std::ptr::from_mut(&mut info)
            .cast::<QueuedSignal>()
            .write(QueuedSignal {
                signo: signal,
                errno: 0,
                code: libc::SI_QUEUE,
                _pad: 0,
                pid,
                uid,
                value,
            });
    }
    // SAFETY: `rt_tgsigqueueinfo` with our own pid only ever signals a
    // thread of this process, and only reads `info`. A `tid` that is gone
    // fails with ESRCH.
    unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid,
            signal,
            &info as *const libc::siginfo_t,
        ) == 0
    }
}

/// Resolves `addresses`: the first is the interrupted instruction, the
/// others return addresses, looked up one byte earlier so that the call
/// instruction's line (not the next one's) is found.
fn symbolise(addresses: &[usize]) -> Vec<StackFrame> {
    let mut frames = Vec::with_capacity(addresses.len());
    for (i, &ip) in addresses.iter().enumerate() {
        let lookup = if i == 0 { ip } else { ip.saturating_sub(1) };
        let before = frames.len();
        backtrace::resolve(lookup as *mut c_void, |symbol| {
            frames.push(StackFrame {
                ip,
                symbol: symbol.name().map(|n| n.to_string()),
                file: symbol.filename().map(Path::to_path_buf),
                line: symbol.lineno(),
            });
        });
        if frames.len() == before {
            frames.push(StackFrame {
                ip,
                symbol: None,
                file: None,
                line: None,
            });
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stack: `words` laid out from `base`, its addresses exposed so
    /// that the walk may read them back from plain numbers.
    struct FakeStack {
        words: Vec<usize>,
    }

    impl FakeStack {
        fn new(len: usize) -> FakeStack {
            FakeStack {
                words: vec![0; len],
            }
        }

        fn addr(&self, index: usize) -> usize {
            self.words.as_ptr().wrapping_add(index).expose_provenance()
        }

        fn bounds(&self) -> StackBounds {
            StackBounds {
                low: self.addr(0),
                high: self.addr(self.words.len()),
            }
        }

        /// A frame record at `at`: the caller's record at `next`, returning
        /// to `ret`.
        fn record(&mut self, at: usize, next: usize, ret: usize) {
            self.words[at] = self.addr(next);
            self.words[at + 1] = ret;
        }

        fn walk(&self, ip: usize, fp: usize, sp: usize) -> Vec<usize> {
            let regs = Registers { ip, fp, sp };
            let mut out = Vec::new();
            // SAFETY: the bounds are the fake stack, all of it readable.
            unsafe {
                walk(regs, self.bounds(), |a| {
                    out.push(a);
                    out.len() < MAX_FRAMES
                })
            };
            out
        }
    }

    #[test]
    fn the_walk_follows_the_chain_of_frame_records_up_the_stack() {
        let mut stack = FakeStack::new(16);
        stack.record(2, 6, 0x1002);
        stack.record(6, 10, 0x1006);
        stack.record(10, 14, 0x1010);
        stack.words[14] = 0; // the outermost record: no caller
        stack.words[15] = 0;
        let sp = stack.addr(1);
        let got = stack.walk(0x1000, stack.addr(2), sp);
        assert_eq!(got, [0x1000, 0x1002, 0x1006, 0x1010]);
    }

    #[test]
    fn the_walk_stops_at_a_record_outside_the_stack_or_below_the_last() {
        let mut stack = FakeStack::new(16);
        // The second record points back down: a cycle must not loop.
        stack.record(4, 8, 0x2004);
        stack.record(8, 4, 0x2008);
        assert_eq!(
            stack.walk(0x2000, stack.addr(4), stack.addr(0)),
            [0x2000, 0x2004, 0x2008]
        );
        // A frame pointer below the stack pointer is not followed.
        assert_eq!(stack.walk(0x2000, stack.addr(4), stack.addr(5)), [0x2000]);
        // Nor one past the top, nor one whose record would straddle it.
        assert_eq!(stack.walk(0x2000, stack.addr(15), stack.addr(0)), [0x2000]);
        assert_eq!(stack.walk(0x2000, usize::MAX - 4, stack.addr(0)), [0x2000]);
        // Nor a misaligned one.
        assert_eq!(
            stack.walk(0x2000, stack.addr(4) + 1, stack.addr(0)),
            [0x2000]
        );
    }

    #[test]
    fn a_stack_pointer_off_the_known_stack_yields_the_instruction_only() {
        let mut stack = FakeStack::new(8);
        stack.record(2, 4, 0x3002);
        let elsewhere = FakeStack::new(4);
        assert_eq!(
            stack.walk(0x3000, stack.addr(2), elsewhere.addr(1)),
            [0x3000]
        );
        // No known stack at all (the bounds could not be read).
        let regs = Registers {
            ip: 0x3000,
            fp: stack.addr(2),
            sp: stack.addr(0),
        };
        let mut out = Vec::new();
        // SAFETY: empty bounds: nothing is read.
        unsafe {
            walk(regs, StackBounds { low: 0, high: 0 }, |a| {
                out.push(a);
                true
            })
        };
        assert_eq!(out, [0x3000]);
    }

    #[test]
    fn the_walk_records_at_most_the_buffer_it_is_given() {
        let mut stack = FakeStack::new(2 * MAX_FRAMES + 8);
        for i in 0..MAX_FRAMES + 2 {
            stack.record(2 * i, 2 * i + 2, 0x4000 + i);
        }
        let got = stack.walk(0x3fff, stack.addr(0), stack.addr(0));
        assert_eq!(got.len(), MAX_FRAMES);
        assert_eq!(got[1], 0x4000);
    }

    #[test]
    #[cfg(not(miri))]
    fn the_calling_threads_stack_bounds_contain_its_locals() {
        let local = 0_u64;
        let at = std::ptr::from_ref(&local).addr();
        let bounds = StackBounds::current().expect("glibc reports the stack");
        assert!(
            (bounds.low..bounds.high).contains(&at),
            "{bounds:?} {at:#x}"
        );
        let other = std::thread::spawn(|| StackBounds::current().unwrap())
            .join()
            .unwrap();
        assert!(!(other.low..other.high).contains(&at));
    }

    #[test]
    fn frames_display_symbol_file_and_line() {
        let frame = StackFrame {
            ip: 0x10,
            symbol: Some("app::f".into()),
            file: Some("src/app.rs".into()),
            line: Some(7),
        };
        assert_eq!(frame.to_string(), "app::f at src/app.rs:7");
        let bare = StackFrame {
            ip: 0x10,
            symbol: None,
            file: None,
            line: None,
        };
        assert_eq!(bare.to_string(), "0x10");
        let trace = StackTrace {
            addresses: vec![0x10, 0x10],
            frames: OnceLock::from(vec![frame, bare]),
        };
        assert_eq!(
            trace.to_string(),
            "    0: app::f at src/app.rs:7\n    1: 0x10"
        );
    }

    /// Signals, real threads and symbol files: not under miri.
    #[cfg(not(miri))]
    mod signals {
        use super::super::*;
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        use std::sync::mpsc;

        /// A thread's id and stack, sent by the thread itself.
        type Target = (i32, Option<StackBounds>);

        fn target() -> Target {
            (current_tid(), StackBounds::current())
        }

        #[inline(never)]
        fn blocked_in_a_function_with_a_distinctive_name(
            ready: mpsc::Sender<Target>,
            hold: Duration,
        ) {
            ready.send(target()).unwrap();
            std::thread::sleep(hold);
            std::hint::black_box(());
        }

        fn handler_signal() -> i32 {
            install_handler(None).expect("the default signal is free in tests")
        }

        #[test]
        fn captures_the_stack_of_a_sleeping_thread_without_disturbing_it() {
            let signal = handler_signal();
            let (tx, rx) = mpsc::channel();
            let hold = Duration::from_millis(400);
            let started = Instant::now();
            let sleeper =
                std::thread::spawn(move || blocked_in_a_function_with_a_distinctive_name(tx, hold));
            let (tid, bounds) = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));

            let stack = capture(tid, signal, bounds).expect("the thread answers");
            assert!(stack.addresses().len() >= 3, "{stack}");
            let names: Vec<_> = stack.frames().iter().filter_map(|f| f.symbol()).collect();
            // `std::thread::sleep` keeps a frame record (std is built with
            // frame pointers), which holds the return address into its caller.
            assert!(
                names
                    .iter()
                    .any(|n| n.contains("blocked_in_a_function_with_a_distinctive_name")),
                "{stack}"
            );
            // The capture's own frames are not in it.
            assert!(!names.iter().any(|n| n.contains("on_signal")), "{stack}");

            sleeper.join().unwrap();
            // `thread::sleep` resumed after the signal and slept its full time.
            assert!(started.elapsed() >= hold);
        }

        #[test]
        fn capturing_a_thread_that_is_gone_returns_none() {
            let signal = handler_signal();
            let (tid, bounds) = std::thread::spawn(target).join().unwrap();
            // Linux hands out thread ids in sequence, so `tid` is not reused yet.
            let started = Instant::now();
            assert!(capture(tid, signal, bounds).is_none());
            assert!(started.elapsed() < CAPTURE_TIMEOUT + Duration::from_secs(5));
        }

        #[test]
        fn signals_nobody_asked_for_are_ignored() {
            let signal = handler_signal();
            let (tx, rx) = mpsc::channel();
            let done = Arc::new(AtomicBool::new(false));
            let thread = {
                let done = done.clone();
                std::thread::spawn(move || {
                    blocked_in_a_function_with_a_distinctive_name(tx, Duration::from_millis(200));
                    done.store(true, Release);
                })
            };
            let (tid, _) = rx.recv().unwrap();
            // No capture can be requested while this test holds the lock.
            let last = lock(&CAPTURE_LOCK);
            // A plain signal (not queued, `si_code == SI_TKILL`).
            // SAFETY: signals a thread of this process whose handler is ours.
            let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
            assert_eq!(rc, 0);
            // A queued one, while nothing is requested.
            assert!(send(tid, signal, 1));
            // A late one of an earlier request, while a later one waits.
            AREA.request.store(*last + 1_000, Relaxed);
            AREA.state.store(REQUESTED, Release);
            assert!(send(tid, signal, (*last + 999) as usize));
            thread.join().unwrap();
            assert!(done.load(Acquire));
            assert_eq!(AREA.state.load(Relaxed), REQUESTED);
            AREA.state.store(IDLE, Release);
            drop(last);
        }

        #[test]
        fn only_free_real_time_signals_are_accepted() {
            let err = install_handler(Some(libc::SIGINT)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

            // A real-time signal someone else handles is refused.
            let taken = libc::SIGRTMAX() - 1;
            extern "C" fn other(_: libc::c_int) {}
            // SAFETY: as in `install_handler`; `other` does nothing.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                let handler: extern "C" fn(libc::c_int) = other;
                action.sa_sigaction = handler as usize;
                libc::sigemptyset(&mut action.sa_mask);
                assert_eq!(libc::sigaction(taken, &action, std::ptr::null_mut()), 0);
            }
            let err = install_handler(Some(taken)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert!(err.to_string().contains("already has a handler"), "{err}");
        }

        /// A capture does not depend on any lock: here another thread holds
        /// the dynamic loader's lock (it is inside a `dl_iterate_phdr`
        /// callback, as during a slow `dlopen`) while the stuck thread is
        /// captured. An unwinder in the handler would wait for that lock,
        /// keeping the stuck thread stuck in its own signal handler.
        #[test]
        fn a_capture_completes_while_another_thread_holds_the_loader_lock() {
            let signal = handler_signal();
            let (tx, rx) = mpsc::channel();
            let sleeper = std::thread::spawn(move || {
                blocked_in_a_function_with_a_distinctive_name(tx, Duration::from_millis(600))
            });
            let (tid, bounds) = rx.recv().unwrap();
            let (held_tx, held_rx) = mpsc::channel::<()>();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                struct Channels(mpsc::Sender<()>, mpsc::Receiver<()>, bool);
                extern "C" fn hold(
                    _: *mut libc::dl_phdr_info,
                    _: libc::size_t,
                    data: *mut c_void,
                ) -> libc::c_int {
                    // SAFETY: `data` is the `Channels` passed below, alive
                    // for the whole `dl_iterate_phdr` call.
                    let channels = unsafe { &mut *data.cast::<Channels>() };
                    if !channels.2 {
                        channels.2 = true;
                        channels.0.send(()).unwrap();
                        let _ = channels.1.recv_timeout(Duration::from_secs(5));
                    }
                    0
                }
                let mut channels = Channels(held_tx, release_rx, false);
                // SAFETY: `hold` has the callback's signature and only uses
                // `data` as the `Channels` it is.
                unsafe {
                    libc::dl_iterate_phdr(Some(hold), std::ptr::from_mut(&mut channels).cast());
                }
            });
            held_rx.recv().unwrap();
            let started = Instant::now();
            let stack = capture(tid, signal, bounds);
            let took = started.elapsed();
            release_tx.send(()).unwrap();
            holder.join().unwrap();
            sleeper.join().unwrap();
            let stack = stack.expect("the capture is answered");
            assert!(took < CAPTURE_TIMEOUT, "{took:?}");
            assert!(!stack.addresses().is_empty());
        }

        /// Issue 13 §3: the old handler ran the unwinder, which takes locks
        /// and reads the loader's state; a thread interrupted while holding
        /// them could deadlock its own handler. 1,000 captures of a thread
        /// that allocates, formats and loads and resolves symbols in a loop
        /// must all succeed, and the thread must keep going.
        #[test]
        fn a_thousand_captures_of_a_thread_in_malloc_format_and_the_loader() {
            let signal = handler_signal();
            let stop = Arc::new(AtomicBool::new(false));
            let rounds = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = mpsc::channel();
            let worker = {
                let (stop, rounds) = (stop.clone(), rounds.clone());
                std::thread::spawn(move || {
                    // Loads the debug info once, so that the rounds are many.
                    std::hint::black_box(backtrace::Backtrace::new());
                    tx.send(target()).unwrap();
                    while !stop.load(Relaxed) {
                        let round = rounds.load(Relaxed);
                        let words: Vec<String> = (0..64)
                            .map(|i| format!("{i:>8}|{:?}", i as f64 / 3.0))
                            .collect();
                        std::hint::black_box(words);
                        // The unwinder: its lock and the loader's object
                        // list (`dl_iterate_phdr`).
                        let mut depth = 0;
                        backtrace::trace(|_| {
                            depth += 1;
                            true
                        });
                        std::hint::black_box(depth);
                        // Now and then the symboliser too: debug info,
                        // its caches, many allocations.
                        if round % 16 == 0 {
                            let trace = backtrace::Backtrace::new();
                            std::hint::black_box(format!("{trace:?}"));
                        }
                        // SAFETY: a library every glibc system has; the
                        // handle is closed again and the symbol not called.
                        unsafe {
                            let lib = libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW);
                            if !lib.is_null() {
                                std::hint::black_box(libc::dlsym(lib, c"cos".as_ptr()));
                                libc::dlclose(lib);
                            }
                        }
                        rounds.fetch_add(1, Relaxed);
                    }
                })
            };
            let (tid, bounds) = rx.recv().unwrap();
            let started = Instant::now();
            let mut captured = 0;
            for _ in 0..1_000 {
                let stack = capture(tid, signal, bounds).expect("every capture is answered");
                assert!(!stack.addresses().is_empty());
                captured += 1;
            }
            let took = started.elapsed();
            let before = rounds.load(Relaxed);
            // The worker was not left stuck by any capture.
            let deadline = Instant::now() + Duration::from_secs(20);
            while rounds.load(Relaxed) == before {
                assert!(Instant::now() < deadline, "the worker stopped");
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Relaxed);
            worker.join().unwrap();
            assert_eq!(captured, 1_000);
            eprintln!(
                "1000 captures in {took:?}, worker rounds: {}",
                rounds.load(Relaxed)
            );
        }
    }
}
