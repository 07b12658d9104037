//! Turns a Moderation-endpoint block into the general content refusal
//! (`error::ContentFilter`), reporting every one of the 13 category scores.

use super::categories::CATEGORIES;
use super::Hit;
use crate::error::ContentFilter;

impl From<Hit> for ContentFilter {
    fn from(hit: Hit) -> Self {
        ContentFilter {
            param: hit.param,
            categories: hit.categories.owned_names(),
            details: CATEGORIES
                .iter()
                .zip(hit.scores.scores.iter())
                .map(|(name, score)| ((*name).to_owned(), *score))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::categories::{index_of, CategorySet, Scores};
    use super::*;

    #[test]
    fn names_field_and_categories_and_reports_every_score() {
        let mut scores = Scores::default();
        let v = index_of("violence").unwrap();
        scores.scores[v] = 0.97;
        let mut categories = CategorySet::default();
        categories.insert(v);
        let block = ContentFilter::from(Hit {
            param: "messages[1].content".into(),
            categories,
            scores,
        });
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
