//! Stored results, one machine per folder: `docs/benchmarks/<machine>/<pattern>.json`.
//!
//! A machine is named by a slug of its CPU model and core count
//! (`amd-epyc-2-cores`), so a run replaces only the same pattern on the same
//! kind of machine and never another machine's figures. Files in the old flat
//! layout (`docs/benchmarks/<pattern>.json`, before 0.2) and files whose
//! recorded machine does not match their folder are read as belonging to the
//! machine they name; `normalise` moves them there on disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::run;

/// The machine a run was measured on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Machine {
    /// The CPU model, as the OS names it (`AMD EPYC`, `Intel(R) Xeon(R) Processor`).
    pub(crate) cpu: String,
    /// The cores the run could use (`available_parallelism`).
    pub(crate) cores: u64,
    /// `rustc --version`.
    pub(crate) rustc: String,
}

impl Machine {
    /// The machine this process runs on.
    pub(crate) fn detect() -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .or_else(|| {
                // macOS has no /proc.
                let mut c = Command::new("sysctl");
                c.args(["-n", "machdep.cpu.brand_string"]);
                run::output(c).map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
        let rustc = run::output({
            let mut c = Command::new("rustc");
            c.arg("--version");
            c
        })
        .unwrap_or_default();
        Machine {
            cpu,
            cores,
            rustc: rustc.trim().to_string(),
        }
    }

    fn from_json(v: &Value) -> Option<Machine> {
        Some(Machine {
            cpu: v["cpu"].as_str()?.to_string(),
            cores: v["cores"].as_u64()?,
            rustc: v["rustc"].as_str().unwrap_or("").to_string(),
        })
    }

    fn to_json(&self) -> Value {
        json!({ "cpu": self.cpu, "cores": self.cores, "rustc": self.rustc })
    }

    /// The folder name of this machine's results.
    pub(crate) fn slug(&self) -> String {
        slug(&self.cpu, self.cores)
    }

    /// `AMD EPYC, 2 cores`.
    pub(crate) fn label(&self) -> String {
        let cores = if self.cores == 1 { "core" } else { "cores" };
        format!("{}, {} {cores}", self.cpu, self.cores)
    }
}

/// A folder name for a machine: the CPU model without trademark marks and
/// the filler words `CPU` and `Processor`, lowercase, runs of other
/// characters turned into `-`, then the core count:
/// `Intel(R) Xeon(R) CPU @ 2.20GHz` with 2 cores is `intel-xeon-2-20ghz-2-cores`.
pub(crate) fn slug(cpu: &str, cores: u64) -> String {
    let mut cleaned = cpu.to_lowercase();
    for mark in ["(r)", "(tm)", "®", "™"] {
        cleaned = cleaned.replace(mark, " ");
    }
    let words: Vec<String> = cleaned
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "cpu" && *w != "processor")
        .map(String::from)
        .collect();
    let model = if words.is_empty() {
        "unknown".to_string()
    } else {
        words.join("-")
    };
    format!("{model}-{cores}-cores")
}

/// One bench target's results on one machine: the contents of one file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    /// The bench target, `benches/benches/<pattern>.rs`.
    pub(crate) pattern: String,
    /// `YYYY-MM-DD HH:MM UTC`; sorts as text.
    pub(crate) date: String,
    pub(crate) machine: Machine,
    /// Criterion medians, metrics and paired ratios, as the benches wrote them.
    pub(crate) records: Vec<Value>,
}

impl Run {
    fn from_json(pattern: &str, v: &Value, file: &Path) -> Result<Run> {
        let machine = Machine::from_json(&v["machine"]).with_context(|| {
            format!(
                "{} names no machine (`machine.cpu`, `machine.cores`)",
                file.display()
            )
        })?;
        let Some(records) = v["records"].as_array() else {
            bail!("{} has no `records` array", file.display());
        };
        Ok(Run {
            pattern: pattern.to_string(),
            date: v["date"].as_str().unwrap_or("").to_string(),
            machine,
            records: records.clone(),
        })
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "date": self.date,
            "machine": self.machine.to_json(),
            "records": self.records,
        })
    }
}

/// Every stored run: machine slug → pattern → run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Store {
    pub(crate) machines: BTreeMap<String, BTreeMap<String, Run>>,
}

/// What [`Store::merge`] did with a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Merged {
    /// No run of this pattern on this machine before.
    Added,
    /// It replaced an older (or same-dated) run of the same pattern on the same machine.
    Replaced { old_date: String },
    /// A newer run of the same pattern on the same machine was kept instead.
    KeptNewer { kept_date: String },
}

impl Store {
    /// Adds `run` under its machine, replacing the same pattern's run on the
    /// same machine unless that one is newer. Other machines are untouched.
    pub(crate) fn merge(&mut self, run: Run) -> Merged {
        let runs = self.machines.entry(run.machine.slug()).or_default();
        match runs.get(&run.pattern) {
            Some(old) if old.date > run.date => Merged::KeptNewer {
                kept_date: old.date.clone(),
            },
            old => {
                let merged = match old {
                    None => Merged::Added,
                    Some(old) => Merged::Replaced {
                        old_date: old.date.clone(),
                    },
                };
                runs.insert(run.pattern.clone(), run);
                merged
            }
        }
    }

