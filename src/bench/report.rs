//! What a bench run reports: latency histograms and their summaries, error counts, byte
//! accounting, and the aligned table that the human output is made of.
//!
//! Invariants:
//! - Latencies are recorded in nanoseconds with three significant digits (HdrHistogram), so a
//!   percentile is within 0.1 % of the exact value, from 1 ns to an hour; longer saturates.
//! - A summary is ordered: `p50 <= p90 <= p99 <= max`, all zero for an empty histogram.
//! - Every figure printed in a table is the same number the JSON carries, rounded for reading.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::conn::ConnError;

/// The longest latency kept exactly: an hour, in nanoseconds.
const MAX_RECORDED_NS: u64 = 3_600_000_000_000;

/// A latency distribution.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Constant, valid bounds: 1 <= low, 2 * low <= high, sigfig <= 5.
        Latency(Histogram::new_with_bounds(1, MAX_RECORDED_NS, 3).expect("constant histogram bounds are valid"))
    }
}

impl Latency {
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.max(1));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0..=1), in microseconds; 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1e3
    }

    /// The smallest latency recorded, in microseconds; 0 when nothing was recorded.
    pub fn min_us(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.min() as f64 / 1e3
    }

    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            max_us: self.0.max() as f64 / 1e3,
        }
    }
}

/// The percentiles every scenario reports, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Summary {
    /// `{"p50":..,"p90":..,"p99":..,"max":..}` in microseconds, to 0.1 µs.
    pub fn to_json(self) -> Value {
        let [p50, p90, p99, max] = [self.p50_us, self.p90_us, self.p99_us, self.max_us].map(|us| round(us, 1));
        json!({"p50": p50, "p90": p90, "p99": p99, "max": max})
    }

    /// p50, p90, p99 and max for a person.
    pub fn human(self) -> [String; 4] {
        [self.p50_us, self.p90_us, self.p99_us, self.max_us].map(human_us)
    }
}

/// A latency for a person: µs below a millisecond, ms below a second, else seconds.
pub fn human_us(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A duration for a person, as `human_us`.
pub fn human(duration: Duration) -> String {
    human_us(duration.as_secs_f64() * 1e6)
}

/// Failures by kind; `total` is what the JSON's `errors` says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    /// A connect that failed or was refused.
    pub connect: u64,
    /// A read or write that failed, or a close when an answer was due.
    pub io: u64,
    /// Bytes that are not a response the generator frames.
    pub malformed: u64,
    /// No answer within the generator's response timeout.
    pub timeout: u64,
    /// An answer whose status is not 2xx.
    pub status: u64,
    /// Long polling: a message lost, repeated or out of order, or a `reset`.
    pub delivery: u64,
}

impl Errors {
    /// Counts a connection's failure under its kind.
    pub fn count(&mut self, error: &ConnError) {
        match error {
            ConnError::Connect(_) => self.connect += 1,
            ConnError::Io(_) | ConnError::Closed { .. } => self.io += 1,
            ConnError::Frame(_) => self.malformed += 1,
        }
    }

    /// Each kind under its JSON name.
    fn kinds(&self) -> [(&'static str, u64); 6] {
        [
            ("connect", self.connect),
            ("io", self.io),
            ("malformed", self.malformed),
            ("timeout", self.timeout),
            ("status", self.status),
            ("delivery", self.delivery),
        ]
    }

    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, n)| n).sum()
    }

    /// `"3 connect, 1 timeout"`, or `""` when there are none.
    pub fn breakdown(&self) -> String {
        breakdown(self.kinds().map(|(kind, n)| (n, kind)))
    }

    /// `{"connect": 3, ...}`: the kinds a scenario can meet, each under its JSON name.
    pub fn to_json(self, kinds: &[&str]) -> Value {
        self.kinds().iter().filter(|(kind, _)| kinds.contains(kind)).copied().collect()
    }
}

/// `"3 connect, 1 timeout"`: each kind counted at least once, in the order given; `""` for none.
pub fn breakdown<K: std::fmt::Display>(kinds: impl IntoIterator<Item = (u64, K)>) -> String {
    let named: Vec<String> = kinds.into_iter().filter(|(n, _)| *n > 0).map(|(n, kind)| format!("{n} {kind}")).collect();
    named.join(", ")
}

/// Requests and the HTTP bytes that crossed the client's sockets for them (TCP/IP headers are
/// not counted: about 52 bytes more per segment each way on loopback).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub requests: u64,
    pub sent: u64,
    pub received: u64,
}

impl Traffic {
    /// Request and response bytes per delivered message; 0 when nothing was delivered.
    pub fn bytes_per(&self, delivered: u64) -> f64 {
        ratio(self.sent + self.received, delivered)
    }

    /// Requests per delivered message; 0 when nothing was delivered.
    pub fn requests_per(&self, delivered: u64) -> f64 {
        ratio(self.requests, delivered)
    }
}

/// The value at quantile `q` (0..=1) of sorted values, by nearest rank (the smallest value with
/// at least `q` of them at or below it): exact, for figures kept whole rather than in a histogram.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// `part / whole`, or 0 for an empty whole.
pub fn ratio(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        whole => part as f64 / whole as f64,
    }
}

/// Rounds to `digits` decimals, for JSON that a person also reads.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// A duration in milliseconds, rounded to `digits` decimals.
pub fn ms(duration: Duration, digits: i32) -> f64 {
    round(duration.as_secs_f64() * 1e3, digits)
}

