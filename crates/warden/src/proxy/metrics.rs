//! Prometheus text for the upstream client's own state (retries, circuit breaker), which
//! lives in atomics rather than in the event log.

use std::fmt::Write;

use super::upstream::Upstream;

pub fn render(upstream: &Upstream) -> String {
    let mut out = String::with_capacity(1024);
    let breaker = &upstream.breaker;
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "warden_upstream_retries_total",
        "counter",
        "Extra upstream attempts made after a 429, 5xx or connection failure.",
        upstream.retries_total(),
    );
    metric(
        "warden_upstream_breaker_state",
        "gauge",
        "Upstream circuit breaker: 0 closed, 1 open, 2 half-open (probing).",
        u64::from(breaker.state_code()),
    );
    metric(
        "warden_upstream_breaker_opened_total",
        "counter",
        "Times the upstream circuit breaker opened.",
        breaker.opened_total(),
    );
    metric(
        "warden_upstream_breaker_refused_total",
        "counter",
        "Requests answered 503 at once because the breaker was open.",
        breaker.refused_total(),
    );
    out
}
