//! Targets (`benches/targets/<pattern>.json`) and how a run is judged
//! against them.
//!
//! A target with `"paired": true` is judged on the bench's paired record
//! (`record_paired`): the median of at least [`MIN_ROUNDS`] interleaved
//! rounds of ours and the anchor, with the min–max of the rounds. Without
//! its record the target is *not measured*, never met. Targets without
//! `"paired"` are still judged the 0.1 way — criterion's two medians, taken
//! one after the other, or a single metric under a `max_value` — and are
//! listed in a warning until their benches are converted.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::results::Store;

/// The fewest paired rounds a target is judged on (`MIN_ROUNDS` in
/// `benches/src/lib.rs`; xtask does not depend on the benches crate).
pub(crate) const MIN_ROUNDS: u64 = 5;

/// The metric of a paired record, as `record_paired` writes it.
pub(crate) const PAIRED_METRIC: &str = "paired ratio";

/// One target of one group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub(crate) pattern: String,
    pub(crate) group: String,
    pub(crate) ours: String,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// Ours at least `min_ratio` times better than `anchor`.
    Ratio {
        anchor: String,
        min_ratio: f64,
        /// Judged on the paired record; otherwise on criterion's medians
        /// (or the two records of `metric`).
        paired: bool,
        metric: String,
    },
    /// A figure of ours at most `max_value` (not paired).
    MaxValue {
        metric: String,
        max_value: f64,
        unit: String,
    },
}

impl Target {
    pub(crate) fn is_paired(&self) -> bool {
        matches!(self.kind, Kind::Ratio { paired: true, .. })
    }

    /// `ours ≥ 1.5× tokio-mpsc-recv`, `ours overhead per poll ≤ 50 ns`.
    pub(crate) fn requirement(&self) -> String {
        match &self.kind {
            Kind::Ratio {
                anchor, min_ratio, ..
            } => format!("{} ≥ {min_ratio}× {anchor}", self.ours),
            Kind::MaxValue {
                metric,
                max_value,
                unit,
            } => format!("{} {metric} ≤ {max_value} {unit}", self.ours)
                .trim_end()
                .to_string(),
        }
    }

    /// How the target is judged, for reports.
    pub(crate) fn method(&self) -> &'static str {
        match &self.kind {
            Kind::Ratio { paired: true, .. } => "paired",
            Kind::Ratio { .. } => "criterion medians",
            Kind::MaxValue { .. } => "single figure",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.group, self.requirement())
    }
}

/// Every group's notes (`description`, `targets`), by group, and every
/// target, in file order, from `benches/targets/*.json`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Targets {
    pub(crate) descriptions: BTreeMap<String, String>,
    pub(crate) targets: Vec<Target>,
}

impl Targets {
    pub(crate) fn read(dir: &Path) -> Result<Targets> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut out = Targets::default();
        for file in files {
            let pattern = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let value: Value = serde_json::from_str(&fs::read_to_string(&file)?)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            out.add(&pattern, &value)
                .with_context(|| format!("in {}", file.display()))?;
        }
        Ok(out)
    }

    /// Adds one pattern's file; a malformed target is an error naming it.
    pub(crate) fn add(&mut self, pattern: &str, file: &Value) -> Result<()> {
        let Some(groups) = file["groups"].as_object() else {
            bail!("no `groups` object");
        };
        for (group, notes) in groups {
            if group.split('/').next() != Some(pattern) {
                bail!("group `{group}` is not named `{pattern}/<case>`");
            }
            if let Some(description) = notes["description"].as_str() {
                self.descriptions
                    .insert(group.clone(), description.to_string());
            }
            for (i, t) in notes["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let target = parse_target(pattern, group, t)
                    .with_context(|| format!("target {} of `{group}`: {t}", i + 1))?;
                self.targets.push(target);
            }
        }
        Ok(())
    }

    /// The targets of `pattern`.
    pub(crate) fn of<'a>(&'a self, pattern: &'a str) -> impl Iterator<Item = &'a Target> + 'a {
        self.targets.iter().filter(move |t| t.pattern == pattern)
    }

    /// Targets not yet judged by paired rounds.
    pub(crate) fn unpaired(&self) -> Vec<&Target> {
        self.targets.iter().filter(|t| !t.is_paired()).collect()
    }
}

