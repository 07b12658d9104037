//! Bearer tokens for the admin API, kept as SHA-256 digests and compared in constant
//! time. Every change, and every refused call, is recorded as an `admin` event; successful
//! reads are not.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::events::{now_ms, EventRecord};
use crate::gateway::Gateway;
use crate::keys::{hash_secret, SecretHash};

/// The peer address the admin listener put on the request (`ConnectInfo`).
pub fn client_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// 429 for an address that failed authentication too often.
pub fn too_many_failures(wait: std::time::Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_auth_failures",
        format!(
            "Too many failed authentications from this address; try again in {} s.",
            wait.as_secs().max(1)
        ),
    )
    .into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

#[derive(Debug, Clone, Default)]
pub struct AdminTokens(Vec<SecretHash>);

impl AdminTokens {
    pub fn new(digests: Vec<SecretHash>) -> Self {
        Self(digests)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn accepts(&self, token: &str) -> bool {
        let presented = hash_secret(token);
        // Every byte of every digest is compared, so timing tells nothing.
        self.0.iter().fold(false, |found, digest| {
            let diff = digest
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (diff == 0)
        })
    }
}

pub async fn require_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&request);
    if let Some((ip, wait)) = ip.and_then(|ip| Some((ip, gateway.auth_failures.blocked(ip)?))) {
        gateway
            .auth_failures
            .failed(&gateway.events, ip, "admin_token");
        return too_many_failures(wait);
    }
    // Changes are audited; reads are not (the dashboard polls every few seconds, which
    // made ~100k audit rows a day and buried the changes in the evidence report).
    let is_read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let action = format!("{} {}", request.method(), request.uri().path());
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let tokens = gateway.snapshot().admin_tokens.clone();
    let refusal = if tokens.is_empty() {
        Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_api_disabled",
            "The admin API is disabled: set [admin] token_env or token_sha256 in the config.",
        ))
    } else {
        match token {
            Some(token) if tokens.accepts(token) => None,
            Some(_) => Some(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_admin_token",
                "Incorrect admin token.",
            )),
            None => Some(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_admin_token",
                "Send the admin token as 'Authorization: Bearer <token>'.",
            )),
        }
    };
    let response = match refusal {
        Some(error) if error.is_auth_failure() => {
            // Counted per address, not one audit row per guess.
            if let Some(ip) = ip {
                gateway
                    .auth_failures
                    .failed(&gateway.events, ip, "admin_token");
            }
            return error.into_response();
        }
        Some(error) => error.into_response(),
        None => next.run(request).await,
    };
    let status = response.status();
    if is_read && status.is_success() {
        return response;
    }
    gateway.events.record(EventRecord {
        request_id: format!("wad_{:032x}", fastrand::u128(..)),
        at_ms: now_ms(),
        kind: "admin",
        endpoint: "admin",
        status: status.as_u16(),
        outcome: if status.is_success() {
            "allowed"
        } else {
            "blocked"
        },
        reason: Some(action),
        ..Default::default()
    });
    response
}
