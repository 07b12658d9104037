//! Structured findings for the event log: what fired, where, with which categories and
//! scores. Stages record them on the request context; the recorder writes them into the
//! event's `detail.flags`, where the report counts them by category.

use serde::{Deserialize, Serialize};

/// What a finding did to the request.
pub const BLOCK: &str = "block";
/// Allowed and recorded (a `flag` category or rule, a jailbreak score over the flag threshold).
pub const FLAG: &str = "flag";
/// A secret or PII span replaced before the request left.
pub const REDACT: &str = "redact";
/// A check that could not run and let the content through (`on_error = "allow"`).
pub const FAIL_OPEN: &str = "fail_open";

/// One finding. `categories` are the Moderation endpoint's names (`violence`, …) or the
/// local filters' (`jailbreak`, `secrets`, `pii`, or an operator rule's category).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// `local_filters`, `moderation` (input), `output_moderation` or `output_filters`.
    pub stage: String,
    /// `block`, `flag`, `redact` or `fail_open`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Category → score (0-1), for the categories that fired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<(String, f32)>,
    /// The field, in OpenAI's `param` notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The local rule that matched, or the fail-open reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Flag {
    pub fn new(stage: &str, action: &str) -> Flag {
        Flag {
            stage: stage.to_owned(),
            action: action.to_owned(),
            ..Flag::default()
        }
    }

    pub fn categories<I, S>(mut self, categories: I) -> Flag
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.categories = categories.into_iter().map(Into::into).collect();
        self
    }

    pub fn scores(mut self, scores: Vec<(String, f32)>) -> Flag {
        self.scores = scores;
        self
    }

    pub fn param(mut self, param: impl Into<String>) -> Flag {
        self.param = Some(param.into());
        self
    }

    pub fn rule(mut self, rule: impl Into<String>) -> Flag {
        self.rule = Some(rule.into());
        self
    }

    /// Whether the client's answer depends on this finding being on record before it is
    /// released (everything but a silent redaction is a decision someone may ask about).
    pub fn must_be_durable(&self) -> bool {
        self.action != REDACT
    }
}

/// A Moderation endpoint hit: the categories that fired and their scores.
pub fn of_hit(stage: &str, action: &str, hit: &crate::safety::moderation::Hit) -> Flag {
    let names = hit.categories.names();
    let scores = names
        .iter()
        .filter_map(|name| {
            crate::safety::moderation::categories::index_of(name)
                .map(|i| ((*name).to_owned(), hit.scores.scores[i]))
        })
        .collect();
    Flag::new(stage, action)
        .categories(names)
        .scores(scores)
        .param(hit.param.clone())
}

/// A refusal by a content check, as the client was told (`param`, categories, scores).
pub fn of_block(stage: &str, block: &crate::error::ContentFilter) -> Flag {
    let scores = block
        .details
        .iter()
        .filter(|(name, _)| block.categories.contains(name))
        .cloned()
        .collect();
    Flag::new(stage, BLOCK)
        .categories(block.categories.iter().cloned())
        .scores(scores)
        .param(block.param.clone())
}

/// What the stages leave on the request context for the event log.
#[derive(Debug, Clone, Default)]
pub struct AuditNotes {
    pub flags: Vec<Flag>,
    /// The Moderation endpoint (or its cache) judged this request's input before it was
    /// forwarded: the report's "pre-moderated" share.
    pub moderated: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_as_compact_json() {
        let flag = Flag::new("moderation", BLOCK)
            .categories(["violence"])
            .scores(vec![("violence".into(), 0.9)])
            .param("messages[0].content");
        let text = serde_json::to_string(&flag).unwrap();
        assert_eq!(
            text,
            r#"{"stage":"moderation","action":"block","categories":["violence"],"scores":[["violence",0.9]],"param":"messages[0].content"}"#
        );
        assert_eq!(serde_json::from_str::<Flag>(&text).unwrap(), flag);
        assert!(!Flag::new("local_filters", REDACT).must_be_durable());
    }
}
