//! Every error the admin listener sends is in OpenAI's envelope, also the ones axum makes
//! itself: an unknown path (404), a wrong method (405), a body that is not JSON or has the
//! wrong fields (400/415/422), a body over the limit (413).

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

/// Error bodies axum writes are short text; more is not read.
const MAX_TEXT: usize = 4096;

pub async fn errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, default) = match status {
        StatusCode::NOT_FOUND => ("unknown_url", "No admin route at this path."),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This method is not allowed on this path.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("request_too_large", "The request body is too large."),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Send the body as JSON with 'content-type: application/json'.",
        ),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => (
            "invalid_json",
            "The request body is not valid JSON of the expected shape.",
        ),
        s if s.is_server_error() => ("internal_error", "Internal error in Warden."),
        _ => ("invalid_request", "The request was refused."),
    };
    let message = if text.is_empty() {
        default.to_owned()
    } else {
        text
    };
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}
