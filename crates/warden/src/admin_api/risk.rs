//! The account's risk score and the lockdown switch.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::gateway::Gateway;

/// The account risk score with its reasons and every detector's findings.
pub async fn risk(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let report = gateway.abuse.risk();
    Json(json!({
        "score": report.score,
        "report": &*report,
        "lockdown": gateway.lockdown.state(),
    }))
}

pub async fn lockdown_status(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(gateway.lockdown.state())
}

#[derive(serde::Deserialize)]
pub struct LockdownSwitch {
    on: bool,
    reason: Option<String>,
}

/// Stores the switch for every replica and applies it here at once.
pub async fn lockdown_switch(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<LockdownSwitch>, axum::extract::rejection::JsonRejection>,
) -> axum::response::Response {
    let Ok(Json(switch)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {
                "message": "Send a JSON body like {\"on\": true, \"reason\": \"OpenAI warning e-mail\"}.",
                "type": "invalid_request_error", "param": "on", "code": "invalid_json"}})),
        )
            .into_response();
    };
    let state = crate::lockdown::LockdownState::new(switch.on, "admin", switch.reason);
    if let Err(err) = crate::lockdown::save(&gateway.store, &state).await {
        tracing::error!(%err, "could not store the lockdown state");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {
                "message": "The store is unavailable; lockdown was not changed.",
                "type": "server_error", "param": null, "code": "store_unavailable"}})),
        )
            .into_response();
    }
    gateway
        .lockdown
        .apply(state.clone(), &gateway.limiter, &|| {
            gateway.snapshot().moderator.clone()
        });
    Json(state).into_response()
}
