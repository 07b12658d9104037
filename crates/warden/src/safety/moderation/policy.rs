//! Per-category policy: which score (or the endpoint's own `flagged`) fires a category,
//! and whether a firing category blocks, is only recorded, or is ignored.

use super::categories::{CategorySet, Scores, CATEGORIES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refuse the input / withhold the output.
    Block,
    /// Let it through and record the finding.
    Flag,
    /// Ignore the category.
    Allow,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "block" => Some(Action::Block),
            "flag" => Some(Action::Flag),
            "allow" => Some(Action::Allow),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Fires when `category_scores[c] >= threshold`; `None` trusts the endpoint's
    /// `categories[c]` boolean (OpenAI's own calibrated line).
    pub threshold: Option<f32>,
    pub action: Action,
}

/// Default threshold for `sexual/minors`. Ordinary text scores 1e-6..1e-3 on this
/// category; the endpoint's own `flagged` line sits far higher. It is the one category
/// where any real signal must stop the request (it is what ends accounts outright), so
/// it fires at 0.01: an order of magnitude above the benign noise floor, well below
/// OpenAI's line. Operators who see false positives raise it explicitly.
pub const SEXUAL_MINORS_THRESHOLD: f32 = 0.01;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    rules: [Rule; 13],
}

/// What a policy made of one result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Judgement {
    pub blocked: CategorySet,
    pub flagged: CategorySet,
}

impl Default for Policy {
    /// Safe by default: every category blocks at the endpoint's `flagged`, and
    /// `sexual/minors` blocks at a low score threshold.
    fn default() -> Self {
        let mut rules = [Rule {
            threshold: None,
            action: Action::Block,
        }; 13];
        if let Some(i) = super::categories::index_of("sexual/minors") {
            rules[i].threshold = Some(SEXUAL_MINORS_THRESHOLD);
        }
        Policy { rules }
    }
}

impl Policy {
    pub fn rule(&self, index: usize) -> Rule {
        self.rules[index]
    }

    pub fn set(&mut self, index: usize, rule: Rule) {
        self.rules[index] = rule;
    }

    pub fn judge(&self, scores: &Scores) -> Judgement {
        let mut out = Judgement::default();
        for (i, rule) in self.rules.iter().enumerate() {
            let fired = match rule.threshold {
                Some(t) => scores.scores[i] >= t,
                None => scores.flagged.contains(i),
            };
            if !fired {
                continue;
            }
            match rule.action {
                Action::Block => out.blocked.insert(i),
                Action::Flag => out.flagged.insert(i),
                Action::Allow => {}
            }
        }
        out
    }

    /// A stricter copy for lockdown: score thresholds times `factor`; rules that trust the
    /// endpoint's `flagged` also fire at `score_line`. Ignored categories stay ignored.
    pub fn lowered(&self, factor: f32, score_line: f32) -> Policy {
        let mut out = self.clone();
        for rule in &mut out.rules {
            rule.threshold = Some(match rule.threshold {
                Some(t) => t * factor,
                None => score_line,
            });
        }
        out
    }

    /// `judge` under lockdown: what either policy fires, so lowering never lets through
    /// what the normal policy would stop (a `flagged` below the score line still fires).
    pub fn judge_lowered(&self, lowered: &Policy, scores: &Scores) -> Judgement {
        let normal = self.judge(scores);
        let strict = lowered.judge(scores);
        let blocked = CategorySet(normal.blocked.0 | strict.blocked.0);
        Judgement {
            blocked,
            flagged: CategorySet((normal.flagged.0 | strict.flagged.0) & !blocked.0),
        }
    }

    /// Names of categories whose rule differs from the default, for logs.
    pub fn customised(&self) -> Vec<&'static str> {
        let default = Policy::default();
        (0..CATEGORIES.len())
            .filter(|i| self.rules[*i] != default.rules[*i])
            .map(|i| CATEGORIES[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::categories::index_of;
    use super::*;

    fn scores(category: &str, score: f32, flagged: bool) -> Scores {
        let mut s = Scores::default();
        let i = index_of(category).unwrap_or(0);
        s.scores[i] = score;
        if flagged {
            s.flagged.insert(i);
        }
        s
    }

    #[test]
    fn default_blocks_at_flagged_and_minors_at_a_low_score() {
        let policy = Policy::default();
        assert!(policy
            .judge(&scores("violence", 0.97, true))
            .blocked
            .contains(11));
        // A high score the endpoint did not flag passes on a `flagged` rule...
        assert!(policy
            .judge(&scores("violence", 0.6, false))
            .blocked
            .is_empty());
        // ...but sexual/minors fires on score alone.
        let j = policy.judge(&scores("sexual/minors", 0.02, false));
        assert_eq!(j.blocked.names(), vec!["sexual/minors"]);
        assert!(policy
            .judge(&scores("sexual/minors", 0.0001, false))
            .blocked
            .is_empty());
    }

    #[test]
    fn flag_and_allow_actions_and_custom_thresholds() {
        let mut policy = Policy::default();
        let v = index_of("violence").unwrap_or(0);
        policy.set(
            v,
            Rule {
                threshold: Some(0.5),
                action: Action::Flag,
            },
        );
        let j = policy.judge(&scores("violence", 0.6, false));
        assert!(j.blocked.is_empty());
        assert_eq!(j.flagged.names(), vec!["violence"]);
        policy.set(
            v,
            Rule {
                threshold: None,
                action: Action::Allow,
            },
        );
        assert_eq!(
            policy.judge(&scores("violence", 0.97, true)),
            Judgement::default()
        );
        assert_eq!(policy.customised(), vec!["violence"]);
    }

    #[test]
    fn lowered_policy_fires_earlier_and_never_later() {
        let policy = Policy::default();
        let lowered = policy.lowered(0.5, 0.4);
        // 0.45 violence, not flagged: passes normally, blocks in lockdown.
        let s = scores("violence", 0.45, false);
        assert!(policy.judge(&s).blocked.is_empty());
        assert_eq!(
            policy.judge_lowered(&lowered, &s).blocked.names(),
            vec!["violence"]
        );
        // Flagged at a low score still blocks in lockdown.
        let s = scores("hate", 0.2, true);
        assert_eq!(
            policy.judge_lowered(&lowered, &s).blocked.names(),
            vec!["hate"]
        );
        // sexual/minors threshold halves.
        let s = scores("sexual/minors", 0.006, false);
        assert!(policy.judge(&s).blocked.is_empty());
        assert!(!policy.judge_lowered(&lowered, &s).blocked.is_empty());
    }
}
