//! `cargo xtask bench [PATTERN...]`: runs criterion bench targets and writes
//! `docs/benchmarks.md`.
//!
//! Conventions (also in `benches/README.md`): a bench target
//! `benches/benches/<pattern>.rs` names its criterion groups
//! `<pattern>/<case>`; in a group, functions named `ours` or `ours:<variant>`
//! run the project's code and every other function is an anchor. Figures
//! other than time (bytes allocated, latency percentiles) are appended by the
//! bench to the file named by `ASYNC_PATTERNS_METRICS`. Descriptions and
//! targets live in `benches/targets/<pattern>.json`.
//!
//! Results are kept per pattern in `docs/benchmarks/<pattern>.json`, so that
//! running one pattern replaces only its section; the Markdown is rendered
//! from all of them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::run::{self, Limit};

const RESULTS: &str = "docs/benchmarks";
const REPORT: &str = "docs/benchmarks.md";
const TARGETS: &str = "benches/targets";

pub(crate) fn run(args: &[String]) -> Result<()> {
    if args == ["--render"] {
        // Rebuild the Markdown from the stored results, measuring nothing.
        fs::write(REPORT, render(&read_json_dir(RESULTS)?, &targets()?))?;
        println!("wrote {REPORT} from {RESULTS}/*.json");
        return Ok(());
    }
    let available = bench_targets()?;
    let selected: Vec<String> = if args.is_empty() {
        available.clone()
    } else {
        let mut chosen = Vec::new();
        for arg in args {
            let name = arg.replace('-', "_");
            if !available.contains(&name) {
                bail!(
                    "no bench target `{arg}`; available: {}",
                    available.join(", ")
                );
            }
            chosen.push(name);
        }
        chosen
    };

    let target_dir = target_dir();
    let metrics_file = target_dir.join("async-patterns-bench/metrics.jsonl");
    fs::create_dir_all(metrics_file.parent().expect("has a parent"))?;
    fs::create_dir_all(RESULTS)?;
    let machine = machine();
    for pattern in &selected {
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
        let section = json!({
            "date": utc_now(),
            "machine": machine,
            "records": records,
        });
        let file = Path::new(RESULTS).join(format!("{pattern}.json"));
        fs::write(file, serde_json::to_string_pretty(&section)? + "\n")?;
    }
    fs::write(REPORT, render(&read_json_dir(RESULTS)?, &targets()?))?;
    println!("\nwrote {REPORT} ({} section(s) updated)", selected.len());
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

/// `{ "<file stem>": <contents> }` for every JSON file in `dir`.
fn read_json_dir(dir: &str) -> Result<Value> {
    let mut out = serde_json::Map::new();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let value = serde_json::from_str(&fs::read_to_string(&file)?)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        out.insert(stem, value);
    }
    Ok(Value::Object(out))
}

/// Every group's description and targets, from all files in `benches/targets`.
fn targets() -> Result<Value> {
    let mut groups = serde_json::Map::new();
    for file in read_json_dir(TARGETS)?
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for (group, notes) in file["groups"].as_object().into_iter().flatten() {
            groups.insert(group.clone(), notes.clone());
        }
    }
    Ok(json!({ "groups": groups }))
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

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = run::output({
        let mut c = std::process::Command::new("rustc");
        c.arg("--version");
        c
    })
    .unwrap_or_default();
    json!({ "cpu": cpu, "cores": cores, "rustc": rustc.trim() })
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

fn render(results: &Value, targets: &Value) -> String {
    let mut md = String::from(
        "# Benchmarks\n\n\
         Generated by `cargo xtask bench` from `docs/benchmarks/*.json`; do not edit by hand.\n\n\
         Each section is one run of one bench target (`benches/benches/<pattern>.rs`): the\n\
         project's code (`ours`, `ours:<variant>`) and its anchors were measured in the same\n\
         run, on the machine named there. Times are criterion's median per iteration.\n\
         **ratio** says how many times better ours did than the anchor: anchor ÷ ours for\n\
         figures where lower is better (time, bytes, latency), ours ÷ anchor where higher is\n\
         better. Above 1 means ours won. The machine is shared and noisy: compare ratios,\n\
         not absolute figures.\n",
    );
    let Some(sections) = results.as_object() else {
        return md;
    };
    for (pattern, section) in sections {
        md.push_str(&format!(
            "\n## {pattern}\n\nMeasured {} on {} ({} cores), {}.\n",
            section["date"].as_str().unwrap_or("?"),
            section["machine"]["cpu"].as_str().unwrap_or("?"),
            section["machine"]["cores"],
            section["machine"]["rustc"].as_str().unwrap_or("?"),
        ));
        let mut groups: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for r in section["records"].as_array().into_iter().flatten() {
            groups
                .entry(r["group"].as_str().unwrap_or("?"))
                .or_default()
                .push(r);
        }
        for (group, records) in groups {
            render_group(&mut md, group, &records, &targets["groups"][group]);
        }
    }
    md
}

