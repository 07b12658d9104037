//! `POST /hooks/openai` on the admin listener: verify, queue durably, acknowledge. The
//! work happens after the answer, in the worker; OpenAI gets its 2xx within milliseconds.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::signature::{self, Delivery as Signed};
use super::{DEACTIVATION_EVENT, WARNING_EVENT};
use crate::events::{now_ms, EventRecord};
use crate::gateway::Gateway;
use crate::store::Delivery;

pub const PATH: &str = "/hooks/openai";

/// OpenAI's safety events are a few hundred bytes; anything near this is not one.
pub const MAX_BODY: usize = 256 * 1024;

/// Refuses a body declared larger than [`MAX_BODY`] before reading any of it (the route's
/// body limit catches one that lies about its length).
pub async fn limit_body(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("A webhook body is at most {MAX_BODY} bytes."),
        );
    }
    next.run(request).await
}

pub async fn receive(
    State(gateway): State<Arc<Gateway>>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let headers: &HeaderMap = &parts.headers;
    let ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|p| p.0.ip());
    if let Some((ip, wait)) = ip.and_then(|ip| Some((ip, gateway.auth_failures.blocked(ip)?))) {
        gateway
            .auth_failures
            .failed(&gateway.events, ip, "webhook_signature");
        return crate::admin_api::auth::too_many_failures(wait);
    }
    let notices = &gateway.notices;
    let Some(key) = notices.key.as_deref() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_not_configured",
            format!(
                "OpenAI webhooks are not configured: set {} to the signing secret (whsec_…).",
                notices.config.secret_env
            ),
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = Signed {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signatures: header("webhook-signature"),
        body: &body,
    };
    let tolerance = notices.config.tolerance.as_secs();
    if let Err(why) = signature::verify(key, &signed, now_ms() / 1000, tolerance) {
        tracing::warn!(%why, "OpenAI webhook refused");
        match ip {
            // Counted per address: a stream of forged deliveries is one event a minute.
            Some(ip) => gateway
                .auth_failures
                .failed(&gateway.events, ip, "webhook_signature"),
            None => record(&gateway, "rejected", &why.to_string(), None),
        }
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_webhook_signature",
            why.to_string(),
        );
    }
    let webhook_id = signed.id.unwrap_or_default().to_owned();
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("The webhook body is not JSON: {err}"),
            )
        }
    };
    let event_type = event["type"].as_str().unwrap_or("").to_owned();
    let case_id = event["data"]["id"].as_str().map(str::to_owned);
    let actionable = matches!(event_type.as_str(), WARNING_EVENT | DEACTIVATION_EVENT)
        && case_id.as_deref().is_some_and(valid_case_id);
    let now = now_ms();
    let delivery = Delivery {
        webhook_id: webhook_id.clone(),
        received_ms: now,
        event_type: event_type.clone(),
        case_id: case_id.clone(),
        state: if actionable { "pending" } else { "ignored" }.into(),
        attempts: 0,
        next_attempt_ms: now,
        last_error: (!actionable).then(|| "not a safety notice with a valid case id".into()),
        done_ms: None,
    };
    // Durable before the acknowledgement: a crash after the 200 still acts.
    let fresh = match notices.store.enqueue_delivery(&delivery).await {
        Ok(fresh) => fresh,
        Err(err) => {
            tracing::error!(%err, "could not queue an OpenAI webhook; asking for redelivery");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The delivery could not be stored; OpenAI will retry it.",
            );
        }
    };
    if fresh {
        record(&gateway, "received", &event_type, case_id.as_deref());
        notices.wake.notify_one();
    }
    (
        StatusCode::OK,
        Json(json!({"received": true, "duplicate": !fresh, "queued": fresh && actionable})),
    )
        .into_response()
}

/// Case ids go into a URL path: letters, digits, `-` and `_` only.
fn valid_case_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn record(gateway: &Gateway, outcome: &'static str, reason: &str, case_id: Option<&str>) {
    gateway.events.record(EventRecord {
        request_id: format!("wnt_{:032x}", fastrand::u128(..)),
        at_ms: now_ms(),
        kind: "notice",
        endpoint: "hooks/openai",
        outcome,
        reason: Some(reason.to_owned()),
        detail: case_id.map(|c| json!({ "case_id": c }).to_string()),
        ..Default::default()
    });
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})),
    )
        .into_response()
}
