//! `/admin/v1/keys`: list, create, rotate and revoke virtual keys (the same operations
//! as `warden keys`, from `keys::lifecycle`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::overview::{since, Window};
use super::ApiError;
use crate::events::{now_ms, EventRecord};
use crate::gateway::Gateway;
use crate::keys::lifecycle::{self, KeyOpError, NewKey};

pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    Query(window): Query<Window>,
) -> Result<Json<Value>, ApiError> {
    let (since_ms, _) = since(&window);
    let data = lifecycle::list(
        &gateway.store,
        &gateway.snapshot().keys.declared(),
        since_ms,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn create(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(new) = body.map_err(|why| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("Send {{\"name\": \"...\"}} and optionally end_user, trusted_user_field, expires_in_hours, models, endpoints: {why}"),
        )
    })?;
    let created = lifecycle::create(&gateway.store, &gateway.snapshot().keys.declared(), new)
        .await
        .map_err(refusal)?;
    audit(&gateway, &created, "create_key");
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Deserialize, Default)]
pub struct RotateBody {
    overlap_hours: Option<f64>,
}

pub async fn rotate(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Option<Json<RotateBody>>,
) -> Result<Json<Value>, ApiError> {
    let overlap = body.and_then(|Json(b)| b.overlap_hours).unwrap_or(24.0);
    let rotated = lifecycle::rotate(
        &gateway.store,
        &gateway.snapshot().keys.declared(),
        &name,
        overlap,
    )
    .await
    .map_err(refusal)?;
    audit(&gateway, &rotated, "rotate_key");
    Ok(Json(rotated))
}

pub async fn revoke(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revoked = lifecycle::revoke(&gateway.store, &gateway.snapshot().keys.declared(), &name)
        .await
        .map_err(refusal)?;
    audit(&gateway, &revoked, "revoke_key");
    Ok(Json(revoked))
}

/// The key change as an `enforcement` event beside the call's own `admin` event.
fn audit(gateway: &Gateway, answer: &Value, what: &str) {
    gateway.events.record(EventRecord {
        request_id: format!("wad_{:032x}", fastrand::u128(..)),
        at_ms: now_ms(),
        kind: "enforcement",
        key_name: answer["name"].as_str().map(str::to_owned),
        endpoint: "",
        outcome: "enforced",
        reason: Some(what.into()),
        ..Default::default()
    });
}

fn refusal(err: KeyOpError) -> ApiError {
    match err {
        KeyOpError::Invalid(code, message) => ApiError::new(StatusCode::BAD_REQUEST, code, message),
        KeyOpError::Conflict(code, message) => ApiError::new(StatusCode::CONFLICT, code, message),
        KeyOpError::NotFound(message) => {
            ApiError::new(StatusCode::NOT_FOUND, "key_not_found", message)
        }
        KeyOpError::Store(err) => ApiError::internal(err),
    }
}
