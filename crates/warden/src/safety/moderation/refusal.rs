//! What a blocked input tells the client: which field, which categories (never the
//! content), and Azure OpenAI's `innererror.content_filter_result` shape, which Azure
//! clients already understand.
//!
//! TODO(merge): the local-filters work adds `WardenError::ContentFiltered`; this is the
//! moderation side's minimal version (`WardenError::ModerationBlocked`) until they merge.

use serde_json::{json, Map, Value};

use super::categories::{CategorySet, Scores, CATEGORIES};
use super::Hit;

#[derive(Debug, Clone, PartialEq)]
pub struct ContentBlock {
    pub param: String,
    pub categories: CategorySet,
    pub scores: Scores,
}

impl From<Hit> for ContentBlock {
    fn from(hit: Hit) -> Self {
        ContentBlock {
            param: hit.param,
            categories: hit.categories,
            scores: hit.scores,
        }
    }
}

impl ContentBlock {
    pub fn message(&self) -> String {
        format!(
            "Your request was blocked by the content policy: '{}' was flagged for {}.",
            self.param,
            self.categories.names().join(", ")
        )
    }

    /// `{"code": "ResponsibleAIPolicyViolation", "content_filter_result": {category:
    /// {"filtered", "score"}}}` over all 13 categories.
    pub fn inner_error(&self) -> Value {
        let mut result = Map::new();
        for (i, name) in CATEGORIES.iter().enumerate() {
            result.insert(
                (*name).to_owned(),
                json!({
                    "filtered": self.categories.contains(i),
                    "score": f64::from(self.scores.scores[i]),
                }),
            );
        }
        json!({
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": result,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::categories::index_of;
    use super::*;

    #[test]
    fn names_field_and_categories_and_reports_every_score() {
        let mut scores = Scores::default();
        let v = index_of("violence").unwrap();
        scores.scores[v] = 0.97;
        let mut categories = CategorySet::default();
        categories.insert(v);
        let block = ContentBlock {
            param: "messages[1].content".into(),
            categories,
            scores,
        };
        assert!(block.message().contains("'messages[1].content'"));
        assert!(block.message().contains("violence"));
        let inner = block.inner_error();
        let result = inner["content_filter_result"].as_object().unwrap();
        assert_eq!(result.len(), 13);
        assert_eq!(result["violence"]["filtered"], true);
        assert_eq!(result["hate"]["filtered"], false);
        assert!((result["violence"]["score"].as_f64().unwrap() - 0.97).abs() < 1e-6);
    }
}
