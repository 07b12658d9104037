//! Local filters: one compiled pass of keyword, regex and jailbreak rules over text, with no
//! network. `Scanner::scan(&str)` is the whole API: the input stage and output checks both
//! call it and act on the findings.

mod ascii_fold;
mod checks;
mod jailbreak;
pub mod learned;
mod literals;
pub mod normalize;
mod prefixes;
pub mod raw;
pub mod rules;
mod scanner;
mod spaced;
pub mod training;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

pub use jailbreak::Jailbreak;
pub use rules::Action;
pub use scanner::Scanner;

/// How the shipped `secrets` / `pii` rules act (a rule's own `action` wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryAction {
    Off,
    Act(Action),
}

/// Everything the scanner is built from; validated config, safe defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy {
    pub enabled: bool,
    pub rules_files: Vec<PathBuf>,
    pub secrets: CategoryAction,
    pub pii: CategoryAction,
    pub jailbreak: JailbreakPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JailbreakPolicy {
    /// Scores at or above this block the request.
    pub block_threshold: f32,
    /// Scores at or above this are recorded.
    pub flag_threshold: f32,
    /// Also score system/developer messages and responses `instructions` (off: the
    /// application wrote them, and system prompts read like rule-setting personas).
    pub score_instructions: bool,
}

impl Default for JailbreakPolicy {
    fn default() -> Self {
        JailbreakPolicy {
            block_threshold: 0.8,
            flag_threshold: 0.5,
            score_instructions: false,
        }
    }
}

impl Default for FilterPolicy {
    /// Safe by default: secrets redacted, PII recorded, confident jailbreaks blocked.
    fn default() -> Self {
        FilterPolicy {
            enabled: true,
            rules_files: Vec::new(),
            secrets: CategoryAction::Act(Action::Redact),
            pii: CategoryAction::Act(Action::Flag),
            jailbreak: JailbreakPolicy::default(),
        }
    }
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: Arc<str>,
    pub category: Arc<str>,
    pub action: Action,
    /// Byte range in the scanned text, for rules that read the exact text.
    pub span: Option<Range<usize>>,
}

/// What one scan found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Block, redact and flag findings (jailbreak cues are summed in `jailbreak` instead).
    pub findings: Vec<Finding>,
    pub jailbreak: Jailbreak,
}

impl Scan {
    pub fn blocks(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Block)
    }

    /// The text with every redact finding replaced by `[REDACTED:<rule>]`, or `None`.
    pub fn redacted(&self, text: &str) -> Option<String> {
        let mut spans: Vec<(&Range<usize>, &str)> = self
            .findings
            .iter()
            .filter(|f| f.action == Action::Redact)
            .filter_map(|f| f.span.as_ref().map(|s| (s, &*f.rule)))
            .collect();
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|(s, _)| (s.start, std::cmp::Reverse(s.end)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (span, rule) in spans {
            if span.start < at {
                // Overlaps a span already redacted: extend over its tail only.
                at = at.max(span.end);
                continue;
            }
            out.push_str(text.get(at..span.start)?);
            out.push_str("[REDACTED:");
            out.push_str(rule);
            out.push(']');
            at = span.end;
        }
        out.push_str(text.get(at..)?);
        Some(out)
    }
}
