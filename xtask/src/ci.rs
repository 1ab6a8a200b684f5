//! `cargo xtask ci`: every check and test, in labelled sections, each timed;
//! stops at the first failure and names it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::run::{self, Limit};
use crate::tidy;

/// How a section ended, when it did not fail.
enum Ran {
    /// It ran and passed.
    Passed,
    /// It could not run on this machine, for the reason given: shown in the
    /// summary as `SKIPPED: <why>`, never as a pass.
    Skipped(String),
}

type Step = fn() -> Result<Ran>;

/// A section that always runs.
macro_rules! always {
    ($f:expr) => {{
        fn step() -> Result<Ran> {
            $f().map(|()| Ran::Passed)
        }
        step as Step
    }};
}

const SECTIONS: [(&str, Step); 10] = [
    ("fmt", always!(fmt)),
    ("tidy", always!(tidy::check)),
    ("clippy", always!(clippy)),
    ("test", always!(test)),
    ("unstable", always!(unstable)),
    ("loom", always!(loom)),
    ("miri", miri),
    ("doc", always!(doc)),
    ("bench", always!(bench)),
    ("package", always!(package)),
];

/// Runs every section, or only the comma-separated ones in `only`.
pub(crate) fn run(only: Option<&str>) -> Result<()> {
    let wanted: Option<Vec<&str>> = only.map(|o| o.split(',').map(str::trim).collect());
    if let Some(wanted) = &wanted {
        for name in wanted {
            if !SECTIONS.iter().any(|(n, _)| n == name) {
                let all: Vec<_> = SECTIONS.iter().map(|(n, _)| *n).collect();
                bail!("no ci section `{name}`; sections: {}", all.join(", "));
            }
        }
    }
    let sections: Vec<(&str, Step)> = SECTIONS
        .into_iter()
        .filter(|(n, _)| wanted.as_ref().is_none_or(|w| w.contains(n)))
        .collect();
    let start = Instant::now();
    let mut done: Vec<(&str, Duration, String)> = Vec::new();
    let mut failure = None;
    for &(name, step) in &sections {
        let t = Instant::now();
        let result = step();
        let status = match &result {
            Ok(Ran::Passed) => "ok".to_string(),
            Ok(Ran::Skipped(why)) => format!("SKIPPED: {why}"),
            Err(_) => "FAIL".to_string(),
        };
        done.push((name, t.elapsed(), status));
        if let Err(e) = result {
            failure = Some((name, e));
            break;
        }
    }
    println!("\n::: ci summary :::");
    for (name, took, status) in &done {
        let (word, why) = match status.split_once(": ") {
            Some((word, why)) => (word, format!("  {why}")),
            None => (status.as_str(), String::new()),
        };
        println!("  {word:<7} {name:<8} {:>8}{why}", fmt_duration(*took));
    }
    for (name, _) in sections.iter().skip(done.len()) {
        println!("  {:<7} {name:<8}", "skip");
    }
    println!("  total          {:>8}", fmt_duration(start.elapsed()));
    match failure {
        None if wanted.is_some() => {
            println!("ci passed (only the sections named)");
            Ok(())
        }
        None => {
            println!("ci passed");
            Ok(())
        }
        Some((name, e)) => bail!("ci failed in section `{name}`: {e:#}"),
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn fmt() -> Result<()> {
    let mut cmd = run::cargo();
    cmd.args(["fmt", "--all", "--", "--check"]);
    run::section("fmt", cmd, Limit::minutes(5))
}

fn clippy() -> Result<()> {
    let mut cmd = run::cargo();
    cmd.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run::section("clippy", cmd, Limit::minutes(30))
}

fn test() -> Result<()> {
    let mut cmd = run::cargo();
    // Unit, integration and doc tests of every crate.
    cmd.args(["test", "--workspace", "--all-features"]);
    run::section("test", cmd, Limit::minutes(40))
}

/// Code behind `cfg(tokio_unstable)` (the blocking detector's precise mode,
/// built on tokio's task-poll hooks) is compiled and tested only with that
/// flag; it runs in a target directory of its own, so the normal build cache
/// is untouched.
fn unstable() -> Result<()> {
    let mut cmd = run::cargo();
    cmd.env("RUSTFLAGS", "--cfg tokio_unstable").args([
        "test",
        "--target-dir",
        "target/unstable",
        "--package",
        "async-patterns-blocking-detector",
        "--all-features",
    ]);
    run::section("test (tokio_unstable)", cmd, Limit::minutes(30))
}

/// Loom models live in test targets named `loom*` (files `tests/loom*.rs`,
/// gated by `#![cfg(async_patterns_loom)]`) or among a crate's unit tests
/// (`#[cfg(all(test, async_patterns_loom))]`, in modules whose path names
/// loom); they run with `--cfg async_patterns_loom` — our own cfg, never the
/// bare `loom` a user's tests may set — in a target directory of their own,
/// so the normal build cache is untouched.
fn loom() -> Result<()> {
    let models = tidy::loom_targets()?;
    if models.is_empty() {
        println!("\n::: loom :::  no loom models in the workspace yet");
        return Ok(());
    }
    for (package, models) in models {
        let mut cmd = run::cargo();
        cmd.env("RUSTFLAGS", "--cfg async_patterns_loom")
            .env("LOOM_MAX_PREEMPTIONS", "3")
            .args([
                "test",
                "--release",
                "--target-dir",
                "target/loom",
                "--package",
            ])
            .arg(&package);
        let label = match &models {
            tidy::LoomModels::TestTarget(target) => {
                cmd.args(["--test", target]);
                format!("loom {package}/{target}")
            }
            tidy::LoomModels::Lib => {
                cmd.args(["--lib", "--", "loom"]);
                format!("loom {package} (unit)")
            }
        };
        run::section(&label, cmd, Limit::minutes(20))?;
    }
    users_loom_cfg()
}

/// A user who runs their own loom tests builds every crate with the bare
/// `--cfg loom`: ours must keep their real primitives (before 0.2 they
/// switched to loom's, and every use outside a model panicked). Each crate's
/// channel or runtime tests run under that cfg. (blocking-detector and
/// reusable-receiver's tonic tests are left out: under `--cfg loom` tokio
/// itself drops its thread hooks and `tokio::net`.)
fn users_loom_cfg() -> Result<()> {
    for (package, test) in [
        ("async-patterns-bridge", "channel"),
        ("async-patterns-batching", "channel"),
        ("async-patterns-txn-channel", "channel"),
        ("async-patterns-per-core-runtime", "runtime"),
    ] {
        let mut cmd = run::cargo();
        cmd.env("RUSTFLAGS", "--cfg loom").args([
            "test",
            "--target-dir",
            "target/loom-user",
            "--package",
            package,
            "--test",
            test,
        ]);
        run::section(
            &format!("loom: a user's --cfg loom leaves {package} alone"),
            cmd,
            Limit::minutes(10),
        )?;
    }
    Ok(())
}

/// Miri runs the unit tests of every published crate with `unsafe` code in
/// its `src/`, and each of their stress tests — `tests/miri*.rs`, and unit
/// tests in a `*stress*` module of `src/` — under several
/// scheduler seeds (`-Zmiri-many-seeds`), with sizes cut down under
/// `cfg(miri)`. It needs a nightly toolchain with the `miri` and `rust-src`
/// components, which `.ci/run` tries to add; without them the section is
/// reported as SKIPPED with the reason, never as a pass.
fn miri() -> Result<Ran> {
    let probe = run::output({
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo", "miri", "--version"]);
        c
    });
    if probe.is_none() {
        let why = "no nightly toolchain with the miri component (rustup toolchain install nightly --component miri,rust-src)";
        println!("\n::: miri :::  SKIPPED: {why}");
        return Ok(Ran::Skipped(why.to_string()));
    }
    let crates = tidy::unsafe_crates()?;
    // Several scheduler seeds for the stress tests: each explores other
    // interleavings of the same threads.
    let seeds = "-Zmiri-many-seeds=0..4";
    for krate in crates {
        let package = &krate.package;
        let miri_cargo = || {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo", "miri", "test"])
                .args(["--target-dir", "target/miri", "--package"])
                .arg(package);
            c
        };
        let mut lib = miri_cargo();
        lib.arg("--lib");
        if krate.unit_stress {
            lib.args(["--", "--skip", "stress"]);
        }
        run::section(&format!("miri {package} (unit)"), lib, Limit::minutes(20))?;
        if krate.unit_stress {
            let mut stress = miri_cargo();
            stress
                .env("MIRIFLAGS", seeds)
                .args(["--lib", "--", "stress"]);
            run::section(
                &format!("miri {package} (unit stress)"),
                stress,
                Limit::minutes(20),
            )?;
        }
        for test in &krate.miri_tests {
            let mut cmd = miri_cargo();
            cmd.env("MIRIFLAGS", seeds).args(["--test", test]);
            run::section(&format!("miri {package}/{test}"), cmd, Limit::minutes(20))?;
        }
    }
    Ok(Ran::Passed)
}

/// `cargo doc` as docs.rs builds it when a nightly toolchain is installed
/// (`--cfg docsrs` turns on `doc_cfg`, a nightly feature); on stable alone,
/// the same build without `--cfg docsrs`. Warnings are errors either way.
pub(crate) fn doc_command() -> Result<Command> {
    let nightly = run::output({
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "rustdoc", "--version"]);
        c
    })
    .is_some();
    let mut cmd = if nightly {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo"]);
        c.env("RUSTDOCFLAGS", "--cfg docsrs -D warnings");
        // Nightly artifacts in a directory of their own keep the stable cache warm.
        c.args(["doc", "--target-dir", "target/nightly"]);
        c
    } else {
        println!("note: no nightly toolchain, so docs are built without `--cfg docsrs`");
        let mut c = run::cargo();
        c.env("RUSTDOCFLAGS", "-D warnings");
        c.arg("doc");
        c
    };
    cmd.args(["--workspace", "--no-deps", "--all-features"]);
    for package in ["xtask", "async-patterns-benches"] {
        cmd.args(["--exclude", package]);
    }
    Ok(cmd)
}

