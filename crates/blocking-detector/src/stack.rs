//! Stack capture (Linux, feature `stack-capture`): the watchdog sends the
//! stuck thread a real-time signal; the signal handler, running on that
//! thread, walks its stack into a preallocated static buffer and wakes the
//! watchdog, which symbolises the addresses on its own thread.
//!
//! The handler only uses async-signal-safe operations: atomics, the `gettid`
//! and `futex` system calls, and the platform unwinder
//! (`_Unwind_Backtrace`), which walks `.eh_frame` data without allocating.
//! One capture runs at a time (a process-wide lock on the watchdog side), so
//! the buffer has a single writer. Addresses become symbols only when someone
//! looks at the frames (the default handler does, on the watchdog thread), so
//! that the `Stuck` report goes out while the thread is still stuck. The unwinder reads the dynamic loader's
//! list of objects; glibc guards it with a recursive lock, so a capture of a
//! thread that is inside `dlopen` at that moment waits for it or, on the
//! same thread, may read a list being updated.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::detector::{BlockingDetectorBuilder, lock};

/// The most frames one capture records.
const MAX_FRAMES: usize = 128;

/// How long the watchdog waits for the handler to run.
const CAPTURE_TIMEOUT: Duration = Duration::from_millis(250);

/// How much longer it waits once the handler has started.
const FINISH_TIMEOUT: Duration = Duration::from_secs(1);

const IDLE: u32 = 0;
const REQUESTED: u32 = 1;
const CAPTURING: u32 = 2;
const DONE: u32 = 3;

/// The buffer the signal handler writes into; static, so that the handler
/// never allocates.
struct CaptureArea {
    /// `IDLE` → `REQUESTED` (watchdog) → `CAPTURING` → `DONE` (handler) →
    /// `IDLE` (watchdog). Also the futex word the watchdog sleeps on.
    state: AtomicU32,
    /// The kernel thread id the request is for.
    target: AtomicI32,
    len: AtomicUsize,
    frames: [AtomicUsize; MAX_FRAMES],
}

static AREA: CaptureArea = CaptureArea {
    state: AtomicU32::new(IDLE),
    target: AtomicI32::new(0),
    len: AtomicUsize::new(0),
    frames: [const { AtomicUsize::new(0) }; MAX_FRAMES],
};

/// One capture at a time, across all detectors of the process.
static CAPTURE_LOCK: Mutex<()> = Mutex::new(());

/// The signal the handler is installed for, once installed.
static INSTALLED: Mutex<Option<i32>> = Mutex::new(None);

/// Set if a handler started a capture and never finished it: the buffer may
/// still be written, so no further capture uses it.
static ABANDONED: AtomicBool = AtomicBool::new(false);

impl BlockingDetectorBuilder {
    /// Capture the stack of a stuck worker with each
    /// [`ReportKind::Stuck`](crate::ReportKind::Stuck) report (default off;
    /// only for [`install`](Self::install)ed detectors).
    ///
    /// The watchdog signals the stuck thread with a real-time signal
    /// (`SIGRTMIN + 4` unless [`stack_capture_signal`](Self::stack_capture_signal)
    /// says otherwise); the handler records up to 128 return addresses and
    /// the watchdog resolves them to symbols, files and lines. The handler is
    /// installed once per process and never removed; it ignores signals it
    /// did not ask for. The signal interrupts the stuck thread's system call,
    /// which is restarted (`SA_RESTART`), and std's blocking calls retry on
    /// `EINTR`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, BlockingReport, ReportKind};
    /// use std::sync::{mpsc, Mutex};
    /// use std::time::Duration;
    ///
    /// #[inline(never)]
    /// fn load_config_synchronously() {
    ///     std::thread::sleep(Duration::from_millis(600));
    /// }
    ///
    /// let (tx, rx) = mpsc::channel::<BlockingReport>();
    /// let tx = Mutex::new(tx);
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let detector = BlockingDetector::builder()
    ///     .threshold(Duration::from_millis(100))
    ///     .capture_stacks(true)
    ///     .handler(move |r: &BlockingReport| {
    ///         let _ = tx.lock().unwrap().send(r.clone());
    ///     })
    ///     .install(builder.enable_time())?;
    /// let rt = builder.build()?;
    /// rt.block_on(async {
    ///     tokio::time::sleep(Duration::from_millis(10)).await; // park once: watched
    ///     tokio::spawn(async { load_config_synchronously() }).await.unwrap();
    /// });
    /// let stuck = rx.recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!(stuck.kind(), ReportKind::Stuck);
    /// let stack = stuck.stack().expect("a stack");
    /// assert!(stack.frames().iter().any(|f| {
    ///     f.symbol().is_some_and(|s| s.contains("load_config_synchronously"))
    /// }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
    pub fn capture_stacks(mut self, capture: bool) -> Self {
        self.capture_stacks = capture;
        self
    }

