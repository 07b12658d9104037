//! The request pipeline: every request is read, recorded, authenticated, faulted and routed here, in one order.

use crate::errors::ApiError;
use crate::faults::{self, Fault};
use crate::state::App;
use crate::{
    admin, chat, completions, control, embeddings, images, models, moderations, org, realtime,
    responses, text,
};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body read (room for base64 images sent to moderation).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The rate-limit headers OpenAI puts on every answer; a 429 brings its own.
const RATE_LIMIT_HEADERS: [(&str, &str); 6] = [
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999000"),
    ("x-ratelimit-reset-tokens", "0s"),
];

/// The stand-in's whole HTTP surface: every request goes through [`dispatch`].
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new().fallback(dispatch).with_state(app)
}

/// Every request takes these steps, in this order:
/// 1. read the body (capped at [`MAX_BODY_BYTES`]);
/// 2. `/_standin/…` goes to the control API (never recorded, authenticated or faulted);
/// 3. `/v1/…` is recorded, also when it then fails;
/// 4. the API key is checked (401 `invalid_api_key`): an organization key, or for
///    `/v1/organization/…` the Admin key;
/// 5. the fault is taken: a queued one, overridden field by field by `x-standin-fault`;
/// 6. `delay_ms` is waited out; a `status` fault answers with its error;
/// 7. the endpoint answers (streams apply `chunk_delay_ms` and `cut_after` themselves), and
///    what a successful call served is counted on its key (the Usage and Costs APIs);
/// 8. `x-request-id` (and for `/v1` the `x-ratelimit-*` headers) are stamped on the answer.
async fn dispatch(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path().trim_end_matches('/') == "/v1/realtime" && parts.method == Method::GET {
        return realtime_socket(app, parts).await;
    }
    let path = parts.uri.path();
    let is_v1 = path == "/v1" || path.starts_with("/v1/");
    // Upload parts are counted as they arrive, never held: tests send hundreds of MB.
    let body = match upload_part(path) {
        Some(id) => {
            let id = id.to_owned();
            let mut frames = body.into_data_stream();
            let mut seen = 0u64;
            while let Some(Ok(frame)) = futures_util::StreamExt::next(&mut frames).await {
                seen += frame.len() as u64;
            }
            crate::rest::count_part(&app.objects, &id, seen);
            Body::empty()
        }
        None => body,
    };
    let mut response = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Err(_) => ApiError::too_large(MAX_BODY_BYTES).into_response(),
        Ok(body) if path.starts_with("/_standin/") => {
            control::handle(&app, &parts.method, path, &body)
        }
        Ok(body) if is_v1 => v1(&app, &parts, body).await,
        Ok(_) => ApiError::invalid_url(&parts.method, path).into_response(),
    };
    stamp(response.headers_mut(), is_v1);
    response
}

/// `GET /v1/realtime`: recorded and authenticated like any `/v1` call (a queued `status`
/// fault refuses the handshake), then upgraded to a Realtime session.
async fn realtime_socket(app: Arc<App>, parts: http::request::Parts) -> Response {
    app.recorder.record(&parts, &Bytes::new());
    let mut response = match app.check_auth(&parts.headers) {
        Err(error) => error.into_response(),
        Ok(_) => match fault_for(&app, parts.uri.path(), &parts.headers) {
            Err(error) => error.into_response(),
            Ok(Fault {
                status: Some(status),
                ..
            }) => ApiError::for_status(status).into_response(),
            Ok(_) => realtime::upgrade(app.clone(), parts).await,
        },
    };
    stamp(response.headers_mut(), true);
    response
}

