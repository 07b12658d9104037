//! `[safety.profiles.<name>]`: named safety policies a key opts into with
//! `safety_profile = "<name>"`. A profile starts from the global `[safety.moderation]`,
//! `[safety.filters]` and `[safety.jailbreak]` and replaces what it sets: moderation
//! `mode`, `on_error` and per-category rules (input, and `output` on top of them), and the
//! filters' `secrets` / `pii` actions, `enabled`, `rules_files` and jailbreak thresholds.
//! A key's own `moderation_mode` / `moderation_on_error` still win over its profile.

use super::moderation::{self, KeyModeration, ModerationConfig};
use super::problems::Problems;
use super::raw::RawKeyEntry;
use super::schema::section;
use crate::safety::filters::FilterPolicy;

section! {
    pub struct RawProfile {
        moderation: toml::Value,
        filters: toml::Value,
        jailbreak: toml::Value,
    }
}

section! {
    pub struct RawProfileModeration {
        mode: String,
        on_error: String,
        categories: toml::Table,
        output: toml::Value,
    }
}

section! {
    pub struct RawProfileOutput {
        categories: toml::Table,
    }
}

/// One profile's local filter policy; its moderation part lives in the keys' entries of
/// [`ModerationConfig::keys`].
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyProfile {
    pub name: String,
    pub filters: FilterPolicy,
}

/// Which profile each key uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profiles {
    pub profiles: Vec<SafetyProfile>,
    /// (key name, index into `profiles`).
    pub keys: Vec<(String, usize)>,
}

impl Profiles {
    /// The filter policy of each key that has a profile, with the profile's index.
    pub fn key_filters(&self) -> impl Iterator<Item = (&str, usize, &FilterPolicy)> {
        self.keys
            .iter()
            .map(|(key, at)| (key.as_str(), *at, &self.profiles[*at].filters))
    }
}

