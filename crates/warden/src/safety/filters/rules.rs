//! Filter rule files: the defaults Warden ships (embedded at build time) and the
//! operator's own, parsed into checked rules. A bad file is reported with its path and
//! the rule's index and id, never half-loaded.

use std::path::Path;

use serde::Deserialize;

/// What a match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refuse the request (400 content_filter).
    Block,
    /// Replace the match with `[REDACTED:<rule>]` and forward the rest.
    Redact,
    /// Allow, and record the finding.
    Flag,
    /// Add the rule's weight to the jailbreak score of its family; the score decides.
    Score,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "block" => Action::Block,
            "redact" => Action::Redact,
            "flag" => Action::Flag,
            "score" => Action::Score,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Redact => "redact",
            Action::Flag => "flag",
            Action::Score => "score",
        }
    }
}

/// Which text a rule reads: the client's exact text, or the folded form (see `normalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Raw,
    Normalized,
}

/// A check a match must also pass (cuts false positives of loose patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// Payment card numbers: 13-19 digits passing the Luhn checksum.
    Luhn,
    /// A labelled value that reads like a credential, not code or a placeholder.
    Credential,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Regex(String),
    Keywords(Vec<String>),
}

/// One rule, checked; its action may still be `None` (the category's policy decides).
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub category: String,
    pub pattern: Pattern,
    pub scope: Scope,
    pub action: Option<Action>,
    pub weight: f32,
    /// Jailbreak family reported as the reason (defaults to the id).
    pub family: String,
    pub check: Option<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    category: String,
    regex: Option<String>,
    keywords: Option<Vec<String>>,
    on: Option<Scope>,
    action: Option<String>,
    weight: Option<f32>,
    family: Option<String>,
    check: Option<Check>,
}

/// The rules Warden ships, compiled into the binary.
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    (
        "rules/secrets.toml",
        include_str!("../../../rules/secrets.toml"),
    ),
    ("rules/pii.toml", include_str!("../../../rules/pii.toml")),
    (
        "rules/jailbreak.toml",
        include_str!("../../../rules/jailbreak.toml"),
    ),
];

pub fn defaults() -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (name, text) in DEFAULT_FILES {
        rules.extend(parse(name, text)?);
    }
    Ok(rules)
}

pub fn load(path: &Path) -> Result<Vec<Rule>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read rules file {}: {err}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// Parses one file; `origin` names it in every message.
pub fn parse(origin: &str, text: &str) -> Result<Vec<Rule>, String> {
    let file: RuleFile = toml::from_str(text).map_err(|err| {
        let detail = err.message().to_owned();
        let line = err
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => format!("{origin}: line {line}: {detail}"),
            None => format!("{origin}: {detail}"),
        }
    })?;
    file.rule
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let at = format!("{origin}: rule[{i}] ({})", raw.id);
            check(raw).map_err(|why| format!("{at}: {why}"))
        })
        .collect()
}

fn check(raw: RawRule) -> Result<Rule, String> {
    if raw.id.is_empty()
        || !raw
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("id must be non-empty letters, digits, '-' or '_'".into());
    }
    if raw.category.is_empty() {
        return Err("category must not be empty".into());
    }
    let (pattern, default_scope) = match (raw.regex, raw.keywords) {
        (Some(re), None) => {
            regex::Regex::new(&re).map_err(|err| format!("bad regex: {err}"))?;
            (Pattern::Regex(re), Scope::Raw)
        }
        (None, Some(words)) if !words.is_empty() && words.iter().all(|w| !w.trim().is_empty()) => {
            (Pattern::Keywords(words), Scope::Normalized)
        }
        (None, Some(_)) => {
            return Err("keywords must be a non-empty list of non-empty words".into())
        }
        _ => return Err("needs exactly one of regex, keywords".into()),
    };
    let action =
        match raw.action.as_deref() {
            None => None,
            Some(text) => Some(Action::parse(text).ok_or_else(|| {
                format!("action '{text}' is not one of: block, redact, flag, score")
            })?),
        };
    let scope = raw.on.unwrap_or(default_scope);
    if action == Some(Action::Redact) && scope == Scope::Normalized {
        // Offsets in folded text do not map back to the client's text.
        return Err(
            "action 'redact' needs on = \"raw\" (a regex over the client's exact text)".into(),
        );
    }
    let weight = raw.weight.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&weight) {
        return Err(format!("weight {weight} must be between 0 and 1"));
    }
    Ok(Rule {
        family: raw.family.unwrap_or_else(|| raw.id.clone()),
        id: raw.id,
        category: raw.category,
        pattern,
        scope,
        action,
        weight,
        check: raw.check,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shipped_rules_parse() {
        let rules = defaults().unwrap();
        assert!(rules.iter().any(|r| r.category == "secrets"));
        assert!(rules.iter().any(|r| r.category == "pii"));
        assert!(rules.iter().any(|r| r.category == "jailbreak"));
    }

    #[test]
    fn errors_name_the_file_rule_and_cause() {
        let err = parse(
            "ops.toml",
            "[[rule]]\nid = \"x\"\ncategory = \"c\"\nregex = \"(\"\n",
        )
        .unwrap_err();
        assert!(err.starts_with("ops.toml: rule[0] (x): bad regex"), "{err}");

        let err = parse("ops.toml", "[[rule]]\nid = \"x\"\ncategory = \"c\"\n").unwrap_err();
        assert!(
            err.contains("needs exactly one of regex, keywords"),
            "{err}"
        );

        let err = parse(
            "ops.toml",
            "[[rule]]\nid = \"x\"\ncategory = \"c\"\nkeywords = [\"a\"]\nfoo = 1\n",
        )
        .unwrap_err();
        assert!(err.starts_with("ops.toml: line "), "{err}");
        assert!(err.contains("foo"), "{err}");

        let err = parse(
            "ops.toml",
            "[[rule]]\nid = \"x\"\ncategory = \"c\"\nkeywords = [\"a\"]\naction = \"redact\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("on = \\\"raw\\\"") || err.contains("needs on"),
            "{err}"
        );

        let err = parse(
            "ops.toml",
            "[[rule]]\nid = \"x\"\ncategory = \"c\"\nkeywords = [\"a\"]\nweight = 2.0\n",
        )
        .unwrap_err();
        assert!(err.contains("weight"), "{err}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = load(Path::new("/nonexistent/rules.toml")).unwrap_err();
        assert!(err.contains("/nonexistent/rules.toml"), "{err}");
    }

    #[test]
    fn keywords_default_to_folded_text_and_regexes_to_raw() {
        let rules = parse(
            "t",
            "[[rule]]\nid = \"k\"\ncategory = \"c\"\nkeywords = [\"a\"]\n[[rule]]\nid = \"r\"\ncategory = \"c\"\nregex = \"b\"\naction = \"block\"\n",
        )
        .unwrap();
        assert_eq!(rules[0].scope, Scope::Normalized);
        assert_eq!(rules[1].scope, Scope::Raw);
        assert_eq!(rules[1].action, Some(Action::Block));
    }
}
