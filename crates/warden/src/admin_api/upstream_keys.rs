//! `/admin/v1/upstream-keys`: OpenAI keys sealed in the store; add, activate, retire.
//! The secret goes in once (request body) and never comes back out.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::events::now_ms;
use crate::gateway::Gateway;
use crate::store::StoredUpstreamKey;

/// One key as listings show it (never its secret).
pub fn row(k: &StoredUpstreamKey) -> Value {
    json!({"name": k.name, "state": k.state, "organization": k.organization,
        "project": k.project, "created_ms": k.created_ms, "updated_ms": k.updated_ms,
        "openai_key_id": k.openai_key_id, "rotate_every_days": k.rotate_every_days,
        "delete_after_ms": k.delete_after_ms, "deleted_upstream_ms": k.deleted_upstream_ms})
}

fn listing(keys: &[StoredUpstreamKey]) -> Value {
    let data: Vec<Value> = keys.iter().map(row).collect();
    json!({"object": "list", "data": data})
}

pub async fn list(State(gateway): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let keys = gateway
        .store
        .upstream_keys()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(listing(&keys)))
}

#[derive(Deserialize)]
pub struct NewKey {
    name: String,
    key: String,
    organization: Option<String>,
    project: Option<String>,
    #[serde(default)]
    activate: bool,
    /// Rotate through OpenAI's Admin API when the key is this many days old.
    rotate_every_days: Option<i64>,
}

pub async fn add(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(new) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "Send {{\"name\", \"key\", \"organization\"?, \"project\"?, \"activate\"?}}: {e}"
            ),
        )
    })?;
    let Some(master) = &gateway.vault else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "vault_locked",
            "No master key is configured: set the variable named by upstream.master_key_env (default WARDEN_MASTER_KEY).",
        ));
    };
    let valid = !new.name.is_empty()
        && new.name.len() <= 64
        && new
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid || new.key.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_upstream_key",
            "The name is 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.', and the key must not be empty.",
        ));
    }
    let now = now_ms();
    let sealed = master
        .seal(&new.name, new.key.trim().as_bytes())
        .map_err(ApiError::internal)?;
    let stored = StoredUpstreamKey {
        name: new.name.clone(),
        sealed,
        organization: new.organization,
        project: new.project,
        state: "standby".into(),
        created_ms: now,
        updated_ms: now,
        rotate_every_days: new.rotate_every_days,
        ..Default::default()
    };
    match gateway.store.add_upstream_key(&stored).await {
        Ok(()) => {}
        Err(crate::store::StoreError::DuplicateKey(name)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "upstream_key_exists",
                format!("An upstream key named '{name}' already exists."),
            ))
        }
        Err(err) => return Err(ApiError::internal(err)),
    }
    if new.activate {
        gateway
            .store
            .activate_upstream_key(&new.name, now)
            .await
            .map_err(ApiError::internal)?;
    }
    list(State(gateway)).await
}

pub async fn activate(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = gateway
        .store
        .activate_upstream_key(&name, now_ms())
        .await
        .map_err(ApiError::internal)?;
    if !found {
        return Err(not_found(&name));
    }
    list(State(gateway)).await
}

pub async fn retire(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = gateway
        .store
        .retire_upstream_key(&name, now_ms())
        .await
        .map_err(ApiError::internal)?;
    if !found {
        return Err(not_found(&name));
    }
    list(State(gateway)).await
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "upstream_key_not_found",
        format!("No upstream key named '{name}' (that is not already retired)."),
    )
}
