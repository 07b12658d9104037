//! `[geo]`: the MaxMind-format country database, the countries refused, and what to do
//! with addresses the database cannot place.

use std::path::PathBuf;

use super::problems::Problems;
use super::schema::section;

/// Countries and territories absent from OpenAI's list of supported countries and
/// territories for the API, as that page read on `DEFAULT_DENY_AS_OF` (see README).
/// Sub-national regions OpenAI also excludes (Crimea, Donetsk, Luhansk) have no country
/// code of their own and cannot be expressed here.
pub const DEFAULT_DENY: &[&str] = &["BY", "CN", "CU", "HK", "IR", "KP", "MO", "RU", "SY"];
pub const DEFAULT_DENY_AS_OF: &str = "2025-06";

section! {
    pub struct RawGeo {
        database: String,
        deny: Vec<String>,
        unknown: String,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Addresses the database cannot place (private ranges, gaps) pass.
    Allow,
    /// Only placed, allowed countries pass.
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// `None`: no database, so no geo policy (and no country on events).
    pub database: Option<PathBuf>,
    /// ISO 3166-1 alpha-2 codes, upper case.
    pub deny: Vec<String>,
    pub unknown: Unknown,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            database: None,
            deny: DEFAULT_DENY.iter().map(|c| (*c).to_owned()).collect(),
            unknown: Unknown::Allow,
        }
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> GeoConfig {
    const PATH: &str = "geo";
    let raw = value
        .map(|v| RawGeo::read(v, PATH, problems))
        .unwrap_or_default();
    let mut config = GeoConfig::default();
    if let Some(path) = raw.database {
        if path.trim().is_empty() {
            problems.push(format!("{PATH}.database"), "must not be empty");
        } else if !std::path::Path::new(&path).is_file() {
            problems.push(
                format!("{PATH}.database"),
                format!(
                    "'{path}' is not a readable file (a MaxMind-format .mmdb country database)"
                ),
            );
        }
        config.database = Some(PathBuf::from(path));
    }
    if let Some(deny) = raw.deny {
        config.deny = Vec::with_capacity(deny.len());
        for (i, code) in deny.iter().enumerate() {
            let upper = code.trim().to_ascii_uppercase();
            if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_alphabetic()) {
                problems.push(
                    format!("{PATH}.deny[{i}]"),
                    format!("'{code}' is not a two-letter ISO 3166-1 country code"),
                );
                continue;
            }
            if !config.deny.contains(&upper) {
                config.deny.push(upper);
            }
        }
    }
    config.unknown = match raw.unknown.as_deref() {
        None | Some("allow") => Unknown::Allow,
        Some("block") => Unknown::Block,
        Some(other) => {
            problems.push(
                format!("{PATH}.unknown"),
                format!("'{other}' is not one of: allow, block"),
            );
            Unknown::Allow
        }
    };
    config
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> (GeoConfig, Problems) {
        let mut problems = Problems::default();
        let value: toml::Value = text.parse::<toml::Table>().unwrap().into();
        (validate(Some(&value), &mut problems), problems)
    }

    #[test]
    fn defaults_deny_openai_unsupported_regions_without_a_database() {
        let mut problems = Problems::default();
        let config = validate(None, &mut problems);
        assert!(problems.is_empty());
        assert!(config.database.is_none());
        assert!(config.deny.iter().any(|c| c == "RU"));
        assert_eq!(config.unknown, Unknown::Allow);
    }

    #[test]
    fn codes_are_normalised_and_problems_named() {
        let (config, problems) = parse("deny = [\"fr\", \"FR\", \"France\"]\nunknown = \"maybe\"\ndatabase = \"/nonexistent.mmdb\"");
        assert_eq!(config.deny, vec!["FR".to_string()]);
        let text = problems.to_string();
        for needle in ["geo.deny[2]", "geo.unknown", "geo.database"] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }
}
