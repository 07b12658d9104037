//! `[lockdown]`: what lockdown mode tightens, and whether a high risk score turns it on.

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawLockdown {
        refuse_tiers: Vec<String>,
        refuse_without_end_user: bool,
        limit_factor: f64,
        moderation_threshold_factor: f64,
        moderation_score_line: f64,
        auto_above: u64,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LockdownConfig {
    /// End-user tiers refused while lockdown is on.
    pub refuse_tiers: Vec<String>,
    /// Requests naming no end user are refused too (nobody to hold accountable).
    pub refuse_without_end_user: bool,
    /// Every rate and concurrency limit is multiplied by this (0.5: halved).
    pub limit_factor: f64,
    /// Score thresholds of the moderation policy are multiplied by this.
    pub moderation_threshold_factor: f64,
    /// Categories that trust the endpoint's `flagged` also fire at this score.
    pub moderation_score_line: f32,
    /// Turn lockdown on by itself when the risk score reaches this (never off by itself).
    pub auto_above: Option<u64>,
}

impl Default for LockdownConfig {
    fn default() -> Self {
        Self {
            refuse_tiers: vec!["anonymous".into(), "unverified".into()],
            refuse_without_end_user: true,
            limit_factor: 0.5,
            moderation_threshold_factor: 0.5,
            moderation_score_line: 0.4,
            auto_above: None,
        }
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> LockdownConfig {
    const PATH: &str = "lockdown";
    let raw = value
        .map(|v| RawLockdown::read(v, PATH, problems))
        .unwrap_or_default();
    let d = LockdownConfig::default();
    let mut factor = |value: Option<f64>, default: f64, key: &str| match value {
        Some(v) if !(v > 0.0 && v <= 1.0) => {
            problems.push(format!("{PATH}.{key}"), "must be above 0 and at most 1");
            default
        }
        Some(v) => v,
        None => default,
    };
    let limit_factor = factor(raw.limit_factor, d.limit_factor, "limit_factor");
    let moderation_threshold_factor = factor(
        raw.moderation_threshold_factor,
        d.moderation_threshold_factor,
        "moderation_threshold_factor",
    );
    let moderation_score_line = factor(
        raw.moderation_score_line,
        f64::from(d.moderation_score_line),
        "moderation_score_line",
    ) as f32;
    let auto_above = match raw.auto_above {
        Some(v) if v == 0 || v > 100 => {
            problems.push(
                format!("{PATH}.auto_above"),
                "must be a risk score from 1 to 100",
            );
            None
        }
        other => other,
    };
    LockdownConfig {
        refuse_tiers: raw.refuse_tiers.unwrap_or(d.refuse_tiers),
        refuse_without_end_user: raw
            .refuse_without_end_user
            .unwrap_or(d.refuse_without_end_user),
        limit_factor,
        moderation_threshold_factor,
        moderation_score_line,
        auto_above,
    }
}