/// Steps 3–7 for one `/v1` call.
async fn v1(app: &Arc<App>, parts: &http::request::Parts, body: Bytes) -> Response {
    app.recorder.record(parts, &body);
    let unanswered = Unanswered(Some(app.recorder.clone()));
    let path = parts.uri.path();
    let admin = path.starts_with("/v1/organization/");
    let caller = if admin {
        app.check_admin(&parts.headers).map(|()| None)
    } else {
        app.check_auth(&parts.headers)
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let fault = match fault_for(app, path, &parts.headers) {
        Ok(fault) => fault,
        Err(error) => return error.into_response(),
    };
    if let Some(ms) = fault.delay_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = match fault.status {
        Some(429) if fault.insufficient_quota => ApiError::insufficient_quota().into_response(),
        Some(status) => ApiError::for_status(status).into_response(),
        None if admin => admin::handle(
            &app.org,
            &parts.method,
            path.strip_prefix("/v1").unwrap_or(path),
            parts.uri.query(),
            &body,
        )
        .unwrap_or_else(IntoResponse::into_response),
        None => {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let query = parts.uri.query();
            match crate::rest::handle(app, &parts.method, path, query, content_type, &body).await {
                Some(answer) => answer.unwrap_or_else(IntoResponse::into_response),
                None => endpoint(
                    app,
                    &parts.method,
                    path,
                    &body,
                    fault,
                    scripted(&parts.headers),
                )
                .unwrap_or_else(IntoResponse::into_response),
            }
        }
    };
    fault.decorate(response.headers_mut());
    if let (Some((key, project)), Some(served)) =
        (caller, response.extensions().get::<org::Served>())
    {
        if response.status().is_success() {
            app.org.count(&key, &project, text::now(), served, 1);
        }
    }
    unanswered.answered();
    response
}

/// Counts the call as cancelled if hyper drops it (the client went away) before the
/// answer was ready, e.g. a caller that gave up during `delay_ms`.
struct Unanswered(Option<Arc<crate::record::Recorder>>);

impl Unanswered {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(recorder) = self.0.take() {
            recorder.request_cancelled();
        }
    }
}

/// The fault for this call: the queued one (if any applies), overridden by the header.
fn fault_for(app: &App, path: &str, headers: &HeaderMap) -> Result<Fault, ApiError> {
    let queued = app.faults.take(path).unwrap_or_default();
    let Some(header) = headers.get(faults::HEADER) else {
        return Ok(queued);
    };
    let spec = String::from_utf8_lossy(header.as_bytes());
    let from_header = Fault::parse(&spec).map_err(|problem| {
        ApiError::invalid_request(format!("{}: {problem}", faults::HEADER))
            .code("invalid_standin_fault")
    })?;
    Ok(queued.overridden_by(from_header))
}

/// Routes a `/v1` call to its endpoint; a known path with the wrong method is a 405.
fn endpoint(
    app: &App,
    method: &Method,
    path: &str,
    body: &[u8],
    fault: Fault,
    scripted: Option<&str>,
) -> Result<Response, ApiError> {
    let route = path.strip_prefix("/v1").unwrap_or(path);
    let expected = match route {
        "/chat/completions"
        | "/responses"
        | "/completions"
        | "/embeddings"
        | "/moderations"
        | "/images/generations"
        | "/realtime/client_secrets" => Method::POST,
        "/models" => Method::GET,
        _ if route.starts_with("/models/") || route.starts_with("/safety/cases/") => Method::GET,
        _ => return Err(ApiError::invalid_url(method, path)),
    };
    if *method != expected {
        return Err(ApiError::invalid_method(method, path));
    }
    match route {
        "/chat/completions" => chat::create(app, body, fault, scripted),
        "/responses" => responses::create(app, body, fault, scripted),
        "/completions" => completions::create(app, body, fault, scripted),
        "/embeddings" => embeddings::create(body),
        "/moderations" => moderations::create(body),
        "/images/generations" => images::create(body),
        "/realtime/client_secrets" => realtime::client_secret(body),
        "/models" => Ok(models::list()),
        _ => {
            if let Some(id) = route.strip_prefix("/models/") {
                models::get(id)
            } else if let Some(id) = route.strip_prefix("/safety/cases/") {
                app.cases.get(id)
            } else {
                Err(ApiError::invalid_url(method, path))
            }
        }
    }
}

/// The upload id of a `POST /v1/uploads/{id}/parts` path.
fn upload_part(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/uploads/")?
        .strip_suffix("/parts")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The reply text a call scripted with `x-standin-reply`, if any.
fn scripted(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(text::REPLY_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Step 8: headers every answer carries; ones the answer already set are kept.
fn stamp(headers: &mut HeaderMap, is_v1: bool) {
    if let Ok(id) = HeaderValue::from_str(&text::id("req_")) {
        headers
            .entry(HeaderName::from_static("x-request-id"))
            .or_insert(id);
    }
    if is_v1 {
        for (name, value) in RATE_LIMIT_HEADERS {
            headers
                .entry(HeaderName::from_static(name))
                .or_insert(HeaderValue::from_static(value));
        }
    }
}

/// Marks an answer with what it served, for the organization's usage (see [`org::Served`]).
pub(crate) fn served(
    mut response: Response,
    kind: org::UsageKind,
    model: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Response {
    response.extensions_mut().insert(org::Served {
        kind,
        model: model.to_owned(),
        input_tokens,
        output_tokens,
    });
    response
}

/// A 200 `application/json` answer.
pub(crate) fn json(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(_) => ApiError::for_status(500).into_response(),
    }
}
