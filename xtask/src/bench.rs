//! `cargo xtask bench`: runs criterion bench targets, stores their results
//! per machine, writes `docs/benchmarks.md` and judges the targets.
//!
//! Conventions (also in `benches/README.md`): a bench target
//! `benches/benches/<pattern>.rs` names its criterion groups
//! `<pattern>/<case>`; in a group, functions named `ours` or `ours:<variant>`
//! run the project's code and every other function is an anchor. A target is
//! judged on paired rounds, which the bench appends with `record_paired` to
//! the file named by `ASYNC_PATTERNS_METRICS`, as it does other figures
//! (`record_metric`). Descriptions and targets live in
//! `benches/targets/<pattern>.json`.
//!
//! Results are kept per machine and pattern in
//! `docs/benchmarks/<machine>/<pattern>.json` ([`results`]), so that a run
//! replaces only its own pattern on its own kind of machine; the Markdown is
//! rendered from all of them ([`render`]); targets are judged in [`judge`].

mod judge;
mod render;
mod results;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use self::judge::{Target, Targets};
use self::results::{Machine, Run};
use crate::run::{self, Limit};

const RESULTS: &str = "docs/benchmarks";
const REPORT: &str = "docs/benchmarks.md";
const TARGETS: &str = "benches/targets";

pub(crate) const USAGE: &str = "\
cargo xtask bench [--strict] [PATTERN...]
    measure the named bench targets (all when none is named), store the results of this machine
    in docs/benchmarks/<machine>/<pattern>.json, rewrite docs/benchmarks.md, print which targets hold
cargo xtask bench --check [--strict] [--machine SLUG] [PATTERN...]
    measure nothing: judge the stored results of this machine (or of SLUG, a folder under
    docs/benchmarks/) against the targets of the named patterns (all when none is named)
cargo xtask bench --render
    rewrite docs/benchmarks.md from the stored results, measuring nothing

A missed target is reported, never an error: the exit status is 0 unless --strict is given,
then it is 1 when any target judged is not met or not measured.";

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, PartialEq)]
struct Options {
    mode: Mode,
    strict: bool,
    machine: Option<String>,
    patterns: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum Mode {
    Measure,
    Check,
    Render,
    Help,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        mode: Mode::Measure,
        strict: false,
        machine: None,
        patterns: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" | "--render" if o.mode != Mode::Measure => {
                bail!("`--check` and `--render` do not go together\n\n{USAGE}")
            }
            "--check" => o.mode = Mode::Check,
            "--render" => o.mode = Mode::Render,
            "--strict" => o.strict = true,
            "--machine" => {
                let Some(slug) = args.next() else {
                    bail!("`--machine` needs a machine folder name\n\n{USAGE}");
                };
                o.machine = Some(slug.clone());
            }
            "-h" | "--help" => o.mode = Mode::Help,
            flag if flag.starts_with('-') => bail!("unknown option `{flag}`\n\n{USAGE}"),
            pattern => o.patterns.push(pattern.replace('-', "_")),
        }
    }
    if o.mode == Mode::Render && (o.strict || o.machine.is_some() || !o.patterns.is_empty()) {
        bail!("`--render` takes no other argument\n\n{USAGE}");
    }
    if o.machine.is_some() && o.mode != Mode::Check {
        bail!("`--machine` goes with `--check`\n\n{USAGE}");
    }
    Ok(o)
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let targets = Targets::read(Path::new(TARGETS))?;
    let available = bench_targets()?;
    for pattern in &options.patterns {
        if !available.contains(pattern) {
            bail!(
                "no bench target `{pattern}`; available: {}",
                available.join(", ")
            );
        }
    }
    let selected = if options.patterns.is_empty() {
        available
    } else {
        options.patterns.clone()
    };
    match options.mode {
        Mode::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Mode::Render => {
            render(&targets)?;
            warn_unpaired(&targets, &selected);
            Ok(())
        }
        Mode::Check => {
            let store = results::load(Path::new(RESULTS))?;
            let slug = match &options.machine {
                Some(slug) if store.machine(slug).is_none() => bail!(
                    "no results for machine `{slug}` in {RESULTS}/; stored: {}",
                    store
                        .machines
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(slug) => slug.clone(),
                None => Machine::detect().slug(),
            };
            println!(
                "judging the stored results in {RESULTS}/{slug}/ (`cargo xtask bench PATTERN` measures)"
            );
            check(&store, &slug, &targets, &selected, options.strict)
        }
        Mode::Measure => {
            // What was measured before a failing bench is stored; show it.
            let measured = measure(&selected);
            render(&targets)?;
            measured?;
            let store = results::load(Path::new(RESULTS))?;
            check(
                &store,
                &Machine::detect().slug(),
                &targets,
                &selected,
                options.strict,
            )
        }
    }
}

