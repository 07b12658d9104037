//! The compiled filter engine: one RegexSet over the client's exact text (secrets, PII),
//! then one fold of the text and one RegexSet plus one Aho-Corasick automaton over the
//! folded form (keywords, jailbreak cues), then the structural jailbreak signals.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex::bytes::Regex as BytesRegex;
use regex::{Regex, RegexSet};

use super::checks;
use super::jailbreak::Structural;
use super::literals;
use super::normalize::Normalizer;
use super::rules::{self, Action, Check, Pattern, Rule, Scope};
use super::{CategoryAction, FilterPolicy, Finding, JailbreakPolicy, Scan};

/// Regexes are bounded so an operator rule cannot make the scanner huge.
const REGEX_SIZE_LIMIT: usize = 8 << 20;

struct Compiled {
    id: Arc<str>,
    category: Arc<str>,
    family: Arc<str>,
    action: Action,
    weight: f32,
    check: Option<Check>,
}

pub struct Scanner {
    enabled: bool,
    jailbreak: JailbreakPolicy,
    rules: Vec<Compiled>,
    raw_set: RegexSet,
    /// Per pattern of `raw_set`: its rule and the regex that finds the spans.
    raw: Vec<(usize, Regex)>,
    /// Folded-text rules: each regex with its rule, and the ones with no known literal.
    folded: Vec<(usize, BytesRegex)>,
    always: Vec<usize>,
    /// Literals every match of a folded regex contains, and the regexes each one admits.
    anchors: Option<AhoCorasick>,
    anchor_rules: Vec<Vec<usize>>,
    keywords: Option<AhoCorasick>,
    keyword_rule: Vec<usize>,
    structural: Structural,
}

impl Scanner {
    /// The shipped rules, then the operator's files (a rule with a shipped id replaces it).
    pub fn new(policy: &FilterPolicy) -> Result<Scanner, String> {
        let mut all = rules::defaults()?;
        for path in &policy.rules_files {
            for rule in rules::load(path)? {
                all.retain(|r| r.id != rule.id);
                all.push(rule);
            }
        }
        Scanner::from_rules(policy, all)
    }

