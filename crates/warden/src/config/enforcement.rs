//! `[enforcement]` (strikes and the ladder), `[admin]` (the operator API's token) and
//! `[openai_notices]` (OpenAI's safety webhooks).

use std::collections::BTreeMap;
use std::time::Duration;

use super::limits::LimitsConfig;
use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawEnforcement {
        enabled: bool,
        strike_half_life_hours: f64,
        flag_weight: f64,
        warn_at: f64,
        throttle_at: f64,
        throttle_tier: String,
        suspend_at: f64,
        suspend_hours: f64,
        ban_at: f64,
        upstream_refusal_suspend_hours: f64,
        weights: BTreeMap<String, f64>,
    }
}

section! {
    pub struct RawAdmin {
        token_env: String,
        token_sha256: Vec<String>,
    }
}

section! {
    pub struct RawNotices {
        secret_env: String,
        case_key_env: String,
        tolerance_secs: u64,
        warning_action: String,
        warning_suspend_hours: f64,
        deactivation_action: String,
        fetch_attempts: u32,
        listen: String,
    }
}

/// How strikes turn into sanctions. Weights decay by half every `half_life`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnforcementConfig {
    pub enabled: bool,
    pub half_life: Duration,
    /// Share of a category's weight a flag (allowed, recorded) adds; a block adds it all.
    pub flag_weight: f64,
    pub warn_at: f64,
    pub throttle_at: f64,
    pub throttle_tier: String,
    pub suspend_at: f64,
    pub suspend_for: Duration,
    pub ban_at: f64,
    /// An upstream refusal naming this user's identifier suspends them this long.
    pub upstream_refusal_suspend_for: Duration,
    /// Strike weight per category; `default` for the rest.
    pub weights: BTreeMap<String, f64>,
}

impl EnforcementConfig {
    pub fn weight(&self, category: &str) -> f64 {
        self.weights
            .get(category)
            .or_else(|| self.weights.get("default"))
            .copied()
            .unwrap_or(1.0)
    }
}

/// Tokens accepted on the admin API, as SHA-256 digests (never the tokens themselves).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminConfig {
    pub token_env: Option<String>,
    pub token_sha256: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeAction {
    /// Record and alert only.
    None,
    Suspend,
    Ban,
}

impl NoticeAction {
    fn parse(text: &str) -> Option<NoticeAction> {
        match text {
            "none" => Some(NoticeAction::None),
            "suspend" => Some(NoticeAction::Suspend),
            "ban" => Some(NoticeAction::Ban),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            NoticeAction::None => "none",
            NoticeAction::Suspend => "suspend",
            NoticeAction::Ban => "ban",
        }
    }
}

/// OpenAI's safety webhooks: where the signing secret and the case-reading key live, and
/// what each notice does to the end user it names.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticesConfig {
    pub secret_env: String,
    /// A key with `api.safety.read`; unset: the upstream key.
    pub case_key_env: Option<String>,
    pub tolerance: Duration,
    pub warning_action: NoticeAction,
    pub warning_suspend_for: Duration,
    pub deactivation_action: NoticeAction,
    pub fetch_attempts: u32,
    /// A listener of its own for the webhook receiver, which must face the internet while
    /// the admin API must not. Unset: the receiver is on the admin listener.
    pub listen: Option<std::net::SocketAddr>,
}

pub const DEFAULT_NOTICE_SECRET_ENV: &str = "OPENAI_WEBHOOK_SECRET";

/// Periods past ten years are ten years: as good as forever, and far from `Duration`'s
/// limit (a `1e300` in the file must not crash the start).
fn hours(h: f64) -> Duration {
    let max = crate::error::wait::MAX_HOURS;
    crate::error::wait::checked_hours(h.min(max), false).unwrap_or(Duration::from_secs(3600))
}

fn positive(value: Option<f64>, default: f64, path: &str, problems: &mut Problems) -> f64 {
    match value {
        Some(v) if v.is_finite() && v > 0.0 => v,
        Some(v) => {
            problems.push(path, format!("must be a positive number, got {v}"));
            default
        }
        None => default,
    }
}

