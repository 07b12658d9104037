//! The admin listener: health and readiness for now; the operator API grows here.

use std::fmt::Write as _;
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

pub fn router(gateway: Arc<Gateway>, with_webhooks: bool) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if with_webhooks {
        router = router.merge(webhook_routes());
    }
    router
        .merge(crate::admin_api::routes(gateway.clone()))
        .merge(crate::admin_api::dashboard_routes())
        .layer(axum::middleware::map_response(
            crate::admin_api::envelope::errors,
        ))
        .with_state(gateway)
}

/// The admin listener, with the public one's connection bounds and its own cap: a flood
/// on the public port cannot keep health checks or the operator out.
fn webhook_routes() -> Router<Arc<Gateway>> {
    Router::new().route(
        crate::notices::receiver::PATH,
        axum::routing::post(crate::notices::receiver::receive)
            .layer(axum::extract::DefaultBodyLimit::max(
                crate::notices::receiver::MAX_BODY,
            ))
            .layer(axum::middleware::from_fn(
                crate::notices::receiver::limit_body,
            )),
    )
}

/// The webhook receiver alone (`[openai_notices] listen`), plus a health check.
pub fn webhook_router(gateway: Arc<Gateway>) -> Router {
    webhook_routes()
        .route("/healthz", get(healthz))
        .layer(axum::middleware::map_response(
            crate::admin_api::envelope::errors,
        ))
        .with_state(gateway)
}

pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    gate: Arc<crate::listener::gate::Gate>,
    settings: crate::listener::Settings,
    stopped: watch::Receiver<bool>,
) {
    let with_webhooks = gateway.notices.config.listen.is_none();
    let router = router(gateway, with_webhooks);
    serve_router(listener, router, gate, settings, stopped).await;
}

/// Serves an axum router with the listener defences (see `listener`).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    gate: Arc<crate::listener::gate::Gate>,
    settings: crate::listener::Settings,
    stopped: watch::Receiver<bool>,
) {
    let make = move |peer: std::net::SocketAddr| {
        // Handlers that rate-limit by client IP read it as axum's `ConnectInfo`.
        let router = router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        hyper_util::service::TowerToHyperService::new(router)
    };
    crate::listener::serve(listener, gate, settings, make, stopped).await;
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
            let mut text =
                gateway.metrics.render(gateway.events.dropped()) + &gateway.upstream_metrics();
            if let Some(spool) = &gateway.events.options().spool {
                let _ = writeln!(
                    text,
                    "# HELP warden_events_spool_bytes Bytes in the local event spool (events not yet committed).\n# TYPE warden_events_spool_bytes gauge\nwarden_events_spool_bytes {}\nwarden_events_spool_max_bytes {}",
                    spool.bytes(),
                    spool.max_bytes()
                );
            }
            gateway.abuse.render_metrics(&mut text);
            gateway.alerts.render_metrics(&mut text);
            gateway
                .reloads
                .render_metrics(gateway.snapshot().generation, &mut text);
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

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the store: it must answer within 100 ms always.
const READY_PING: std::time::Duration = std::time::Duration::from_millis(50);

/// Ready when the store answers and its start-up state is read: without it keys and
/// events cannot be trusted. `[storage] ready_without_store` reports ready meanwhile
/// (Warden serves either way), as long as requests can be served at all.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    // A degraded limiter still serves (per-process limits), so it does not fail readiness.
    let limits = match gateway.limiter.degraded() {
        None => json!({ "mode": "local" }),
        Some(degraded) => json!({ "mode": "shared", "degraded": degraded }),
    };
    // Bounded: a stopped database must not hold a probe past its own timeout.
    let ping = tokio::time::timeout(READY_PING, gateway.store.ping()).await;
    let store = ping
        .map_err(|_| format!("did not answer within {READY_PING:?}"))
        .and_then(|answer| answer.map_err(|err| format!("is unreachable ({err})")))
        .and_then(|()| match gateway.store_loaded.is_done() {
            true => Ok(()),
            false => Err("answers again; its start-up state is being read".to_owned()),
        });
    // No upstream key at all: every request would fail, and no retry will fix it.
    let no_upstream_key = gateway.upstream.defaults().key.is_none()
        && !gateway.snapshot().keys.any_own_upstream_key();
    let backend = gateway.store.backend();
    let unavailable = |body: serde_json::Value| (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    match store {
        _ if no_upstream_key => unavailable(json!({
            "status": "unavailable",
            "reason": "upstream_key_missing",
            "message": "No upstream OpenAI key is configured: set the variable named by [upstream] api_key_env (OPENAI_API_KEY by default), api_key_file, or activate a vault key.",
            "store": backend,
        })),
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "store": backend, "limits": limits })),
        ),
        Err(err) if gateway.ready_without_store && gateway.safety_ids.ready() => (
            StatusCode::OK,
            Json(json!({
                "status": "degraded",
                "reason": "store_unavailable",
                "message": format!("The store {err}; serving config keys and spooling events ([storage] ready_without_store = true)."),
                "store": backend,
                "limits": limits,
            })),
        ),
        Err(err) => {
            tracing::warn!(%err, "readiness: store unavailable");
            unavailable(json!({
                "status": "unavailable",
                "reason": "store_unavailable",
                "message": format!("The store {err}."),
                "store": backend,
            }))
        }
    }
}
