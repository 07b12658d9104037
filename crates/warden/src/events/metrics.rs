//! Prometheus counters and latency histograms derived from the event stream, so the
//! request path pays nothing for them. Labels stay low-cardinality: no user ids.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::writer::{EventSink, SinkFuture};
use super::EventRecord;

/// Upper bounds in seconds, Prometheus-style (the `+Inf` bucket is implicit).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Finer bounds for one pipeline stage: most take microseconds; moderation and a
/// shared limiter take a network round trip.
const STAGE_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::with_bounds(BUCKETS)
    }
}

impl Histogram {
    fn with_bounds(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        for (slot, bound) in self.counts.iter_mut().zip(self.bounds) {
            if seconds <= *bound {
                *slot += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct State {
    /// (key, endpoint, outcome, status) → count.
    requests: BTreeMap<(String, &'static str, &'static str, u16), u64>,
    /// (reason) → count, for refusals and failures.
    reasons: BTreeMap<String, u64>,
    /// Time Warden itself added before the response head, per endpoint.
    overhead: BTreeMap<&'static str, Histogram>,
    /// Time upstream took to the response head, per endpoint.
    upstream: BTreeMap<&'static str, Histogram>,
    /// Time each pipeline stage took.
    stages: BTreeMap<&'static str, Histogram>,
}

#[derive(Default, Clone)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
}

impl Metrics {
    fn record(&self, batch: &[EventRecord]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for e in batch.iter().filter(|e| e.kind == "request") {
            let key = e.key_name.clone().unwrap_or_else(|| "-".into());
            *state
                .requests
                .entry((key, e.endpoint, e.outcome, e.status))
                .or_default() += 1;
            if let Some(reason) = &e.reason {
                *state.reasons.entry(reason.clone()).or_default() += 1;
            }
            let upstream_us = e.upstream_us.unwrap_or(0);
            let overhead_us = (e.latency_us - upstream_us).max(0);
            state
                .overhead
                .entry(e.endpoint)
                .or_default()
                .observe(overhead_us as f64 / 1e6);
            for (stage, micros) in &e.stage_us {
                state
                    .stages
                    .entry(stage)
                    .or_insert_with(|| Histogram::with_bounds(STAGE_BUCKETS))
                    .observe(f64::from(*micros) / 1e6);
            }
            if e.upstream_us.is_some() {
                state
                    .upstream
                    .entry(e.endpoint)
                    .or_default()
                    .observe(upstream_us as f64 / 1e6);
            }
        }
    }

    /// The Prometheus text exposition of everything counted so far.
    pub fn render(&self, events_dropped: u64) -> String {
        let mut out = String::with_capacity(4096);
        let Ok(state) = self.state.lock() else {
            return out;
        };
        out.push_str(
            "# HELP warden_requests_total Requests by virtual key, endpoint, outcome and status.\n",
        );
        out.push_str("# TYPE warden_requests_total counter\n");
        for ((key, endpoint, outcome, status), n) in &state.requests {
            let _ = writeln!(
                out,
                "warden_requests_total{{key=\"{}\",endpoint=\"{endpoint}\",outcome=\"{outcome}\",status=\"{status}\"}} {n}",
                escape(key)
            );
        }
        out.push_str(
            "# HELP warden_refusals_total Refused, failed or cancelled requests by reason code.\n",
        );
        out.push_str("# TYPE warden_refusals_total counter\n");
        for (reason, n) in &state.reasons {
            let _ = writeln!(
                out,
                "warden_refusals_total{{reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        out.push_str(
            "# HELP warden_overhead_seconds Time Warden added before the response head.\n",
        );
        out.push_str("# TYPE warden_overhead_seconds histogram\n");
        for (endpoint, h) in &state.overhead {
            h.render(
                &mut out,
                "warden_overhead_seconds",
                &format!("endpoint=\"{endpoint}\""),
            );
        }
        out.push_str("# HELP warden_upstream_seconds Time upstream took to the response head.\n");
        out.push_str("# TYPE warden_upstream_seconds histogram\n");
        for (endpoint, h) in &state.upstream {
            h.render(
                &mut out,
                "warden_upstream_seconds",
                &format!("endpoint=\"{endpoint}\""),
            );
        }
        out.push_str("# HELP warden_stage_seconds Time each pipeline stage took per request (the request half; the last stage a refused request reached included).\n");
        out.push_str("# TYPE warden_stage_seconds histogram\n");
        for (stage, h) in &state.stages {
            h.render(
                &mut out,
                "warden_stage_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        out.push_str(
            "# HELP warden_events_dropped_total Events that will never reach the store: neither committed nor in the spool (queue or spool full, spool failing, or no spool while the store was unreachable).\n",
        );
        out.push_str("# TYPE warden_events_dropped_total counter\n");
        let _ = writeln!(out, "warden_events_dropped_total {events_dropped}");
        out
    }
}

impl EventSink for Metrics {
    fn write<'a>(&'a self, batch: &'a [EventRecord]) -> SinkFuture<'a> {
        self.record(batch);
        Box::pin(async {})
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        status: u16,
        outcome: &'static str,
        latency_us: i64,
        upstream_us: Option<i64>,
    ) -> EventRecord {
        EventRecord {
            request_id: "r".into(),
            at_ms: 0,
            kind: "request",
            key_name: Some("app".into()),
            end_user: Some("alice".into()),
            safety_identifier: None,
            client_ip: None,
            endpoint: "chat.completions",
            model: None,
            stream: false,
            status,
            outcome,
            reason: (outcome != "allowed").then(|| "missing_end_user".into()),
            latency_us,
            upstream_us,
            detail: None,
            ..EventRecord::default()
        }
    }

    #[test]
    fn counts_and_splits_overhead_from_upstream_time() {
        let metrics = Metrics::default();
        metrics.record(&[
            event(200, "allowed", 1_300, Some(1_000)),
            event(200, "allowed", 2_200, Some(2_000)),
            event(400, "blocked", 50, None),
        ]);
        let text = metrics.render(0);
        assert!(text.contains(
            "warden_requests_total{key=\"app\",endpoint=\"chat.completions\",outcome=\"allowed\",status=\"200\"} 2"
        ));
        assert!(text.contains("warden_refusals_total{reason=\"missing_end_user\"} 1"));
        // Overheads were 300 µs, 200 µs and 50 µs: all three at or under 0.0005 s.
        assert!(text.contains(
            "warden_overhead_seconds_bucket{endpoint=\"chat.completions\",le=\"0.0005\"} 3"
        ));
        assert!(text.contains("warden_upstream_seconds_count{endpoint=\"chat.completions\"} 2"));
        assert!(!text.contains("alice"), "no user ids in labels");
    }

    #[test]
    fn each_stage_gets_its_own_fine_grained_histogram() {
        let metrics = Metrics::default();
        let mut fast = event(200, "allowed", 900, Some(800));
        fast.stage_us = vec![("authenticate", 3), ("limits", 40)];
        let mut slow = event(200, "allowed", 9_000, Some(800));
        slow.stage_us = vec![("authenticate", 4), ("limits", 7_000)];
        metrics.record(&[fast, slow]);
        let text = metrics.render(0);
        assert!(
            text.contains("warden_stage_seconds_bucket{stage=\"authenticate\",le=\"0.000005\"} 2")
        );
        assert!(text.contains("warden_stage_seconds_bucket{stage=\"limits\",le=\"0.00005\"} 1"));
        assert!(text.contains("warden_stage_seconds_bucket{stage=\"limits\",le=\"0.01\"} 2"));
        assert!(text.contains("warden_stage_seconds_count{stage=\"limits\"} 2"));
    }
}