fn render_group(md: &mut String, group: &str, records: &[&Value], notes: &Value) {
    md.push_str(&format!("\n### `{group}`\n\n"));
    if let Some(description) = notes["description"].as_str() {
        md.push_str(description);
        md.push_str("\n\n");
    }
    md.push_str("| implementation | metric | value | throughput |\n|---|---|---:|---:|\n");
    let mut sorted: Vec<&&Value> = records.iter().collect();
    sorted.sort_by_key(|r| {
        let name = r["implementation"].as_str().unwrap_or("");
        (
            !name.starts_with("ours"),
            r["metric"].as_str().unwrap_or("").to_string(),
            name.to_string(),
        )
    });
    for r in &sorted {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r["implementation"].as_str().unwrap_or("?"),
            r["metric"].as_str().unwrap_or("?"),
            format_value(r),
            format_throughput(r),
        ));
    }
    let mut ratios = String::new();
    for ours in records.iter().filter(|r| is_ours(r)) {
        for anchor in records
            .iter()
            .filter(|r| !is_ours(r) && r["metric"] == ours["metric"])
        {
            let Some(ratio) = ratio(ours, anchor) else {
                continue;
            };
            let target = target_status(notes, ours, anchor, ratio);
            ratios.push_str(&format!(
                "| {} | {} | {} | {ratio:.2}× | {target} |\n",
                ours["implementation"].as_str().unwrap_or("?"),
                anchor["implementation"].as_str().unwrap_or("?"),
                ours["metric"].as_str().unwrap_or("?"),
            ));
        }
    }
    if !ratios.is_empty() {
        md.push_str("\n| ours | anchor | metric | ratio | target |\n|---|---|---|---:|---|\n");
        md.push_str(&ratios);
    }
    for t in notes["targets"].as_array().into_iter().flatten() {
        let Some(max) = t["max_value"].as_f64() else {
            continue;
        };
        let found = records
            .iter()
            .find(|r| r["implementation"] == t["ours"] && r["metric"] == t["metric"]);
        let status = match found.and_then(|r| r["value"].as_f64()) {
            Some(v) if v <= max => format!("{} ≤ {max}: met", format_number(v)),
            Some(v) => format!("{} > {max}: **not met**", format_number(v)),
            None => "not measured".into(),
        };
        md.push_str(&format!(
            "\nTarget: `{}` {} at most {max} {}: {status}.\n",
            t["ours"].as_str().unwrap_or("?"),
            t["metric"].as_str().unwrap_or("?"),
            t["unit"].as_str().unwrap_or(""),
        ));
    }
}

fn is_ours(r: &Value) -> bool {
    r["implementation"]
        .as_str()
        .is_some_and(|n| n == "ours" || n.starts_with("ours:"))
}

fn ratio(ours: &Value, anchor: &Value) -> Option<f64> {
    let (o, a) = (ours["value"].as_f64()?, anchor["value"].as_f64()?);
    if o <= 0.0 || a <= 0.0 {
        return None;
    }
    Some(if ours["better"] == "higher" {
        o / a
    } else {
        a / o
    })
}

fn target_status(notes: &Value, ours: &Value, anchor: &Value, ratio: f64) -> String {
    let found = notes["targets"].as_array().into_iter().flatten().find(|t| {
        t["ours"] == ours["implementation"]
            && t["anchor"] == anchor["implementation"]
            && t["metric"].as_str().unwrap_or("time") == ours["metric"].as_str().unwrap_or("")
    });
    match found.and_then(|t| t["min_ratio"].as_f64()) {
        None => "—".into(),
        Some(min) if ratio >= min => format!("≥ {min}: met"),
        Some(min) => format!("≥ {min}: **not met**"),
    }
}

fn format_value(r: &Value) -> String {
    let Some(v) = r["value"].as_f64() else {
        return "?".into();
    };
    match r["unit"].as_str().unwrap_or("") {
        "ns" => format_ns(v),
        "bytes" => format_bytes(v),
        unit => format!("{} {unit}", format_number(v)),
    }
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn format_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn format_throughput(r: &Value) -> String {
    let Some(ns) = r["value"].as_f64().filter(|v| *v > 0.0) else {
        return String::new();
    };
    let per_sec = |n: f64| n / (ns / 1e9);
    if let Some(n) = r["elements"].as_f64() {
        let rate = per_sec(n);
        if rate >= 1e6 {
            format!("{:.2} M/s", rate / 1e6)
        } else {
            format!("{:.1} k/s", rate / 1e3)
        }
    } else if let Some(n) = r["bytes"].as_f64() {
        format!("{}/s", format_bytes(per_sec(n)))
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_anchor_over_ours_for_time() {
        let ours = json!({"value": 50.0, "better": "lower"});
        let anchor = json!({"value": 100.0, "better": "lower"});
        assert_eq!(ratio(&ours, &anchor), Some(2.0));
    }

    #[test]
    fn ratio_is_ours_over_anchor_when_higher_is_better() {
        let ours = json!({"value": 300.0, "better": "higher"});
        let anchor = json!({"value": 100.0, "better": "higher"});
        assert_eq!(ratio(&ours, &anchor), Some(3.0));
    }

    #[test]
    fn target_status_reports_misses() {
        let notes = json!({"targets": [{"ours": "ours", "anchor": "a", "min_ratio": 1.5}]});
        let ours = json!({"implementation": "ours", "metric": "time"});
        let anchor = json!({"implementation": "a", "metric": "time"});
        assert_eq!(
            target_status(&notes, &ours, &anchor, 1.2),
            "≥ 1.5: **not met**"
        );
        assert_eq!(target_status(&notes, &ours, &anchor, 1.6), "≥ 1.5: met");
    }

    #[test]
    fn utc_now_is_well_formed() {
        let s = utc_now();
        assert_eq!(s.len(), "2026-11-27 22:25 UTC".len(), "{s}");
        assert!(s.ends_with(" UTC"));
    }
}