    /// The real-time signal stack capture uses (from `SIGRTMIN` to
    /// `SIGRTMAX`); [`install`](Self::install) fails if it already has a
    /// handler, or if another detector captures with a different signal.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_blocking_detector::{BlockingDetector, InstallError};
    ///
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let err = BlockingDetector::builder()
    ///     .capture_stacks(true)
    ///     .stack_capture_signal(2) // SIGINT: not a real-time signal
    ///     .install(&mut builder)
    ///     .unwrap_err();
    /// assert!(matches!(err, InstallError::StackCapture(_)));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
    pub fn stack_capture_signal(mut self, signal: i32) -> Self {
        self.stack_signal = Some(signal);
        self
    }
}

/// A stack captured from a stuck thread, innermost frame first; `Display`
/// writes one frame per line.
///
/// The capture keeps return addresses; they are resolved to symbols, files
/// and lines the first time the frames are looked at.
///
/// # Examples
///
/// See [`BlockingDetectorBuilder::capture_stacks`].
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
pub struct StackTrace {
    addresses: Vec<usize>,
    frames: OnceLock<Vec<StackFrame>>,
}

impl StackTrace {
    /// The frames, innermost first, resolved on the first call. An inlined
    /// function gets a frame of its own, with the address of the frame it
    /// was inlined into.
    pub fn frames(&self) -> &[StackFrame] {
        self.frames.get_or_init(|| symbolise(&self.addresses))
    }

    /// The raw instruction addresses, innermost first, including the frames
    /// of the capture itself.
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
/// See [`BlockingDetectorBuilder::capture_stacks`].
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(all(feature = "stack-capture", target_os = "linux"))))]
pub struct StackFrame {
    ip: usize,
    symbol: Option<String>,
    file: Option<PathBuf>,
    line: Option<u32>,
}

impl StackFrame {
    /// The instruction address (a return address for all but the innermost
    /// frame).
    pub fn ip(&self) -> usize {
        self.ip
    }

    /// The demangled function name, if the binary has symbols.
    pub fn symbol(&self) -> Option<&str> {
        self.symbol.as_deref()
    }

    /// The source file, if the binary has debug info.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The source line, if the binary has debug info.
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
    // SAFETY: `gettid` takes no arguments, cannot fail and is
    // async-signal-safe.
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
    // SAFETY: `action` is fully initialised and its handler is an
    // `extern "C"` function with the `SA_SIGINFO` signature that only does
    // async-signal-safe work (see `on_signal`).
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    *installed = Some(signal);
    Ok(signal)
}

