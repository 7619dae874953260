//! Latency histograms (hdrhistogram, nanoseconds) and their JSON summaries, and error tallies.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A histogram of nanoseconds from 1 ns to 1 h at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` into a step's histogram, created on first use (steps a run never reached stay absent).
pub fn record_step(h: &mut Option<Histogram<u64>>, d: Duration) {
    h.get_or_insert_with(new_histogram).saturating_record(nanos(d));
}

/// A step's summary for the report, `null` when the step never happened.
pub fn step_summary(h: &Option<Histogram<u64>>) -> serde_json::Value {
    match h {
        Some(h) => serde_json::json!(Summary::of(h)),
        None => serde_json::Value::Null,
    }
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Percentiles of a histogram of nanoseconds, in microseconds.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

fn us(ns: f64) -> f64 {
    (ns / 1000.0 * 1000.0).round() / 1000.0
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let q = |q: f64| us(h.value_at_quantile(q) as f64);
        Summary {
            count: h.len(),
            min_us: us(h.min() as f64),
            mean_us: us(h.mean()),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: us(h.max() as f64),
        }
    }

    /// `p50 0.085 ms, p90 …, max … ms`.
    pub fn short(&self) -> String {
        format!(
            "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

/// Microseconds as milliseconds with 3 significant decimals.
pub fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Errors counted by message.
#[derive(Default, Debug, Clone)]
pub struct ErrorTally {
    counts: BTreeMap<String, u64>,
}

impl ErrorTally {
    pub fn add(&mut self, message: impl Into<String>) {
        *self.counts.entry(message.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &ErrorTally) {
        for (k, v) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn most_common(&self) -> Option<(&str, u64)> {
        self.counts
            .iter()
            .max_by_key(|(_, v)| **v)
            .map(|(k, v)| (k.as_str(), *v))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.counts
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect(),
        )
    }

    /// `, 3 errors (most: "tcp: …" ×2)` or "".
    pub fn suffix(&self) -> String {
        match self.most_common() {
            None => String::new(),
            Some((m, n)) => format!(", {} errors (most: {m} ×{n})", self.total()),
        }
    }
}

/// Bytes per second as MB/s (10^6 bytes), rounded to 0.01.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (bytes as f64 / secs / 1e6 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_orders_percentiles() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 10_000);
        assert!(s.min_us >= 0.999 && s.min_us <= 1.001, "{s:?}");
        assert!((s.p50_us - 5000.0).abs() / 5000.0 < 0.002, "{s:?}");
        assert!((s.p99_us - 9900.0).abs() / 9900.0 < 0.002, "{s:?}");
        assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        assert_eq!(Summary::of(&new_histogram()), Summary::default());
    }

    #[test]
    fn tallies_and_units() {
        let mut t = ErrorTally::default();
        assert_eq!(t.suffix(), "");
        t.add("a");
        t.add("b");
        t.add("b");
        assert_eq!(t.total(), 3);
        assert_eq!(t.most_common(), Some(("b", 2)));
        assert_eq!(t.to_json(), serde_json::json!({"a": 1, "b": 2}));
        assert_eq!(mb_per_s(5_000_000, 2.0), 2.5);
        assert_eq!(ms(85.4), "0.085");
        assert_eq!(ms(1234.0), "1.23");
        assert_eq!(nanos(Duration::ZERO), 1);
    }
}