fn doc() -> Result<()> {
    run::section("doc", doc_command()?, Limit::minutes(20))
}

/// The benchmarks are compiled, then run once each in criterion's test mode,
/// so a benchmark that panics fails CI; their timings are only taken by
/// `cargo xtask bench`.
fn bench() -> Result<()> {
    let mut build = run::cargo();
    build.args(["bench", "--package", "async-patterns-benches", "--no-run"]);
    run::section("bench (compile)", build, Limit::minutes(30))?;
    let mut once = run::cargo();
    once.args([
        "bench",
        "--package",
        "async-patterns-benches",
        "--",
        "--test",
    ]);
    run::section("bench (one pass)", once, Limit::minutes(15))
}

fn package() -> Result<()> {
    forget_unpacked_workspace_crates();
    forget_verified_workspace_crates(PACKAGE_TARGET_DIR);
    let mut cmd = run::cargo();
    cmd.args([
        "package",
        "--workspace",
        "--allow-dirty",
        "--target-dir",
        PACKAGE_TARGET_DIR,
    ]);
    // `publish = false` crates (xtask, benches, demo, test kits) are not packaged.
    for package in tidy::unpublished_packages()? {
        cmd.args(["--exclude", &package]);
    }
    run::section("package", cmd, Limit::minutes(30))
}

