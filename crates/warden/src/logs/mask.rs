//! Masks secret-looking values in log lines, by type: `sk-proj-…` becomes
//! `sk-proj-****[openai_key]`. The patterns are the shipped secret rules of the local
//! filters (`rules/secrets.toml`) plus what only logs meet: bearer tokens, webhook
//! signing secrets and Warden's own virtual keys. One regex over the line; a line with
//! nothing to mask is passed on without a copy.

use std::borrow::Cow;

use regex::bytes::{Captures, Regex};

use crate::safety::filters;
use crate::safety::filters::rules::{self, Pattern};

/// Patterns only logs need (the request filters have no reason to look for them).
const LOG_ONLY: &[(&str, &str)] = &[
    ("bearer_token", r"(?i:bearer)[ \t]+[A-Za-z0-9._~+/=-]{8,}"),
    ("webhook_secret", r"(?-u:\b)whsec_[A-Za-z0-9+/=_-]{8,}"),
    ("warden_key", r"(?-u:\b)wk-[A-Za-z0-9_-]{12,}"),
];

/// The recognisable start kept in front of the mask, so a reader still sees what kind
/// of secret was there.
const VISIBLE_PREFIX: &str = r"^(?:sk-(?:proj-|svcacct-|admin-|ant-)?|[sr]k_live_|gh[pousr]_|github_pat_|xox[abposr]-|whsec_|wk-|AKIA|ASIA|AIza|eyJ|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----|(?i:bearer)[ \t]+)";

pub struct Masker {
    any: Regex,
    prefix: Regex,
    /// The type named in the mask, by capture group (group i + 1).
    kinds: Vec<String>,
}

impl Masker {
    pub fn new() -> Result<Masker, String> {
        let mut parts: Vec<(String, String)> = LOG_ONLY
            .iter()
            .map(|(kind, re)| ((*kind).to_owned(), (*re).to_owned()))
            .collect();
        let (origin, text) = rules::DEFAULT_FILES
            .iter()
            .find(|(name, _)| name.ends_with("secrets.toml"))
            .ok_or("the shipped secret rules are missing")?;
        for rule in rules::parse(origin, text)? {
            if let Pattern::Regex(re) = rule.pattern {
                // One capture group per part names its kind; a rule's own `secret` group
                // would shift the numbering (and repeat a name), so it becomes plain.
                let group = format!("(?P<{}>", filters::raw::SECRET_GROUP);
                parts.push((kind_of(&rule.id), re.replace(&group, "(?:")));
            }
        }
        let alternation = parts
            .iter()
            .map(|(_, re)| format!("({re})"))
            .collect::<Vec<_>>()
            .join("|");
        Ok(Masker {
            any: Regex::new(&alternation).map_err(|e| format!("log masking patterns: {e}"))?,
            prefix: Regex::new(VISIBLE_PREFIX).map_err(|e| format!("log masking prefix: {e}"))?,
            kinds: parts.into_iter().map(|(kind, _)| kind).collect(),
        })
    }

    /// The line with every secret replaced by its visible prefix, `****` and its type.
    pub fn mask<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        self.any.replace_all(line, |caps: &Captures<'_>| {
            let kind = (1..caps.len())
                .find(|i| caps.get(*i).is_some())
                .and_then(|i| self.kinds.get(i - 1))
                .map_or("secret", String::as_str);
            let found = caps.get(0).map_or(&[][..], |m| m.as_bytes());
            let keep = self.prefix.find(found).map_or(0, |m| m.end());
            let mut out = found[..keep].to_vec();
            out.extend_from_slice(b"****[");
            out.extend_from_slice(kind.as_bytes());
            out.push(b']');
            out
        })
    }
}

impl Masker {
    /// The kind of the first secret-looking value in `text`, if any.
    pub fn secret_in(&self, text: &str) -> Option<&str> {
        let caps = self.any.captures(text.as_bytes())?;
        (1..caps.len())
            .find(|i| caps.get(*i).is_some())
            .and_then(|i| self.kinds.get(i - 1))
            .map(String::as_str)
            .or(Some("secret"))
    }
}

/// One masker for the checks that refuse secrets in identifiers (end-user ids, model
/// names): built on first use, shared.
pub fn shared() -> Option<&'static Masker> {
    static SHARED: std::sync::OnceLock<Option<Masker>> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| Masker::new().ok()).as_ref()
}

/// Short type names for the shipped rule ids.
fn kind_of(rule_id: &str) -> String {
    match rule_id {
        "openai-api-key" => "openai_key".into(),
        "aws-access-key-id" => "aws_key".into(),
        "google-api-key" => "google_key".into(),
        "stripe-secret-key" => "stripe_key".into(),
        "private-key-block" => "private_key".into(),
        other => other.replace('-', "_"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn masked(line: &str) -> String {
        String::from_utf8(Masker::new().unwrap().mask(line.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn each_kind_of_secret_is_masked_with_its_type() {
        let cases = [
            (
                "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
                "sk-proj-****[openai_key]",
            ),
            ("sk-abcdefghijklmnopqrstuvwxyz0123", "sk-****[openai_key]"),
            ("AKIAABCDEFGHIJKLMNOP", "AKIA****[aws_key]"),
            (
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
                "ghp_****[github_token]",
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                "github_pat_****[github_token]",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_****[webhook_secret]",
            ),
            ("xoxb-1234567890-abcdefghij", "xoxb-****[slack_token]"),
            ("wk-test-app-0123456789abcdef", "wk-****[warden_key]"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlMTIz",
                "eyJ****[jwt]",
            ),
            ("Bearer abcdef0123456789", "Bearer ****[bearer_token]"),
        ];
        for (secret, want) in cases {
            let line = format!(r#"{{"message":"x","value":"before {secret} after"}}"#);
            let got = masked(&line);
            assert_eq!(got, line.replace(secret, want), "{secret}");
        }
    }

    #[test]
    fn a_bearer_header_hides_the_key_it_carries() {
        let got = masked("authorization: Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123");
        assert_eq!(got, "authorization: Bearer ****[bearer_token]");
    }

    #[test]
    fn ordinary_lines_and_safety_identifiers_pass_unchanged_without_a_copy() {
        let masker = Masker::new().unwrap();
        let line = br#"{"message":"request","safety_identifier":"wsi1_AbCdEf0123456789abcdefghijklmnopqrstuvwxyzAB","task-list":"desk-lamp"}"#;
        assert!(matches!(masker.mask(line), Cow::Borrowed(_)));
    }
}
