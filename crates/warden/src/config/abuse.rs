//! `[abuse]`: the live detectors (organization flag rate, request spikes, distillation,
//! key sharing) and the risk score's alert line. Every threshold has a default that keeps
//! ordinary traffic quiet.

use std::time::Duration;

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawAbuse {
        enabled: bool,
        flag_rate_1h: f64,
        flag_rate_24h: f64,
        flag_rate_7d: f64,
        flag_rate_min_requests: u64,
        spike_interval_secs: u64,
        spike_factor: f64,
        spike_min_requests: u64,
        spike_warmup_intervals: u64,
        distillation_window_secs: u64,
        distillation_min_requests: u64,
        distillation_volume: u64,
        distillation_threshold: u64,
        distillation_action: String,
        throttle_secs: u64,
        sharing_window_secs: u64,
        key_max_ips: u64,
        user_max_ips: u64,
        max_countries: u64,
        risk_alert_above: u64,
    }
}

/// What crossing the distillation threshold does besides alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistillationAction {
    Alert,
    /// Alert, and refuse the actor with 429 `abuse_throttled` for `throttle`.
    Throttle,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AbuseConfig {
    pub enabled: bool,
    /// Share of requests flagged or blocked for content (0-1) that counts as high, per
    /// window: 1 h, 24 h, 7 d.
    pub flag_rate: [f64; 3],
    /// A window with fewer requests has no rate yet (one flag in three requests is noise).
    pub flag_rate_min_requests: u64,
    pub spike_interval: Duration,
    /// A spike: an interval's requests above `factor` times the actor's EWMA baseline...
    pub spike_factor: f64,
    /// ...and above this many requests (a quiet actor doubling from 1 to 2 is no spike).
    pub spike_min_requests: u64,
    /// Intervals an actor must have been seen before its baseline is believed.
    pub spike_warmup_intervals: u64,
    pub distillation_window: Duration,
    pub distillation_min_requests: u64,
    /// Requests in the window that count as full "sustained volume".
    pub distillation_volume: u64,
    /// Score (0-100) at and above which an actor is reported.
    pub distillation_threshold: u64,
    pub distillation_action: DistillationAction,
    pub throttle: Duration,
    pub sharing_window: Duration,
    pub key_max_ips: u64,
    pub user_max_ips: u64,
    pub max_countries: u64,
    /// Risk score at and above which an alert is raised.
    pub risk_alert_above: u64,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flag_rate: [0.05, 0.02, 0.01],
            flag_rate_min_requests: 20,
            spike_interval: Duration::from_secs(60),
            spike_factor: 4.0,
            spike_min_requests: 30,
            spike_warmup_intervals: 5,
            distillation_window: Duration::from_secs(3600),
            distillation_min_requests: 20,
            distillation_volume: 500,
            distillation_threshold: 60,
            distillation_action: DistillationAction::Alert,
            throttle: Duration::from_secs(300),
            sharing_window: Duration::from_secs(600),
            key_max_ips: 16,
            user_max_ips: 8,
            max_countries: 3,
            risk_alert_above: 60,
        }
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> AbuseConfig {
    const PATH: &str = "abuse";
    let raw = value
        .map(|v| RawAbuse::read(v, PATH, problems))
        .unwrap_or_default();
    let d = AbuseConfig::default();
    let mut positive = |value: Option<u64>, default: u64, key: &str| match value {
        Some(0) => {
            problems.push(format!("{PATH}.{key}"), "must be greater than 0");
            default
        }
        Some(n) => n,
        None => default,
    };
    let secs = |d: Duration| d.as_secs();
    let spike_interval = positive(
        raw.spike_interval_secs,
        secs(d.spike_interval),
        "spike_interval_secs",
    );
    let distillation_window = positive(
        raw.distillation_window_secs,
        secs(d.distillation_window),
        "distillation_window_secs",
    );
    let throttle = positive(raw.throttle_secs, secs(d.throttle), "throttle_secs");
    let sharing_window = positive(
        raw.sharing_window_secs,
        secs(d.sharing_window),
        "sharing_window_secs",
    );
    let flag_rate_min_requests = positive(
        raw.flag_rate_min_requests,
        d.flag_rate_min_requests,
        "flag_rate_min_requests",
    );
    let spike_min_requests = positive(
        raw.spike_min_requests,
        d.spike_min_requests,
        "spike_min_requests",
    );
    let spike_warmup_intervals = positive(
        raw.spike_warmup_intervals,
        d.spike_warmup_intervals,
        "spike_warmup_intervals",
    );
    let distillation_min_requests = positive(
        raw.distillation_min_requests,
        d.distillation_min_requests,
        "distillation_min_requests",
    );
    let distillation_volume = positive(
        raw.distillation_volume,
        d.distillation_volume,
        "distillation_volume",
    );
    let key_max_ips = positive(raw.key_max_ips, d.key_max_ips, "key_max_ips");
    let user_max_ips = positive(raw.user_max_ips, d.user_max_ips, "user_max_ips");
    let max_countries = positive(raw.max_countries, d.max_countries, "max_countries");
    let mut share = |value: Option<f64>, default: f64, key: &str| match value {
        Some(v) if !(v > 0.0 && v <= 1.0) => {
            problems.push(
                format!("{PATH}.{key}"),
                "must be a share above 0 and at most 1",
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let flag_rate = [
        share(raw.flag_rate_1h, d.flag_rate[0], "flag_rate_1h"),
        share(raw.flag_rate_24h, d.flag_rate[1], "flag_rate_24h"),
        share(raw.flag_rate_7d, d.flag_rate[2], "flag_rate_7d"),
    ];
    let spike_factor = match raw.spike_factor {
        Some(f) if f.is_nan() || f <= 1.0 => {
            problems.push(format!("{PATH}.spike_factor"), "must be greater than 1");
            d.spike_factor
        }
        Some(f) => f,
        None => d.spike_factor,
    };
    let mut score = |value: Option<u64>, default: u64, key: &str| match value {
        Some(v) if v == 0 || v > 100 => {
            problems.push(format!("{PATH}.{key}"), "must be a score from 1 to 100");
            default
        }
        Some(v) => v,
        None => default,
    };
    let distillation_threshold = score(
        raw.distillation_threshold,
        d.distillation_threshold,
        "distillation_threshold",
    );
    let risk_alert_above = score(raw.risk_alert_above, d.risk_alert_above, "risk_alert_above");
    let distillation_action = match raw.distillation_action.as_deref() {
        None | Some("alert") => DistillationAction::Alert,
        Some("throttle") => DistillationAction::Throttle,
        Some(other) => {
            problems.push(
                format!("{PATH}.distillation_action"),
                format!("'{other}' is not one of: alert, throttle"),
            );
            DistillationAction::Alert
        }
    };
    AbuseConfig {
        enabled: raw.enabled.unwrap_or(true),
        flag_rate,
        flag_rate_min_requests,
        spike_interval: Duration::from_secs(spike_interval),
        spike_factor,
        spike_min_requests,
        spike_warmup_intervals,
        distillation_window: Duration::from_secs(distillation_window),
        distillation_min_requests,
        distillation_volume,
        distillation_threshold,
        distillation_action,
        throttle: Duration::from_secs(throttle),
        sharing_window: Duration::from_secs(sharing_window),
        key_max_ips,
        user_max_ips,
        max_countries,
        risk_alert_above,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_every_problem_with_its_path() {
        let mut problems = Problems::default();
        assert_eq!(validate(None, &mut problems), AbuseConfig::default());
        assert!(problems.is_empty());
        let value: toml::Value = "flag_rate_1h = 2.0\nspike_factor = 0.5\nkey_max_ips = 0\ndistillation_action = \"ban\"\ndistillation_threshold = 101\nnope = 1"
            .parse::<toml::Table>()
            .unwrap()
            .into();
        let config = validate(Some(&value), &mut problems);
        assert_eq!(config.key_max_ips, 16);
        let text = problems.to_string();
        for needle in [
            "abuse.flag_rate_1h",
            "abuse.spike_factor",
            "abuse.key_max_ips",
            "abuse.distillation_action",
            "abuse.distillation_threshold",
            "abuse.nope",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }

    /// The configuration reference's example of `[geo]`, `[abuse]`, `[alerts]` and `[lockdown]` is valid
    /// and says the defaults.
    #[test]
    fn readme_example_is_valid_and_matches_the_defaults() {
        let readme = include_str!("../../../../docs/configuration.md");
        let start = readme
            .find("Every key of these sections, with its default")
            .unwrap();
        let block = &readme[start..];
        let block = &block[block.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let db = tempfile::NamedTempFile::new().unwrap();
        let text = block.replace(
            "/var/lib/GeoIP/GeoLite2-Country.mmdb",
            &db.path().display().to_string(),
        );
        let config = crate::config::Config::from_toml(&text).unwrap_or_else(|p| {
            unreachable!("configuration.md example invalid: {p}");
        });
        assert_eq!(config.abuse, AbuseConfig::default());
        let geo = crate::config::geo::GeoConfig {
            database: None,
            ..config.geo.clone()
        };
        assert_eq!(geo, crate::config::geo::GeoConfig::default());
        assert_eq!(config.alerts.webhooks.len(), 1);
        assert_eq!(config.lockdown.auto_above, Some(90));
        let lockdown = crate::config::lockdown::LockdownConfig {
            auto_above: None,
            ..config.lockdown.clone()
        };
        assert_eq!(lockdown, crate::config::lockdown::LockdownConfig::default());
    }
}
