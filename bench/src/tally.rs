//! Per-target results of a run: HdrHistograms of the timings, failure counts, and their summaries.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest recordable value: one minute, in nanoseconds.
const MAX_NANOS: u64 = 60_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// How one scheduled request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok(Timings),
    Failed(Failure),
}

/// The timings of one successful request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Scheduled send time → last byte of the body (what a user waits; no coordinated omission).
    pub latency: Duration,
    /// Scheduled send time → first byte of the body.
    pub first_byte: Duration,
    /// Actual send time → last byte (the server's share plus the loopback round trip).
    pub service: Duration,
    /// Scheduled → actual send: generator lateness plus waiting for a free connection.
    pub queued: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    Status(u16),
    Connect,
    Send,
    Body,
    Timeout,
    Lost,
}

impl Failure {
    fn label(self) -> String {
        match self {
            Failure::Status(code) => format!("status_{code}"),
            Failure::Connect => "connect".into(),
            Failure::Send => "send".into(),
            Failure::Body => "body".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Lost => "lost".into(),
        }
    }
}

/// Everything recorded for one target at one rate, summed over its segments.
#[derive(Debug, Clone)]
pub struct Tally {
    pub latency: Histogram<u64>,
    pub first_byte: Histogram<u64>,
    pub service: Histogram<u64>,
    pub queued: Histogram<u64>,
    pub scheduled: u64,
    pub failures: BTreeMap<Failure, u64>,
    /// Wall time of the recorded segments, first scheduled send to last completion.
    pub wall: Duration,
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Tally {
    pub fn new() -> anyhow::Result<Tally> {
        let histogram = || Histogram::new_with_bounds(1, MAX_NANOS, SIGNIFICANT_DIGITS);
        Ok(Tally {
            latency: histogram()?,
            first_byte: histogram()?,
            service: histogram()?,
            queued: histogram()?,
            scheduled: 0,
            failures: BTreeMap::new(),
            wall: Duration::ZERO,
        })
    }

    pub fn record(&mut self, outcome: Outcome) {
        self.scheduled += 1;
        match outcome {
            Outcome::Ok(t) => {
                record(&mut self.latency, t.latency);
                record(&mut self.first_byte, t.first_byte);
                record(&mut self.service, t.service);
                record(&mut self.queued, t.queued);
            }
            Outcome::Failed(failure) => *self.failures.entry(failure).or_insert(0) += 1,
        }
    }

    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Successful responses per second of wall time.
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.ok() as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let failures: BTreeMap<String, u64> =
            self.failures.iter().map(|(f, n)| (f.label(), *n)).collect();
        json!({
            "scheduled": self.scheduled,
            "ok": self.ok(),
            "errors": self.errors(),
            "failures": failures,
            "wall_seconds": self.wall.as_secs_f64(),
            "achieved_rps": round1(self.achieved_rate()),
            "latency_us": summary(&self.latency).to_json(),
            "first_byte_us": summary(&self.first_byte).to_json(),
            "service_us": summary(&self.service).to_json(),
            "queued_us": summary(&self.queued).to_json(),
        })
    }
}

fn record(histogram: &mut Histogram<u64>, value: Duration) {
    let nanos = u64::try_from(value.as_nanos()).unwrap_or(MAX_NANOS);
    histogram.saturating_record(nanos.clamp(1, MAX_NANOS));
}

/// p50/p99/p99.9/max/mean of a histogram of nanoseconds, in microseconds.
pub fn summary(histogram: &Histogram<u64>) -> Summary {
    if histogram.is_empty() {
        return Summary {
            p50: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    let us = |nanos: u64| nanos as f64 / 1000.0;
    Summary {
        p50: us(histogram.value_at_quantile(0.50)),
        p99: us(histogram.value_at_quantile(0.99)),
        p999: us(histogram.value_at_quantile(0.999)),
        max: us(histogram.max()),
        mean: histogram.mean() / 1000.0,
    }
}

impl Summary {
    pub fn to_json(self) -> Value {
        json!({
            "p50": round1(self.p50),
            "p99": round1(self.p99),
            "p99_9": round1(self.p999),
            "max": round1(self.max),
            "mean": round1(self.mean),
        })
    }
}

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(micros: u64) -> Outcome {
        let d = Duration::from_micros(micros);
        Outcome::Ok(Timings {
            latency: d,
            first_byte: d,
            service: d,
            queued: Duration::ZERO,
        })
    }

    #[test]
    fn percentiles_come_out_in_microseconds_within_three_digits() {
        let mut tally = Tally::new().unwrap();
        for micros in 1..=1000 {
            tally.record(ok(micros));
        }
        let s = summary(&tally.latency);
        assert!((s.p50 - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() <= 1.0, "{s:?}");
    }

    #[test]
    fn failures_are_counted_apart_from_the_histograms() {
        let mut tally = Tally::new().unwrap();
        tally.record(ok(100));
        tally.record(Outcome::Failed(Failure::Status(502)));
        tally.record(Outcome::Failed(Failure::Status(502)));
        tally.record(Outcome::Failed(Failure::Timeout));
        tally.wall = Duration::from_secs(1);
        assert_eq!((tally.scheduled, tally.ok(), tally.errors()), (4, 1, 3));
        let json = tally.to_json();
        assert_eq!(json["failures"]["status_502"], 2);
        assert_eq!(json["failures"]["timeout"], 1);
        assert_eq!(json["achieved_rps"], 1.0);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zero() {
        let tally = Tally::new().unwrap();
        assert_eq!(summary(&tally.latency).p99, 0.0);
    }
}
