//! `cargo xtask`: the single entry point for the workspace's automation.
//!
//! Run `cargo xtask --help` for the list of tasks. Every task shells out to
//! cargo; the output is grouped in labelled sections so that a failure is
//! easy to find.

mod api_docs;
mod bench;
mod ci;
mod run;
mod tidy;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

const HELP: &str = "\
cargo xtask <TASK> [ARGS]

tasks:
  ci                  every check and test: fmt, tidy, clippy, tests, loom, miri, docs, benches, packaging
                      (`ci --only test,miri` runs the named sections alone)
  bench [PATTERN...]  measure the bench targets (all, or the named ones) on this machine, store the
                      results in docs/benchmarks/<machine>/, write docs/benchmarks.md, judge the targets
                      (`bench --check` judges the stored results without measuring; `bench --render`
                      rewrites the Markdown; `bench --help` for the options; never part of `ci`)
  doc [--open]        build the API docs of every crate
  demo [-- ARGS]      run the end-to-end demo (`cargo xtask demo -- --help` for its options)
  help                this text";

fn main() -> std::process::ExitCode {
    match dispatch() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    std::env::set_current_dir(project_root())?;
    match task.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            println!("{HELP}");
            Ok(())
        }
        Some("ci") => match rest.as_slice() {
            [] => ci::run(None),
            [flag, sections] if flag == "--only" => ci::run(Some(sections)),
            _ => bail!("usage: cargo xtask ci [--only SECTION[,SECTION...]]"),
        },
        Some("bench") => bench::run(&rest),
        Some("doc") => doc(&rest),
        Some("demo") => demo(&rest),
        Some(other) => bail!("unknown task `{other}`\n\n{HELP}"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn doc(rest: &[String]) -> Result<()> {
    let open = match rest {
        [] => false,
        [flag] if flag == "--open" => true,
        _ => bail!("usage: cargo xtask doc [--open]"),
    };
    let mut cmd = ci::doc_command()?;
    if open {
        cmd.arg("--open");
    }
    run::section("doc", cmd, run::Limit::minutes(20))
}

fn demo(rest: &[String]) -> Result<()> {
    let passthrough = match rest.first() {
        Some(sep) if sep == "--" => &rest[1..],
        _ => rest,
    };
    let mut cmd = run::cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "async-patterns-demo",
        "--",
    ]);
    cmd.args(passthrough);
    // The demo takes the place of this process (cargo run does the same for
    // the demo's binary): a Ctrl-C at the terminal, or a SIGTERM sent to the
    // pid that was started, then reaches the demo itself, which stops its
    // producers, drains and prints its books. Run as a section, in a process
    // group of its own, the signal would end xtask and leave the demo
    // running without a terminal.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        run::header("demo", &cmd);
        let err = cmd.exec();
        bail!("cannot start cargo for the demo: {err}")
    }
    #[cfg(not(unix))]
    run::section("demo", cmd, run::Limit::minutes(30))
}