/// Reads every profile and resolves each key's `safety_profile`; the profiles'
/// moderation policies are written into `moderation.keys`.
pub fn validate(
    table: Option<&toml::Table>,
    keys: &[RawKeyEntry],
    moderation: &mut ModerationConfig,
    filters: &FilterPolicy,
    problems: &mut Problems,
) -> Profiles {
    let mut out = Profiles::default();
    let mut policies: Vec<KeyModeration> = Vec::new();
    for (name, value) in table.into_iter().flatten() {
        let path = format!("safety.profiles.{name}");
        let raw = RawProfile::read(value, &path, problems);
        let mut policy = filters.clone();
        super::filters::apply(
            &mut policy,
            raw.filters.as_ref(),
            raw.jailbreak.as_ref(),
            &path,
            problems,
        );
        policies.push(profile_moderation(
            raw.moderation.as_ref(),
            &format!("{path}.moderation"),
            moderation,
            problems,
        ));
        out.profiles.push(SafetyProfile {
            name: name.clone(),
            filters: policy,
        });
    }
    for (i, entry) in keys.iter().enumerate() {
        let Some(wanted) = entry.key.safety_profile.as_deref() else {
            continue;
        };
        let Some(at) = out.profiles.iter().position(|p| p.name == wanted) else {
            let known: Vec<&str> = out.profiles.iter().map(|p| p.name.as_str()).collect();
            problems.push(
                format!("keys[{i}].safety_profile"),
                format!(
                    "no profile '{wanted}' in [safety.profiles] (defined: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            continue;
        };
        let key = entry.key.name.clone().unwrap_or_default();
        let profile = &policies[at];
        match moderation.keys.iter_mut().find(|m| m.key == key) {
            Some(own) => {
                own.mode = own.mode.or(profile.mode);
                own.on_error = own.on_error.or(profile.on_error);
                own.input = profile.input.clone();
                own.output = profile.output.clone();
            }
            None => moderation.keys.push(KeyModeration {
                key: key.clone(),
                ..profile.clone()
            }),
        }
        out.keys.push((key, at));
    }
    out
}

/// A profile's moderation settings over the global ones.
fn profile_moderation(
    value: Option<&toml::Value>,
    path: &str,
    global: &ModerationConfig,
    problems: &mut Problems,
) -> KeyModeration {
    let raw = value
        .map(|v| RawProfileModeration::read(v, path, problems))
        .unwrap_or_default();
    let mut input = global.input.clone();
    let mut output = global.output.policy.clone();
    let categories = format!("{path}.categories");
    moderation::categories(raw.categories.as_ref(), &categories, &mut input, problems);
    // The same rules over the global output policy (their problems are reported above).
    let mut reported = Problems::default();
    moderation::categories(
        raw.categories.as_ref(),
        &categories,
        &mut output,
        &mut reported,
    );
    if let Some(out) = raw.output.as_ref() {
        let out_path = format!("{path}.output");
        let raw_out = RawProfileOutput::read(out, &out_path, problems);
        moderation::categories(
            raw_out.categories.as_ref(),
            &format!("{out_path}.categories"),
            &mut output,
            problems,
        );
    }
    KeyModeration {
        key: String::new(),
        mode: raw
            .mode
            .as_deref()
            .map(|m| moderation::mode(m, &format!("{path}.mode"), problems)),
        on_error: raw
            .on_error
            .as_deref()
            .map(|m| moderation::on_error(m, &format!("{path}.on_error"), problems)),
        input: Some(input),
        output: Some(output),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::moderation::{Mode, OnError};
    use crate::safety::filters::{Action, CategoryAction};
    use crate::safety::moderation::categories::index_of;
    use crate::safety::moderation::policy::Action as Verdict;

    fn keys(entries: &[(&str, Option<&str>, Option<&str>)]) -> Vec<RawKeyEntry> {
        entries
            .iter()
            .map(|(name, profile, mode)| {
                let mut entry = RawKeyEntry::default();
                entry.key.name = Some((*name).into());
                entry.key.safety_profile = profile.map(Into::into);
                entry.key.moderation_mode = mode.map(Into::into);
                entry
            })
            .collect()
    }

    fn parse(text: &str, keys: &[RawKeyEntry]) -> (Profiles, ModerationConfig, Problems) {
        let table: toml::Table = text.parse().unwrap();
        let mut problems = Problems::default();
        let mut moderation = moderation::validate(None, keys, &mut problems);
        let profiles = validate(
            Some(&table),
            keys,
            &mut moderation,
            &FilterPolicy::default(),
            &mut problems,
        );
        (profiles, moderation, problems)
    }

    #[test]
    fn a_profile_overrides_moderation_and_filters_for_its_keys() {
        let (profiles, moderation, problems) = parse(
            r#"
            [lenient.moderation]
            mode = "parallel"
            on_error = "allow"
            [lenient.moderation.categories.violence]
            threshold = 0.5
            action = "flag"
            [lenient.filters]
            secrets = "block"
            [lenient.jailbreak]
            block_threshold = 0.9
            "#,
            &keys(&[("a", None, None), ("b", Some("lenient"), Some("strict"))]),
        );
        assert!(problems.is_empty(), "{problems}");
        let v = index_of("violence").unwrap();
        let (input, output) = moderation.policies(Some("b"));
        assert_eq!(input.rule(v).action, Verdict::Flag);
        assert_eq!(output.rule(v).threshold, Some(0.5));
        assert_eq!(
            moderation.policies(Some("a")).0.rule(v).action,
            Verdict::Block
        );
        // The key's own mode wins over its profile's; on_error comes from the profile.
        assert_eq!(
            moderation.for_key(Some("b")),
            (Mode::Strict, OnError::Allow)
        );
        let filters: Vec<_> = profiles.key_filters().collect();
        assert_eq!(filters.len(), 1);
        assert_eq!(filters[0].0, "b");
        assert_eq!(filters[0].2.secrets, CategoryAction::Act(Action::Block));
        assert!((filters[0].2.jailbreak.block_threshold - 0.9).abs() < 1e-6);
    }

    #[test]
    fn unknown_profiles_and_bad_values_are_reported_with_their_paths() {
        let (_, _, problems) = parse(
            r#"
            [p.moderation]
            mode = "fast"
            nope = 1
            [p.moderation.categories.gore]
            action = "block"
            [p.filters]
            secrets = "hide"
            "#,
            &keys(&[("a", Some("missing"), None)]),
        );
        let text = problems.to_string();
        for path in [
            "keys[0].safety_profile",
            "safety.profiles.p.moderation.mode",
            "safety.profiles.p.moderation.nope",
            "safety.profiles.p.moderation.categories.\"gore\"",
            "safety.profiles.p.filters.secrets",
        ] {
            assert!(text.contains(path), "{path} missing in {text}");
        }
    }
}
