//! Admin calls that need the store answer 503 `store_unavailable` at once while it is
//! unreachable, instead of a 500 after the pool's acquire timeout (5 s).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::gateway::Gateway;

/// How long the store gets to answer a ping before the call is refused.
const PING: Duration = Duration::from_millis(250);

pub async fn require_store(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    // Config status and reload work from the file alone.
    if request.uri().path().starts_with("/admin/v1/config") {
        return next.run(request).await;
    }
    // Started while the store was down: its tables may not be migrated yet.
    let loaded = gateway.store_loaded.is_done();
    match tokio::time::timeout(PING, gateway.store.ping()).await {
        Ok(Ok(())) if loaded => next.run(request).await,
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The store (database) is unreachable. Warden keeps serving and spools its events; try again when /readyz reports ready.",
        )
        .into_response(),
    }
}
