//! The account risk score, 0-100, with the reasons that make it up. Each signal adds up
//! to a fixed number of points, so the score reads as "how many of the things that get
//! organizations warned are happening, and how strongly".

use serde::Serialize;

/// Points each signal adds at full strength (they sum past 100; the score is capped).
pub const P_FLAG_RATE: f64 = 35.0;
pub const P_ENFORCEMENT: f64 = 15.0;
pub const P_SPIKES: f64 = 10.0;
pub const P_DISTILLATION: f64 = 20.0;
pub const P_SHARING: f64 = 10.0;
pub const P_FAIL_OPEN: f64 = 10.0;

/// Strikes, suspensions and bans, fed by the end-user enforcement pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    /// Strikes given in the last 24 hours.
    pub strikes_24h: u64,
    /// End users suspended right now.
    pub suspended: u64,
    /// End users banned in the last 7 days.
    pub banned_7d: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub signal: &'static str,
    pub points: u8,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagRate {
    pub window: &'static str,
    pub requests: u64,
    /// Requests flagged or blocked for content (any category).
    pub flagged: u64,
    pub rate: f64,
    /// The configured line for this window.
    pub line: f64,
    /// Flagged requests per category.
    pub categories: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorFinding {
    /// `key:<name>` or `user:<key>/<end user>`.
    pub actor: String,
    pub at_ms: i64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistillationFinding {
    pub actor: String,
    pub at_ms: i64,
    pub score: u8,
    pub requests: usize,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RiskReport {
    pub score: u8,
    pub computed_at_ms: i64,
    pub reasons: Vec<Reason>,
    pub flag_rates: Vec<FlagRate>,
    /// Spikes in the last hour.
    pub spikes: Vec<ActorFinding>,
    /// Actors whose distillation score is at least half the threshold.
    pub distillation: Vec<DistillationFinding>,
    /// Actors over the key-sharing line now.
    pub key_sharing: Vec<ActorFinding>,
    pub moderation_fail_open_24h: u64,
    pub enforcement: Enforcement,
    /// Observations dropped because the analyzer's queue was full.
    pub dropped_observations: u64,
}

/// What the score is computed from.
pub struct Inputs<'a> {
    pub flag_rates: &'a [FlagRate],
    pub min_requests: u64,
    pub enforcement: Enforcement,
    pub spikes: usize,
    /// The highest current distillation score, and the reporting threshold.
    pub distillation_top: Option<(&'a str, u8)>,
    pub distillation_threshold: u64,
    pub sharing: usize,
    pub fail_open_24h: u64,
}

pub fn score(inputs: &Inputs<'_>) -> (u8, Vec<Reason>) {
    let mut reasons = Vec::new();
    let mut push = |signal: &'static str, points: f64, detail: String| {
        let points = points.clamp(0.0, 100.0).round() as u8;
        if points > 0 {
            reasons.push(Reason {
                signal,
                points,
                detail,
            });
        }
    };
    // The window furthest over its line speaks for the flag rate.
    let worst = inputs
        .flag_rates
        .iter()
        .filter(|w| w.requests >= inputs.min_requests)
        .map(|w| (w, w.rate / w.line))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((w, ratio)) = worst {
        push(
            "flag_rate",
            P_FLAG_RATE * ratio.min(1.0),
            format!(
                "{:.1}% of requests flagged in the last {} ({} of {}; line {:.1}%)",
                w.rate * 100.0,
                w.window,
                w.flagged,
                w.requests,
                w.line * 100.0
            ),
        );
    }
    let e = inputs.enforcement;
    let enforcement = e.strikes_24h as f64 + 3.0 * e.suspended as f64 + 5.0 * e.banned_7d as f64;
    push(
        "enforcement",
        enforcement.min(P_ENFORCEMENT),
        format!(
            "{} strikes in 24 h, {} end users suspended, {} banned in 7 d",
            e.strikes_24h, e.suspended, e.banned_7d
        ),
    );
    push(
        "spikes",
        (5.0 * inputs.spikes as f64).min(P_SPIKES),
        format!("{} request-rate spikes in the last hour", inputs.spikes),
    );
    if let Some((actor, top)) = inputs.distillation_top {
        if u64::from(top) * 2 >= inputs.distillation_threshold {
            push(
                "distillation",
                P_DISTILLATION * f64::from(top) / 100.0,
                format!("{actor} scores {top} on the distillation detector"),
            );
        }
    }
    push(
        "key_sharing",
        (5.0 * inputs.sharing as f64).min(P_SHARING),
        format!(
            "{} keys or end users seen from too many IPs or countries",
            inputs.sharing
        ),
    );
    push(
        "moderation_fail_open",
        (inputs.fail_open_24h as f64 / 10.0).ceil().min(P_FAIL_OPEN),
        format!(
            "{} requests forwarded unmoderated (fail-open) in 24 h",
            inputs.fail_open_24h
        ),
    );
    let total: u32 = reasons.iter().map(|r| u32::from(r.points)).sum();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.points));
    (total.min(100) as u8, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(window: &'static str, requests: u64, flagged: u64, line: f64) -> FlagRate {
        FlagRate {
            window,
            requests,
            flagged,
            rate: flagged as f64 / requests.max(1) as f64,
            line,
            categories: Default::default(),
        }
    }

    fn inputs(rates: &[FlagRate]) -> Inputs<'_> {
        Inputs {
            flag_rates: rates,
            min_requests: 20,
            enforcement: Enforcement::default(),
            spikes: 0,
            distillation_top: None,
            distillation_threshold: 60,
            sharing: 0,
            fail_open_24h: 0,
        }
    }

    #[test]
    fn quiet_account_scores_zero_and_signals_add_up() {
        let quiet = [rate("1h", 1000, 0, 0.05)];
        assert_eq!(score(&inputs(&quiet)).0, 0);

        let hot = [rate("1h", 100, 10, 0.05), rate("24h", 100, 10, 0.02)];
        let mut i = inputs(&hot);
        i.enforcement.banned_7d = 1;
        i.spikes = 1;
        i.distillation_top = Some(("key:app", 80));
        i.sharing = 3;
        let (total, reasons) = score(&i);
        // 35 flag rate + 5 enforcement + 5 spikes + 16 distillation + 10 sharing.
        assert_eq!(total, 71);
        assert_eq!(reasons[0].signal, "flag_rate");
        assert!(reasons.iter().any(|r| r.signal == "distillation"));

        // Too few requests: no rate yet.
        let few = [rate("1h", 5, 5, 0.05)];
        assert_eq!(score(&inputs(&few)).0, 0);
    }
}
