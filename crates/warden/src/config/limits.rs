//! The `[limits]` and `[cluster]` sections and each key's `tier` / `[keys.limits]`: read
//! from the raw file and validated into limits that are finite unless the operator wrote
//! "unlimited".

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::problems::Problems;
use super::raw::RawKeyEntry;
use super::schema::section;
use crate::endpoint::Endpoint;

section! {
    pub struct RawLimits {
        enabled: bool,
        default_tier: String,
        max_prompt_tokens: toml::Value,
        max_output_tokens: toml::Value,
        max_n: toml::Value,
        organization: toml::Value,
        per_key: toml::Value,
        per_ip: toml::Value,
        tiers: toml::Value,
    }
}

section! {
    pub struct RawRates {
        requests_per_minute: toml::Value,
        requests_per_day: toml::Value,
        tokens_per_minute: toml::Value,
        tokens_per_day: toml::Value,
        concurrency: toml::Value,
    }
}

section! {
    pub struct RawTier {
        requests_per_minute: toml::Value,
        requests_per_day: toml::Value,
        tokens_per_minute: toml::Value,
        tokens_per_day: toml::Value,
        concurrency: toml::Value,
        max_prompt_tokens: toml::Value,
        max_output_tokens: toml::Value,
        max_n: toml::Value,
    }
}

section! {
    pub struct RawKeyLimits {
        requests_per_minute: toml::Value,
        requests_per_day: toml::Value,
        tokens_per_minute: toml::Value,
        tokens_per_day: toml::Value,
        concurrency: toml::Value,
        max_prompt_tokens: toml::Value,
        max_output_tokens: toml::Value,
        max_n: toml::Value,
        allowed_models: Vec<String>,
        allowed_endpoints: Vec<String>,
    }
}

section! {
    pub struct RawCluster {
        redis_url: String,
        key_prefix: String,
        timeout_ms: u64,
    }
}

/// A limit: `None` is unlimited (only when the file says "unlimited").
pub type Limit = Option<u64>;

/// Rate and concurrency limits of one actor (a key, an end user, an IP, the organization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub requests_per_minute: Limit,
    pub requests_per_day: Limit,
    pub tokens_per_minute: Limit,
    pub tokens_per_day: Limit,
    pub concurrency: Limit,
}

/// Per-request shape caps; the smallest of the global, key and tier values applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    pub max_prompt_tokens: Limit,
    pub max_output_tokens: Limit,
    pub max_n: Limit,
}

