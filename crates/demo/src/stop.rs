//! Stopping the demo from outside: Ctrl-C (`SIGINT`) or `SIGTERM` asks the
//! producers to stop; the stages then drain what is in flight and the demo
//! prints its books, as a graceful shutdown should.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag the producers check between bursts: once raised, they read no more
/// events, and the pipeline drains behind them.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag that is not raised.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Raises the flag.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is raised.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Raises the flag on the first `SIGINT` or `SIGTERM`, calling `notice`
    /// with the signal's name; a second one ends the process at once with
    /// exit code 130 (the impatient user's way out).
    ///
    /// # Errors
    ///
    /// The signal handlers could not be installed.
    pub fn on_signals(notice: impl Fn(&str) + Send + 'static) -> std::io::Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = Stop::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        // Registered here, before the demo starts, so that no signal in
        // between takes the default action (ending the process).
        let (mut int, mut term) = runtime.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })?;
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("demo-signals".into())
            .spawn(move || {
                runtime.block_on(async move {
                    loop {
                        let name = tokio::select! {
                            _ = int.recv() => "SIGINT",
                            _ = term.recv() => "SIGTERM",
                        };
                        if flag.is_requested() {
                            std::process::exit(130);
                        }
                        flag.request();
                        notice(name);
                    }
                });
            })?;
        Ok(stop)
    }
}