/// Lines of a report: each name in a column of its own, then its value.
pub fn lines<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> String {
    rows.into_iter().map(|(name, value)| format!("{name:<16}{}\n", value.trim_end())).collect()
}

/// An aligned text table: the first column left-aligned, the others right-aligned (numbers)
/// unless the table is made of text (`text`).
pub struct Table {
    rows: Vec<Vec<String>>,
    numbers: bool,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()], numbers: true }
    }

    /// Every column left-aligned, for cells of words.
    pub fn text(header: &[&str]) -> Table {
        Table { numbers: false, ..Table::new(header) }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, (cell, &width)) in row.iter().zip(&widths).enumerate() {
                line +=
                    &if c == 0 || !self.numbers { format!("{cell:<width$}  ") } else { format!("{cell:>width$}  ") };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency_of(us: impl IntoIterator<Item = u64>) -> Latency {
        let mut latency = Latency::default();
        for us in us {
            latency.record(Duration::from_micros(us));
        }
        latency
    }

    /// Within HdrHistogram's three significant digits of `exact`.
    fn close_to(value: f64, exact: f64) -> bool {
        (value - exact).abs() <= exact * 1e-3
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let summary = latency_of(1..=1000).summary();
        assert!(close_to(summary.p50_us, 500.0), "{summary:?}");
        assert!(close_to(summary.p90_us, 900.0), "{summary:?}");
        assert!(close_to(summary.p99_us, 990.0), "{summary:?}");
        assert!(close_to(summary.max_us, 1000.0), "{summary:?}");
    }

    #[test]
    fn percentiles_are_ordered_and_the_tail_is_kept() {
        // 990 fast answers and 10 stalls: p99 still sees the fast ones, max sees the stall.
        let summary = latency_of((0..990).map(|_| 100).chain((0..10).map(|_| 2_000_000))).summary();
        assert!(close_to(summary.p50_us, 100.0) && close_to(summary.p99_us, 100.0), "{summary:?}");
        assert!(close_to(summary.max_us, 2_000_000.0), "{summary:?}");
        let summary = latency_of((0..980).map(|_| 100).chain((0..20).map(|_| 2_000_000))).summary();
        assert!(close_to(summary.p99_us, 2_000_000.0), "{summary:?}");
        for s in [summary, latency_of([7, 3, 5000, 12]).summary()] {
            assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.max_us, "{s:?}");
        }
    }

    #[test]
    fn an_empty_histogram_summarises_to_zero_and_extremes_saturate() {
        assert_eq!(Latency::default().summary(), Summary::default());
        let mut latency = Latency::default();
        latency.record(Duration::ZERO);
        latency.record(Duration::from_secs(7200));
        assert_eq!(latency.count(), 2);
        assert!(latency.summary().max_us >= 3.59e9, "saturates at the hour");
    }

    #[test]
    fn json_rounds_to_a_tenth_of_a_microsecond() {
        let summary = Summary { p50_us: 12.345, p90_us: 20.0, p99_us: 99.96, max_us: 1000.04 };
        assert_eq!(summary.to_json(), json!({"p50": 12.3, "p90": 20.0, "p99": 100.0, "max": 1000.0}));
    }

    #[test]
    fn byte_accounting_per_delivered_message() {
        let traffic = Traffic { requests: 30, sent: 3000, received: 9000 };
        assert_eq!(traffic.bytes_per(10), 1200.0);
        assert_eq!(traffic.requests_per(10), 3.0);
        assert_eq!(traffic.bytes_per(0), 0.0, "nothing delivered is no division by zero");
        assert_eq!(round(2.0 / 3.0, 2), 0.67);
    }

    #[test]
    fn nearest_rank_percentiles_are_exact_values() {
        let sorted: Vec<i64> = (1..=100).collect();
        let cases = [(0.0, 1), (0.5, 50), (0.9, 90), (0.99, 99), (0.995, 100), (1.0, 100)];
        for (q, value) in cases {
            assert_eq!(nearest_rank(&sorted, q), Some(value), "q = {q}");
        }
        assert_eq!(nearest_rank(&[-3, 7], 0.5), Some(-3));
        assert_eq!(nearest_rank::<i64>(&[], 0.5), None);
        assert_eq!(latency_of([40, 7, 300]).min_us(), 7.0);
        assert_eq!(Latency::default().min_us(), 0.0);
    }

    #[test]
    fn errors_total_and_name_their_kinds() {
        let errors = Errors { connect: 3, timeout: 1, ..Errors::default() };
        assert_eq!((errors.total(), errors.breakdown().as_str()), (4, "3 connect, 1 timeout"));
        assert_eq!(Errors::default().breakdown(), "");
        assert_eq!(errors.to_json(&["io", "timeout"]), json!({"io": 0, "timeout": 1}));
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["mode", "req/s"]);
        table.row(vec!["keep-alive".into(), "165000".into()]);
        table.row(vec!["close".into(), "23000".into()]);
        assert_eq!(table.render(), "mode         req/s\nkeep-alive  165000\nclose        23000\n");
        let mut table = Table::text(&["", "Purpose"]);
        table.row(vec!["long-poll".into(), "held".into()]);
        assert_eq!(table.render(), "           Purpose\nlong-poll  held\n");
        assert_eq!(human_us(250.0), "250 µs");
        assert_eq!(human_us(2500.0), "2.5 ms");
        assert_eq!(human_us(2_500_000.0), "2.50 s");
        assert_eq!(
            lines([("held", "3 ".to_string()), ("a longer name ...", "x".into())]),
            "held            3\na longer name ...x\n"
        );
    }
}
