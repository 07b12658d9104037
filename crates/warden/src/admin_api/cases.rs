//! `GET /admin/v1/cases/{case_id}`: one OpenAI safety case and what Warden did about it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use super::ApiError;
use crate::gateway::Gateway;

pub async fn show(
    State(gateway): State<Arc<Gateway>>,
    Path(case_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let case = gateway
        .store
        .case(&case_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "case_not_found",
                format!("No case '{case_id}' has been acted on (deliveries still pending are listed by GET /admin/v1/cases)."),
            )
        })?;
    serde_json::to_value(case)
        .map(Json)
        .map_err(ApiError::internal)
}
