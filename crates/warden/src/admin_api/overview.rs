//! What the dashboard shows: account health over a window and recent events.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::events::now_ms;
use crate::gateway::Gateway;
use crate::store::EventFilter;

#[derive(Deserialize)]
pub struct Window {
    pub hours: Option<f64>,
}

pub fn since(window: &Window) -> (i64, f64) {
    let hours = window
        .hours
        .filter(|h| h.is_finite() && *h > 0.0)
        .unwrap_or(24.0)
        .min(24.0 * 90.0);
    (now_ms() - (hours * 3_600_000.0) as i64, hours)
}

pub async fn summary(
    State(gateway): State<Arc<Gateway>>,
    Query(window): Query<Window>,
) -> Result<Json<Value>, ApiError> {
    let (since_ms, hours) = since(&window);
    let store = &gateway.store;
    // About 60 bars whatever the window.
    let bucket_ms = ((hours * 3_600_000.0 / 60.0) as i64).max(60_000);
    let sanctioned = store
        .list_users(true, 10_000)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "object": "summary",
        "window_hours": hours,
        "outcomes": store.outcomes_since(since_ms).await.map_err(ApiError::internal)?,
        "refusals": store.refusals_since(since_ms).await.map_err(ApiError::internal)?,
        "strike_categories": store.strike_categories_since(since_ms).await.map_err(ApiError::internal)?,
        "fail_opens": store.fail_opens_since(since_ms).await.map_err(ApiError::internal)?,
        "timeline": {
            "bucket_ms": bucket_ms,
            "buckets": store.timeline(since_ms, bucket_ms).await.map_err(ApiError::internal)?,
        },
        "banned": sanctioned.iter().filter(|u| u.status == "banned").count(),
        "suspended": sanctioned.iter().filter(|u| u.status == "suspended").count(),
    })))
}

pub async fn events(
    State(gateway): State<Arc<Gateway>>,
    Query(filter): Query<EventFilter>,
) -> Result<Json<Value>, ApiError> {
    let rows = gateway
        .store
        .events(&filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"object": "list", "data": rows})))
}
