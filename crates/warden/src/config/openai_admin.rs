//! `[openai_admin]`: OpenAI's Admin, Usage and Costs APIs, read with an Admin key, for key
//! hygiene: scheduled rotation, leak detection by reconciliation, real spend.

use std::time::Duration;

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawOpenaiAdmin {
        key_env: String,
        base_url: String,
        timeout_secs: u64,
        projects: Vec<String>,
        reconcile_every_secs: u64,
        lookback_minutes: u64,
        settle_delay_secs: u64,
        clock_skew_secs: u64,
        tolerance_requests: u64,
        tolerance_tokens: u64,
        tolerance_ratio: f64,
        rotate_on_leak: bool,
        rotation_overlap_secs: u64,
        max_key_age_days: u64,
        cost_drift_ratio: f64,
        cost_drift_min_usd: f64,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenaiAdminConfig {
    /// The variable holding the Admin key (`sk-admin-…`); `None`: the Admin, Usage and
    /// Costs APIs are not used (the key-age alert still works).
    pub key_env: Option<String>,
    /// Where the Admin API lives; `None`: `upstream.base_url`.
    pub base_url: Option<http::Uri>,
    /// Budget of one Admin API call (all its pages share it).
    pub timeout: Duration,
    /// Projects whose keys are listed; empty: every project of the organization.
    pub projects: Vec<String>,
    /// How often usage is reconciled, rotations are due-checked and old keys deleted.
    pub reconcile_every: Duration,
    /// How far back each reconciliation reads the Usage API.
    pub lookback: Duration,
    /// Buckets ending less than this ago are partial on OpenAI's side: not compared yet.
    pub settle_delay: Duration,
    /// Warden's count for a bucket is taken over the bucket widened by this on each side.
    pub clock_skew: Duration,
    /// Excess allowed per bucket: `tolerance_* + tolerance_ratio × Warden's count`.
    pub tolerance_requests: u64,
    pub tolerance_tokens: u64,
    pub tolerance_ratio: f64,
    /// Rotate a key at once when usage outside Warden is found on it.
    pub rotate_on_leak: bool,
    /// How long a rotated-out key keeps working upstream before it is deleted.
    pub rotation_overlap: Duration,
    /// Active keys older than this raise `upstream_key_old`; `None`: never.
    pub max_key_age: Option<Duration>,
    /// Real spend above Warden's estimate by more than this ratio (and `cost_drift_min_usd`)
    /// raises `openai_cost_drift`.
    pub cost_drift_ratio: f64,
    pub cost_drift_min_usd: f64,
}

impl Default for OpenaiAdminConfig {
    fn default() -> Self {
        Self {
            key_env: None,
            base_url: None,
            timeout: Duration::from_secs(30),
            projects: Vec::new(),
            reconcile_every: Duration::from_secs(300),
            lookback: Duration::from_secs(3600),
            settle_delay: Duration::from_secs(120),
            clock_skew: Duration::from_secs(60),
            tolerance_requests: 5,
            tolerance_tokens: 20_000,
            tolerance_ratio: 0.02,
            rotate_on_leak: false,
            rotation_overlap: Duration::from_secs(3600),
            max_key_age: Some(Duration::from_secs(90 * 86_400)),
            cost_drift_ratio: 0.2,
            cost_drift_min_usd: 1.0,
        }
    }
}

impl OpenaiAdminConfig {
    pub fn enabled(&self) -> bool {
        self.key_env.is_some()
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> OpenaiAdminConfig {
    const PATH: &str = "openai_admin";
    let raw = value
        .map(|v| RawOpenaiAdmin::read(v, PATH, problems))
        .unwrap_or_default();
    let d = OpenaiAdminConfig::default();
    let mut secs =
        |value: Option<u64>, default: Duration, key: &str, min: u64, unit: u64| match value {
            Some(v) if v < min => {
                problems.push(format!("{PATH}.{key}"), format!("must be at least {min}"));
                default
            }
            Some(v) => Duration::from_secs(v.saturating_mul(unit)),
            None => default,
        };
    let timeout = secs(raw.timeout_secs, d.timeout, "timeout_secs", 1, 1);
    let reconcile_every = secs(
        raw.reconcile_every_secs,
        d.reconcile_every,
        "reconcile_every_secs",
        1,
        1,
    );
    let lookback = secs(raw.lookback_minutes, d.lookback, "lookback_minutes", 2, 60);
    // Warden's own counts reach the store every 2 s: a bucket judged sooner would miss them.
    let settle_delay = secs(
        raw.settle_delay_secs,
        d.settle_delay,
        "settle_delay_secs",
        3,
        1,
    );
    let clock_skew = secs(raw.clock_skew_secs, d.clock_skew, "clock_skew_secs", 0, 1);
    // Replicas switch keys within a second; requests already sent must finish first.
    let rotation_overlap = secs(
        raw.rotation_overlap_secs,
        d.rotation_overlap,
        "rotation_overlap_secs",
        2,
        1,
    );
    let max_key_age = match raw.max_key_age_days {
        Some(0) => None,
        Some(days) => Some(Duration::from_secs(days.saturating_mul(86_400))),
        None => d.max_key_age,
    };
    if lookback <= settle_delay {
        problems.push(
            format!("{PATH}.lookback_minutes"),
            "must reach further back than settle_delay_secs, or no bucket is ever compared",
        );
    }
    let mut ratio = |value: Option<f64>, default: f64, key: &str| match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => {
            problems.push(
                format!("{PATH}.{key}"),
                format!("must be a number >= 0 (found {v})"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let tolerance_ratio = ratio(raw.tolerance_ratio, d.tolerance_ratio, "tolerance_ratio");
    let cost_drift_ratio = ratio(raw.cost_drift_ratio, d.cost_drift_ratio, "cost_drift_ratio");
    let cost_drift_min_usd = ratio(
        raw.cost_drift_min_usd,
        d.cost_drift_min_usd,
        "cost_drift_min_usd",
    );
    let base_url = raw
        .base_url
        .as_deref()
        .and_then(|text| match super::validate::base_url(text) {
            Ok(uri) => Some(uri),
            Err(why) => {
                problems.push(format!("{PATH}.base_url"), format!("'{text}' {why}"));
                None
            }
        });
    let key_env = raw.key_env.filter(|name| {
        let ok = !name.trim().is_empty();
        if !ok {
            problems.push(format!("{PATH}.key_env"), "names no environment variable");
        }
        ok
    });
    for (i, project) in raw.projects.iter().flatten().enumerate() {
        if !project.starts_with("proj_") {
            problems.push(
                format!("{PATH}.projects[{i}]"),
                format!("'{project}' is not an OpenAI project id (proj_…)"),
            );
        }
    }
    OpenaiAdminConfig {
        key_env,
        base_url,
        timeout,
        projects: raw.projects.unwrap_or_default(),
        reconcile_every,
        lookback,
        settle_delay,
        clock_skew,
        tolerance_requests: raw.tolerance_requests.unwrap_or(d.tolerance_requests),
        tolerance_tokens: raw.tolerance_tokens.unwrap_or(d.tolerance_tokens),
        tolerance_ratio,
        rotate_on_leak: raw.rotate_on_leak.unwrap_or(d.rotate_on_leak),
        rotation_overlap,
        max_key_age,
        cost_drift_ratio,
        cost_drift_min_usd,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(text: &str) -> (OpenaiAdminConfig, Problems) {
        let mut problems = Problems::default();
        let value: toml::Value = toml::from_str(text).unwrap();
        (validate(Some(&value), &mut problems), problems)
    }

    #[test]
    fn defaults_when_absent_and_off_without_key_env() {
        let mut problems = Problems::default();
        let config = validate(None, &mut problems);
        assert!(problems.is_empty());
        assert!(!config.enabled());
        assert_eq!(config, OpenaiAdminConfig::default());
    }

    #[test]
    fn reports_every_bad_value_with_its_path() {
        let (_, problems) = read(
            "key_env = ''\nbase_url = 'ftp://x'\nreconcile_every_secs = 0\ntolerance_ratio = -1.0\nprojects = ['p1']\nlookback_minutes = 2\nsettle_delay_secs = 600\nbogus = 1",
        );
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "openai_admin.key_env",
            "openai_admin.base_url",
            "openai_admin.reconcile_every_secs",
            "openai_admin.tolerance_ratio",
            "openai_admin.projects[0]",
            "openai_admin.lookback_minutes",
            "openai_admin.bogus",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }

    #[test]
    fn zero_max_age_turns_the_age_alert_off() {
        let (config, problems) = read("key_env = 'OPENAI_ADMIN_KEY'\nmax_key_age_days = 0");
        assert!(problems.is_empty());
        assert!(config.enabled());
        assert_eq!(config.max_key_age, None);
    }
}
