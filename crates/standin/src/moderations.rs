//! `POST /v1/moderations`: one result per input item over all 13 categories; `FLAG:<category>`
//! flags it, `SCORE:<category>=<0..1>` gives it that score (flagged from 0.5).

use crate::errors::{parse, ApiError};
use crate::routes::json;
use crate::text;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The model named when the request names none.
const DEFAULT_MODEL: &str = "omni-moderation-latest";
/// The marker that flags a category: `FLAG:violence`, `FLAG:sexual/minors`, ….
const MARKER: &str = "FLAG:";
/// The marker that sets a category's score: `SCORE:violence=0.6`.
const SCORE_MARKER: &str = "SCORE:";
/// Where the stand-in's own `flagged` line sits for `SCORE:` markers.
const FLAGGED_FROM: f64 = 0.5;
/// Score of a flagged category.
const FLAGGED_SCORE: f64 = 0.97;
/// Score of every other category.
const CLEAN_SCORE: f64 = 0.0001;

/// The 13 categories, each with whether it also applies to images.
pub(crate) const CATEGORIES: [(&str, bool); 13] = [
    ("harassment", false),
    ("harassment/threatening", false),
    ("hate", false),
    ("hate/threatening", false),
    ("illicit", false),
    ("illicit/violent", false),
    ("self-harm", true),
    ("self-harm/intent", true),
    ("self-harm/instructions", true),
    ("sexual", true),
    ("sexual/minors", false),
    ("violence", true),
    ("violence/graphic", true),
];

#[derive(Debug, Deserialize)]
struct Request {
    model: Option<String>,
    input: Option<Value>,
}

/// One moderated item: the texts it holds and whether it holds an image.
#[derive(Debug, Default)]
struct Item {
    texts: Vec<String>,
    has_image: bool,
}

/// Answers one moderation request.
pub(crate) fn create(body: &[u8]) -> Result<Response, ApiError> {
    let request: Request = parse(body)?;
    let model = request.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let items = items(request.input.as_ref())?;
    let results: Vec<Value> = items.iter().map(result).collect();
    Ok(json(&json!({
        "id": text::id("modr-"),
        "model": model,
        "results": results,
    })))
}

/// The category named at the start of `rest` (the longest, so `self-harm/intent` beats
/// `self-harm`), and what follows it.
fn named_category(rest: &str) -> Option<(&'static str, &str)> {
    CATEGORIES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| {
            rest.get(..name.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(name))
                && !rest[name.len()..].starts_with(|c: char| {
                    c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_'
                })
        })
        .max_by_key(|name| name.len())
        .map(|name| (name, &rest[name.len()..]))
}

/// The scores `SCORE:<category>=<n>` markers in `text` set (the last one per category wins).
pub(crate) fn scored_categories(text: &str) -> Vec<(&'static str, f64)> {
    let mut scored: Vec<(&'static str, f64)> = Vec::new();
    for (at, _) in text.match_indices(SCORE_MARKER) {
        let Some((name, after)) = named_category(&text[at + SCORE_MARKER.len()..]) else {
            continue;
        };
        let Some(number) = after.strip_prefix('=') else {
            continue;
        };
        let end = number
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(number.len());
        let Some(score) = number[..end]
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..=1.0).contains(s))
        else {
            continue;
        };
        scored.retain(|(n, _)| *n != name);
        scored.push((name, score));
    }
    scored
}

/// The categories `FLAG:` markers in `text` name, in category order.
pub(crate) fn flagged_categories(text: &str) -> Vec<&'static str> {
    let mut flagged = Vec::new();
    for (at, _) in text.match_indices(MARKER) {
        let named = named_category(&text[at + MARKER.len()..]).map(|(name, _)| name);
        if let Some(name) = named {
            if !flagged.contains(&name) {
                flagged.push(name);
            }
        }
    }
    flagged.sort_by_key(|name| CATEGORIES.iter().position(|(known, _)| known == name));
    flagged
}

