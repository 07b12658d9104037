//! The admin listener: health and readiness for now; the operator API grows here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
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
        gateway.metrics.render(gateway.events.dropped()) + &gateway.upstream_metrics(),
    )
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
