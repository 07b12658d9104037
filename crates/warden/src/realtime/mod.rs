//! The Realtime API through Warden (see `docs/realtime.md`):
//! - `relay` — `GET /v1/realtime`: authenticates the WebSocket handshake with the request
//!   pipeline, opens the upstream socket with the real key and runs the session;
//! - `session` — relays frames both ways, checking client events and model output;
//! - `accounting` — events for refusals and output flags, tokens against spend budgets;
//! - `checks` — client events through local filters and moderation, output windows;
//! - `upstream` — the upstream WebSocket connection (plain or TLS);
//! - `secrets` — `POST /v1/realtime/client_secrets`: end user required, expiry capped;
//! - this file — open sessions per end user, and the per-user session limits.

pub mod accounting;
pub mod checks;
pub mod relay;
pub mod secrets;
pub mod session;
pub mod upstream;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Request, StatusCode};

use crate::config::realtime::RealtimeConfig;
use crate::error::{Refusal, WardenError};

/// `GET /v1/realtime` asking for a WebSocket.
pub fn is_socket_request<B>(request: &Request<B>) -> bool {
    request.method() == http::Method::GET
        && request.uri().path().trim_end_matches('/') == "/v1/realtime"
}

/// (virtual key, end user): whom a session belongs to.
type Owner = (String, String);

/// Open sessions and recent session starts per end user. In process: with several
/// replicas each enforces its own share (see docs/realtime.md).
pub struct Sessions {
    config: RealtimeConfig,
    open: Mutex<HashMap<Owner, u32>>,
    started: Mutex<HashMap<Owner, VecDeque<Instant>>>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Sessions {
    pub fn new(config: RealtimeConfig) -> Self {
        Self {
            config,
            open: Mutex::default(),
            started: Mutex::default(),
        }
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.config
    }

    /// Counts a session start against the hourly limit (client secrets and sockets).
    pub fn start(&self, key: &str, user: &str) -> Result<(), WardenError> {
        let limit = self.config.sessions_per_user_per_hour;
        let mut started = self.started.lock().map_err(|_| WardenError::Internal)?;
        let now = Instant::now();
        let times = started
            .entry((key.to_owned(), user.to_owned()))
            .or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            let retry = times
                .front()
                .map_or(HOUR, |t| HOUR.saturating_sub(now.duration_since(*t)));
            return Err(SessionLimit::hourly(limit, retry));
        }
        times.push_back(now);
        Ok(())
    }

    /// Admits one more open session for the user, or refuses at the concurrent limit.
    /// The slot is given back when the returned guard drops.
    pub fn open(self: &Arc<Self>, key: &str, user: &str) -> Result<OpenSlot, WardenError> {
        let limit = self.config.max_sessions_per_user;
        let owner = (key.to_owned(), user.to_owned());
        {
            let mut open = self.open.lock().map_err(|_| WardenError::Internal)?;
            let count = open.entry(owner.clone()).or_insert(0);
            if *count >= limit {
                return Err(SessionLimit::concurrent(limit));
            }
            *count += 1;
        }
        self.start(key, user)
            .inspect_err(|_| self.release(&owner))?;
        Ok(OpenSlot {
            sessions: self.clone(),
            owner,
        })
    }

    /// Sessions open now for this user.
    pub fn open_for(&self, key: &str, user: &str) -> u32 {
        self.open
            .lock()
            .ok()
            .and_then(|open| open.get(&(key.to_owned(), user.to_owned())).copied())
            .unwrap_or(0)
    }

    fn release(&self, owner: &Owner) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(count) = open.get_mut(owner) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(owner);
                }
            }
        }
    }
}

/// One open session's place in the per-user count.
pub struct OpenSlot {
    sessions: Arc<Sessions>,
    owner: Owner,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.sessions.release(&self.owner);
    }
}

/// A per-user Realtime session limit: 429 `realtime_session_limit`.
#[derive(Debug)]
pub struct SessionLimit {
    message: String,
    retry_after: Option<Duration>,
}

impl SessionLimit {
    fn concurrent(limit: u32) -> WardenError {
        WardenError::Refused(Arc::new(SessionLimit {
            message: format!("This end user already has {limit} open Realtime session(s), the most Warden allows at once. Close one and retry."),
            retry_after: None,
        }))
    }

    fn hourly(limit: u32, retry: Duration) -> WardenError {
        WardenError::Refused(Arc::new(SessionLimit {
            message: format!("This end user started {limit} Realtime sessions in the last hour, the most Warden allows. Retry in {} s.", retry.as_secs().max(1)),
            retry_after: Some(retry),
        }))
    }
}

impl Refusal for SessionLimit {
    fn status(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }
    fn code(&self) -> &'static str {
        "realtime_session_limit"
    }
    fn error_type(&self) -> &'static str {
        "requests"
    }
    fn message(&self) -> String {
        self.message.clone()
    }
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.retry_after
            .and_then(|d| HeaderValue::from_str(&d.as_secs().max(1).to_string()).ok())
            .map(|v| vec![(http::header::RETRY_AFTER, v)])
            .unwrap_or_default()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A Realtime request Warden cannot serve as asked (400/426), with its own code.
#[derive(Debug)]
pub struct RealtimeRefusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl RealtimeRefusal {
    pub fn error(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> WardenError {
        WardenError::Refused(Arc::new(RealtimeRefusal {
            status,
            code,
            message: message.into(),
        }))
    }
}

impl Refusal for RealtimeRefusal {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn code(&self) -> &'static str {
        self.code
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn message(&self) -> String {
        self.message.clone()
    }
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        Vec::new()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// An `error` server event in OpenAI's Realtime shape, from any refusal.
pub fn error_event(err: &WardenError, request_id: &str, client_event_id: Option<&str>) -> String {
    let response = err.to_response(request_id);
    let mut error = serde_json::from_slice::<serde_json::Value>(response.body())
        .ok()
        .and_then(|mut v| v.get_mut("error").map(serde_json::Value::take))
        .unwrap_or_else(|| serde_json::json!({"message": "internal error", "type": "server_error", "code": null, "param": null}));
    error["event_id"] = client_event_id.map_or(serde_json::Value::Null, |id| id.into());
    serde_json::json!({
        "type": "error",
        "event_id": format!("event_warden_{:016x}", fastrand::u64(..)),
        "error": error,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn concurrent_and_hourly_limits() {
        let config = RealtimeConfig {
            max_sessions_per_user: 1,
            sessions_per_user_per_hour: 2,
            ..RealtimeConfig::default()
        };
        let sessions = Arc::new(Sessions::new(config));
        let first = sessions.open("k", "u").unwrap();
        assert_eq!(
            sessions.open("k", "u").err().unwrap().code(),
            "realtime_session_limit"
        );
        assert!(sessions.open("k", "other").is_ok());
        drop(first);
        assert_eq!(sessions.open_for("k", "u"), 0);
        let second = sessions.open("k", "u").unwrap();
        drop(second);
        // Two starts this hour: the third is refused even with no session open.
        assert!(sessions.open("k", "u").is_err());
    }

    #[test]
    fn error_events_have_openai_shape() {
        let err = SessionLimit::concurrent(2);
        let event: serde_json::Value =
            serde_json::from_str(&error_event(&err, "wrq_1", Some("evt_9"))).unwrap();
        assert_eq!(event["type"], "error");
        assert_eq!(event["error"]["code"], "realtime_session_limit");
        assert_eq!(event["error"]["event_id"], "evt_9");
        assert!(event["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 open"));
    }
}
