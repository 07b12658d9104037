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

/// `POST /_standin/usage` body: traffic on a key that did not come through the caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutsideUsage {
    /// The key's value (as the leaker would present it).
    key: String,
    requests: u64,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// `POST /_standin/keys` body: a key made by hand in the dashboard (owner: a user).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserKey {
    project: Option<String>,
    name: String,
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
        (&Method::POST, "/_standin/usage") => outside_usage(app, body),
        (&Method::POST, "/_standin/keys") => user_key(app, body),
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
        (
            _,
            "/_standin/requests" | "/_standin/stats" | "/_standin/faults" | "/_standin/cases"
            | "/_standin/usage" | "/_standin/keys",
        ) => Err(ApiError::invalid_method(method, path)),
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

fn outside_usage(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let request: OutsideUsage = parse(body)?;
    let (id, project) = app
        .org
        .key_for(&request.key)
        .ok_or_else(|| ApiError::invalid_request("no live key with that value").param("key"))?;
    let served = crate::org::Served {
        kind: crate::org::UsageKind::Completions,
        model: "gpt-4o-mini".into(),
        input_tokens: request.input_tokens,
        output_tokens: request.output_tokens,
    };
    app.org
        .count(&id, &project, crate::text::now(), &served, request.requests);
    Ok(json(&json!({"api_key_id": id, "project_id": project})))
}

fn user_key(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let request: UserKey = parse(body)?;
    let project = request
        .project
        .unwrap_or_else(|| crate::org::DEFAULT_PROJECT.into());
    let value = format!("sk-proj-{}", crate::text::id("").trim_start_matches('_'));
    let id = app.org.add_key(&project, &request.name, &value, true);
    Ok(json(
        &json!({"id": id, "value": value, "project_id": project}),
    ))
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
