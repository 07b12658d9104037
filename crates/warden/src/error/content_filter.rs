//! What a blocked input tells the client, for any content check (local filters or the
//! Moderation endpoint): the field, the categories that fired (never the content), and
//! Azure OpenAI's `innererror.content_filter_result` shape that Azure clients handle.

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ContentFilter {
    /// The field, in OpenAI's `param` notation: `messages[2].content`.
    pub param: String,
    /// Categories that blocked, in the order they fired.
    pub categories: Vec<String>,
    /// Every category checked, with its score (0-1): blocked ones and those only reported.
    pub details: Vec<(String, f32)>,
}

impl ContentFilter {
    pub fn message(&self) -> String {
        format!(
            "Your request was blocked by Warden's content filter: '{}' was flagged for {}.",
            self.param,
            self.categories.join(", ")
        )
    }

    /// `{"code": "ResponsibleAIPolicyViolation", "content_filter_result": {category:
    /// {"filtered": bool, "score": f32}}}`.
    pub fn inner_error(&self) -> Value {
        let mut result = Map::new();
        for (category, score) in &self.details {
            result.insert(
                category.clone(),
                json!({
                    "filtered": self.categories.contains(category),
                    // Four places: an f32 widened as is prints as 0.9300000071525574.
                    "score": (f64::from(*score) * 1e4).round() / 1e4,
                }),
            );
        }
        for category in &self.categories {
            if !result.contains_key(category) {
                result.insert(category.clone(), json!({"filtered": true}));
            }
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
    use super::*;

    #[test]
    fn names_field_and_categories_never_content() {
        let block = ContentFilter {
            param: "messages[2].content".into(),
            categories: vec!["jailbreak".into()],
            details: vec![("jailbreak".into(), 0.93), ("secrets".into(), 0.0)],
        };
        let message = block.message();
        assert!(message.contains("'messages[2].content'") && message.contains("jailbreak"));
        let inner = block.inner_error();
        assert_eq!(inner["code"], "ResponsibleAIPolicyViolation");
        let result = &inner["content_filter_result"];
        assert_eq!(result["jailbreak"]["filtered"], true);
        // Regression: the widened f32 printed as 0.9300000071525574.
        assert_eq!(result["jailbreak"]["score"].to_string(), "0.93");
        assert_eq!(result["secrets"]["filtered"], false);
    }
}
