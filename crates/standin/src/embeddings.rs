//! `POST /v1/embeddings`: a `list` of deterministic unit vectors, one per input item, as floats or base64.

use crate::errors::{check_range, parse, ApiError};
use crate::routes::{json, served};
use crate::text;
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Vector length when the request names no `dimensions`.
const DEFAULT_DIMENSIONS: i64 = 8;
/// Largest `dimensions` accepted (text-embedding-3-large's size).
const MAX_DIMENSIONS: i64 = 3072;
/// Most input items in one request, as OpenAI allows.
const MAX_ITEMS: usize = 2048;

#[derive(Debug, Deserialize)]
struct Request {
    model: Option<String>,
    input: Option<Value>,
    dimensions: Option<i64>,
    encoding_format: Option<String>,
}

/// One input item: text, or a token array.
enum Item {
    Text(String),
    Tokens(Vec<i64>),
}

impl Item {
    fn seed(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |byte: u8| {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        };
        match self {
            Item::Text(text) => text.bytes().for_each(&mut eat),
            Item::Tokens(tokens) => tokens
                .iter()
                .flat_map(|token| token.to_le_bytes())
                .for_each(&mut eat),
        }
        hash
    }

    fn tokens(&self) -> u64 {
        match self {
            Item::Text(text) => text::tokens(text).max(1),
            Item::Tokens(tokens) => tokens.len() as u64,
        }
    }
}

/// Answers one embeddings request.
pub(crate) fn create(body: &[u8]) -> Result<Response, ApiError> {
    let request: Request = parse(body)?;
    let model = request.model.ok_or_else(|| ApiError::missing("model"))?;
    let items = items(request.input.as_ref())?;
    let dimensions = request.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    check_range("dimensions", dimensions, 1, MAX_DIMENSIONS)?;
    let dimensions = usize::try_from(dimensions).unwrap_or(8);
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "Invalid value for 'encoding_format': expected 'float' or 'base64', got '{other}'."
            ))
            .param("encoding_format"))
        }
    };

    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let vector = vector(item.seed(), dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = items.iter().map(Item::tokens).sum();
    let answer = json(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }));
    Ok(served(
        answer,
        crate::org::UsageKind::Embeddings,
        &model,
        tokens,
        0,
    ))
}

/// A deterministic unit vector for `seed`.
fn vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dimensions as u64)
        .map(|d| {
            let bits = text::mix(seed ^ text::mix(d));
            (bits >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::EPSILON);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// The input items: a string, strings, a token array, or token arrays.
fn items(input: Option<&Value>) -> Result<Vec<Item>, ApiError> {
    let invalid = || {
        ApiError::invalid_request(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        )
    };
    let tokens = |items: &[Value]| -> Option<Vec<i64>> {
        if items.is_empty() {
            return None;
        }
        items.iter().map(Value::as_i64).collect()
    };
    let items = match input {
        None | Some(Value::Null) => return Err(ApiError::missing("input")),
        Some(Value::String(text)) if text.is_empty() => return Err(invalid()),
        Some(Value::String(text)) => vec![Item::Text(text.clone())],
        Some(Value::Array(items)) if items.is_empty() => return Err(invalid()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Item::Tokens(tokens(items).ok_or_else(invalid)?)]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) if !text.is_empty() => Some(Item::Text(text.clone())),
                Value::Array(inner) => tokens(inner).map(Item::Tokens),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?,
        Some(_) => return Err(invalid()),
    };
    if items.len() > MAX_ITEMS {
        return Err(ApiError::invalid_request(format!(
            "Invalid 'input': maximum length {MAX_ITEMS}, but got {} items.",
            items.len()
        ))
        .param("input"));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn vectors_are_deterministic_units() {
        let a = vector(Item::Text("hello".into()).seed(), 8);
        let b = vector(Item::Text("hello".into()).seed(), 8);
        let c = vector(Item::Text("other".into()).seed(), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn reads_every_input_shape() {
        assert_eq!(items(Some(&json!("a"))).unwrap().len(), 1);
        assert_eq!(items(Some(&json!(["a", "b", "c"]))).unwrap().len(), 3);
        assert_eq!(items(Some(&json!([1, 2, 3]))).unwrap().len(), 1);
        assert_eq!(items(Some(&json!([[1, 2], [3]]))).unwrap().len(), 2);
        assert!(items(Some(&json!(""))).is_err());
        assert!(items(Some(&json!([]))).is_err());
        assert!(items(Some(&json!([{"a": 1}]))).is_err());
        assert!(items(None).is_err());
    }
}