    pub fn from_rules(policy: &FilterPolicy, all: Vec<Rule>) -> Result<Scanner, String> {
        let mut rules = Vec::new();
        let (mut raw_patterns, mut raw) = (Vec::new(), Vec::new());
        let mut folded = Vec::new();
        let (mut words, mut keyword_rule) = (Vec::new(), Vec::new());
        let mut fold = Normalizer::default();
        for rule in all {
            let Some(action) = resolve(policy, &rule) else {
                continue;
            };
            let index = rules.len();
            match (&rule.pattern, rule.scope) {
                (Pattern::Regex(re), Scope::Raw) => {
                    raw_patterns.push(re.clone());
                    raw.push((index, compile(re, &rule.id)?));
                }
                (Pattern::Keywords(list), Scope::Raw) => {
                    let escaped: Vec<String> = list.iter().map(|w| regex::escape(w)).collect();
                    let re = format!(r"(?i)(?-u:\b)(?:{})(?-u:\b)", escaped.join("|"));
                    raw.push((index, compile(&re, &rule.id)?));
                    raw_patterns.push(re);
                }
                (Pattern::Regex(re), Scope::Normalized) => {
                    folded.push((index, compile_folded(re, &rule.id)?));
                }
                (Pattern::Keywords(list), Scope::Normalized) => {
                    for word in list {
                        words.push(fold.fold(word).to_vec());
                        keyword_rule.push(index);
                    }
                }
            }
            rules.push(Compiled {
                id: Arc::from(rule.id.as_str()),
                category: Arc::from(rule.category.as_str()),
                family: Arc::from(rule.family.as_str()),
                action,
                weight: rule.weight,
                check: rule.check,
            });
        }
        let raw_set = regex::RegexSetBuilder::new(&raw_patterns)
            .size_limit(REGEX_SIZE_LIMIT * 4)
            .build()
            .map_err(|err| format!("filter rules do not compile together: {err}"))?;
        // One pass over the anchor literals decides which folded regexes can match at all;
        // only those run (benign text usually admits none).
        let (mut always, mut anchor_words) = (Vec::new(), Vec::<Vec<u8>>::new());
        let mut anchor_rules: Vec<Vec<usize>> = Vec::new();
        for (i, (_, re)) in folded.iter().enumerate() {
            let Some(lits) = literals::required(re.as_str()) else {
                always.push(i);
                continue;
            };
            for lit in lits {
                match anchor_words.iter().position(|w| *w == lit) {
                    Some(at) => anchor_rules[at].push(i),
                    None => {
                        anchor_words.push(lit);
                        anchor_rules.push(vec![i]);
                    }
                }
            }
        }
        let anchors = if anchor_words.is_empty() {
            None
        } else {
            // A full DFA: the fastest overlapping search, and the anchor set is small.
            let anchors = AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::DFA))
                .build(&anchor_words)
                .map_err(|err| format!("rule anchors: {err}"))?;
            Some(anchors)
        };
        let keywords = if words.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&words).map_err(|err| format!("keyword rules: {err}"))?)
        };
        Ok(Scanner {
            enabled: policy.enabled,
            jailbreak: policy.jailbreak,
            rules,
            raw_set,
            raw,
            folded,
            always,
            anchors,
            anchor_rules,
            keywords,
            keyword_rule,
            structural: Structural::default(),
        })
    }

    pub fn jailbreak_policy(&self) -> JailbreakPolicy {
        self.jailbreak
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Scans one text.
    pub fn scan(&self, text: &str) -> Scan {
        self.scan_with(&mut Normalizer::default(), text)
    }

    /// Scans one text, reusing the fold buffer of earlier scans.
    pub fn scan_with(&self, fold: &mut Normalizer, text: &str) -> Scan {
        let mut scan = Scan::default();
        if !self.enabled {
            return scan;
        }
        let mut seen = vec![false; self.rules.len()];
        for i in self.raw_set.matches(text).iter() {
            let (index, re) = &self.raw[i];
            let rule = &self.rules[*index];
            for m in re.find_iter(text) {
                if rule.check.is_some_and(|c| !checks::passes(c, m.as_str())) {
                    continue;
                }
                self.record(&mut scan, *index, Some(m.range()), &mut seen);
            }
        }
        let known: Vec<std::ops::Range<usize>> = scan
            .findings
            .iter()
            .filter_map(|f| f.span.clone())
            .collect();
        fold.fold(text);
        let signals = fold.signals;
        let folded = &fold.out[..];
        for (index, _) in self
            .folded
            .iter()
            .zip(self.candidates(folded))
            .filter(|((_, re), candidate)| *candidate && re.is_match(folded))
            .map(|(rule, _)| rule)
        {
            self.record(&mut scan, *index, None, &mut seen);
        }
        if let Some(keywords) = &self.keywords {
            for m in keywords.find_overlapping_iter(folded) {
                let bounded = m.start().checked_sub(1).is_none_or(|i| !is_word(folded[i]))
                    && folded.get(m.end()).is_none_or(|&b| !is_word(b));
                if bounded {
                    self.record(
                        &mut scan,
                        self.keyword_rule[m.pattern().as_usize()],
                        None,
                        &mut seen,
                    );
                }
            }
        }
        self.structural
            .score(text, folded, signals, &known, &mut scan.jailbreak);
        scan
    }

    /// Per folded regex: whether the text holds one of its anchors (or it has none).
    fn candidates(&self, folded: &[u8]) -> Vec<bool> {
        let mut candidate = vec![false; self.folded.len()];
        for &i in &self.always {
            candidate[i] = true;
        }
        let mut left = candidate.iter().filter(|c| !**c).count();
        if let Some(anchors) = &self.anchors {
            for m in anchors.find_overlapping_iter(folded) {
                if left == 0 {
                    break;
                }
                for &i in &self.anchor_rules[m.pattern().as_usize()] {
                    left -= usize::from(!std::mem::replace(&mut candidate[i], true));
                }
            }
        }
        candidate
    }

    fn record(
        &self,
        scan: &mut Scan,
        index: usize,
        span: Option<std::ops::Range<usize>>,
        seen: &mut [bool],
    ) {
        let rule = &self.rules[index];
        if rule.action == Action::Score {
            if !std::mem::replace(&mut seen[index], true) {
                scan.jailbreak.add(&rule.family, rule.weight);
            }
            return;
        }
        // Spans matter for redaction: keep each; span-less findings once per rule.
        if span.is_none() && std::mem::replace(&mut seen[index], true) {
            return;
        }
        scan.findings.push(Finding {
            rule: rule.id.clone(),
            category: rule.category.clone(),
            action: rule.action,
            span,
        });
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

fn compile(re: &str, id: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| format!("rule {id}: {err}"))
}

/// Folded-text regexes use ASCII classes and word boundaries: the folded text is mostly
/// ASCII, and Unicode `\w` / `\b` would push them off the DFA onto the slow NFA engines.
fn compile_folded(re: &str, id: &str) -> Result<BytesRegex, String> {
    regex::bytes::RegexBuilder::new(re)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| format!("rule {id}: {err}"))
}

/// The action a rule takes under the policy; `None` drops it.
fn resolve(policy: &FilterPolicy, rule: &Rule) -> Option<Action> {
    if let Some(action) = rule.action {
        return Some(action);
    }
    let category = match rule.category.as_str() {
        "secrets" => policy.secrets,
        "pii" => policy.pii,
        "jailbreak" => CategoryAction::Act(Action::Score),
        _ => CategoryAction::Act(Action::Flag),
    };
    match category {
        CategoryAction::Off => None,
        CategoryAction::Act(action) => Some(action),
    }
}
