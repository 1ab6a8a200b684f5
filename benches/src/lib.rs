//! Helpers shared by the criterion bench targets in `benches/`.
//!
//! Criterion measures time. Some targets are about something else — bytes
//! allocated, latency percentiles, a per-poll overhead computed from two
//! measurements — and [`record_metric`] reports those to `cargo xtask bench`,
//! which puts them in `docs/benchmarks.md` beside the timings.

use std::fs::OpenOptions;
use std::io::Write;

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
    let Some(path) = std::env::var_os("ASYNC_PATTERNS_METRICS") else {
        return;
    };
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
    fn json_string_escapes_quotes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