pub fn validate_enforcement(
    raw: Option<&toml::Value>,
    limits: &LimitsConfig,
    problems: &mut Problems,
) -> EnforcementConfig {
    let empty = toml::Value::Table(toml::Table::new());
    let s = RawEnforcement::read(raw.unwrap_or(&empty), "enforcement", problems);
    let p = |name: &str| format!("enforcement.{name}");
    let warn_at = positive(s.warn_at, 1.0, &p("warn_at"), problems);
    let throttle_at = positive(s.throttle_at, 3.0, &p("throttle_at"), problems);
    let suspend_at = positive(s.suspend_at, 6.0, &p("suspend_at"), problems);
    let ban_at = positive(s.ban_at, 12.0, &p("ban_at"), problems);
    if !(warn_at <= throttle_at && throttle_at <= suspend_at && suspend_at <= ban_at) {
        problems.push(
            "enforcement",
            format!("the ladder must rise: warn_at ({warn_at}) <= throttle_at ({throttle_at}) <= suspend_at ({suspend_at}) <= ban_at ({ban_at})"),
        );
    }
    let throttle_tier = s
        .throttle_tier
        .clone()
        .unwrap_or_else(|| "anonymous".into());
    if !limits.tiers.contains_key(&throttle_tier) {
        problems.push(
            p("throttle_tier"),
            format!(
                "'{throttle_tier}' is not a tier ({})",
                limits.tiers.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let flag_weight = match s.flag_weight {
        Some(v) if (0.0..=1.0).contains(&v) => v,
        Some(v) => {
            problems.push(
                p("flag_weight"),
                format!("must be between 0 and 1, got {v}"),
            );
            0.5
        }
        None => 0.5,
    };
    // Heaviest for what OpenAI treats as gravest; jailbreak attempts count too.
    let mut weights: BTreeMap<String, f64> = [
        ("default", 1.0),
        ("sexual/minors", 12.0),
        ("jailbreak", 2.0),
        ("self-harm/instructions", 2.0),
        ("illicit/violent", 2.0),
        ("violence/graphic", 1.5),
        ("openai_refusal", 3.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (category, weight) in s.weights.clone().unwrap_or_default() {
        if !(weight.is_finite() && weight >= 0.0) {
            problems.push(
                format!("enforcement.weights.{category}"),
                format!("must be a number >= 0, got {weight}"),
            );
            continue;
        }
        weights.insert(category, weight);
    }
    EnforcementConfig {
        enabled: s.enabled.unwrap_or(true),
        half_life: hours(positive(
            s.strike_half_life_hours,
            168.0,
            &p("strike_half_life_hours"),
            problems,
        )),
        flag_weight,
        warn_at,
        throttle_at,
        throttle_tier,
        suspend_at,
        suspend_for: hours(positive(
            s.suspend_hours,
            24.0,
            &p("suspend_hours"),
            problems,
        )),
        ban_at,
        upstream_refusal_suspend_for: hours(positive(
            s.upstream_refusal_suspend_hours,
            24.0,
            &p("upstream_refusal_suspend_hours"),
            problems,
        )),
        weights,
    }
}

pub fn validate_admin(raw: Option<&toml::Value>, problems: &mut Problems) -> AdminConfig {
    let empty = toml::Value::Table(toml::Table::new());
    let s = RawAdmin::read(raw.unwrap_or(&empty), "admin", problems);
    let mut digests = Vec::new();
    for (i, hex_digest) in s
        .token_sha256
        .clone()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match crate::keys::parse_hash_hex(hex_digest) {
            Some(digest) => digests.push(digest),
            None => problems.push(
                format!("admin.token_sha256[{i}]"),
                "must be 64 hex characters (sha256sum of the token)",
            ),
        }
    }
    AdminConfig {
        token_env: s.token_env.clone(),
        token_sha256: digests,
    }
}

pub fn validate_notices(raw: Option<&toml::Value>, problems: &mut Problems) -> NoticesConfig {
    let empty = toml::Value::Table(toml::Table::new());
    let s = RawNotices::read(raw.unwrap_or(&empty), "openai_notices", problems);
    let action = |value: &Option<String>, name: &str, default, problems: &mut Problems| match value
    {
        None => default,
        Some(text) => NoticeAction::parse(text).unwrap_or_else(|| {
            problems.push(
                format!("openai_notices.{name}"),
                format!("'{text}' is not one of none, suspend, ban"),
            );
            default
        }),
    };
    let warning_action = action(
        &s.warning_action,
        "warning_action",
        NoticeAction::Suspend,
        problems,
    );
    let deactivation_action = action(
        &s.deactivation_action,
        "deactivation_action",
        NoticeAction::Ban,
        problems,
    );
    let fetch_attempts = match s.fetch_attempts {
        Some(0) => {
            problems.push("openai_notices.fetch_attempts", "must be at least 1");
            8
        }
        Some(n) => n,
        None => 8,
    };
    NoticesConfig {
        secret_env: s
            .secret_env
            .clone()
            .unwrap_or_else(|| DEFAULT_NOTICE_SECRET_ENV.into()),
        case_key_env: s.case_key_env.clone(),
        tolerance: Duration::from_secs(s.tolerance_secs.unwrap_or(300)),
        warning_action,
        warning_suspend_for: hours(positive(
            s.warning_suspend_hours,
            72.0,
            "openai_notices.warning_suspend_hours",
            problems,
        )),
        deactivation_action,
        fetch_attempts,
        listen: s.listen.as_deref().and_then(|text| match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(
                    "openai_notices.listen",
                    format!("'{text}' is not an address and port like 0.0.0.0:8090"),
                );
                None
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::config::Config;

    #[test]
    fn defaults_form_a_rising_ladder() {
        let c = Config::from_toml("").unwrap();
        let e = &c.enforcement;
        assert!(e.enabled);
        assert!(
            e.warn_at < e.throttle_at && e.throttle_at < e.suspend_at && e.suspend_at < e.ban_at
        );
        assert!(
            e.weight("sexual/minors") >= e.ban_at,
            "one sexual/minors block bans"
        );
        assert_eq!(e.weight("harassment"), 1.0);
        assert_eq!(e.throttle_tier, "anonymous");
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = Config::from_toml(
            "[enforcement]\nwarn_at = 5.0\nthrottle_at = 2.0\nthrottle_tier = \"vip\"\nflag_weight = 3.0\nbogus = 1\n[enforcement.weights]\nhate = -1.0\n[admin]\ntoken_sha256 = [\"zz\"]\n[openai_notices]\nwarning_action = \"nuke\"\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "the ladder must rise",
            "enforcement.throttle_tier",
            "enforcement.flag_weight",
            "enforcement.bogus",
            "enforcement.weights.hate",
            "admin.token_sha256[0]",
            "openai_notices.warning_action",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing from {problems}"
            );
        }
    }
}
