//! The local filters on a whole answer (non-streamed, and the full-text events of a
//! stream): the same scanner as the input, so a model echoing a secret has it redacted
//! (or the answer blocked, per `[safety.filters] secrets`) and PII is recorded.
//! Jailbreak cues are not judged here: they describe what users send, not answers.

use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::events::flags::{self, Flag};
use crate::openai::response_text as text;
use crate::safety::filters::normalize::Normalizer;
use crate::safety::filters::{Action, Finding, Scanner};

/// The stage name output filter findings carry in events.
pub const FILTER_STAGE: &str = "output_filters";

/// What the filters did to an answer.
#[derive(Debug, Default)]
pub struct Filtered {
    /// Choice / output indexes that must be withheld (a `block` rule matched).
    pub blocked: Vec<usize>,
    /// Categories of the block rules that matched.
    pub categories: Vec<String>,
    /// Text was redacted in place.
    pub changed: bool,
    pub flags: Vec<Flag>,
    pub notes: Vec<crate::pipeline::Finding>,
}

impl Filtered {
    pub fn record(&mut self, finding: &Finding, param: &str) {
        let action = match finding.action {
            Action::Block => flags::BLOCK,
            Action::Redact => flags::REDACT,
            Action::Flag => flags::FLAG,
            Action::Score => return,
        };
        self.flags.push(
            Flag::new(FILTER_STAGE, action)
                .categories([&*finding.category])
                .param(param)
                .rule(&*finding.rule),
        );
        self.notes.push(crate::pipeline::Finding::FilterRule {
            category: finding.category.to_string(),
            rule: finding.rule.to_string(),
            action: action.to_owned(),
            param: param.to_owned(),
            output: true,
        });
        if finding.action == Action::Block
            && !self.categories.iter().any(|c| **c == *finding.category)
        {
            self.categories.push(finding.category.to_string());
        }
    }
}

/// Scans every model-written text of a JSON answer; redacts in place and names the
/// choices a block rule hit (the caller withholds them).
pub fn answer(scanner: &Scanner, endpoint: Endpoint, answer: &mut Value) -> Filtered {
    let mut out = Filtered::default();
    if !scanner.enabled() {
        return out;
    }
    let mut fold = Normalizer::default();
    text::visit_answer_mut(endpoint, answer, |index, param, text| {
        let scan = scanner.findings_with(&mut fold, text);
        if scan.findings.is_empty() {
            return;
        }
        for finding in &scan.findings {
            out.record(finding, param);
        }
        if scan.blocks() {
            if !out.blocked.contains(&index) {
                out.blocked.push(index);
            }
        } else if let Some(redacted) = scan.redacted(text) {
            *text = redacted;
            out.changed = true;
        }
    });
    out
}

/// A stream event that repeats text already seen as deltas (`response.output_text.done`,
/// `response.completed`, …): every text it carries is redacted the same way. Findings
/// are not recorded again; `Some(categories)` when a block rule matched.
pub fn snapshot(scanner: &Scanner, event: &mut Value) -> (bool, Option<String>) {
    let mut fold = Normalizer::default();
    let mut changed = false;
    let mut blocked: Option<String> = None;
    walk(event, &mut |text: &mut String| {
        let scan = scanner.findings_with(&mut fold, text);
        if let Some(hit) = scan.findings.iter().find(|f| f.action == Action::Block) {
            blocked.get_or_insert_with(|| hit.category.to_string());
        } else if let Some(redacted) = scan.redacted(text) {
            *text = redacted;
            changed = true;
        }
    });
    (changed, blocked)
}

/// `text` with every secret (a redact or block rule's match) replaced, for sending it to
/// the Moderation endpoint: what the client will never see does not travel there either.
pub fn masked(scanner: &Scanner, text: String) -> String {
    let mut scan = scanner.findings_with(&mut Normalizer::default(), &text);
    if scan.findings.is_empty() {
        return text;
    }
    for finding in &mut scan.findings {
        if finding.action == Action::Block && finding.span.is_some() {
            finding.action = Action::Redact;
        }
    }
    scan.redacted(&text).unwrap_or(text)
}

/// Every string under a key that holds model text, at any depth.
fn walk(value: &mut Value, visit: &mut impl FnMut(&mut String)) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(t)
                        if matches!(key.as_str(), "text" | "arguments" | "refusal" | "delta") =>
                    {
                        visit(t)
                    }
                    _ => walk(v, visit),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::safety::filters::{CategoryAction, FilterPolicy};
    use serde_json::json;

    pub(crate) const KEY: &str = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LmNbVcXz";

    fn scanner(secrets: Action) -> Scanner {
        Scanner::new(&FilterPolicy {
            secrets: CategoryAction::Act(secrets),
            ..FilterPolicy::default()
        })
        .unwrap()
    }

    #[test]
    fn an_echoed_key_is_redacted_in_content_and_tool_arguments() {
        let mut value = json!({"choices":[{"index":0,"message":{"role":"assistant","content":format!("Use {KEY} here"),
            "tool_calls":[{"function":{"name":"f","arguments":format!("{{\"key\":\"{KEY}\"}}")}}]},"finish_reason":"stop"}]});
        let out = answer(
            &scanner(Action::Redact),
            Endpoint::ChatCompletions,
            &mut value,
        );
        assert!(out.changed && out.blocked.is_empty());
        let text = value.to_string();
        assert!(!text.contains("Zx9Qw8Er7Ty6"), "{text}");
        assert!(
            text.contains("Use [REDACTED:openai-api-key] here"),
            "{text}"
        );
        let args: Value = serde_json::from_str(
            value["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args["key"], "[REDACTED:openai-api-key]");
        assert_eq!(out.flags[0].stage, FILTER_STAGE);
        assert_eq!(out.flags[0].action, "redact");
    }

    #[test]
    fn block_names_the_choice_and_pii_is_only_flagged() {
        let mut value = json!({"output":[{"type":"message","content":[{"type":"output_text","text":format!("key {KEY}")}]},
            {"type":"message","content":[{"type":"output_text","text":"write to bob@example.com"}]}]});
        let out = answer(&scanner(Action::Block), Endpoint::Responses, &mut value);
        assert_eq!(out.blocked, vec![0]);
        assert_eq!(out.categories, vec!["secrets".to_owned()]);
        assert!(
            out.flags
                .iter()
                .any(|f| f.action == "flag" && f.categories == ["pii"]),
            "{:?}",
            out.flags
        );
    }

    #[test]
    fn clean_answers_are_untouched_and_snapshots_redact() {
        let mut value = json!({"choices":[{"index":0,"text":"nothing secret here"}]});
        let out = answer(&scanner(Action::Redact), Endpoint::Completions, &mut value);
        assert!(!out.changed && out.flags.is_empty());
        let mut event =
            json!({"type":"response.output_text.done","text":format!("a {KEY}"),"item_id":"msg_1"});
        let (changed, blocked) = snapshot(&scanner(Action::Redact), &mut event);
        assert!(changed && blocked.is_none());
        assert_eq!(event["text"], "a [REDACTED:openai-api-key]");
        let masked = masked(&scanner(Action::Block), format!("x {KEY} y"));
        assert_eq!(masked, "x [REDACTED:openai-api-key] y");
    }
}
