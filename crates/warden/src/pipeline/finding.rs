//! What a stage or an output check noticed about a request, as a typed value. The event
//! record carries these to the strike reader, the abuse rates and the alerts, which match
//! on them; the stored event detail keeps their text form (`stage:note`), which the
//! dashboard and the evidence report show.

use std::fmt;

pub use crate::safety::moderation::Side;

#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The Moderation endpoint flagged an input text. `replayed`: the text is an earlier
    /// turn the client sent again, judged when it was new.
    ModerationFlag {
        param: String,
        categories: Vec<String>,
        replayed: bool,
    },
    /// The local jailbreak score reached the flag threshold.
    Jailbreak {
        score: f32,
        families: Vec<String>,
        param: String,
        replayed: bool,
    },
    /// A local filter rule (secrets, PII, an operator rule) matched. `output`: in the
    /// model's answer, which is not the end user's offence.
    FilterRule {
        category: String,
        rule: String,
        action: String,
        param: String,
        output: bool,
    },
    /// Moderation failed and the policy let the text through unchecked.
    FailOpen { side: Side, reason: &'static str },
    /// Output moderation flagged the answer without blocking it.
    OutputFlag { categories: Vec<String> },
    /// Output checks withheld (part of) the answer. `by_moderation`: the Moderation
    /// endpoint, rather than a local filter rule.
    OutputBlock {
        categories: Vec<String>,
        by_moderation: bool,
    },
    /// The input was refused for content with these categories.
    Blocked { categories: Vec<String> },
    /// A revoked or expired virtual key was presented: probably leaked.
    RetiredKey { name: String },
    /// Upstream needed this many retries.
    UpstreamRetries(u32),
}

impl Finding {
    /// The stage the text form names first.
    pub fn stage(&self) -> &'static str {
        match self {
            Finding::ModerationFlag { .. }
            | Finding::FailOpen { .. }
            | Finding::OutputFlag { .. }
            | Finding::OutputBlock {
                by_moderation: true,
                ..
            } => "moderation",
            Finding::Jailbreak { .. } | Finding::FilterRule { output: false, .. } => {
                "local_filters"
            }
            Finding::FilterRule { output: true, .. }
            | Finding::OutputBlock {
                by_moderation: false,
                ..
            } => "output_filters",
            Finding::Blocked { .. } => "blocked",
            Finding::RetiredKey { .. } => "authenticate",
            Finding::UpstreamRetries(_) => "upstream",
        }
    }

    /// The content categories this finding counts against the end user for, with the
    /// share of a category's weight: a block counts whole, a flag by `flag_share`.
    /// Replayed turns, output filter rules and everything that is not content count
    /// nothing.
    pub fn offence(&self, flag_share: f64) -> Option<(Vec<&str>, f64)> {
        match self {
            Finding::Blocked { categories } => Some((names(categories), 1.0)),
            Finding::ModerationFlag {
                categories,
                replayed: false,
                ..
            } => Some((names(categories), flag_share)),
            // The model wrote it, but the user asked for it.
            Finding::OutputBlock {
                categories,
                by_moderation: true,
            } => Some((names(categories), flag_share)),
            Finding::Jailbreak {
                replayed: false, ..
            } => Some((vec!["jailbreak"], flag_share)),
            _ => None,
        }
    }

    /// The content categories an input finding names, for the abuse detector's flag
    /// rates (replayed turns were counted when they were new).
    pub fn input_categories(&self) -> Vec<&str> {
        match self {
            Finding::ModerationFlag {
                categories,
                replayed: false,
                ..
            } => names(categories),
            Finding::Jailbreak {
                replayed: false, ..
            } => vec!["jailbreak"],
            Finding::FilterRule {
                category,
                output: false,
                ..
            } => vec![category.as_str()],
            _ => Vec::new(),
        }
    }
}

fn names(categories: &[String]) -> Vec<&str> {
    categories.iter().map(String::as_str).collect()
}

/// The stored text form: `stage:note`, as the event detail has always read.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.stage())?;
        match self {
            Finding::ModerationFlag {
                param,
                categories,
                replayed,
            } => write!(
                f,
                "{}:{param}:{}",
                if *replayed { "flag_replayed" } else { "flag" },
                categories.join(",")
            ),
            Finding::Jailbreak {
                score,
                families,
                param,
                replayed,
            } => write!(
                f,
                "{} {score:.2} [{}] at {param}",
                if *replayed {
                    "jailbreak_replayed"
                } else {
                    "jailbreak"
                },
                families.join(",")
            ),
            Finding::FilterRule {
                category,
                rule,
                action,
                param,
                ..
            } => write!(f, "{category}:{rule} {action} at {param}"),
            Finding::FailOpen {
                side: Side::Input,
                reason,
            } => write!(f, "fail_open:{reason}"),
            Finding::FailOpen {
                side: Side::Output,
                reason,
            } => write!(f, "output_fail_open:{reason}"),
            Finding::OutputFlag { categories } => write!(f, "output_flag:{}", categories.join(",")),
            Finding::OutputBlock { categories, .. } => {
                write!(f, "output_block:{}", categories.join(","))
            }
            Finding::Blocked { categories } => write!(f, "{}", categories.join(",")),
            Finding::RetiredKey { name } => write!(f, "retired_key:{name}"),
            Finding::UpstreamRetries(n) => write!(f, "retries={n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_text_form_is_the_one_events_have_always_stored() {
        let cases = [
            (
                Finding::ModerationFlag {
                    param: "messages[1].content".into(),
                    categories: cats(&["hate", "violence"]),
                    replayed: false,
                },
                "moderation:flag:messages[1].content:hate,violence",
            ),
            (
                Finding::Jailbreak {
                    score: 0.934,
                    families: cats(&["dan"]),
                    param: "input".into(),
                    replayed: true,
                },
                "local_filters:jailbreak_replayed 0.93 [dan] at input",
            ),
            (
                Finding::FilterRule {
                    category: "secrets".into(),
                    rule: "openai-api-key".into(),
                    action: "redact".into(),
                    param: "prompt".into(),
                    output: false,
                },
                "local_filters:secrets:openai-api-key redact at prompt",
            ),
            (
                Finding::FailOpen {
                    side: Side::Output,
                    reason: "timeout",
                },
                "moderation:output_fail_open:timeout",
            ),
            (
                Finding::Blocked {
                    categories: cats(&["jailbreak"]),
                },
                "blocked:jailbreak",
            ),
            (
                Finding::RetiredKey { name: "old".into() },
                "authenticate:retired_key:old",
            ),
            (Finding::UpstreamRetries(2), "upstream:retries=2"),
        ];
        for (finding, text) in cases {
            assert_eq!(finding.to_string(), text);
        }
    }

    #[test]
    fn replayed_turns_and_output_rules_are_no_offence() {
        let replayed = Finding::ModerationFlag {
            param: "messages[0].content".into(),
            categories: cats(&["hate"]),
            replayed: true,
        };
        assert_eq!(replayed.offence(0.5), None);
        assert!(replayed.input_categories().is_empty());
        let output_rule = Finding::OutputBlock {
            categories: cats(&["secrets"]),
            by_moderation: false,
        };
        assert_eq!(output_rule.offence(0.5), None);
        let jailbreak = Finding::Jailbreak {
            score: 0.7,
            families: Vec::new(),
            param: "input".into(),
            replayed: false,
        };
        assert_eq!(jailbreak.offence(0.5), Some((vec!["jailbreak"], 0.5)));
    }
}