    /// This machine's runs, by pattern.
    pub(crate) fn machine(&self, slug: &str) -> Option<&BTreeMap<String, Run>> {
        self.machines.get(slug)
    }
}

/// Where a stored file belongs, and where it is.
#[derive(Debug)]
struct Placed {
    file: PathBuf,
    run: Run,
}

/// Reads every result file under `dir`, in either layout.
pub(crate) fn load(dir: &Path) -> Result<Store> {
    Ok(plan(dir)?.0)
}

/// Moves every result file under `dir` to the folder of the machine it
/// records; where two files hold the same pattern on the same machine, the
/// newer one stays and the older is removed (git keeps it). Returns one line
/// per change.
pub(crate) fn normalise(dir: &Path) -> Result<Vec<String>> {
    let (store, files) = plan(dir)?;
    let mut changes = Vec::new();
    let mut kept: Vec<PathBuf> = Vec::new();
    for (slug, runs) in &store.machines {
        for (pattern, run) in runs {
            let to = path_of(dir, slug, pattern);
            kept.push(to.clone());
            let from = files
                .iter()
                .find(|p| p.run == *run)
                .map(|p| p.file.clone())
                .expect("every stored run came from a file");
            if from != to {
                write_run(&to, run)?;
                fs::remove_file(&from)?;
                changes.push(format!("moved {} to {}", from.display(), to.display()));
            }
        }
    }
    for placed in &files {
        if !kept.contains(&placed.file) && placed.file.exists() {
            fs::remove_file(&placed.file)?;
            changes.push(format!(
                "removed {} ({} on {}, measured {}): a newer run of that pattern on that machine is kept",
                placed.file.display(),
                placed.run.pattern,
                placed.run.machine.slug(),
                placed.run.date,
            ));
        }
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && fs::read_dir(&path)?.next().is_none() {
            fs::remove_dir(&path)?;
        }
    }
    Ok(changes)
}

/// The store the files under `dir` make, and every file read.
fn plan(dir: &Path) -> Result<(Store, Vec<Placed>)> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok((Store::default(), files));
    }
    let mut paths: Vec<PathBuf> = json_files(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            paths.extend(json_files(&path)?);
        }
    }
    paths.sort();
    let mut store = Store::default();
    for file in paths {
        let pattern = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let value: Value = serde_json::from_str(&fs::read_to_string(&file)?)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        let run = Run::from_json(&pattern, &value, &file)?;
        store.merge(run.clone());
        files.push(Placed { file, run });
    }
    Ok((store, files))
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect())
}

pub(crate) fn path_of(dir: &Path, slug: &str, pattern: &str) -> PathBuf {
    dir.join(slug).join(format!("{pattern}.json"))
}

/// Writes `run` to its machine's folder under `dir`; returns the file.
pub(crate) fn save(dir: &Path, run: &Run) -> Result<PathBuf> {
    let file = path_of(dir, &run.machine.slug(), &run.pattern);
    write_run(&file, run)?;
    Ok(file)
}

