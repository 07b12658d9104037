//! `[safety.filters]` and `[safety.jailbreak]`: reads and validates the local filter policy.
//! Absent sections mean the safe defaults (secrets redacted, PII flagged, confident
//! jailbreaks blocked). The rule files themselves are compiled when the gateway is built.

use std::path::PathBuf;

use super::problems::Problems;
use super::schema::section;
use crate::safety::filters::{Action, CategoryAction, FilterPolicy, JailbreakPolicy};

section! {
    pub struct RawFilters {
        enabled: bool,
        rules_files: Vec<String>,
        secrets: String,
        pii: String,
    }
}

section! {
    pub struct RawJailbreak {
        block_threshold: f64,
        flag_threshold: f64,
        score_instructions: bool,
    }
}

pub fn validate(
    filters: Option<&toml::Value>,
    jailbreak: Option<&toml::Value>,
    problems: &mut Problems,
) -> FilterPolicy {
    let mut policy = FilterPolicy::default();
    apply(&mut policy, filters, jailbreak, "safety", problems);
    policy
}

/// Applies a `filters` and a `jailbreak` table under `at` (`safety`, or a profile's path)
/// to `policy`: what they set replaces what it had.
pub fn apply(
    policy: &mut FilterPolicy,
    filters: Option<&toml::Value>,
    jailbreak: Option<&toml::Value>,
    at: &str,
    problems: &mut Problems,
) {
    if let Some(value) = filters {
        let raw = RawFilters::read(value, &format!("{at}.filters"), problems);
        if let Some(enabled) = raw.enabled {
            policy.enabled = enabled;
        }
        if let Some(files) = raw.rules_files {
            policy.rules_files = files.into_iter().map(PathBuf::from).collect();
        }
        if let Some(text) = raw.secrets {
            match text.as_str() {
                "block" => policy.secrets = CategoryAction::Act(Action::Block),
                "redact" => policy.secrets = CategoryAction::Act(Action::Redact),
                "flag" => policy.secrets = CategoryAction::Act(Action::Flag),
                other => problems.push(
                    format!("{at}.filters.secrets"),
                    format!("'{other}' is not one of: block, redact, flag"),
                ),
            }
        }
        if let Some(text) = raw.pii {
            match text.as_str() {
                "off" => policy.pii = CategoryAction::Off,
                "flag" => policy.pii = CategoryAction::Act(Action::Flag),
                "redact" => policy.pii = CategoryAction::Act(Action::Redact),
                "block" => policy.pii = CategoryAction::Act(Action::Block),
                other => problems.push(
                    format!("{at}.filters.pii"),
                    format!("'{other}' is not one of: off, flag, redact, block"),
                ),
            }
        }
    }
    if let Some(value) = jailbreak {
        let path = format!("{at}.jailbreak");
        let raw = RawJailbreak::read(value, &path, problems);
        let defaults = policy.jailbreak;
        let block = threshold(
            raw.block_threshold,
            defaults.block_threshold,
            &format!("{path}.block_threshold"),
            problems,
        );
        let flag = threshold(
            raw.flag_threshold,
            defaults.flag_threshold,
            &format!("{path}.flag_threshold"),
            problems,
        );
        if flag > block {
            problems.push(
                format!("{path}.flag_threshold"),
                format!("{flag} must not exceed block_threshold ({block})"),
            );
        }
        policy.jailbreak = JailbreakPolicy {
            block_threshold: block,
            flag_threshold: flag.min(block),
            score_instructions: raw
                .score_instructions
                .unwrap_or(defaults.score_instructions),
        };
    }
}

/// A score threshold in (0, 1]; above 1 never fires, which an operator says with `enabled`.
fn threshold(value: Option<f64>, default: f32, path: &str, problems: &mut Problems) -> f32 {
    match value {
        None => default,
        Some(v) if v > 0.0 && v <= 1.0 => v as f32,
        Some(v) => {
            problems.push(path, format!("{v} must be greater than 0 and at most 1"));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> (FilterPolicy, Problems) {
        let table: toml::Table = text.parse().unwrap();
        let mut problems = Problems::default();
        let policy = validate(table.get("filters"), table.get("jailbreak"), &mut problems);
        (policy, problems)
    }

    #[test]
    fn nothing_written_means_safe_defaults() {
        let (policy, problems) = parse("");
        assert!(problems.is_empty());
        assert_eq!(policy, FilterPolicy::default());
        assert_eq!(policy.secrets, CategoryAction::Act(Action::Redact));
        assert!(policy.enabled);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_path() {
        let (_, problems) = parse(
            "[filters]\nsecrets = \"hide\"\npii = 3\nnope = 1\n[jailbreak]\nblock_threshold = 0.4\nflag_threshold = 0.6\n",
        );
        let text = problems.to_string();
        for path in [
            "safety.filters.secrets",
            "safety.filters.pii",
            "safety.filters.nope",
            "safety.jailbreak.flag_threshold",
        ] {
            assert!(text.contains(path), "{path} missing in {text}");
        }
    }

    #[test]
    fn loosening_is_explicit() {
        let (policy, problems) = parse(
            "[filters]\nsecrets = \"block\"\npii = \"off\"\nrules_files = [\"/etc/warden/rules.toml\"]\n[jailbreak]\nblock_threshold = 0.95\n",
        );
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(policy.secrets, CategoryAction::Act(Action::Block));
        assert_eq!(policy.pii, CategoryAction::Off);
        assert_eq!(policy.rules_files.len(), 1);
        assert!((policy.jailbreak.block_threshold - 0.95).abs() < 1e-6);
    }
}