/// The signal handler. Only async-signal-safe operations: atomics on the
/// static buffer, `gettid`, `futex`, and the unwinder (no allocation, no
/// locks of ours).
extern "C" fn on_signal(_signal: libc::c_int, _info: *mut libc::siginfo_t, _context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for
    // the thread's lifetime; it is restored below so the interrupted code
    // never sees a changed errno.
    let errno = unsafe { *libc::__errno_location() };
    if AREA
        .state
        .compare_exchange(REQUESTED, CAPTURING, Acquire, Relaxed)
        .is_ok()
    {
        if AREA.target.load(Relaxed) == current_tid() {
            let mut len = 0;
            // SAFETY: `trace_unsynchronized` is unsafe only because it does
            // not take the crate's global lock; nothing else in this process
            // traces into `AREA` (captures are serialised by CAPTURE_LOCK),
            // and the closure only stores into preallocated atomics.
            unsafe {
                backtrace::trace_unsynchronized(|frame| {
                    AREA.frames[len].store(frame.ip() as usize, Relaxed);
                    len += 1;
                    len < MAX_FRAMES
                });
            }
            AREA.len.store(len, Relaxed);
            AREA.state.store(DONE, Release);
        } else {
            // Delivered to a thread the request is not for: put it back.
            AREA.state.store(REQUESTED, Release);
        }
        futex_wake(&AREA.state);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Captures the stack of thread `tid` (of this process) with `signal`;
/// `None` if the thread is gone or did not answer in time.
pub(crate) fn capture(tid: i32, signal: i32) -> Option<StackTrace> {
    Some(StackTrace {
        addresses: capture_addresses(tid, signal)?,
        frames: OnceLock::new(),
    })
}

fn capture_addresses(tid: i32, signal: i32) -> Option<Vec<usize>> {
    let _one_at_a_time = lock(&CAPTURE_LOCK);
    if ABANDONED.load(Acquire) {
        return None;
    }
    AREA.len.store(0, Relaxed);
    AREA.target.store(tid, Relaxed);
    AREA.state.store(REQUESTED, Release);
    // SAFETY: `getpid` cannot fail.
    let pid = unsafe { libc::getpid() };
    // SAFETY: `tgkill` with our own pid only ever signals a thread of this
    // process; a stale tid fails with ESRCH (or reaches a thread whose
    // handler sees it is not the target and ignores it).
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) } == 0;
    if !sent {
        AREA.state.store(IDLE, Release);
        return None;
    }
    let start = Instant::now();
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
            ABANDONED.store(true, Release);
            return None;
        }
        futex_wait(&AREA.state, state, Duration::from_millis(10));
    }
    let len = AREA.len.load(Relaxed).min(MAX_FRAMES);
    let addresses = AREA.frames[..len].iter().map(|f| f.load(Relaxed)).collect();
    AREA.state.store(IDLE, Release);
    Some(addresses)
}

/// Resolves `addresses` and drops the frames of the capture itself (the
/// handler and the signal trampoline).
fn symbolise(addresses: &[usize]) -> Vec<StackFrame> {
    let mut frames = Vec::with_capacity(addresses.len());
    for &ip in addresses {
        let before = frames.len();
        backtrace::resolve(ip as *mut c_void, |symbol| {
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
    let capture_frames = frames.iter().rposition(|f| {
        f.symbol
            .as_deref()
            .is_some_and(|s| s.contains("stack::on_signal") || s.contains("__restore_rt"))
    });
    if let Some(last) = capture_frames {
        frames.drain(..=last);
    }
    frames
}

/// Sleeps until `word` may have changed from `expected`, or `timeout`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 32-bit atomic for the whole call and
    // `timeout` a valid relative timespec; the kernel only reads both. Any
    // error (EAGAIN, EINTR, ETIMEDOUT) just returns to the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// Wakes the threads sleeping in [`futex_wait`] on `word`; async-signal-safe.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE only reads
    // its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[inline(never)]
    fn blocked_in_a_function_with_a_distinctive_name(ready: mpsc::Sender<i32>, hold: Duration) {
        ready.send(current_tid()).unwrap();
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
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));

        let stack = capture(tid, signal).expect("the thread answers");
        assert!(stack.addresses().len() > stack.frames().len() / 4);
        let names: Vec<_> = stack.frames().iter().filter_map(|f| f.symbol()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.contains("blocked_in_a_function_with_a_distinctive_name")),
            "{stack}"
        );
        // The capture's own frames were removed.
        assert!(!names.iter().any(|n| n.contains("on_signal")), "{stack}");

        sleeper.join().unwrap();
        // `thread::sleep` resumed after the signal and slept its full time.
        assert!(started.elapsed() >= hold);
    }

    #[test]
    fn capturing_a_thread_that_is_gone_returns_none() {
        let signal = handler_signal();
        let tid = std::thread::spawn(current_tid).join().unwrap();
        // Linux hands out thread ids in sequence, so `tid` is not reused yet.
        let started = Instant::now();
        assert!(capture(tid, signal).is_none());
        assert!(started.elapsed() < CAPTURE_TIMEOUT + Duration::from_secs(5));
    }

    #[test]
    fn a_signal_nobody_asked_for_is_ignored() {
        let signal = handler_signal();
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                blocked_in_a_function_with_a_distinctive_name(tx, Duration::from_millis(100));
                done.store(true, Release);
            })
        };
        let tid = rx.recv().unwrap();
        // No capture can be requested while this test holds the lock.
        let serial = lock(&CAPTURE_LOCK);
        // SAFETY: signals a thread of this process whose handler is ours.
        let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
        assert_eq!(rc, 0);
        thread.join().unwrap();
        assert!(done.load(Acquire));
        assert_eq!(AREA.state.load(Relaxed), IDLE);
        drop(serial);
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
}
