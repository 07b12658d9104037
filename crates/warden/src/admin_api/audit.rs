//! `GET /admin/v1/audit/verify`: the event log's hash chains checked link by link, the
//! document `warden audit verify --json` prints (a broken chain is a 200 with `ok: false`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use super::ApiError;
use crate::gateway::Gateway;

pub async fn verify(State(gateway): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let result = crate::events::verify::verify(&gateway.store)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(result.document()))
}
