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
    let pacer = &upstream.pacer;
    metric(
        "warden_upstream_paced_waited_total",
        "counter",
        "Requests held until upstream's rate-limit window reset.",
        pacer.waited_total(),
    );
    metric(
        "warden_upstream_paced_shed_total",
        "counter",
        "Requests refused (429) to keep the organization under its share of upstream's limits.",
        pacer.shed_total(),
    );
    let readings = pacer.readings();
    let gauges: [(&str, &str); 4] = [
        (
            "warden_upstream_ratelimit_limit",
            "Upstream's rate limit per window (x-ratelimit-limit-*).",
        ),
        (
            "warden_upstream_ratelimit_remaining",
            "Upstream's remaining budget, counted down locally between answers.",
        ),
        (
            "warden_upstream_ratelimit_reset_seconds",
            "Seconds until upstream's window resets.",
        ),
        (
            "warden_upstream_headroom_ratio",
            "Share of upstream's limit still usable under the pacing share (0 = none left).",
        ),
    ];
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (budget, limit, remaining, reset) in &readings {
            let value = match i {
                0 => *limit as f64,
                1 => *remaining as f64,
                2 => *reset,
                _ => headroom(pacer.share(), *limit, *remaining),
            };
            let _ = writeln!(out, "{name}{{budget=\"{budget}\"}} {value}");
        }
    }
    out
}

/// (share · limit − used) / limit, floored at 0.
fn headroom(share: f64, limit: u64, remaining: u64) -> f64 {
    if limit == 0 {
        return 0.0;
    }
    let used = limit.saturating_sub(remaining) as f64;
    ((share * limit as f64 - used) / limit as f64).max(0.0)
}
