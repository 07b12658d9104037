//! The operator API under `/admin/v1` on the admin listener: bearer-token protected, JSON
//! in and out, errors in OpenAI's envelope, every call recorded as an `admin` event.

mod audit;
pub mod auth;
mod cases;
pub mod envelope;
pub mod guessing;
mod key_hygiene;
mod keys;
mod overview;
mod reload;
mod report;
mod risk;
mod store_guard;
mod upstream_keys;
pub use upstream_keys::row as upstream_key_row;
mod users;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::gateway::Gateway;

pub use auth::AdminTokens;
pub use users::user_json;

/// The dashboard: one self-contained page (no CDN); it asks for the admin token and
/// calls the API below with it.
pub fn dashboard_routes() -> Router<Arc<Gateway>> {
    Router::new().route("/dashboard", get(dashboard)).route(
        "/",
        get(|| async { axum::response::Redirect::temporary("/dashboard") }),
    )
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("dashboard.html"),
    )
}

/// The API's routes, already behind the token check.
pub fn routes(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin/v1/cases", get(cases))
        .route("/admin/v1/cases/{case_id}", get(cases::show))
        .route("/admin/v1/audit/verify", get(audit::verify))
        .route("/admin/v1/summary", get(overview::summary))
        .route("/admin/v1/risk", get(risk::risk))
        .route("/admin/v1/report", get(report::report))
        .route(
            "/admin/v1/upstream-keys",
            get(upstream_keys::list).post(upstream_keys::add),
        )
        .route(
            "/admin/v1/upstream-keys/{name}/activate",
            post(upstream_keys::activate),
        )
        .route(
            "/admin/v1/upstream-keys/{name}/retire",
            post(upstream_keys::retire),
        )
        .route("/admin/v1/upstream-keys/hygiene", get(key_hygiene::status))
        .route(
            "/admin/v1/upstream-keys/hygiene/run",
            post(key_hygiene::run),
        )
        .route(
            "/admin/v1/upstream-keys/{name}/rotate",
            post(key_hygiene::rotate),
        )
        .route(
            "/admin/v1/upstream-keys/{name}/schedule",
            post(key_hygiene::schedule),
        )
        .route(
            "/admin/v1/lockdown",
            get(risk::lockdown_status).post(risk::lockdown_switch),
        )
        .route("/admin/v1/config", get(reload::status))
        .route("/admin/v1/config/reload", post(reload::reload))
        .route("/admin/v1/events", get(overview::events))
        .route("/admin/v1/keys", get(keys::list).post(keys::create))
        .route("/admin/v1/keys/{name}/revoke", post(keys::revoke))
        .route("/admin/v1/keys/{name}/rotate", post(keys::rotate))
        .route("/admin/v1/users", get(users::list))
        .route("/admin/v1/users/{key}/{user}", get(users::show))
        .route("/admin/v1/users/{key}/{user}/ban", post(users::ban))
        .route("/admin/v1/users/{key}/{user}/suspend", post(users::suspend))
        .route("/admin/v1/users/{key}/{user}/unban", post(users::unban))
        .route("/admin/v1/users/{key}/{user}/reset", post(users::reset))
        // Layers run outside in: the token is checked before the store is asked.
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            store_guard::require_store,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            gateway,
            auth::require_token,
        ))
}

/// OpenAI safety cases acted on, newest first, and deliveries not acted on yet.
async fn cases(
    axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cases = gateway
        .store
        .list_cases(500)
        .await
        .map_err(ApiError::internal)?;
    let waiting = gateway
        .store
        .unsettled_deliveries(500)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"object": "list", "data": cases, "unsettled_deliveries": waiting}),
    ))
}

/// An error in OpenAI's envelope.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A wrong or missing admin token (not a disabled API).
    pub fn is_auth_failure(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "admin API call failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The store could not complete the operation; see Warden's log.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        (
            self.status,
            Json(json!({"error": {"message": self.message, "type": kind, "param": null, "code": self.code}})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every admin route in this file appears in the OpenAPI document, and nothing else.
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/admin-api.openapi.json")).unwrap();
        let documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let source = include_str!("mod.rs");
        let routed: Vec<&str> = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .filter(|path| path.starts_with("/admin/v1"))
            .collect();
        assert!(
            routed.len() >= 10,
            "routes not found in the source: {routed:?}"
        );
        for path in &routed {
            assert!(
                documented.contains(path),
                "{path} is routed but not documented"
            );
        }
        for path in documented.iter().filter(|p| p.starts_with("/admin/v1")) {
            assert!(routed.contains(path), "{path} is documented but not routed");
        }
    }
}

#[cfg(test)]
mod grafana_tests {
    #![allow(clippy::unwrap_used)]

    /// Every metric the Grafana dashboard queries is one Warden exports.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let dashboard = include_str!("../../../../docs/grafana-dashboard.json");
        let exported = [
            include_str!("../events/metrics.rs"),
            include_str!("../abuse/mod.rs"),
            include_str!("../alerts/mod.rs"),
            include_str!("../admin.rs"),
            include_str!("../proxy/metrics.rs"),
        ]
        .concat();
        let mut names: Vec<&str> = dashboard
            .split("warden_")
            .skip(1)
            .map(|rest| {
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            let base = name.trim_end_matches("_bucket").trim_end_matches("_count");
            assert!(
                exported.contains(&format!("warden_{base}")),
                "the dashboard queries warden_{name}, which nothing exports"
            );
        }
    }
}
