//! The admin listener: health and readiness for now; the operator API grows here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::Gateway;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/v1/risk", get(risk))
        .route("/admin/v1/lockdown", get(lockdown_status))
        .route("/admin/v1/lockdown", post(lockdown_switch))
        .with_state(gateway)
}

pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Err(err) = axum::serve(listener, router(gateway))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%err, "admin listener failed");
    }
}

/// Prometheus text format; counters come from the event log, so they lag requests by a
/// batch (milliseconds).
async fn metrics(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = gateway.metrics.render(gateway.events.dropped());
            gateway.abuse.render_metrics(&mut text);
            gateway.alerts.render_metrics(&mut text);
            text.push_str("# HELP warden_lockdown 1 while lockdown mode is on.\n# TYPE warden_lockdown gauge\n");
            text.push_str(if gateway.lockdown.is_on() {
                "warden_lockdown 1\n"
            } else {
                "warden_lockdown 0\n"
            });
            text
        },
    )
}

/// The account risk score with its reasons and every detector's findings.
async fn risk(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let report = gateway.abuse.risk();
    Json(json!({
        "score": report.score,
        "report": &*report,
        "lockdown": gateway.lockdown.state(),
    }))
}

async fn lockdown_status(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(gateway.lockdown.state())
}

#[derive(serde::Deserialize)]
struct LockdownSwitch {
    on: bool,
    reason: Option<String>,
}

/// Stores the switch for every replica and applies it here at once.
async fn lockdown_switch(
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
        .apply(state.clone(), &gateway.limiter, &gateway.moderator);
    Json(state).into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers: without it keys and events cannot be trusted.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    // A degraded limiter still serves (per-process limits), so it does not fail readiness.
    let limits = match gateway.limiter.degraded() {
        None => json!({ "mode": "local" }),
        Some(degraded) => json!({ "mode": "shared", "degraded": degraded }),
    };
    match gateway.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "store": gateway.store.backend(), "limits": limits })),
        ),
        Err(err) => {
            tracing::warn!(%err, "readiness: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "store": gateway.store.backend() })),
            )
        }
    }
}
