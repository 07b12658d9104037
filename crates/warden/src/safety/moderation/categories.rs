//! The Moderation endpoint's 13 categories and one input's result, compact enough to cache.

use serde_json::Value;

/// Every category the endpoint reports, in the order OpenAI documents them.
pub const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

pub fn index_of(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == name)
}

/// A set of categories as a bit mask (bit `i` is `CATEGORIES[i]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategorySet(pub u16);

impl CategorySet {
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<&'static str> {
        (0..CATEGORIES.len())
            .filter(|i| self.contains(*i))
            .map(|i| CATEGORIES[i])
            .collect()
    }

    /// [`CategorySet::names`] as owned strings, for findings and refusals that keep them.
    pub fn owned_names(self) -> Vec<String> {
        self.names().into_iter().map(str::to_owned).collect()
    }
}

/// One moderated input's verdict from the endpoint: its own `flagged` booleans and the
/// raw scores. Policy is applied later, so one cached result serves input and output
/// policies alike.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub flagged: CategorySet,
    pub scores: [f32; 13],
}

impl Scores {
    /// Reads one entry of `results`; `None` when it is not shaped like one. Legacy models
    /// answer `null` for the `illicit` pair: that reads as "not flagged, score 0".
    pub fn from_result(result: &Value) -> Option<Scores> {
        let categories = result.get("categories")?.as_object()?;
        let scores = result.get("category_scores")?.as_object()?;
        let mut out = Scores::default();
        for (i, name) in CATEGORIES.iter().enumerate() {
            if categories.get(*name).and_then(Value::as_bool) == Some(true) {
                out.flagged.insert(i);
            }
            out.scores[i] = scores.get(*name).and_then(Value::as_f64).unwrap_or(0.0) as f32;
        }
        Some(out)
    }

    /// The worst of two results: a field split into chunks is as bad as its worst chunk.
    pub fn worst(self, other: Scores) -> Scores {
        let mut scores = self.scores;
        for (mine, theirs) in scores.iter_mut().zip(other.scores) {
            *mine = mine.max(theirs);
        }
        Scores {
            flagged: CategorySet(self.flagged.0 | other.flagged.0),
            scores,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_result_and_tolerates_null_categories() {
        let result = json!({
            "flagged": true,
            "categories": {"violence": true, "illicit": null, "hate": false},
            "category_scores": {"violence": 0.97, "hate": 0.01, "illicit": null},
        });
        let scores = Scores::from_result(&result).unwrap();
        assert_eq!(scores.flagged.names(), vec!["violence"]);
        assert!((scores.scores[index_of("hate").unwrap()] - 0.01).abs() < 1e-6);
        assert_eq!(scores.scores[index_of("illicit").unwrap()], 0.0);
        assert!(Scores::from_result(&json!({"flagged": false})).is_none());
    }

    #[test]
    fn worst_keeps_the_highest_score_and_every_flag() {
        let mut a = Scores::default();
        a.scores[0] = 0.5;
        a.flagged.insert(0);
        let mut b = Scores::default();
        b.scores[0] = 0.2;
        b.scores[3] = 0.9;
        b.flagged.insert(3);
        let w = a.worst(b);
        assert_eq!(w.scores[0], 0.5);
        assert_eq!(w.scores[3], 0.9);
        assert_eq!(w.flagged.names(), vec!["harassment", "hate/threatening"]);
    }
}
