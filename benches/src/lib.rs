//! Helpers shared by the criterion bench targets in `benches/`.
//!
//! Criterion measures time. Some targets are about something else — bytes
//! allocated, latency percentiles, a per-poll overhead computed from two
//! measurements — and [`record_metric`] reports those to `cargo xtask bench`,
//! which puts them in `docs/benchmarks.md` beside the timings.
//!
//! Every target is judged on **paired rounds** ([`paired`]): ours and the
//! anchor run back to back, alternating which goes first, for at least
//! [`MIN_ROUNDS`] rounds; the figure is the median of the per-round ratios,
//! reported with their min–max ([`record_paired`]). A load that comes and
//! goes on a shared machine then hits both sides of a pair alike, where two
//! criterion runs minutes apart can disagree by a factor.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

/// Whether a smaller or a larger figure is the better one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Time, bytes, latency.
    Lower,
    /// Requests per second, items per second.
    Higher,
}

/// One figure of one implementation in one group, for `docs/benchmarks.md`.
#[derive(Debug, Clone, Copy)]
pub struct Metric<'a> {
    /// The criterion-style group, `<pattern>/<case>`.
    pub group: &'a str,
    /// `ours`, `ours:<variant>`, or the anchor's name.
    pub implementation: &'a str,
    /// What was measured, e.g. `bytes allocated` or `p99 latency`.
    pub metric: &'a str,
    /// The figure.
    pub value: f64,
    /// Its unit: `ns` and `bytes` are formatted specially, anything else is
    /// printed after the number.
    pub unit: &'a str,
    /// Which direction is better, for the ratio.
    pub better: Better,
}

/// Appends `metric` to the file named by `ASYNC_PATTERNS_METRICS` (set by
/// `cargo xtask bench`); prints it either way, so a plain `cargo bench`
/// shows it too.
///
/// # Panics
///
/// If the metrics file is set but cannot be written.
pub fn record_metric(metric: Metric<'_>) {
    println!(
        "{}/{}: {} = {} {}",
        metric.group, metric.implementation, metric.metric, metric.value, metric.unit
    );
    let line = format!(
        "{{\"group\":{},\"implementation\":{},\"metric\":{},\"value\":{},\"unit\":{},\"better\":{}}}\n",
        json_string(metric.group),
        json_string(metric.implementation),
        json_string(metric.metric),
        if metric.value.is_finite() {
            metric.value
        } else {
            -1.0
        },
        json_string(metric.unit),
        json_string(match metric.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }),
    );
    append_line(&line);
}

/// The fewest paired rounds a target is judged on.
pub const MIN_ROUNDS: usize = 5;

/// The ratios of paired rounds: how many times better ours did than the
/// anchor in each round (anchor cost ÷ our cost, so above 1 means ours is
/// better), summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// The median ratio: the figure a target is judged on.
    pub median: f64,
    /// The worst round.
    pub min: f64,
    /// The best round.
    pub max: f64,
    /// Every round's ratio, in the order they ran.
    pub ratios: Vec<f64>,
}

impl Paired {
    /// Summarises per-round ratios.
    ///
    /// # Panics
    ///
    /// If `ratios` is empty.
    pub fn from_ratios(ratios: Vec<f64>) -> Paired {
        assert!(!ratios.is_empty(), "no paired rounds");
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Paired {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            ratios,
        }
    }
}

/// Runs `ours` and `anchor` back to back `rounds` times (at least
/// [`MIN_ROUNDS`]; one round in criterion's test mode), alternating which
/// goes first, and returns the per-round ratios anchor cost ÷ our cost.
///
/// Each closure does one round's work and returns its cost, lower being
/// better: the time its measured part took (use [`time`] when all of it is
/// measured, or time only the part after a setup), a latency percentile, …
///
/// # Examples
///
/// ```
/// use async_patterns_benches::{paired, time};
///
/// let result = paired(5, || time(|| (0..1_000u64).sum::<u64>()), || {
///     time(|| (0..2_000u64).sum::<u64>())
/// });
/// assert_eq!(result.ratios.len(), if async_patterns_benches::test_mode() { 1 } else { 5 });
/// ```
pub fn paired(
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut anchor: impl FnMut() -> f64,
) -> Paired {
    let rounds = if test_mode() {
        1
    } else {
        rounds.max(MIN_ROUNDS)
    };
    let ratios = (0..rounds)
        .map(|round| {
            let (o, a) = if round % 2 == 0 {
                let o = ours();
                (o, anchor())
            } else {
                let a = anchor();
                (ours(), a)
            };
            a / o
        })
        .collect();
    Paired::from_ratios(ratios)
}

/// Runs `f` once and returns how long it took, in seconds, as a cost for
/// [`paired`]. The result of `f` goes through `black_box`.
pub fn time<R>(f: impl FnOnce() -> R) -> f64 {
    let start = Instant::now();
    std::hint::black_box(f());
    start.elapsed().as_secs_f64()
}

/// A cost in seconds from a [`Duration`], for closures that time only part
/// of their round.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Records a paired comparison for `docs/benchmarks.md`: the median ratio of
/// `ours` over `anchor` in `group`, with its min–max and number of rounds.
/// Targets in `benches/targets/<pattern>.json` name the same `ours` and
/// `anchor` and are judged on this median.
///
/// # Panics
///
/// If the metrics file is set but cannot be written.
pub fn record_paired(group: &str, ours: &str, anchor: &str, result: &Paired) {
    println!(
        "{group}/{ours} vs {anchor}: paired median {:.3}x (min {:.3}x, max {:.3}x, {} rounds)",
        result.median,
        result.min,
        result.max,
        result.ratios.len()
    );
    let line = format!(
        "{{\"group\":{},\"implementation\":{},\"anchor\":{},\"metric\":\"paired ratio\",\"value\":{},\"min\":{},\"max\":{},\"rounds\":{},\"unit\":\"x\",\"better\":\"higher\"}}\n",
        json_string(group),
        json_string(ours),
        json_string(anchor),
        finite(result.median),
        finite(result.min),
        finite(result.max),
        result.ratios.len(),
    );
    append_line(&line);
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { -1.0 }
}

fn append_line(line: &str) {
    let Some(path) = std::env::var_os("ASYNC_PATTERNS_METRICS") else {
        return;
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.to_string_lossy()));
    file.write_all(line.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.to_string_lossy()));
}

/// True when the bench binary runs in criterion's test mode (`cargo bench --
/// --test`, as `cargo xtask ci` does): each benchmark runs once, so extra
/// measurements outside criterion should be skipped or kept tiny.
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Whether a paired group runs: the criterion filter given to the bench
/// binary (`cargo bench --bench x -- FILTER`), if any, must be part of its
/// name. Criterion skips its own benchmarks that way; the paired rounds,
/// which run outside criterion, ask this.
pub fn selected(group: &str) -> bool {
    // Criterion's options that take a value, as a separate argument.
    const WITH_VALUE: [&str; 17] = [
        "-c",
        "--color",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--output-format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return group.contains(&arg);
        }
    }
    true
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_summary_is_the_median_with_its_range() {
        let p = Paired::from_ratios(vec![1.5, 0.9, 2.0, 1.1, 1.3]);
        assert_eq!(p.median, 1.3);
        assert_eq!(p.min, 0.9);
        assert_eq!(p.max, 2.0);
        let even = Paired::from_ratios(vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn paired_ratio_is_anchor_cost_over_ours() {
        let p = paired(5, || 1.0, || 3.0);
        assert!(p.ratios.iter().all(|&r| r == 3.0));
    }

    #[test]
    fn json_string_escapes_quotes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