/// The moderation result of one item.
fn result(item: &Item) -> Value {
    let marked: Vec<&str> = item
        .texts
        .iter()
        .flat_map(|text| flagged_categories(text))
        .collect();
    let scored: Vec<(&str, f64)> = item
        .texts
        .iter()
        .flat_map(|text| scored_categories(text))
        .collect();
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    let mut any = false;
    for (name, image_capable) in CATEGORIES {
        let score = if marked.contains(&name) {
            FLAGGED_SCORE
        } else {
            scored
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .fold(CLEAN_SCORE, f64::max)
        };
        let hit = score >= FLAGGED_FROM;
        any |= hit;
        categories.insert(name.into(), json!(hit));
        scores.insert(name.into(), json!(score));
        let types = if image_capable && item.has_image {
            json!(["text", "image"])
        } else {
            json!(["text"])
        };
        applied.insert(name.into(), types);
    }
    json!({
        "flagged": any,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

/// The items of `input`: one per string; an array of parts is one item.
fn items(input: Option<&Value>) -> Result<Vec<Item>, ApiError> {
    let invalid = || {
        ApiError::invalid_request(
            "Invalid 'input': expected a string, an array of strings, or an array of text and image_url parts.",
        )
        .param("input")
    };
    match input {
        None | Some(Value::Null) => Err(ApiError::missing("input")),
        Some(Value::String(text)) => Ok(vec![Item {
            texts: vec![text.clone()],
            has_image: false,
        }]),
        Some(Value::Array(values)) if values.is_empty() => Err(invalid()),
        Some(Value::Array(values)) if values.iter().all(Value::is_string) => Ok(values
            .iter()
            .map(|value| Item {
                texts: vec![value.as_str().unwrap_or_default().to_owned()],
                has_image: false,
            })
            .collect()),
        Some(Value::Array(parts)) => {
            let mut item = Item::default();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(invalid)?;
                        item.texts.push(text.to_owned());
                    }
                    Some("image_url") => {
                        let url = part
                            .get("image_url")
                            .and_then(|image| image.get("url"))
                            .and_then(Value::as_str)
                            .ok_or_else(invalid)?;
                        // Markers in the URL flag too, so tests can flag an image input.
                        item.texts.push(url.to_owned());
                        item.has_image = true;
                    }
                    _ => return Err(invalid()),
                }
            }
            Ok(vec![item])
        }
        Some(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flags_named_categories() {
        assert_eq!(flagged_categories("FLAG:violence please"), vec!["violence"]);
        assert_eq!(
            flagged_categories("x FLAG:sexual/minors."),
            vec!["sexual/minors"]
        );
        assert_eq!(
            flagged_categories("FLAG:self-harm/intent"),
            vec!["self-harm/intent"]
        );
        assert_eq!(
            flagged_categories("FLAG:violence/graphic and FLAG:hate FLAG:hate"),
            vec!["hate", "violence/graphic"]
        );
        assert!(flagged_categories("FLAG:nonsense FLAG:hateful FLAG: violence").is_empty());
        assert!(flagged_categories("just text").is_empty());
    }

    #[test]
    fn scores_set_by_marker() {
        assert_eq!(
            scored_categories("x SCORE:violence=0.6 y"),
            vec![("violence", 0.6)]
        );
        assert!(scored_categories("SCORE:violence=2 SCORE:hate SCORE:nope=0.5").is_empty());
        let low = result(&Item {
            texts: vec!["SCORE:hate=0.3".into()],
            has_image: false,
        });
        assert_eq!(low["flagged"], json!(false));
        assert_eq!(low["category_scores"]["hate"], json!(0.3));
        let high = result(&Item {
            texts: vec!["SCORE:hate=0.6".into()],
            has_image: false,
        });
        assert_eq!(high["categories"]["hate"], json!(true));
    }

    #[test]
    fn result_has_all_categories() {
        let item = Item {
            texts: vec!["FLAG:illicit/violent".into()],
            has_image: true,
        };
        let result = result(&item);
        assert_eq!(result["flagged"], json!(true));
        for key in [
            "categories",
            "category_scores",
            "category_applied_input_types",
        ] {
            assert_eq!(result[key].as_object().unwrap().len(), 13);
        }
        assert_eq!(result["categories"]["illicit/violent"], json!(true));
        assert_eq!(result["categories"]["illicit"], json!(false));
        assert_eq!(result["category_scores"]["illicit/violent"], json!(0.97));
        assert_eq!(
            result["category_applied_input_types"]["violence"],
            json!(["text", "image"])
        );
        assert_eq!(
            result["category_applied_input_types"]["hate"],
            json!(["text"])
        );
    }

    #[test]
    fn one_result_per_string_one_for_parts() {
        assert_eq!(items(Some(&json!(["a", "b"]))).unwrap().len(), 2);
        let parts = json!([
            {"type": "text", "text": "FLAG:violence"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]);
        let parsed = items(Some(&parts)).unwrap();
        assert_eq!(parsed.len(), 1);
        assert!(parsed[0].has_image);
        assert!(items(Some(&json!([]))).is_err());
        assert!(items(Some(&json!([{"type": "audio"}]))).is_err());
    }
}
