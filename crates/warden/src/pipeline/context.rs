//! The typed per-request context every stage reads and writes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method};
use hyper::body::Incoming;

use crate::endpoint::Endpoint;
use crate::identity::jwt::UserClaims;
use crate::identity::EndUser;
use crate::json_body::JsonBody;
use crate::keys::VirtualKey;
use crate::openai::RequestTexts;
use crate::pipeline::Finding;

/// What one stage decided, kept for the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Rewrite,
}

#[derive(Debug, Clone, Copy)]
pub struct StageRecord {
    pub stage: &'static str,
    /// `None` when the stage blocked the request.
    pub verdict: Option<Verdict>,
    /// Wall time the stage took, µs (`warden_stage_seconds` on /metrics).
    pub micros: u32,
}

pub struct RequestContext {
    pub request_id: String,
    pub started: Instant,
    pub endpoint: Endpoint,
    pub method: Method,
    /// Path and query as the client sent them.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub client_ip: IpAddr,
    /// The client's body until a stage reads it.
    pub incoming: Option<Incoming>,
    /// The body as received (empty for GET).
    pub raw_body: Bytes,
    /// The body parsed once, for endpoints that carry JSON (for a multipart form a check
    /// reads: its text fields, which the form is rebuilt from).
    pub body: Option<JsonBody>,
    /// A multipart form read whole because a check needs it (`routes::multipart`).
    pub form: Option<crate::routes::multipart::Form>,
    /// The checked, rewritten file that replaces the form's `file` part (batch files).
    pub form_file: Option<Bytes>,
    /// A body passed upstream as it arrives (uploads parts, audio), within its route's cap.
    /// Behind a lock only so the context stays shareable; it is taken once, by the sender.
    pub streamed: std::sync::Mutex<Option<crate::routes::StreamedBody>>,
    /// Every text and image of the body the model will read (`openai::request_text`),
    /// extracted once by `read_body` and again after a stage rewrites a text.
    pub texts: RequestTexts,
    pub model: Option<String>,
    pub stream: bool,
    pub key: Option<Arc<VirtualKey>>,
    /// Claims of a verified `X-Warden-User-Token`, when one was presented.
    pub user_claims: Option<UserClaims>,
    pub end_user: Option<EndUser>,
    pub safety_identifier: Option<String>,
    /// The `limits` stage's admission: in-flight slots and the token estimate, held
    /// until the response ends.
    pub limit_ticket: Option<std::sync::Arc<crate::limits::Ticket>>,
    pub trail: Vec<StageRecord>,
    pub findings: Vec<Finding>,
    /// The end user's own tier (a configured tier their token claims, else the key's,
    /// else `default_tier`), worked out once by `end_user`.
    pub tier: Option<String>,
    /// A lower tier than the user's own, set by `user_standing` for throttled users.
    pub tier_override: Option<String>,
    /// Headers added to the answer the client gets (e.g. the user's standing).
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The client IP's country (`network_policy` stage), when a geo database places it.
    pub country: Option<crate::geo::Country>,
    /// Structured findings and moderation coverage for the event log and the report.
    pub audit: crate::events::AuditNotes,
    /// Input moderation still running (`parallel` mode): the proxy awaits it, racing the
    /// upstream call, before anything reaches the client.
    pub deferred: Option<crate::pipeline::deferred::Deferred>,
}

impl RequestContext {
    pub fn new(
        request_id: String,
        endpoint: Endpoint,
        method: Method,
        path_and_query: String,
        headers: HeaderMap,
        client_ip: IpAddr,
        incoming: Incoming,
    ) -> Self {
        let mut ctx = Self::detached(
            request_id,
            endpoint,
            method,
            path_and_query,
            headers,
            client_ip,
        );
        ctx.incoming = Some(incoming);
        ctx
    }

    /// A context with no client body of its own, checked like a request: one line of a
    /// batch file, or one Realtime client event (the caller sets `raw_body`/`body`).
    pub fn detached(
        request_id: String,
        endpoint: Endpoint,
        method: Method,
        path_and_query: String,
        headers: HeaderMap,
        client_ip: IpAddr,
    ) -> Self {
        Self {
            request_id,
            started: Instant::now(),
            endpoint,
            method,
            path_and_query,
            headers,
            client_ip,
            incoming: None,
            raw_body: Bytes::new(),
            body: None,
            form: None,
            form_file: None,
            streamed: std::sync::Mutex::new(None),
            texts: RequestTexts::default(),
            model: None,
            stream: false,
            key: None,
            user_claims: None,
            end_user: None,
            safety_identifier: None,
            limit_ticket: None,
            trail: Vec::with_capacity(8),
            findings: Vec::new(),
            tier: None,
            tier_override: None,
            response_headers: Vec::new(),
            country: None,
            audit: Default::default(),
            deferred: None,
        }
    }

    pub fn key_name(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.name.as_str())
    }

    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body to forward: the original bytes unless a stage changed a field.
    pub fn outgoing_body(&self) -> Bytes {
        match &self.body {
            Some(body) if body.changed() => body.to_bytes(self.raw_body.len()),
            _ => self.raw_body.clone(),
        }
    }
}
