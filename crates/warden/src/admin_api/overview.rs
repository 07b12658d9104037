//! What the dashboard shows: account health over a window, recent events, keys in use.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::events::{now_ms, EventRecord};
use crate::gateway::Gateway;
use crate::store::EventFilter;

#[derive(Deserialize)]
pub struct Window {
    hours: Option<f64>,
}

fn since(window: &Window) -> (i64, f64) {
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

pub async fn keys(
    State(gateway): State<Arc<Gateway>>,
    Query(window): Query<Window>,
) -> Result<Json<Value>, ApiError> {
    let (since_ms, _) = since(&window);
    let usage = gateway
        .store
        .key_usage_since(since_ms)
        .await
        .map_err(ApiError::internal)?;
    let stored = gateway
        .store
        .list_keys()
        .await
        .map_err(ApiError::internal)?;
    let mut data: Vec<Value> = Vec::new();
    let declared: Vec<String> = gateway
        .snapshot()
        .keys
        .declared_names()
        .map(str::to_owned)
        .collect();
    let names = declared.iter().map(|n| (n.clone(), "config", None)).chain(
        stored
            .iter()
            .map(|k| (k.name.clone(), "store", k.revoked_at)),
    );
    for (name, origin, revoked_at) in names {
        let used = usage.iter().find(|u| u.key_name == name);
        data.push(json!({
            "name": name,
            "origin": origin,
            "revoked": revoked_at.is_some(),
            "requests": used.map_or(0, |u| u.requests),
            "blocked": used.map_or(0, |u| u.blocked),
            "last_seen_ms": used.map(|u| u.last_seen_ms),
            "client_ips": used.map_or(0, |u| u.client_ips),
        }));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn revoke_key(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if gateway.snapshot().keys.declared_names().any(|n| n == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_in_config",
            format!("'{name}' is declared in the config file: remove it there to revoke it."),
        ));
    }
    let revoked = gateway
        .store
        .revoke_key(&name, now_ms() / 1000)
        .await
        .map_err(ApiError::internal)?;
    if !revoked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("No active key named '{name}'."),
        ));
    }
    gateway.events.record(EventRecord {
        request_id: format!("wad_{:032x}", fastrand::u128(..)),
        at_ms: now_ms(),
        kind: "enforcement",
        key_name: Some(name.clone()),
        endpoint: "",
        outcome: "enforced",
        reason: Some("revoke_key".into()),
        ..Default::default()
    });
    Ok(Json(json!({"name": name, "revoked": true})))
}
