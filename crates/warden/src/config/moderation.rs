//! `[safety.moderation]`: reads and validates the Moderation-endpoint policy (input and
//! output), plus the per-key `moderation_mode` / `moderation_on_error` overrides.

use std::time::Duration;

use super::problems::Problems;
use super::raw::RawKeyEntry;
use super::schema::section;
use crate::safety::moderation::categories::{index_of, CATEGORIES};
use crate::safety::moderation::policy::{Action, Policy, Rule};

pub const DEFAULT_MODEL: &str = "omni-moderation-latest";

section! {
    pub struct RawModeration {
        enabled: bool,
        model: String,
        timeout_ms: u64,
        on_error: String,
        mode: String,
        chunk_chars: u64,
        cache_entries: u64,
        cache_ttl_secs: u64,
        breaker_failures: u64,
        breaker_cooldown_ms: u64,
        categories: toml::Table,
        output: toml::Value,
    }
}

section! {
    pub struct RawOutput {
        enabled: bool,
        window_chars: u64,
        first_window_chars: u64,
        max_body_bytes: u64,
        categories: toml::Table,
    }
}

section! {
    pub struct RawCategory {
        threshold: f64,
        action: String,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse with 503 `moderation_unavailable` (the default: never forward unchecked).
    Block,
    /// Forward unchecked, and record that it was.
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Moderate, then forward.
    Strict,
    /// Forward at once; release nothing until input moderation passed.
    Parallel,
}

#[derive(Debug, Clone)]
pub struct OutputModeration {
    pub enabled: bool,
    pub policy: Policy,
    /// Streaming: text held back before each moderation call (the release granularity).
    pub window_chars: usize,
    /// Streaming: the first window, smaller so the first tokens reach the client sooner
    /// (one more Moderation call per stream). Defaults to `window_chars`.
    pub first_window_chars: usize,
    /// Non-streaming: the largest upstream body buffered for moderation.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyModeration {
    pub key: String,
    pub mode: Option<Mode>,
    pub on_error: Option<OnError>,
    /// The key's safety profile's policies (`[safety.profiles.<name>.moderation]`).
    pub input: Option<Policy>,
    pub output: Option<Policy>,
}

#[derive(Debug, Clone)]
pub struct ModerationConfig {
    pub enabled: bool,
    pub model: String,
    pub timeout: Duration,
    pub on_error: OnError,
    pub mode: Mode,
    pub chunk_chars: usize,
    pub cache_entries: usize,
    pub cache_ttl: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub input: Policy,
    pub output: OutputModeration,
    pub keys: Vec<KeyModeration>,
}

impl ModerationConfig {
    /// This key's mode and failure policy.
    pub fn for_key(&self, key: Option<&str>) -> (Mode, OnError) {
        let own = self.key(key);
        (
            own.and_then(|m| m.mode).unwrap_or(self.mode),
            own.and_then(|m| m.on_error).unwrap_or(self.on_error),
        )
    }

    /// This key's own settings, if it has any.
    pub fn key(&self, key: Option<&str>) -> Option<&KeyModeration> {
        let key = key?;
        self.keys.iter().find(|m| m.key == key)
    }

    /// This key's (input, output) category policies.
    pub fn policies(&self, key: Option<&str>) -> (&Policy, &Policy) {
        let own = self.key(key);
        (
            own.and_then(|m| m.input.as_ref()).unwrap_or(&self.input),
            own.and_then(|m| m.output.as_ref())
                .unwrap_or(&self.output.policy),
        )
    }
}

pub fn validate(
    value: Option<&toml::Value>,
    keys: &[RawKeyEntry],
    problems: &mut Problems,
) -> ModerationConfig {
    const PATH: &str = "safety.moderation";
    let raw = value
        .map(|v| RawModeration::read(v, PATH, problems))
        .unwrap_or_default();
    let mut input = Policy::default();
    categories(
        raw.categories.as_ref(),
        &format!("{PATH}.categories"),
        &mut input,
        problems,
    );
    let out_path = format!("{PATH}.output");
    let raw_out = raw
        .output
        .as_ref()
        .map(|v| RawOutput::read(v, &out_path, problems))
        .unwrap_or_default();
    // The output policy starts from the input policy: one policy unless told otherwise.
    let mut output_policy = input.clone();
    categories(
        raw_out.categories.as_ref(),
        &format!("{out_path}.categories"),
        &mut output_policy,
        problems,
    );
    let positive =
        |value: Option<u64>, default: u64, key: &str, problems: &mut Problems| match value {
            Some(0) => {
                problems.push(format!("{PATH}.{key}"), "must be greater than 0");
                default
            }
            Some(n) => n,
            None => default,
        };
    let keys = keys
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let k = &entry.key;
            if k.moderation_mode.is_none() && k.moderation_on_error.is_none() {
                return None;
            }
            Some(KeyModeration {
                key: k.name.clone().unwrap_or_default(),
                mode: k
                    .moderation_mode
                    .as_deref()
                    .map(|m| mode(m, &format!("keys[{i}].moderation_mode"), problems)),
                on_error: k
                    .moderation_on_error
                    .as_deref()
                    .map(|m| on_error(m, &format!("keys[{i}].moderation_on_error"), problems)),
                input: None,
                output: None,
            })
        })
        .collect();
    let window_chars =
        positive(raw_out.window_chars, 300, "output.window_chars", problems) as usize;
    let first_window_chars = match raw_out.first_window_chars {
        Some(first) if first as usize > window_chars => {
            problems.push(
                format!("{PATH}.output.first_window_chars"),
                format!("must not exceed output.window_chars ({window_chars})"),
            );
            window_chars
        }
        Some(_) => positive(
            raw_out.first_window_chars,
            300,
            "output.first_window_chars",
            problems,
        ) as usize,
        None => window_chars,
    };
    ModerationConfig {
        enabled: raw.enabled.unwrap_or(true),
        model: match raw.model {
            Some(m) if m.trim().is_empty() => {
                problems.push(format!("{PATH}.model"), "must not be empty");
                DEFAULT_MODEL.into()
            }
            Some(m) => m,
            None => DEFAULT_MODEL.into(),
        },
        timeout: Duration::from_millis(positive(raw.timeout_ms, 2_000, "timeout_ms", problems)),
        on_error: raw.on_error.as_deref().map_or(OnError::Block, |v| {
            on_error(v, &format!("{PATH}.on_error"), problems)
        }),
        mode: raw
            .mode
            .as_deref()
            .map_or(Mode::Strict, |v| mode(v, &format!("{PATH}.mode"), problems)),
        chunk_chars: positive(raw.chunk_chars, 4_000, "chunk_chars", problems) as usize,
        cache_entries: raw.cache_entries.unwrap_or(100_000) as usize,
        cache_ttl: Duration::from_secs(positive(
            raw.cache_ttl_secs,
            3_600,
            "cache_ttl_secs",
            problems,
        )),
        breaker_failures: positive(raw.breaker_failures, 5, "breaker_failures", problems)
            .min(u64::from(u32::MAX)) as u32,
        breaker_cooldown: Duration::from_millis(positive(
            raw.breaker_cooldown_ms,
            30_000,
            "breaker_cooldown_ms",
            problems,
        )),
        input,
        output: OutputModeration {
            enabled: raw_out.enabled.unwrap_or(true),
            policy: output_policy,
            window_chars,
            first_window_chars,
            max_body_bytes: positive(
                raw_out.max_body_bytes,
                8 * 1024 * 1024,
                "output.max_body_bytes",
                problems,
            ) as usize,
        },
        keys,
    }
}