fn parse_target(pattern: &str, group: &str, t: &Value) -> Result<Target> {
    let Some(ours) = t["ours"].as_str() else {
        bail!("no `ours` (the implementation judged)");
    };
    let paired = match &t["paired"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => bail!("`paired` must be true or false, got {other}"),
    };
    let metric = t["metric"].as_str().unwrap_or("time").to_string();
    let kind = match (t["min_ratio"].as_f64(), t["max_value"].as_f64()) {
        (Some(_), Some(_)) => bail!("both `min_ratio` and `max_value`: give one"),
        (Some(min_ratio), None) => {
            let Some(anchor) = t["anchor"].as_str() else {
                bail!("a `min_ratio` needs the `anchor` it is measured against");
            };
            if min_ratio <= 0.0 {
                bail!("`min_ratio` must be above 0, got {min_ratio}");
            }
            Kind::Ratio {
                anchor: anchor.to_string(),
                min_ratio,
                paired,
                metric,
            }
        }
        (None, Some(max_value)) => {
            if paired {
                bail!(
                    "a paired target is a ratio to an anchor: give `anchor` and `min_ratio`, not `max_value`"
                );
            }
            Kind::MaxValue {
                metric,
                max_value,
                unit: t["unit"].as_str().unwrap_or("").to_string(),
            }
        }
        (None, None) => bail!("no `min_ratio` (with `anchor`) or `max_value`"),
    };
    Ok(Target {
        pattern: pattern.to_string(),
        group: group.to_string(),
        ours: ours.to_string(),
        kind,
    })
}

/// Whether a target holds in one run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Met,
    NotMet,
    /// No usable record; the reason says why.
    NotMeasured(String),
}

impl Verdict {
    pub(crate) fn is_met(&self) -> bool {
        *self == Verdict::Met
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Met => f.write_str("met"),
            Verdict::NotMet => f.write_str("not met"),
            Verdict::NotMeasured(why) => write!(f, "not measured ({why})"),
        }
    }
}

/// A target judged on one run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
    /// The figure judged: the median ratio (paired), criterion's ratio, or
    /// the metric's value.
    pub(crate) value: Option<f64>,
    /// The worst and best round (paired only).
    pub(crate) rounds_range: Option<(f64, f64)>,
    pub(crate) rounds: Option<u64>,
    pub(crate) verdict: Verdict,
}

impl Judgement {
    fn not_measured(why: impl Into<String>) -> Judgement {
        Judgement {
            value: None,
            rounds_range: None,
            rounds: None,
            verdict: Verdict::NotMeasured(why.into()),
        }
    }
}

/// Judges `target` on one run's records.
pub(crate) fn judge(target: &Target, records: &[Value]) -> Judgement {
    let in_group = || records.iter().filter(|r| r["group"] == *target.group);
    match &target.kind {
        Kind::Ratio {
            anchor,
            min_ratio,
            paired: true,
            ..
        } => {
            // The last one, if a bench recorded the same pair twice.
            let Some(r) = in_group().rfind(|r| {
                r["metric"] == PAIRED_METRIC
                    && r["implementation"] == *target.ours
                    && r["anchor"] == **anchor
            }) else {
                return Judgement::not_measured("no paired record");
            };
            let rounds = r["rounds"].as_u64();
            let (median, min, max) = (r["value"].as_f64(), r["min"].as_f64(), r["max"].as_f64());
            let (Some(median), Some(min), Some(max)) = (median, min, max) else {
                return Judgement::not_measured("paired record without value, min and max");
            };
            let mut j = Judgement {
                value: Some(median),
                rounds_range: Some((min, max)),
                rounds,
                verdict: Verdict::Met,
            };
            j.verdict = match rounds {
                _ if median <= 0.0 || min <= 0.0 => {
                    // `record_paired` writes -1 for a ratio that was not finite.
                    Verdict::NotMeasured("a round's ratio was not finite".into())
                }
                Some(n) if n >= MIN_ROUNDS => {
                    if median >= *min_ratio {
                        Verdict::Met
                    } else {
                        Verdict::NotMet
                    }
                }
                Some(n) => Verdict::NotMeasured(format!(
                    "{n} paired round(s), at least {MIN_ROUNDS} needed"
                )),
                None => Verdict::NotMeasured("paired record without `rounds`".into()),
            };
            j
        }
        Kind::Ratio {
            anchor,
            min_ratio,
            paired: false,
            metric,
        } => {
            let find = |name: &str| {
                in_group().find(|r| r["implementation"] == *name && r["metric"] == **metric)
            };
            let (Some(o), Some(a)) = (find(&target.ours), find(anchor)) else {
                return Judgement::not_measured(format!("no `{metric}` of both"));
            };
            let Some(ratio) = ratio(o, a) else {
                return Judgement::not_measured("a figure is not positive");
            };
            Judgement {
                value: Some(ratio),
                rounds_range: None,
                rounds: None,
                verdict: if ratio >= *min_ratio {
                    Verdict::Met
                } else {
                    Verdict::NotMet
                },
            }
        }
        Kind::MaxValue {
            metric, max_value, ..
        } => {
            let found = in_group()
                .find(|r| r["implementation"] == *target.ours && r["metric"] == **metric)
                .and_then(|r| r["value"].as_f64());
            let Some(v) = found else {
                return Judgement::not_measured(format!("no `{metric}` record"));
            };
            Judgement {
                value: Some(v),
                rounds_range: None,
                rounds: None,
                verdict: if v <= *max_value {
                    Verdict::Met
                } else {
                    Verdict::NotMet
                },
            }
        }
    }
}

