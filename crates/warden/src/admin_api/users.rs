//! `/admin/v1/users`: review end users, their strikes and standing; ban, suspend, lift.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::enforcement::{ladder, Action, Actor};
use crate::events::now_ms;
use crate::gateway::Gateway;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    sanctioned: bool,
    limit: Option<i64>,
    /// Only this end user id, under every key it was seen with.
    end_user: Option<String>,
}

pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let users = match &query.end_user {
        Some(name) => gateway.store.users_named(name).await,
        None => gateway.store.list_users(query.sanctioned, limit).await,
    }
    .map_err(ApiError::internal)?;
    let config = gateway.enforcement.config();
    let data: Vec<Value> = users.iter().map(|u| user_json(config, u)).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn show(
    State(gateway): State<Arc<Gateway>>,
    Path((key, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let stored = gateway
        .store
        .user(&key, &user)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(&key, &user))?;
    let half_life = gateway.enforcement.config().half_life;
    let strikes = gateway
        .store
        .strikes_since(&key, &user, now_ms() - ladder::horizon_ms(half_life))
        .await
        .map_err(ApiError::internal)?;
    let mut body = user_json(gateway.enforcement.config(), &stored);
    body["strikes"] = json!(strikes);
    Ok(Json(body))
}

#[derive(Deserialize, Default)]
pub struct ActionBody {
    reason: Option<String>,
    hours: Option<f64>,
}

pub async fn ban(
    state: State<Arc<Gateway>>,
    path: Path<(String, String)>,
    body: Option<Json<ActionBody>>,
) -> Result<Json<Value>, ApiError> {
    act(state, path, body, |_| Ok(Action::Ban)).await
}

pub async fn suspend(
    state: State<Arc<Gateway>>,
    path: Path<(String, String)>,
    body: Option<Json<ActionBody>>,
) -> Result<Json<Value>, ApiError> {
    act(state, path, body, |b| {
        match b
            .hours
            .and_then(|h| crate::error::wait::checked_hours(h, false))
        {
            Some(d) => Ok(Action::Suspend(d)),
            None => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_hours",
                format!(
                    "Send {{\"hours\": <number>}} to suspend, more than 0 and at most {} (ten years).",
                    crate::error::wait::MAX_HOURS
                ),
            )),
        }
    })
    .await
}

pub async fn unban(
    state: State<Arc<Gateway>>,
    path: Path<(String, String)>,
    body: Option<Json<ActionBody>>,
) -> Result<Json<Value>, ApiError> {
    act(state, path, body, |_| Ok(Action::Lift)).await
}

pub async fn reset(
    state: State<Arc<Gateway>>,
    path: Path<(String, String)>,
    body: Option<Json<ActionBody>>,
) -> Result<Json<Value>, ApiError> {
    act(state, path, body, |_| Ok(Action::Reset)).await
}

async fn act(
    State(gateway): State<Arc<Gateway>>,
    Path((key, user)): Path<(String, String)>,
    body: Option<Json<ActionBody>>,
    choose: impl FnOnce(&ActionBody) -> Result<Action, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let action = choose(&body)?;
    if crate::identity::validate_user_id(&user).is_err() || !gateway.snapshot().keys.knows(&key) {
        return Err(not_found(&key, &user));
    }
    let reason = body.reason.clone().unwrap_or_else(|| "by operator".into());
    gateway
        .enforcement
        .act(&key, &user, action, &reason, Actor::Operator)
        .await
        .map_err(ApiError::internal)?;
    let stored = gateway
        .store
        .user(&key, &user)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(&key, &user))?;
    Ok(Json(user_json(gateway.enforcement.config(), &stored)))
}

fn not_found(key: &str, user: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "user_not_found",
        format!("No end user '{user}' under key '{key}'."),
    )
}

/// One end user as the API and `warden users` show them: the strike weight decayed to
/// now and the ladder rung it puts them on.
pub fn user_json(
    config: &crate::config::enforcement::EnforcementConfig,
    u: &crate::store::StoredUser,
) -> Value {
    let now = now_ms();
    let standing = ladder::Standing {
        status: ladder::Status::parse(&u.status, u.status_until_ms),
        weight: u.strike_weight,
        weight_at_ms: u.strike_at_ms,
        reason: u.status_reason.clone(),
    };
    json!({
        "object": "end_user",
        "key": u.key_name,
        "end_user": u.end_user,
        "safety_identifier": u.safety_identifier,
        "first_seen_ms": u.first_seen_ms,
        "last_seen_ms": u.last_seen_ms,
        "strike_weight": ladder::decayed(u.strike_weight, u.strike_at_ms, now, config.half_life),
        "status": u.status,
        "status_until_ms": u.status_until_ms,
        "status_reason": u.status_reason,
        "rung": ladder::rung(&standing, now, config).label(),
    })
}
