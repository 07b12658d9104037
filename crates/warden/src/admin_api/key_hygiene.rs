//! `/admin/v1/upstream-keys/…` for key hygiene: the last pass's findings, a pass on
//! demand, a rotation now, and a key's rotation schedule.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::gateway::Gateway;
use crate::hygiene::RotationError;

pub async fn status(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!(gateway.hygiene.status()))
}

pub async fn run(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!(gateway.hygiene.pass().await))
}

pub async fn rotate(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match gateway.hygiene.rotate(&name, "manual").await {
        Ok(new) => Ok(Json(json!({"rotated": name, "new_key": new,
            "old_deleted_after_secs": gateway.hygiene.rotation_overlap().as_secs()}))),
        Err(err) => {
            let status = match &err {
                RotationError::NotFound(_) => StatusCode::NOT_FOUND,
                RotationError::Admin(_) => StatusCode::BAD_GATEWAY,
                RotationError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::CONFLICT,
            };
            Err(ApiError::new(status, err.code(), err.to_string()))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Days between rotations; `null` or 0 stops scheduled rotation.
    rotate_every_days: Option<i64>,
}

pub async fn schedule(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Json<Schedule>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(schedule) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("Send {{\"rotate_every_days\": N}} (null or 0 to stop): {e}"),
        )
    })?;
    let days =
        match schedule.rotate_every_days {
            Some(d) if !(0..=3650).contains(&d) => return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_rotation_schedule",
                "rotate_every_days is a number of days from 1 to 3650 (0 or null: no schedule).",
            )),
            Some(0) | None => None,
            Some(d) => Some(d),
        };
    let found = gateway
        .store
        .set_upstream_rotation(&name, days)
        .await
        .map_err(ApiError::internal)?;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "upstream_key_not_found",
            format!("No upstream key named '{name}'."),
        ));
    }
    Ok(Json(json!({"name": name, "rotate_every_days": days})))
}