/// Where `cargo package` builds the crates it verifies.
const PACKAGE_TARGET_DIR: &str = "target/package-verify";

/// `cargo package` verifies a crate against its siblings as registry
/// crates, and cargo never rebuilds a registry crate of an unchanged version:
/// the artifacts of an earlier run's sibling would be reused. So the
/// artifacts of our own crates in the verification target directory are
/// removed first (the dependencies stay cached).
fn forget_verified_workspace_crates(target_dir: &str) {
    for sub in ["debug/.fingerprint", "debug/deps", "debug/build"] {
        let Ok(entries) = std::fs::read_dir(std::path::Path::new(target_dir).join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("async-patterns")
                || name.starts_with("async_patterns")
                || name.starts_with("libasync_patterns");
            if ours {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

/// `cargo package --workspace` verifies each crate against its siblings
/// through a temporary local registry, which cargo unpacks under
/// `$CARGO_HOME/registry/src/-<hash>/`. The version does not change between
/// runs, so an unpacked copy from an earlier run is reused as is, and a crate
/// that needs a sibling's newer API fails to verify. Local registries are the
/// only ones whose directory name starts with `-`; their copies of our crates
/// are removed first.
fn forget_unpacked_workspace_crates() {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(cargo_home) = cargo_home else { return };
    let Ok(registries) = std::fs::read_dir(cargo_home.join("registry/src")) else {
        return;
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for krate in crates.flatten() {
            if krate
                .file_name()
                .to_string_lossy()
                .starts_with("async-patterns")
            {
                let _ = std::fs::remove_dir_all(krate.path());
            }
        }
    }
}