impl Caps {
    /// The tighter of two caps, field by field.
    pub fn min(self, other: Caps) -> Caps {
        fn m(a: Limit, b: Limit) -> Limit {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, None) => a,
                (None, b) => b,
            }
        }
        Caps {
            max_prompt_tokens: m(self.max_prompt_tokens, other.max_prompt_tokens),
            max_output_tokens: m(self.max_output_tokens, other.max_output_tokens),
            max_n: m(self.max_n, other.max_n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLimits {
    pub rates: Rates,
    pub caps: Caps,
}

/// What `[[keys]]` adds for one key: its users' default tier, its own rates, caps and
/// allow-lists (`None` allows everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLimits {
    pub tier: Option<String>,
    pub rates: Rates,
    pub caps: Caps,
    pub allowed_models: Option<Vec<String>>,
    pub allowed_endpoints: Option<Vec<Endpoint>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub enabled: bool,
    pub default_tier: String,
    pub caps: Caps,
    pub organization: Rates,
    pub per_key: Rates,
    pub per_ip: Rates,
    pub tiers: BTreeMap<String, TierLimits>,
    /// Keys declared in the file with limits of their own; other keys use `per_key`.
    pub keys: HashMap<String, KeyLimits>,
}

impl LimitsConfig {
    /// The end user's tier: a token's tier claim when it names a configured tier, else
    /// the key's tier, else the default (the same rule the `limits` stage applies).
    pub fn tier_of<'a>(&'a self, claimed: Option<&'a str>, key: &str) -> &'a str {
        claimed
            .filter(|t| self.tiers.contains_key(*t))
            .or(self.keys.get(key).and_then(|k| k.tier.as_deref()))
            .unwrap_or(&self.default_tier)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis_url: Option<String>,
    pub key_prefix: String,
    /// A limit decision waits this long for Redis before deciding locally.
    pub timeout: Duration,
}

const fn rates(rpm: u64, rpd: u64, tpm: u64, tpd: u64, conc: u64) -> Rates {
    Rates {
        requests_per_minute: Some(rpm),
        requests_per_day: Some(rpd),
        tokens_per_minute: Some(tpm),
        tokens_per_day: Some(tpd),
        concurrency: Some(conc),
    }
}

/// Built-in defaults: generous for real traffic, finite so nothing runs away unnoticed.
pub const DEFAULT_ORGANIZATION: Rates = rates(10_000, 5_000_000, 10_000_000, 1_000_000_000, 2048);
pub const DEFAULT_PER_KEY: Rates = rates(3_000, 1_000_000, 2_000_000, 100_000_000, 256);
pub const DEFAULT_PER_IP: Rates = rates(600, 50_000, 1_000_000, 20_000_000, 64);
pub const DEFAULT_CAPS: Caps = Caps {
    max_prompt_tokens: Some(128_000),
    max_output_tokens: Some(4096),
    max_n: Some(8),
};
pub const DEFAULT_TIER: &str = "verified";
/// The built-in tiers; an operator tier without a value takes `verified`'s.
pub const BUILTIN_TIERS: [(&str, Rates); 3] = [
    ("anonymous", rates(10, 200, 20_000, 200_000, 2)),
    ("verified", rates(60, 2_000, 200_000, 2_000_000, 4)),
    ("trusted", rates(600, 20_000, 2_000_000, 20_000_000, 16)),
];

fn builtin_tier(name: &str) -> Rates {
    BUILTIN_TIERS
        .iter()
        .find(|(n, _)| *n == name)
        .or_else(|| BUILTIN_TIERS.iter().find(|(n, _)| *n == DEFAULT_TIER))
        .map_or(BUILTIN_TIERS[1].1, |(_, r)| *r)
}

/// One limit value: a positive integer, or "unlimited".
fn limit(
    value: Option<&toml::Value>,
    default: Limit,
    path: &str,
    problems: &mut Problems,
) -> Limit {
    match value {
        None => default,
        Some(toml::Value::Integer(n)) if *n >= 1 => Some(*n as u64),
        Some(toml::Value::String(s)) if s == "unlimited" => None,
        Some(other) => {
            problems.push(
                path,
                format!("expected a whole number >= 1 or \"unlimited\" (found {other})"),
            );
            default
        }
    }
}

fn read_rates(raw: &RawRates, base: Rates, path: &str, problems: &mut Problems) -> Rates {
    Rates {
        requests_per_minute: limit(
            raw.requests_per_minute.as_ref(),
            base.requests_per_minute,
            &format!("{path}.requests_per_minute"),
            problems,
        ),
        requests_per_day: limit(
            raw.requests_per_day.as_ref(),
            base.requests_per_day,
            &format!("{path}.requests_per_day"),
            problems,
        ),
        tokens_per_minute: limit(
            raw.tokens_per_minute.as_ref(),
            base.tokens_per_minute,
            &format!("{path}.tokens_per_minute"),
            problems,
        ),
        tokens_per_day: limit(
            raw.tokens_per_day.as_ref(),
            base.tokens_per_day,
            &format!("{path}.tokens_per_day"),
            problems,
        ),
        concurrency: limit(
            raw.concurrency.as_ref(),
            base.concurrency,
            &format!("{path}.concurrency"),
            problems,
        ),
    }
}

fn read_caps(
    values: [Option<&toml::Value>; 3],
    base: Caps,
    path: &str,
    problems: &mut Problems,
) -> Caps {
    Caps {
        max_prompt_tokens: limit(
            values[0],
            base.max_prompt_tokens,
            &format!("{path}.max_prompt_tokens"),
            problems,
        ),
        max_output_tokens: limit(
            values[1],
            base.max_output_tokens,
            &format!("{path}.max_output_tokens"),
            problems,
        ),
        max_n: limit(values[2], base.max_n, &format!("{path}.max_n"), problems),
    }
}

fn valid_tier_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Validates `[limits]` plus each key's `tier` and `[keys.limits]`.
pub fn validate_limits(
    raw: Option<&toml::Value>,
    keys: &[RawKeyEntry],
    problems: &mut Problems,
) -> LimitsConfig {
    let empty = toml::Value::Table(toml::Table::new());
    let section = RawLimits::read(raw.unwrap_or(&empty), "limits", problems);
    let sub = |v: &Option<toml::Value>, path: &str, problems: &mut Problems| {
        RawRates::read(v.as_ref().unwrap_or(&empty), path, problems)
    };
    let organization = read_rates(
        &sub(&section.organization, "limits.organization", problems),
        DEFAULT_ORGANIZATION,
        "limits.organization",
        problems,
    );
    let per_key = read_rates(
        &sub(&section.per_key, "limits.per_key", problems),
        DEFAULT_PER_KEY,
        "limits.per_key",
        problems,
    );
    let per_ip = read_rates(
        &sub(&section.per_ip, "limits.per_ip", problems),
        DEFAULT_PER_IP,
        "limits.per_ip",
        problems,
    );
    let caps = read_caps(
        [
            section.max_prompt_tokens.as_ref(),
            section.max_output_tokens.as_ref(),
            section.max_n.as_ref(),
        ],
        DEFAULT_CAPS,
        "limits",
        problems,
    );

    let mut tiers: BTreeMap<String, TierLimits> = BUILTIN_TIERS
        .iter()
        .map(|(name, r)| {
            (
                (*name).to_owned(),
                TierLimits {
                    rates: *r,
                    caps: Caps::default(),
                },
            )
        })
        .collect();
    match &section.tiers {
        None => {}
        Some(toml::Value::Table(table)) => {
            for (name, value) in table {
                let path = format!("limits.tiers.{name}");
                if !valid_tier_name(name) {
                    problems.push(
                        &path,
                        "a tier name is 1-64 characters of a-z, A-Z, 0-9, '-' or '_'",
                    );
                    continue;
                }
                let raw = RawTier::read(value, &path, problems);
                let as_rates = RawRates {
                    requests_per_minute: raw.requests_per_minute.clone(),
                    requests_per_day: raw.requests_per_day.clone(),
                    tokens_per_minute: raw.tokens_per_minute.clone(),
                    tokens_per_day: raw.tokens_per_day.clone(),
                    concurrency: raw.concurrency.clone(),
                };
                let rates = read_rates(&as_rates, builtin_tier(name), &path, problems);
                let caps = read_caps(
                    [
                        raw.max_prompt_tokens.as_ref(),
                        raw.max_output_tokens.as_ref(),
                        raw.max_n.as_ref(),
                    ],
                    Caps::default(),
                    &path,
                    problems,
                );
                tiers.insert(name.clone(), TierLimits { rates, caps });
            }
        }
        Some(other) => problems.push(
            "limits.tiers",
            format!("expected a table of tiers, got {}", other.type_str()),
        ),
    }
    let default_tier = section
        .default_tier
        .clone()
        .unwrap_or_else(|| DEFAULT_TIER.into());
    if !tiers.contains_key(&default_tier) {
        problems.push(
            "limits.default_tier",
            format!("'{default_tier}' is not a tier ({})", tier_names(&tiers)),
        );
    }

    let mut key_limits = HashMap::new();
    for (i, entry) in keys.iter().enumerate() {
        let path = format!("keys[{i}]");
        if let Some(tier) = &entry.key.tier {
            if !tiers.contains_key(tier) {
                problems.push(
                    format!("{path}.tier"),
                    format!("'{tier}' is not a tier ({})", tier_names(&tiers)),
                );
            }
        }
        let raw = entry
            .key
            .limits
            .as_ref()
            .map(|v| RawKeyLimits::read(v, &format!("{path}.limits"), problems))
            .unwrap_or_default();
        let lpath = format!("{path}.limits");
        let as_rates = RawRates {
            requests_per_minute: raw.requests_per_minute.clone(),
            requests_per_day: raw.requests_per_day.clone(),
            tokens_per_minute: raw.tokens_per_minute.clone(),
            tokens_per_day: raw.tokens_per_day.clone(),
            concurrency: raw.concurrency.clone(),
        };
        let rates = read_rates(&as_rates, per_key, &lpath, problems);
        let key_caps = read_caps(
            [
                raw.max_prompt_tokens.as_ref(),
                raw.max_output_tokens.as_ref(),
                raw.max_n.as_ref(),
            ],
            Caps::default(),
            &lpath,
            problems,
        );
        let allowed_endpoints = raw.allowed_endpoints.as_ref().map(|names| {
            names
                .iter()
                .enumerate()
                .filter_map(|(j, name)| {
                    let found = Endpoint::from_label(name);
                    if found.is_none() {
                        let known: Vec<_> = Endpoint::all_labels().collect();
                        problems.push(
                            format!("{lpath}.allowed_endpoints[{j}]"),
                            format!("'{name}' is not an endpoint (known: {})", known.join(", ")),
                        );
                    }
                    found
                })
                .collect()
        });
        if let Some(models) = &raw.allowed_models {
            for (j, m) in models.iter().enumerate() {
                if m.is_empty() || m[..m.len() - 1].contains('*') {
                    problems.push(
                        format!("{lpath}.allowed_models[{j}]"),
                        format!("'{m}' must be a model name, optionally ending in '*'"),
                    );
                }
            }
        }
        if let Some(name) = &entry.key.name {
            key_limits.insert(
                name.clone(),
                KeyLimits {
                    tier: entry.key.tier.clone(),
                    rates,
                    caps: key_caps,
                    allowed_models: raw.allowed_models.clone(),
                    allowed_endpoints,
                },
            );
        }
    }

    LimitsConfig {
        enabled: section.enabled.unwrap_or(true),
        default_tier,
        caps,
        organization,
        per_key,
        per_ip,
        tiers,
        keys: key_limits,
    }
}

fn tier_names(tiers: &BTreeMap<String, TierLimits>) -> String {
    format!(
        "known: {}",
        tiers.keys().cloned().collect::<Vec<_>>().join(", ")
    )
}

pub fn validate_cluster(raw: Option<&toml::Value>, problems: &mut Problems) -> ClusterConfig {
    let empty = toml::Value::Table(toml::Table::new());
    let section = RawCluster::read(raw.unwrap_or(&empty), "cluster", problems);
    if let Some(url) = &section.redis_url {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            problems.push(
                "cluster.redis_url",
                format!("'{url}' must start with redis:// or rediss://"),
            );
        } else if redis::parse_redis_url(url).is_none() {
            problems.push("cluster.redis_url", format!("'{url}' is not a Redis URL"));
        }
    }
    let key_prefix = section
        .key_prefix
        .clone()
        .unwrap_or_else(|| "warden".into());
    if key_prefix.is_empty() || key_prefix.len() > 64 || key_prefix.contains(char::is_whitespace) {
        problems.push(
            "cluster.key_prefix",
            "must be 1-64 characters without spaces",
        );
    }
    let timeout = match section.timeout_ms {
        Some(0) => {
            problems.push("cluster.timeout_ms", "must be greater than 0");
            50
        }
        Some(n) => n,
        None => 50,
    };
    ClusterConfig {
        redis_url: section.redis_url.clone(),
        key_prefix,
        timeout: Duration::from_millis(timeout),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> (LimitsConfig, Problems) {
        let mut problems = Problems::default();
        let table: toml::Table = text.parse().unwrap();
        let keys: Vec<RawKeyEntry> = table
            .get("keys")
            .and_then(|k| k.as_array())
            .map(|items| {
                items
                    .iter()
                    .map(|item| RawKeyEntry {
                        key: super::super::raw::RawKey::read(item, "keys[]", &mut problems),
                        jwt: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let limits = validate_limits(table.get("limits"), &keys, &mut problems);
        (limits, problems)
    }

    #[test]
    fn defaults_are_finite() {
        let (c, p) = parse("");
        assert!(p.is_empty(), "{p}");
        assert!(c.enabled);
        assert_eq!(c.per_key, DEFAULT_PER_KEY);
        assert_eq!(c.default_tier, "verified");
        assert_eq!(c.tiers["anonymous"].rates.requests_per_minute, Some(10));
        assert!(c.caps.max_output_tokens.is_some());
    }

    #[test]
    fn unlimited_only_when_written_and_tiers_inherit() {
        let (c, p) = parse(
            r#"
[limits]
max_n = "unlimited"
default_tier = "gold"
[limits.tiers.gold]
requests_per_minute = 1000
[limits.tiers.anonymous]
concurrency = 1
[[keys]]
name = "a"
tier = "gold"
[keys.limits]
requests_per_minute = 5
allowed_models = ["gpt-4o*"]
allowed_endpoints = ["chat.completions"]
"#,
        );
        assert!(p.is_empty(), "{p}");
        assert_eq!(c.caps.max_n, None);
        assert_eq!(c.tiers["gold"].rates.requests_per_minute, Some(1000));
        assert_eq!(c.tiers["gold"].rates.requests_per_day, Some(2_000));
        assert_eq!(c.tiers["anonymous"].rates.concurrency, Some(1));
        assert_eq!(c.tiers["anonymous"].rates.requests_per_minute, Some(10));
        let a = &c.keys["a"];
        assert_eq!(a.rates.requests_per_minute, Some(5));
        assert_eq!(a.rates.requests_per_day, DEFAULT_PER_KEY.requests_per_day);
        assert_eq!(a.allowed_endpoints, Some(vec![Endpoint::ChatCompletions]));
    }

    #[test]
    fn every_problem_has_its_path() {
        let (_, p) = parse(
            r#"
[limits]
default_tier = "nope"
max_n = 0
[limits.organization]
requests_per_minute = "lots"
bogus = 1
[[keys]]
name = "a"
tier = "platinum"
[keys.limits]
allowed_endpoints = ["chat"]
"#,
        );
        let text = p.to_string();
        for path in [
            "limits.default_tier",
            "limits.max_n",
            "limits.organization.requests_per_minute",
            "limits.organization.bogus",
            "keys[0].tier",
            "keys[0].limits.allowed_endpoints[0]",
        ] {
            assert!(text.contains(path), "{path} missing from:\n{text}");
        }
    }

    #[test]
    fn cluster_checks_the_url() {
        let mut p = Problems::default();
        let v: toml::Value = toml::from_str("redis_url = \"http://x\"").unwrap();
        validate_cluster(Some(&v), &mut p);
        assert!(p.to_string().contains("cluster.redis_url"));
        let mut p = Problems::default();
        let v: toml::Value = toml::from_str("redis_url = \"redis://127.0.0.1:6379\"").unwrap();
        let c = validate_cluster(Some(&v), &mut p);
        assert!(p.is_empty());
        assert_eq!(c.timeout, Duration::from_millis(50));
    }
}
