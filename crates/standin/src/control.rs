//! The control API under `/_standin/`: read and clear the request log, stats, queue faults, register cases.

use crate::errors::{parse, ApiError};
use crate::faults::Fault;
use crate::routes::json;
use crate::state::App;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// `POST /_standin/faults` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFault {
    fault: String,
    /// How many of the next matching `/v1` calls get it (default 1).
    count: Option<u32>,
    /// Only calls whose path starts with this, e.g. `/v1/safety/cases` (default: every call).
    path: Option<String>,
}

/// Answers one control request.
pub(crate) fn handle(app: &App, method: &Method, path: &str, body: &[u8]) -> Response {
    let answer = match (method, path) {
        (&Method::GET, "/_standin/requests") => Ok(json(&app.recorder.requests())),
        (&Method::DELETE, "/_standin/requests") => {
            app.recorder.clear();
            Ok(no_content())
        }
        (&Method::GET, "/_standin/realtime") => Ok(json(&app.realtime_events())),
        (&Method::DELETE, "/_standin/realtime") => {
            app.clear_realtime();
            Ok(no_content())
        }
        (&Method::GET, "/_standin/stats") => Ok(json(&app.recorder.stats())),
        (&Method::POST, "/_standin/faults") => queue_fault(app, body),
        (&Method::DELETE, "/_standin/faults") => {
            app.faults.clear();
            Ok(no_content())
        }
        (&Method::POST, "/_standin/cases") => app.cases.register_body(body),
        (&Method::DELETE, "/_standin/cases") => {
            app.cases.clear();
            Ok(no_content())
        }
        (_, "/_standin/requests" | "/_standin/stats" | "/_standin/faults" | "/_standin/cases") => {
            Err(ApiError::invalid_method(method, path))
        }
        _ => Err(ApiError::invalid_url(method, path)),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

fn queue_fault(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let request: QueueFault = parse(body)?;
    let fault = Fault::parse(&request.fault)
        .map_err(|problem| ApiError::invalid_request(problem).param("fault"))?;
    let count = request.count.unwrap_or(1);
    app.faults
        .push(fault, count, request.path.clone())
        .map_err(ApiError::invalid_request)?;
    Ok(json(&json!({
        "fault": request.fault,
        "count": count,
        "path": request.path,
    })))
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