fn write_run(file: &Path, run: &Run) -> Result<()> {
    fs::create_dir_all(file.parent().expect("a result file has a folder"))?;
    fs::write(file, serde_json::to_string_pretty(&run.to_json())? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn machine(cpu: &str, cores: u64) -> Machine {
        Machine {
            cpu: cpu.into(),
            cores,
            rustc: "rustc 1.95.0".into(),
        }
    }

    pub(crate) fn run(pattern: &str, cpu: &str, date: &str, records: Vec<Value>) -> Run {
        Run {
            pattern: pattern.into(),
            date: date.into(),
            machine: machine(cpu, 2),
            records,
        }
    }

    /// A fresh folder under the target dir, removed first if a previous run left it.
    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/xtask-tests")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn slug_is_the_cpu_model_without_marks_and_the_core_count() {
        assert_eq!(slug("AMD EPYC", 2), "amd-epyc-2-cores");
        assert_eq!(slug("Intel(R) Xeon(R) Processor", 2), "intel-xeon-2-cores");
        assert_eq!(
            slug("Intel(R) Xeon(R) CPU @ 2.20GHz", 4),
            "intel-xeon-2-20ghz-4-cores"
        );
        assert_eq!(
            slug("AMD EPYC 7B13 64-Core Processor", 8),
            "amd-epyc-7b13-64-core-8-cores"
        );
        assert_eq!(slug("", 1), "unknown-1-cores");
    }

    #[test]
    fn merge_keeps_other_machines_and_replaces_the_same_machine() {
        let mut store = Store::default();
        let epyc = run("txn_channel", "AMD EPYC", "2026-11-28 01:56 UTC", vec![]);
        let xeon = run(
            "txn_channel",
            "Intel(R) Xeon(R) Processor",
            "2026-12-01 10:00 UTC",
            vec![],
        );
        assert_eq!(store.merge(epyc.clone()), Merged::Added);
        assert_eq!(store.merge(xeon.clone()), Merged::Added);
        assert_eq!(store.machines.len(), 2, "a second machine adds a section");
        assert_eq!(
            store.machine("amd-epyc-2-cores").unwrap()["txn_channel"],
            epyc
        );

        let rerun = run(
            "txn_channel",
            "AMD EPYC",
            "2026-12-02 09:00 UTC",
            vec![json!({"x": 1})],
        );
        assert_eq!(
            store.merge(rerun.clone()),
            Merged::Replaced {
                old_date: "2026-11-28 01:56 UTC".into()
            }
        );
        assert_eq!(
            store.machine("amd-epyc-2-cores").unwrap()["txn_channel"],
            rerun
        );
        assert_eq!(
            store.machine("intel-xeon-2-cores").unwrap()["txn_channel"],
            xeon,
            "a rerun on one machine leaves the other's figures alone"
        );

        let stale = run("txn_channel", "AMD EPYC", "2026-11-01 00:00 UTC", vec![]);
        assert_eq!(
            store.merge(stale),
            Merged::KeptNewer {
                kept_date: "2026-12-02 09:00 UTC".into()
            }
        );
        assert_eq!(
            store.machine("amd-epyc-2-cores").unwrap()["txn_channel"],
            rerun
        );
    }

    #[test]
    fn save_writes_into_the_machine_folder_and_load_reads_it_back() {
        let dir = scratch("save_load");
        let epyc = run(
            "backoff",
            "AMD EPYC",
            "2026-11-28 01:30 UTC",
            vec![json!({"group": "backoff/x"})],
        );
        let xeon = run(
            "backoff",
            "Intel(R) Xeon(R) Processor",
            "2026-12-01 10:00 UTC",
            vec![],
        );
        assert_eq!(
            save(&dir, &epyc).unwrap(),
            dir.join("amd-epyc-2-cores/backoff.json")
        );
        assert_eq!(
            save(&dir, &xeon).unwrap(),
            dir.join("intel-xeon-2-cores/backoff.json")
        );
        let store = load(&dir).unwrap();
        assert_eq!(store.machine("amd-epyc-2-cores").unwrap()["backoff"], epyc);
        assert_eq!(
            store.machine("intel-xeon-2-cores").unwrap()["backoff"],
            xeon
        );
    }

    #[test]
    fn normalise_moves_flat_and_misplaced_files_to_their_machine_keeping_the_newer() {
        let dir = scratch("normalise");
        let write = |path: &str, run: &Run| write_run(&dir.join(path), run).unwrap();
        // The flat layout of 0.1: measured on the EPYC.
        let old_flat = run(
            "batching",
            "AMD EPYC",
            "2026-11-28 01:32 UTC",
            vec![json!({"n": 1})],
        );
        write("batching.json", &old_flat);
        let flat_only = run("bridge", "AMD EPYC", "2026-11-28 02:04 UTC", vec![]);
        write("bridge.json", &flat_only);
        // A newer EPYC run of batching already in place: it wins over the flat file.
        let newer = run(
            "batching",
            "AMD EPYC",
            "2026-12-01 08:00 UTC",
            vec![json!({"n": 2})],
        );
        write("amd-epyc-2-cores/batching.json", &newer);
        // A Xeon run that ended up in the EPYC folder (a merge of two branches).
        let xeon = run(
            "mutex",
            "Intel(R) Xeon(R) Processor",
            "2026-12-01 10:00 UTC",
            vec![],
        );
        write("amd-epyc-2-cores/mutex.json", &xeon);

        let changes = normalise(&dir).unwrap();
        assert_eq!(changes.len(), 3, "{changes:#?}");

        let store = load(&dir).unwrap();
        let epyc = store.machine("amd-epyc-2-cores").unwrap();
        assert_eq!(epyc["batching"], newer);
        assert_eq!(epyc["bridge"], flat_only);
        assert!(!epyc.contains_key("mutex"));
        assert_eq!(store.machine("intel-xeon-2-cores").unwrap()["mutex"], xeon);
        assert!(!dir.join("batching.json").exists());
        assert!(!dir.join("bridge.json").exists());
        assert!(dir.join("amd-epyc-2-cores/bridge.json").exists());
        assert!(dir.join("intel-xeon-2-cores/mutex.json").exists());
        assert!(!dir.join("amd-epyc-2-cores/mutex.json").exists());
        assert!(
            normalise(&dir).unwrap().is_empty(),
            "a second pass changes nothing"
        );
    }

    #[test]
    fn a_file_without_machine_is_a_clear_error() {
        let dir = scratch("no_machine");
        fs::write(dir.join("backoff.json"), r#"{"date": "x", "records": []}"#).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("backoff.json names no machine"), "{err}");
    }
}
