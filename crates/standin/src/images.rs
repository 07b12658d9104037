//! `POST /v1/images/generations`: `n` copies of a 1×1 PNG, as `b64_json` (or a data URL when asked for `url`).

use crate::errors::{check_range, parse, ApiError};
use crate::routes::{json, served};
use crate::text;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

/// A valid 1×1 RGBA PNG, base64-encoded.
pub(crate) const PNG_1X1: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

#[derive(Debug, Deserialize)]
struct Request {
    prompt: Option<String>,
    n: Option<i64>,
    response_format: Option<String>,
}

/// Answers one image generation request.
pub(crate) fn create(body: &[u8]) -> Result<Response, ApiError> {
    let request: Request = parse(body)?;
    let prompt = request.prompt.ok_or_else(|| ApiError::missing("prompt"))?;
    let n = request.n.unwrap_or(1);
    check_range("n", n, 1, 10)?;
    let as_url = match request.response_format.as_deref() {
        None | Some("b64_json") => false,
        Some("url") => true,
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "Invalid value for 'response_format': expected 'url' or 'b64_json', got '{other}'."
            ))
            .param("response_format"))
        }
    };
    let image = if as_url {
        json!({"url": format!("data:image/png;base64,{PNG_1X1}"), "revised_prompt": null})
    } else {
        json!({"b64_json": PNG_1X1, "revised_prompt": null})
    };
    let data: Vec<Value> = (0..n).map(|_| image.clone()).collect();
    let input_tokens = text::tokens(&prompt);
    let output_tokens = 16 * n.unsigned_abs();
    // The Images usage API counts images, not tokens: carried as `output_tokens` there.
    let images = n.unsigned_abs();
    let answer = json(&json!({
        "created": text::now(),
        "data": data,
        "output_format": "png",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }));
    Ok(served(
        answer,
        crate::org::UsageKind::Images,
        "gpt-image-1",
        0,
        images,
    ))
}