/// How many times better `ours` did than `anchor` on a figure both have:
/// anchor ÷ ours when lower is better, ours ÷ anchor when higher is.
pub(crate) fn ratio(ours: &Value, anchor: &Value) -> Option<f64> {
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

/// One target across every machine that ran its pattern.
#[derive(Debug, Clone)]
pub(crate) struct Summary<'a> {
    pub(crate) target: &'a Target,
    /// Machine slug → judgement, for each machine with a run of the pattern.
    pub(crate) machines: Vec<(String, Judgement)>,
}

impl Summary<'_> {
    /// The lowest and highest judged figure across the machines (medians,
    /// for paired targets).
    pub(crate) fn range(&self) -> Option<(f64, f64)> {
        span(self.machines.iter().filter_map(|(_, j)| j.value))
    }

    /// The worst and best single round on any machine (paired only).
    pub(crate) fn rounds_range(&self) -> Option<(f64, f64)> {
        let lows = self.machines.iter().filter_map(|(_, j)| j.rounds_range);
        let (lo, _) = span(lows.clone().map(|(lo, _)| lo))?;
        let (_, hi) = span(lows.map(|(_, hi)| hi))?;
        Some((lo, hi))
    }

    pub(crate) fn met(&self) -> usize {
        self.machines
            .iter()
            .filter(|(_, j)| j.verdict.is_met())
            .count()
    }
}

fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Every target judged on every machine that ran its pattern.
pub(crate) fn summarise<'a>(targets: &'a Targets, store: &Store) -> Vec<Summary<'a>> {
    targets
        .targets
        .iter()
        .map(|target| Summary {
            target,
            machines: store
                .machines
                .iter()
                .filter_map(|(slug, runs)| {
                    let run = runs.get(&target.pattern)?;
                    Some((slug.clone(), judge(target, &run.records)))
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::results::tests::run;
    use super::*;

    fn targets(pattern: &str, file: Value) -> Targets {
        let mut t = Targets::default();
        t.add(pattern, &file).unwrap();
        t
    }

    fn paired_target() -> Target {
        targets(
            "txn_channel",
            json!({"groups": {"txn_channel/recv": {"targets": [
                {"ours": "ours", "anchor": "recv_many", "min_ratio": 1.2, "paired": true}
            ]}}}),
        )
        .targets[0]
            .clone()
    }

    fn paired_record(median: f64, min: f64, max: f64, rounds: u64) -> Value {
        json!({"group": "txn_channel/recv", "implementation": "ours", "anchor": "recv_many",
               "metric": "paired ratio", "value": median, "min": min, "max": max,
               "rounds": rounds, "unit": "x", "better": "higher"})
    }

    #[test]
    fn paired_target_is_judged_on_the_median_with_its_range() {
        let t = paired_target();
        let met = judge(&t, &[paired_record(1.3, 1.1, 1.6, 7)]);
        assert_eq!(met.verdict, Verdict::Met);
        assert_eq!(met.value, Some(1.3));
        assert_eq!(met.rounds_range, Some((1.1, 1.6)));
        assert_eq!(met.rounds, Some(7));
        // The best round above the target does not make a missed median met.
        let missed = judge(&t, &[paired_record(1.1, 0.9, 1.9, 7)]);
        assert_eq!(missed.verdict, Verdict::NotMet);
    }

    #[test]
    fn paired_target_without_its_record_is_not_measured_even_if_criterion_says_met() {
        let t = paired_target();
        // Criterion's medians put ours 4× ahead; without a paired record that counts for nothing.
        let records = [
            json!({"group": "txn_channel/recv", "implementation": "ours", "metric": "time", "value": 1.0, "better": "lower"}),
            json!({"group": "txn_channel/recv", "implementation": "recv_many", "metric": "time", "value": 4.0, "better": "lower"}),
            // A paired record against another anchor is not this target's.
            json!({"group": "txn_channel/recv", "implementation": "ours", "anchor": "recv", "metric": "paired ratio",
                   "value": 3.0, "min": 2.0, "max": 4.0, "rounds": 9}),
        ];
        let j = judge(&t, &records);
        assert_eq!(j.verdict, Verdict::NotMeasured("no paired record".into()));
        assert_eq!(j.value, None);
    }

    #[test]
    fn paired_target_needs_at_least_five_rounds() {
        let t = paired_target();
        // One round: what criterion's test mode records.
        let j = judge(&t, &[paired_record(2.0, 2.0, 2.0, 1)]);
        assert_eq!(
            j.verdict,
            Verdict::NotMeasured("1 paired round(s), at least 5 needed".into())
        );
        assert_eq!(
            judge(&t, &[paired_record(2.0, 1.5, 2.5, 5)]).verdict,
            Verdict::Met
        );
    }

    #[test]
    fn paired_record_with_a_non_finite_round_is_not_measured() {
        let t = paired_target();
        let j = judge(&t, &[paired_record(1.5, -1.0, 2.0, 5)]);
        assert!(matches!(j.verdict, Verdict::NotMeasured(_)), "{j:?}");
    }

    #[test]
    fn unpaired_ratio_target_keeps_the_criterion_median_ratio() {
        let t = targets(
            "bridge",
            json!({"groups": {"bridge/t": {"targets": [
                {"ours": "ours", "anchor": "async-channel", "metric": "time", "min_ratio": 1.5}
            ]}}}),
        );
        let t = &t.targets[0];
        assert!(!t.is_paired());
        let records = |anchor_ns: f64| {
            vec![
                json!({"group": "bridge/t", "implementation": "ours", "metric": "time", "value": 100.0, "better": "lower"}),
                json!({"group": "bridge/t", "implementation": "async-channel", "metric": "time", "value": anchor_ns, "better": "lower"}),
            ]
        };
        assert_eq!(judge(t, &records(200.0)).verdict, Verdict::Met);
        assert_eq!(judge(t, &records(120.0)).verdict, Verdict::NotMet);
        assert_eq!(judge(t, &records(200.0)).value, Some(2.0));
    }

    #[test]
    fn max_value_target_is_met_at_or_below_the_bound() {
        let t = targets(
            "blocking_detector",
            json!({"groups": {"blocking_detector/poll": {"targets": [
                {"ours": "ours", "metric": "overhead per poll", "max_value": 50, "unit": "ns"}
            ]}}}),
        );
        let t = &t.targets[0];
        let rec = |v: f64| {
            [
                json!({"group": "blocking_detector/poll", "implementation": "ours", "metric": "overhead per poll", "value": v}),
            ]
        };
        assert_eq!(judge(t, &rec(50.0)).verdict, Verdict::Met);
        assert_eq!(judge(t, &rec(50.5)).verdict, Verdict::NotMet);
        assert!(matches!(judge(t, &[]).verdict, Verdict::NotMeasured(_)));
    }

    #[test]
    fn ratio_is_anchor_over_ours_for_time_and_ours_over_anchor_when_higher_is_better() {
        let lower = (
            json!({"value": 50.0, "better": "lower"}),
            json!({"value": 100.0}),
        );
        assert_eq!(ratio(&lower.0, &lower.1), Some(2.0));
        let higher = (
            json!({"value": 300.0, "better": "higher"}),
            json!({"value": 100.0}),
        );
        assert_eq!(ratio(&higher.0, &higher.1), Some(3.0));
        assert_eq!(ratio(&json!({"value": 0.0}), &json!({"value": 1.0})), None);
    }

    #[test]
    fn malformed_targets_are_clear_errors() {
        let bad = |target: Value| {
            let mut t = Targets::default();
            let file = json!({"groups": {"p/case": {"targets": [target]}}});
            format!("{:#}", t.add("p", &file).unwrap_err())
        };
        assert!(bad(json!({"anchor": "a", "min_ratio": 1.0})).contains("no `ours`"));
        assert!(bad(json!({"ours": "ours", "min_ratio": 1.0})).contains("needs the `anchor`"));
        assert!(bad(json!({"ours": "ours", "anchor": "a", "min_ratio": 0})).contains("above 0"));
        assert!(
            bad(json!({"ours": "ours", "metric": "m", "max_value": 5, "paired": true}))
                .contains("a paired target is a ratio")
        );
        assert!(
            bad(json!({"ours": "ours", "anchor": "a", "min_ratio": 1, "paired": "yes"}))
                .contains("`paired` must be")
        );
        assert!(bad(json!({"ours": "ours"})).contains("no `min_ratio`"));
        let mut t = Targets::default();
        let err = t.add("p", &json!({"groups": {"q/case": {}}})).unwrap_err();
        assert!(err.to_string().contains("not named `p/<case>`"), "{err}");
    }

    #[test]
    fn unpaired_lists_every_target_without_paired_true() {
        let t = targets(
            "p",
            json!({"groups": {"p/a": {"targets": [
                {"ours": "ours", "anchor": "x", "min_ratio": 1.0, "paired": true},
                {"ours": "ours", "anchor": "y", "min_ratio": 1.0},
                {"ours": "ours", "anchor": "z", "min_ratio": 1.0, "paired": false},
                {"ours": "ours", "metric": "m", "max_value": 1.0}
            ]}}}),
        );
        let names: Vec<String> = t.unpaired().iter().map(|t| t.requirement()).collect();
        assert_eq!(names, ["ours ≥ 1× y", "ours ≥ 1× z", "ours m ≤ 1"]);
    }

    #[test]
    fn summary_gives_the_range_across_machines() {
        let t = paired_target();
        let targets = Targets {
            descriptions: BTreeMap::new(),
            targets: vec![t],
        };
        let mut store = Store::default();
        store.merge(run(
            "txn_channel",
            "AMD EPYC",
            "2026-11-28 01:56 UTC",
            vec![paired_record(4.47, 3.9, 5.1, 9)],
        ));
        store.merge(run(
            "txn_channel",
            "Intel(R) Xeon(R) Processor",
            "2026-12-01 10:00 UTC",
            vec![paired_record(1.54, 1.1, 1.8, 9)],
        ));
        // A machine that ran the pattern without the paired record: counted, not measured.
        store.merge(run(
            "txn_channel",
            "Apple M2",
            "2026-12-01 11:00 UTC",
            vec![],
        ));
        // A machine that never ran the pattern is not counted.
        store.merge(run(
            "batching",
            "Ampere Altra",
            "2026-12-01 12:00 UTC",
            vec![],
        ));

        let summary = summarise(&targets, &store);
        assert_eq!(summary.len(), 1);
        let s = &summary[0];
        assert_eq!(s.machines.len(), 3);
        assert_eq!(s.range(), Some((1.54, 4.47)), "medians, lowest to highest");
        assert_eq!(
            s.rounds_range(),
            Some((1.1, 5.1)),
            "worst and best single round"
        );
        assert_eq!(s.met(), 2);
        let apple = &s
            .machines
            .iter()
            .find(|(m, _)| m == "apple-m2-2-cores")
            .unwrap()
            .1;
        assert!(matches!(apple.verdict, Verdict::NotMeasured(_)));
    }

    #[test]
    fn summary_of_an_unmeasured_target_has_no_range() {
        let targets = Targets {
            descriptions: BTreeMap::new(),
            targets: vec![paired_target()],
        };
        let s = summarise(&targets, &Store::default());
        assert!(s[0].machines.is_empty());
        assert_eq!(s[0].range(), None);
        assert_eq!(s[0].rounds_range(), None);
        assert_eq!(s[0].met(), 0);
    }
}
