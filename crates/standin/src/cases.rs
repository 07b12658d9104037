//! Safety cases: registered through `POST /_standin/cases`, served by `GET /v1/safety/cases/{id}`.

use crate::errors::{parse, ApiError};
use crate::routes::json;
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most cases kept; registering past it is refused.
const MAX_CASES: usize = 10_000;

/// The registered cases by id.
#[derive(Debug, Default)]
pub(crate) struct Cases {
    by_id: Mutex<HashMap<String, Value>>,
}

impl Cases {
    /// Registers (or replaces) a case; it must be a JSON object with a string `id`.
    /// `object` defaults to `safety.case`; everything else is kept as given.
    pub(crate) fn register(&self, mut case: Map<String, Value>) -> Result<Value, ApiError> {
        let id = match case.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(ApiError::missing("id").param("id")),
        };
        case.entry("object").or_insert_with(|| json!("safety.case"));
        let case = Value::Object(case);
        let mut by_id = self.by_id.lock().map_err(|_| ApiError::for_status(500))?;
        if by_id.len() >= MAX_CASES && !by_id.contains_key(&id) {
            return Err(ApiError::invalid_request(format!(
                "The stand-in holds at most {MAX_CASES} cases."
            )));
        }
        by_id.insert(id, case.clone());
        Ok(case)
    }

    /// Registers a case from a request body.
    pub(crate) fn register_body(&self, body: &[u8]) -> Result<Response, ApiError> {
        let case: Map<String, Value> = parse(body)?;
        self.register(case).map(|case| json(&case))
    }

    /// `GET /v1/safety/cases/{id}`.
    pub(crate) fn get(&self, id: &str) -> Result<Response, ApiError> {
        let by_id = self.by_id.lock().map_err(|_| ApiError::for_status(500))?;
        by_id
            .get(id)
            .map(json)
            .ok_or_else(|| ApiError::no_such("safety case", id))
    }

    /// Forgets every case.
    pub(crate) fn clear(&self) {
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.clear();
        }
    }
}