pub(super) fn categories(
    table: Option<&toml::Table>,
    path: &str,
    policy: &mut Policy,
    problems: &mut Problems,
) {
    for (name, value) in table.into_iter().flatten() {
        let item_path = format!("{path}.\"{name}\"");
        let Some(index) = index_of(name) else {
            problems.push(
                item_path,
                format!("unknown category (known: {})", CATEGORIES.join(", ")),
            );
            continue;
        };
        let raw = RawCategory::read(value, &item_path, problems);
        let mut rule: Rule = policy.rule(index);
        if let Some(t) = raw.threshold {
            if !(0.0..=1.0).contains(&t) {
                problems.push(format!("{item_path}.threshold"), "must be between 0 and 1");
            }
            rule.threshold = Some(t as f32);
        }
        if let Some(a) = raw.action.as_deref() {
            match Action::parse(a) {
                Some(action) => rule.action = action,
                None => problems.push(
                    format!("{item_path}.action"),
                    format!("'{a}' is not one of: block, flag, allow"),
                ),
            }
        }
        policy.set(index, rule);
    }
}

pub(super) fn on_error(text: &str, path: &str, problems: &mut Problems) -> OnError {
    match text {
        "block" => OnError::Block,
        "allow" => OnError::Allow,
        other => {
            problems.push(path, format!("'{other}' is not one of: block, allow"));
            OnError::Block
        }
    }
}

pub(super) fn mode(text: &str, path: &str, problems: &mut Problems) -> Mode {
    match text {
        "strict" => Mode::Strict,
        "parallel" => Mode::Parallel,
        other => {
            problems.push(path, format!("'{other}' is not one of: strict, parallel"));
            Mode::Strict
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> (ModerationConfig, Problems) {
        let mut problems = Problems::default();
        let value: toml::Value = text.parse::<toml::Table>().unwrap().into();
        let config = validate(Some(&value), &[], &mut problems);
        (config, problems)
    }

    #[test]
    fn defaults_are_safe() {
        let mut problems = Problems::default();
        let config = validate(None, &[], &mut problems);
        assert!(problems.is_empty());
        assert!(config.enabled && config.output.enabled);
        assert_eq!(config.on_error, OnError::Block);
        assert_eq!(config.mode, Mode::Strict);
        assert_eq!(config.model, DEFAULT_MODEL);
        assert_eq!(config.input, Policy::default());
    }

    #[test]
    fn categories_override_and_output_inherits() {
        let (config, problems) = parse(
            r#"
            on_error = "allow"
            [categories.violence]
            action = "allow"
            [categories."sexual/minors"]
            threshold = 0.2
            [output.categories.violence]
            action = "block"
            "#,
        );
        assert!(problems.is_empty(), "{problems}");
        let v = index_of("violence").unwrap();
        let m = index_of("sexual/minors").unwrap();
        assert_eq!(config.input.rule(v).action, Action::Allow);
        assert_eq!(config.output.policy.rule(v).action, Action::Block);
        assert_eq!(config.output.policy.rule(m).threshold, Some(0.2));
        assert_eq!(config.on_error, OnError::Allow);
    }

    #[test]
    fn parallel_mode_is_accepted() {
        let (config, problems) = parse("mode = \"parallel\"");
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(config.for_key(None).0, Mode::Parallel);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let (_, problems) = parse(
            r#"
            on_error = "maybe"
            timeout_ms = 0
            nope = 1
            [categories.gore]
            action = "block"
            [categories.hate]
            action = "nuke"
            threshold = 3.0
            "#,
        );
        let text = problems.to_string();
        for needle in [
            "safety.moderation.on_error",
            "safety.moderation.timeout_ms",
            "safety.moderation.nope",
            "safety.moderation.categories.\"gore\"",
            "safety.moderation.categories.\"hate\".action",
            "safety.moderation.categories.\"hate\".threshold",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }
}