/// Moves results into the per-machine layout, then rewrites the Markdown.
fn render(targets: &Targets) -> Result<()> {
    for change in results::normalise(Path::new(RESULTS))? {
        println!("{change}");
    }
    let store = results::load(Path::new(RESULTS))?;
    fs::write(REPORT, render::markdown(&store, targets))?;
    println!(
        "wrote {REPORT} from {RESULTS}/<machine>/<pattern>.json ({} machine(s))",
        store.machines.len()
    );
    Ok(())
}

/// Prints the targets of `patterns` judged on `slug`'s stored results;
/// fails only under `strict`.
fn check(
    store: &results::Store,
    slug: &str,
    targets: &Targets,
    patterns: &[String],
    strict: bool,
) -> Result<()> {
    let selected: Vec<&Target> = targets
        .targets
        .iter()
        .filter(|t| patterns.contains(&t.pattern))
        .collect();
    let runs = store.machine(slug);
    let label = runs
        .and_then(|r| r.values().max_by(|a, b| a.date.cmp(&b.date)))
        .map(|r| r.machine.clone())
        .unwrap_or_else(Machine::detect)
        .label();
    let (table, failing) = render::check_table(&format!("{label} (`{slug}`)"), runs, &selected);
    println!("\n{table}");
    warn_unpaired(targets, patterns);
    if strict && failing > 0 {
        bail!("{failing} target(s) not met or not measured on `{slug}` (--strict)");
    }
    Ok(())
}

/// Lists the targets that are not yet judged by paired rounds.
fn warn_unpaired(targets: &Targets, patterns: &[String]) {
    let unpaired: Vec<&Target> = targets
        .unpaired()
        .into_iter()
        .filter(|t| patterns.contains(&t.pattern))
        .collect();
    if unpaired.is_empty() {
        return;
    }
    eprintln!(
        "\nwarning: {} target(s) not judged by paired rounds yet (no `\"paired\": true` in {TARGETS}/<pattern>.json); \
         they are judged on criterion medians measured one after the other, or on a single figure:",
        unpaired.len()
    );
    for t in unpaired {
        eprintln!("  {t}");
    }
}

/// Runs each bench target and stores its results for this machine.
fn measure(selected: &[String]) -> Result<()> {
    let target_dir = target_dir();
    let metrics_file = target_dir.join("async-patterns-bench/metrics.jsonl");
    fs::create_dir_all(metrics_file.parent().expect("has a parent"))?;
    for change in results::normalise(Path::new(RESULTS))? {
        println!("{change}");
    }
    let machine = Machine::detect();
    for pattern in selected {
        let _ = fs::remove_file(&metrics_file);
        let started = SystemTime::now();
        let mut cmd = run::cargo();
        cmd.env("ASYNC_PATTERNS_METRICS", &metrics_file).args([
            "bench",
            "--package",
            "async-patterns-benches",
            "--bench",
            pattern,
        ]);
        run::section(&format!("bench {pattern}"), cmd, Limit::minutes(60))?;
        let mut records = criterion_records(&target_dir.join("criterion"), started)?;
        records.extend(metric_records(&metrics_file)?);
        records.retain(|r| {
            r["group"]
                .as_str()
                .is_some_and(|g| g.split('/').next() == Some(pattern.as_str()))
        });
        if records.is_empty() {
            bail!(
                "bench `{pattern}` produced no results (groups must be named `{pattern}/<case>`)"
            );
        }
        let run = Run {
            pattern: pattern.clone(),
            date: utc_now(),
            machine: machine.clone(),
            records,
        };
        let file = results::save(Path::new(RESULTS), &run)?;
        println!("stored {}", file.display());
    }
    Ok(())
}

