//! The demo binary stopped mid-run by Ctrl-C (`SIGINT`) or `SIGTERM`, as a
//! user would: the producers stop, what is in flight drains, the summary is
//! printed with balanced books, and the exit code is 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starts the demo binary with `args`, waits until it has produced events,
/// sends `signal`, and returns its exit code and everything it printed.
fn stopped_by(signal: libc::c_int, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_async-patterns-demo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait for a progress line that shows events produced.
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no progress within 120 s; output so far:\n{out}"));
        out.push_str(&line);
        out.push('\n');
        if produced_so_far(&line).is_some_and(|n| n > 0) {
            break;
        }
    }
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: `kill` has no memory-safety preconditions; the child is ours
    // and not yet reaped, so the pid names it.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the demo did not finish within 60 s of the signal; output:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    out.extend(rx.try_iter().map(|l| l + "\n"));
    (status.code(), out)
}

/// The `produced N` figure of a progress line.
fn produced_so_far(line: &str) -> Option<u64> {
    let rest = line.split("produced").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The figure after `label` at the start of a summary line.
fn figure(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
}

fn check_stopped_and_balanced(code: Option<i32>, out: &str, events: u64) {
    assert!(out.contains("stopping the producers"), "{out}");
    assert!(out.contains("stopped early"), "{out}");
    assert!(out.contains("books balance: yes"), "{out}");
    assert_eq!(figure(out, "lost"), 0, "{out}");
    let produced = figure(out, "produced");
    assert!(produced > 0 && produced < events, "{out}");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn sigint_mid_run_stops_drains_and_prints_balanced_books() {
    let (code, out) = stopped_by(libc::SIGINT, &["--events", "5000000", "--seed", "4"]);
    check_stopped_and_balanced(code, &out, 5_000_000);
}

#[test]
fn sigterm_mid_run_does_the_same() {
    let (code, out) = stopped_by(libc::SIGTERM, &["--events", "5000000", "--seed", "5"]);
    check_stopped_and_balanced(code, &out, 5_000_000);
}
