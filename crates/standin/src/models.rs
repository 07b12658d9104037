//! `GET /v1/models` and `GET /v1/models/{id}`: a fixed catalogue of well-known model ids.

use crate::errors::ApiError;
use crate::routes::json;
use axum::response::Response;
use serde_json::{json, Value};

/// The models the stand-in lists, with their `created` times.
const MODELS: &[(&str, u64)] = &[
    ("gpt-4o-mini", 1_721_172_741),
    ("gpt-4o", 1_715_367_049),
    ("gpt-4.1", 1_744_316_542),
    ("gpt-4.1-mini", 1_744_318_173),
    ("gpt-5", 1_754_425_777),
    ("gpt-5-mini", 1_754_425_928),
    ("o3-mini", 1_737_146_383),
    ("gpt-3.5-turbo-instruct", 1_692_901_427),
    ("text-embedding-3-small", 1_705_948_997),
    ("text-embedding-3-large", 1_705_953_180),
    ("omni-moderation-latest", 1_731_689_265),
    ("gpt-image-1", 1_745_517_030),
    ("dall-e-3", 1_698_785_189),
];

fn model((id, created): &(&str, u64)) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "openai"})
}

/// `GET /v1/models`.
pub(crate) fn list() -> Response {
    let data: Vec<Value> = MODELS.iter().map(model).collect();
    json(&json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`.
pub(crate) fn get(id: &str) -> Result<Response, ApiError> {
    MODELS
        .iter()
        .find(|(known, _)| *known == id)
        .map(|entry| json(&model(entry)))
        .ok_or_else(|| {
            ApiError::not_found(
                format!("The model '{id}' does not exist"),
                "model_not_found",
            )
            .param("model")
        })
}