fn bench_targets() -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir("benches/benches")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Absolute, because the bench binaries run in `benches/`, not at the root:
/// a relative `ASYNC_PATTERNS_METRICS` path would point nowhere.
fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    match std::env::current_dir() {
        Ok(cwd) if dir.is_relative() => cwd.join(dir),
        _ => dir,
    }
}

/// Every criterion measurement written since `since`: the median time per
/// iteration, and the throughput per iteration if the group declared one.
fn criterion_records(dir: &Path, since: SystemTime) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let is_new_benchmark = path.file_name().is_some_and(|n| n == "benchmark.json")
                && path
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n == "new");
            if !is_new_benchmark || fs::metadata(&path)?.modified()? < since {
                continue;
            }
            let bench: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
            let estimates: Value =
                serde_json::from_str(&fs::read_to_string(path.with_file_name("estimates.json"))?)?;
            let mut implementation = bench["function_id"].as_str().unwrap_or("?").to_string();
            if let Some(value) = bench["value_str"].as_str() {
                implementation = format!("{implementation}/{value}");
            }
            let throughput = &bench["throughput"];
            out.push(json!({
                "group": bench["group_id"],
                "implementation": implementation,
                "metric": "time",
                "value": estimates["median"]["point_estimate"],
                "unit": "ns",
                "better": "lower",
                "elements": throughput.get("Elements").or_else(|| throughput.get("ElementsAndBytes").and_then(|t| t.get("elements"))),
                "bytes": throughput.get("Bytes").or_else(|| throughput.get("BytesDecimal")),
            }));
        }
    }
    Ok(out)
}

/// Extra figures the benches appended, one JSON object per line.
fn metric_records(file: &Path) -> Result<Vec<Value>> {
    let Ok(text) = fs::read_to_string(file) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad metric line `{l}`")))
        .collect()
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parse_reads_modes_flags_and_patterns() {
        let o = parse(&args("txn-channel batching")).unwrap();
        assert_eq!(o.mode, Mode::Measure);
        assert_eq!(o.patterns, ["txn_channel", "batching"]);
        let o = parse(&args("--check --strict --machine amd-epyc-2-cores mutex")).unwrap();
        assert_eq!(o.mode, Mode::Check);
        assert!(o.strict);
        assert_eq!(o.machine.as_deref(), Some("amd-epyc-2-cores"));
        assert_eq!(o.patterns, ["mutex"]);
        assert_eq!(parse(&args("--render")).unwrap().mode, Mode::Render);
        assert_eq!(parse(&args("--help")).unwrap().mode, Mode::Help);
    }

    #[test]
    fn parse_rejects_what_does_not_go_together() {
        for bad in [
            "--render mutex",
            "--render --strict",
            "--render --check",
            "--machine x",
            "--check --machine",
            "--fast",
        ] {
            assert!(parse(&args(bad)).is_err(), "`{bad}` was accepted");
        }
    }

    #[test]
    fn utc_now_is_well_formed() {
        let s = utc_now();
        assert_eq!(s.len(), "2026-11-27 22:25 UTC".len(), "{s}");
        assert!(s.ends_with(" UTC"));
    }
}
