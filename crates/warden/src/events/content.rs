//! What the event log keeps of a request's content: never the text itself, only the
//! SHA-256 and length of the user text the filters scan — and, when the operator opts in,
//! a short excerpt of a flagged field with secrets and PII redacted.

use std::sync::Arc;

use ring::digest::{Context, SHA256};

use crate::openai::RequestTexts;
use crate::safety::filters::{Action, CategoryAction, FilterPolicy, Scanner};

/// The texts are joined with this between them before hashing, so ["ab"] and ["a","b"]
/// differ. `content_len` is the byte length of the joined text.
const SEPARATOR: &str = "\n";

/// SHA-256 (lower-case hex) and byte length of the joined user texts; `None` for a body
/// with no user text (models, moderations, an empty prompt).
pub fn digest(texts: &RequestTexts) -> Option<(String, i64)> {
    let texts = &texts.texts;
    if texts.is_empty() {
        return None;
    }
    let mut hash = Context::new(&SHA256);
    let mut len = 0usize;
    for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            hash.update(SEPARATOR.as_bytes());
            len += SEPARATOR.len();
        }
        hash.update(t.text.as_bytes());
        len += t.text.len();
    }
    Some((hex(hash.finish().as_ref()), len as i64))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Builds excerpts of flagged fields, with every secret and PII span redacted by the
/// shipped filter rules (whatever the gateway's own filter policy is).
pub struct Excerpts {
    chars: usize,
    scanner: Scanner,
}

impl Excerpts {
    pub fn new(chars: usize) -> Result<Arc<Excerpts>, String> {
        let policy = FilterPolicy {
            enabled: true,
            secrets: CategoryAction::Act(Action::Redact),
            pii: CategoryAction::Act(Action::Redact),
            ..FilterPolicy::default()
        };
        Ok(Arc::new(Excerpts {
            chars,
            scanner: Scanner::new(&policy)?,
        }))
    }

    /// The excerpt of the text at `param` (or the first text when no field matches).
    pub fn of(&self, texts: &RequestTexts, param: Option<&str>) -> Option<String> {
        let texts = &texts.texts;
        let chosen = param
            .and_then(|p| {
                texts
                    .iter()
                    .find(|t| t.param == p || p.starts_with(&format!("{}[", t.param)))
            })
            .or_else(|| texts.first())?;
        Some(self.redact(&chosen.text))
    }

    /// Redacts first (a secret cut in half by the length cap would no longer match), then
    /// cuts to `chars` characters.
    pub fn redact(&self, text: &str) -> String {
        let scan = self.scanner.findings_with(
            &mut crate::safety::filters::normalize::Normalizer::default(),
            text,
        );
        let redacted = scan.redacted(text).unwrap_or_else(|| text.to_owned());
        match redacted.char_indices().nth(self.chars) {
            Some((cut, _)) => format!("{}…", &redacted[..cut]),
            None => redacted,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digest_covers_every_user_text_in_order() {
        let texts = |body: &[u8]| {
            let body = crate::json_body::JsonBody::parse(body).unwrap();
            crate::openai::extract(crate::endpoint::Endpoint::ChatCompletions, &body, None).unwrap()
        };
        let (hash, len) = digest(&texts(
            br#"{"model":"m","messages":[{"role":"system","content":"ab"},{"role":"user","content":"c"}]}"#,
        ))
        .unwrap();
        let mut expected = Context::new(&SHA256);
        expected.update(b"ab\nc");
        assert_eq!(hash, hex(expected.finish().as_ref()));
        assert_eq!(len, 4);
        assert!(digest(&texts(br#"{"model":"m"}"#)).is_none());
    }

    #[test]
    fn excerpts_redact_secrets_and_pii_then_cut() {
        let excerpts = Excerpts::new(60).unwrap();
        let key = format!("sk-proj-{}", "A1b2C3d4E5f6G7h8I9j0".repeat(3));
        let text =
            format!("mail bob@example.com my key {key} FLAG:violence and more text after it");
        let out = excerpts.redact(&text);
        assert!(
            !out.contains(&key) && !out.contains("bob@example.com"),
            "{out}"
        );
        assert!(out.contains("[REDACTED:"), "{out}");
        assert!(out.ends_with('…'));
        assert_eq!(out.chars().count(), 61);
    }
}
