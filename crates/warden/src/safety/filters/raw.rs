//! The rules that read the client's exact text (secrets, PII, operator regexes). A rule
//! whose every match holds one of a few literals at a place the engine can search for
//! (`sk-`, `AKIA`, `-----BEGIN`, a digit, the `@` of an e-mail) runs on its own: the regex engine then jumps from literal to literal with
//! memchr/Teddy instead of stepping a DFA through every byte, which is what makes clean
//! text cheap. Rules with no such literal share one RegexSet pass over the whole text.

use regex::{Match, Regex, RegexSet};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind};

/// Regexes are bounded so an operator rule cannot make the scanner huge.
pub const REGEX_SIZE_LIMIT: usize = 8 << 20;

enum Run {
    Alone,
    /// Its index in the shared set.
    Shared(usize),
}

/// The capture group that names the part of a match to report (and redact): a labelled
/// secret (`aws_secret_access_key = …`) is found by its label, but only the value is secret.
pub const SECRET_GROUP: &str = "secret";

pub struct RawRules {
    /// In rule order, so findings come out in the order the rules were written; the flag
    /// says the rule has a `secret` group to narrow its matches to.
    rules: Vec<(usize, Regex, Run, bool)>,
    shared: Option<RegexSet>,
}

impl RawRules {
    /// `rules`: the scanner's rule index, the id (for messages) and the pattern.
    pub fn new(rules: Vec<(usize, &str, String)>) -> Result<RawRules, String> {
        let mut shared = Vec::new();
        let mut compiled = Vec::new();
        for (index, id, pattern) in rules {
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|err| format!("rule {id}: {err}"))?;
            let run = if has_literal(&pattern) {
                Run::Alone
            } else {
                shared.push(pattern);
                Run::Shared(shared.len() - 1)
            };
            let narrows = re.capture_names().flatten().any(|n| n == SECRET_GROUP);
            compiled.push((index, re, run, narrows));
        }
        let shared = if shared.is_empty() {
            None
        } else {
            let set = regex::RegexSetBuilder::new(&shared)
                .size_limit(REGEX_SIZE_LIMIT * 4)
                .build()
                .map_err(|err| format!("filter rules do not compile together: {err}"))?;
            Some(set)
        };
        Ok(RawRules {
            rules: compiled,
            shared,
        })
    }

    /// Calls `each` with the rule index and span of every match, rule by rule.
    pub fn for_each_match<'t>(&self, text: &'t str, mut each: impl FnMut(usize, Match<'t>)) {
        let shared = self.shared.as_ref().map(|set| set.matches(text));
        for (index, re, run, narrows) in &self.rules {
            if let (Run::Shared(i), Some(matched)) = (run, &shared) {
                if !matched.matched(*i) {
                    continue;
                }
            }
            for m in re.find_iter(text) {
                // Captures cost more than a find, so they run only on the (rare) matches.
                let narrowed = narrows
                    .then(|| re.captures_at(text, m.start()))
                    .flatten()
                    .and_then(|caps| caps.name(SECRET_GROUP));
                each(*index, narrowed.unwrap_or(m));
            }
        }
    }

    /// How many rules run on their own (the rest share one pass).
    #[cfg(test)]
    fn alone(&self) -> usize {
        self.rules
            .iter()
            .filter(|(_, _, run, _)| matches!(run, Run::Alone))
            .count()
    }
}

/// Whether every match of `pattern` starts or ends with one of a finite set of non-empty
/// literals, or the pattern is a sequence with such a literal in it (`[\w.]+@[\w.]+`): the
/// shapes the regex engine searches by literal. Read off the parsed pattern, so flags and
/// small classes count.
fn has_literal(pattern: &str) -> bool {
    let Ok(hir) = regex_syntax::parse(pattern) else {
        return false;
    };
    let edge = |hir: &Hir, kind| {
        let literals = Extractor::new().kind(kind).extract(hir);
        literals.is_finite() && literals.min_literal_len().is_some_and(|len| len > 0)
    };
    let inner = match hir.kind() {
        HirKind::Concat(parts) => parts.iter().any(|part| edge(part, ExtractKind::Prefix)),
        _ => false,
    };
    inner || edge(&hir, ExtractKind::Prefix) || edge(&hir, ExtractKind::Suffix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spans(rules: &RawRules, text: &str) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        rules.for_each_match(text, |index, m| found.push((index, m.as_str().to_owned())));
        found
    }

    #[test]
    fn literals_are_found_through_flags_and_classes() {
        assert!(has_literal(r"(?-u:\b)sk-(?:proj-)?[A-Za-z0-9_-]{20,}"));
        assert!(has_literal(r"(?i)secret-[a-z]+"));
        assert!(has_literal(r"[0-9](?:[ -]?[0-9]){12,18}"));
        assert!(has_literal(r"[a-z]+@corp\.example"));
        assert!(has_literal(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}"
        ));
        assert!(!has_literal(r"[a-z]+(?:@|#)?[a-z]+"));
        assert!(!has_literal(r"\w+"));
    }

    #[test]
    fn rules_with_and_without_a_literal_both_match_in_rule_order() {
        let rules = RawRules::new(vec![
            (0, "ticket", r"\bTICKET-[0-9]+\b".to_owned()),
            (1, "long-words", r"\b[a-z]{6}\s[a-z]{6}\b".to_owned()),
            (2, "none", r"\bzzz[0-9]\b".to_owned()),
        ])
        .unwrap();
        assert_eq!(rules.alone(), 2);
        let text = "see TICKET-42 and TICKET-7, it went really slowly";
        assert_eq!(
            spans(&rules, text),
            vec![
                (0, "TICKET-42".to_owned()),
                (0, "TICKET-7".to_owned()),
                (1, "really slowly".to_owned()),
            ]
        );
        assert!(spans(&rules, "nothing here").is_empty());
    }

    #[test]
    fn a_secret_group_narrows_the_match_to_the_value() {
        let rules = RawRules::new(vec![(
            0,
            "labelled",
            r"token\s*=\s*(?P<secret>[a-z0-9]{6,})".to_owned(),
        )])
        .unwrap();
        assert_eq!(
            spans(&rules, "a token = abc123def and token=zz"),
            vec![(0, "abc123def".to_owned())]
        );
    }
}
