//! `GET /admin/v1/config` (where the running config came from) and
//! `POST /admin/v1/config/reload` (validate the file again and swap it in).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::ApiError;
use crate::gateway::Gateway;
use crate::reload::{reload as reload_config, Trigger};

pub async fn status(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(gateway.reloads.status(gateway.snapshot().generation))
}

/// 200 with the outcome when the file was applied; 422 with every problem (and the
/// OpenAI error envelope) when it was rejected and the running config kept serving.
pub async fn reload(State(gateway): State<Arc<Gateway>>) -> Response {
    let Some(outcome) = reload_config(&gateway, Trigger::AdminApi).await else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "no_config_file",
            "Warden runs on its embedded defaults (no --config file): there is nothing to reload.",
        )
        .into_response();
    };
    if outcome.reloaded {
        return Json(outcome).into_response();
    }
    let summary = outcome
        .problems
        .iter()
        .map(|p| {
            if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut body = json!({
        "error": {
            "message": format!(
                "The config file has {} problem(s); the running config (generation {}) keeps serving. {summary}",
                outcome.problems.len(),
                outcome.generation
            ),
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_config",
        }
    });
    if let (Some(body), Ok(serde_json::Value::Object(fields))) =
        (body.as_object_mut(), serde_json::to_value(&outcome))
    {
        body.extend(fields);
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}
