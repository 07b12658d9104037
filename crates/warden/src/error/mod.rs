//! Every way a request can fail, mapped to an HTTP status and OpenAI's error envelope in one
//! place. The bottom of the crate: everything imports it, it imports no other module of
//! Warden. Refusals whose details belong to a subsystem (a rate limit, a spend budget,
//! upstream pacing) arrive as a [`Refusal`] that subsystem implements.

mod content_filter;
pub mod wait;

pub use content_filter::ContentFilter;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::json;

use self::wait::{format_ms, retry_headers, wait_text};

/// The header every answer carries with Warden's request id.
pub const WARDEN_REQUEST_ID: HeaderName = HeaderName::from_static("x-warden-request-id");

/// A 4xx that a subsystem decided and words itself (Warden's rate limits, spend budgets,
/// upstream pacing): its status, OpenAI's `code` and `type`, the message and the retry
/// headers the SDKs back off on.
pub trait Refusal: fmt::Debug + Send + Sync + 'static {
    fn status(&self) -> StatusCode;
    fn code(&self) -> &'static str;
    fn error_type(&self) -> &'static str;
    fn message(&self) -> String;
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)>;
    /// For callers (and tests) that need the subsystem's own type back.
    fn as_any(&self) -> &dyn Any;
}

/// A refusal or failure that Warden answers itself, in OpenAI's error envelope.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WardenError {
    #[error("missing API key")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("invalid end-user token: {0}")]
    InvalidUserToken(String),
    #[error("end user required")]
    EndUserRequired { key: String },
    #[error("invalid end user: {0}")]
    InvalidEndUser(String),
    #[error("end-user header not accepted on this key")]
    EndUserHeaderNotAccepted { key: String },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("request body is not a JSON object")]
    BodyNotObject,
    #[error("invalid type for {param}")]
    InvalidType {
        param: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    /// A text-bearing field nested inside the body has the wrong shape (`messages[0]` is
    /// not an object, `content` is a number): refused rather than forwarded unchecked.
    #[error("invalid shape at {param}")]
    InvalidShape {
        param: String,
        expected: &'static str,
        got: &'static str,
    },
    /// A token-array prompt that the model's tokenizer cannot decode, so it cannot be checked.
    #[error("undecodable tokens at {param}")]
    UndecodableTokens {
        param: String,
        encoding: &'static str,
    },
    /// An identifier field (`model`) holds something that looks like a credential.
    #[error("credential in {param}")]
    SecretInField { param: &'static str, kind: String },
    /// A model-scoped key sent a request that names no model.
    #[error("model required for this key")]
    ModelRequired { key: String },
    #[error("body over {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body timed out")]
    BodyTimeout,
    #[error("client body read failed")]
    BodyRead,
    #[error("unsupported content encoding {0}")]
    UnsupportedEncoding(String),
    #[error("unknown path")]
    NotFound { method: String, path: String },
    #[error("method not allowed")]
    MethodNotAllowed { method: String, path: String },
    /// A path under `/v1` the routing table does not know (`[upstream] unknown_paths`).
    #[error("path not proxied")]
    NotProxied { method: String, path: String },
    /// An object created through another key (or outside Warden): as OpenAI says of an
    /// object that does not exist, so its existence is not leaked either.
    #[error("no such object")]
    ObjectNotFound {
        kind: &'static str,
        id: String,
        param: &'static str,
    },
    /// A multipart body Warden must read that does not parse.
    #[error("malformed multipart body: {0}")]
    MalformedMultipart(String),
    /// An uploaded batch or fine-tune file Warden cannot read, or whose lines it refuses:
    /// the message lists line numbers and reasons; nothing is uploaded.
    #[error("uploaded file refused")]
    FileRefused { code: &'static str, message: String },
    #[error("no upstream key")]
    NoUpstreamKey,
    /// Warden started while its store was down and has no safety-identifier secret yet.
    #[error("store unavailable")]
    StoreUnavailable,
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// A content check (local filters or the Moderation endpoint) refused the input.
    #[error("content filtered")]
    ContentFiltered(Box<ContentFilter>),
    #[error("moderation unavailable: {0}")]
    ModerationUnavailable(&'static str),
    /// A rate limit, spend budget or upstream pacing refusal, worded by its subsystem.
    #[error("refused: {}", .0.code())]
    Refused(Arc<dyn Refusal>),
    #[error("prompt of {got} tokens over the limit of {limit}")]
    PromptTooLong {
        limit: u64,
        got: u64,
        param: &'static str,
    },
    #[error("n over {max}")]
    TooManyChoices { max: u64, got: u64 },
    #[error("model not allowed for this key")]
    ModelNotAllowed { model: String, key: String },
    #[error("endpoint not allowed for this key")]
    EndpointNotAllowed { endpoint: &'static str, key: String },
    #[error("internal error")]
    Internal,
    #[error("end user banned")]
    UserBanned { reason: String },
    #[error("end user suspended")]
    UserSuspended { until_ms: i64, reason: String },
    /// The client IP is in a refused country (`None`: the database could not place it
    /// and `geo.unknown = "block"`).
    #[error("unsupported country")]
    UnsupportedCountry { country: Option<String> },
    /// Lockdown mode refuses this request's tier (or a request naming no end user).
    #[error("refused during lockdown")]
    Lockdown { tier: Option<String> },
    /// The abuse detector throttles this key or end user (distillation).
    #[error("throttled for abuse")]
    AbuseThrottled { retry_after: std::time::Duration },
    /// The upstream circuit breaker is open after consecutive upstream failures.
    #[error("upstream circuit open")]
    UpstreamCircuitOpen {
        retry_after: std::time::Duration,
        failures: u32,
    },
}

impl WardenError {
    pub fn invalid_shape(param: &str, expected: &'static str, got: &'static str) -> WardenError {
        WardenError::InvalidShape {
            param: param.to_owned(),
            expected,
            got,
        }
    }

    pub fn status(&self) -> StatusCode {
        use WardenError::*;
        match self {
            MissingApiKey | InvalidApiKey | InvalidUserToken(_) => StatusCode::UNAUTHORIZED,
            EndUserRequired { .. }
            | InvalidEndUser(_)
            | EndUserHeaderNotAccepted { .. }
            | MalformedJson(_)
            | BodyNotObject
            | InvalidType { .. }
            | InvalidShape { .. }
            | UndecodableTokens { .. }
            | ModelRequired { .. }
            | SecretInField { .. }
            | BodyRead
            | ContentFiltered(_)
            | PromptTooLong { .. }
            | TooManyChoices { .. } => StatusCode::BAD_REQUEST,
            Refused(refusal) => refusal.status(),
            ModelNotAllowed { .. }
            | EndpointNotAllowed { .. }
            | UserBanned { .. }
            | UserSuspended { .. } => StatusCode::FORBIDDEN,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            NotFound { .. } | NotProxied { .. } | ObjectNotFound { .. } => StatusCode::NOT_FOUND,
            MalformedMultipart(_) | FileRefused { .. } => StatusCode::BAD_REQUEST,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            NoUpstreamKey
            | StoreUnavailable
            | ModerationUnavailable(_)
            | UpstreamCircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            UnsupportedCountry { .. } | Lockdown { .. } => StatusCode::FORBIDDEN,
            AbuseThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// OpenAI's `code` field; also the low-cardinality label for metrics and events.
    pub fn code(&self) -> &'static str {
        use WardenError::*;
        match self {
            MissingApiKey | InvalidApiKey => "invalid_api_key",
            InvalidUserToken(_) => "invalid_user_token",
            EndUserRequired { .. } => "missing_end_user",
            InvalidEndUser(_) => "invalid_end_user",
            EndUserHeaderNotAccepted { .. } => "end_user_header_not_accepted",
            MalformedJson(_) | BodyNotObject => "invalid_json",
            InvalidType { .. } | InvalidShape { .. } => "invalid_type",
            UndecodableTokens { .. } => "invalid_prompt_tokens",
            ModelRequired { .. } => "model_required",
            SecretInField { .. } => "secret_in_field",
            BodyTooLarge { .. } => "request_too_large",
            BodyTimeout => "request_timeout",
            BodyRead => "request_body_unreadable",
            UnsupportedEncoding(_) => "unsupported_content_encoding",
            NotFound { .. } => "unknown_url",
            NotProxied { .. } => "path_not_proxied",
            ObjectNotFound { .. } => "object_not_found",
            MalformedMultipart(_) => "invalid_multipart",
            FileRefused { code, .. } => code,
            MethodNotAllowed { .. } => "method_not_allowed",
            NoUpstreamKey => "upstream_key_missing",
            StoreUnavailable => "store_unavailable",
            UpstreamUnavailable => "upstream_unavailable",
            UpstreamTimeout => "upstream_timeout",
            ContentFiltered(_) => "content_filter",
            ModerationUnavailable(_) => "moderation_unavailable",
            Refused(refusal) => refusal.code(),
            PromptTooLong { .. } => "context_length_exceeded",
            TooManyChoices { .. } => "integer_above_max_value",
            ModelNotAllowed { .. } => "model_not_allowed",
            EndpointNotAllowed { .. } => "endpoint_not_allowed",
            Internal => "internal_error",
            UserBanned { .. } => "user_banned",
            UserSuspended { .. } => "user_suspended",
            UnsupportedCountry { .. } => "unsupported_country_region_territory",
            Lockdown { .. } => "lockdown",
            AbuseThrottled { .. } => "abuse_throttled",
            UpstreamCircuitOpen { .. } => "upstream_circuit_open",
        }
    }

    fn error_type(&self) -> &'static str {
        use WardenError::*;
        match self {
            NoUpstreamKey
            | StoreUnavailable
            | UpstreamUnavailable
            | UpstreamTimeout
            | Internal
            | ModerationUnavailable(_)
            | UpstreamCircuitOpen { .. } => "server_error",
            UserBanned { .. } | UserSuspended { .. } => "request_forbidden",
            Refused(refusal) => refusal.error_type(),
            // What OpenAI itself sends for unsupported regions.
            UnsupportedCountry { .. } | Lockdown { .. } => "request_forbidden",
            AbuseThrottled { .. } => "requests",
            _ => "invalid_request_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            WardenError::InvalidType { param, .. } => Some(param),
            WardenError::InvalidShape { param, .. } => Some(param),
            WardenError::UndecodableTokens { param, .. } => Some(param),
            WardenError::ModelRequired { .. } => Some("model"),
            WardenError::SecretInField { param, .. } => Some(param),
            WardenError::PromptTooLong { param, .. } => Some(param),
            WardenError::TooManyChoices { .. } => Some("n"),
            WardenError::ModelNotAllowed { .. } => Some("model"),
            WardenError::ContentFiltered(block) => Some(block.param.as_str()),
            WardenError::ObjectNotFound { param, .. } => Some(param),
            WardenError::FileRefused { .. } => Some("file"),
            _ => None,
        }
    }

    /// The message a client sees. It never contains request content, upstream details or keys.
    pub fn message(&self) -> String {
        use WardenError::*;
        match self {
            MissingApiKey => "You didn't provide an API key. Send your Warden key as 'Authorization: Bearer <key>'.".into(),
            InvalidApiKey => "Incorrect API key provided. Use a Warden virtual key issued by your operator.".into(),
            InvalidUserToken(why) => format!("The X-Warden-User-Token is not valid: {why}."),
            EndUserRequired { key } => format!(
                "The key '{key}' requires an end user: send the X-Warden-User header (or the token or body field this key is configured for)."
            ),
            InvalidEndUser(why) => format!("The end user id is not valid: {why}."),
            EndUserHeaderNotAccepted { key } => format!(
                "The key '{key}' takes its end user only from a signed X-Warden-User-Token; the X-Warden-User header is not accepted."
            ),
            MalformedJson(detail) => format!(
                "We could not parse the JSON body of your request ({detail}). The body must be a valid UTF-8 JSON object."
            ),
            BodyNotObject => "The request body must be a JSON object.".into(),
            InvalidType { param, expected, got } => {
                format!("Invalid type for '{param}': expected {expected}, but got {got} instead.")
            }
            InvalidShape { param, expected, got } => {
                format!("Invalid type for '{param}': expected {expected}, but got {got} instead.")
            }
            UndecodableTokens { param, encoding } => format!(
                "The token ids in '{param}' do not decode to text with the model's tokenizer ({encoding}), so Warden cannot check them. Send the prompt as text, or token ids of this model's tokenizer that form whole characters."
            ),
            SecretInField { param, kind } => format!(
                "'{param}' looks like a credential ({kind}). Warden does not forward or store it; send the model's name."
            ),
            ModelRequired { key } => format!(
                "The key '{key}' may only use certain models, so every request must name its 'model' (including responses that continue a previous_response_id)."
            ),
            BodyTooLarge { limit } => format!("The request body exceeds the maximum of {limit} bytes."),
            BodyTimeout => "The request body was not received in time.".into(),
            BodyRead => "The request body could not be read.".into(),
            UnsupportedEncoding(enc) => format!(
                "Content-Encoding '{enc}' is not supported; send the body uncompressed."
            ),
            NotFound { method, path } => format!("Invalid URL ({method} {path})"),
            NotProxied { method, path } => format!("Warden does not proxy {method} {path} yet, so it was not sent to OpenAI. See docs/routes.md for the routes Warden serves; an operator can pass unknown paths through unchecked with [upstream] unknown_paths = \"forward\"."),
            ObjectNotFound { kind, id, .. } => format!("No such {kind} object: {id}"),
            MalformedMultipart(why) => format!("The multipart/form-data body could not be read: {why}."),
            FileRefused { message, .. } => message.clone(),
            MethodNotAllowed { method, path } => format!("Method {method} is not allowed on {path}."),
            NoUpstreamKey => "Warden has no upstream OpenAI key configured for this service; the operator must set it.".into(),
            StoreUnavailable => "Warden started while its database was unreachable and cannot derive end-user safety identifiers until it answers (or until the operator sets the variable named by [identity] safety_identifier_secret_env). Please retry shortly.".into(),
            UpstreamUnavailable => "The upstream API could not be reached. Please retry.".into(),
            UpstreamTimeout => "The upstream API did not answer in time. Please retry.".into(),
            Internal => "Internal error in Warden.".into(),
            Refused(refusal) => refusal.message(),
            PromptTooLong { limit, got, .. } => format!(
                "This request's prompt is {got} tokens, over this service's limit of {limit} prompt tokens per request. Please shorten the prompt."
            ),
            TooManyChoices { max, got } => format!(
                "Invalid 'n': integer above maximum value. Expected a value <= {max}, but got {got} instead."
            ),
            ModelNotAllowed { model, key } => format!("The key '{key}' is not allowed to use the model '{model}'."),
            EndpointNotAllowed { endpoint, key } => format!("The key '{key}' is not allowed to use the {endpoint} endpoint."),
            ContentFiltered(block) => block.message(),
            UserBanned { reason } => format!(
                "This end user is banned from this service ({reason}). Requests for them are refused until an operator lifts the ban."
            ),
            UserSuspended { until_ms, reason } => format!(
                "This end user is suspended from this service until {} ({reason}).",
                format_ms(*until_ms)
            ),
            ModerationUnavailable(_) => "Content moderation is unavailable, so the request was not forwarded (policy: fail closed). Please retry shortly.".into(),
            UnsupportedCountry { country: Some(country) } => format!(
                "Country, region, or territory not supported: requests from {country} are refused by this service's geo policy."
            ),
            UnsupportedCountry { country: None } => "Country, region, or territory not supported: the client's location could not be determined and this service refuses unknown locations.".into(),
            Lockdown { tier: Some(tier) } => format!(
                "This service is in lockdown: requests from end users of the '{tier}' tier are refused until the operator lifts it."
            ),
            Lockdown { tier: None } => "This service is in lockdown: requests that name no end user are refused until the operator lifts it.".into(),
            AbuseThrottled { retry_after } => format!(
                "Requests from this key or end user are throttled after automated-harvesting patterns were detected. Please try again in {}.",
                wait_text(*retry_after)
            ),
            UpstreamCircuitOpen { retry_after, failures } => format!(
                "The upstream API failed {failures} times in a row, so Warden is pausing calls to it to avoid a retry storm. Please retry in {}.",
                wait_text(*retry_after)
            ),
        }
    }

    /// Headers a refusal carries besides the envelope (`retry-after`, `x-ratelimit-*`).
    pub fn headers(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        match self {
            WardenError::Refused(refusal) => refusal.headers(),
            WardenError::AbuseThrottled { retry_after } => {
                let secs = retry_after.as_secs().max(1).to_string();
                HeaderValue::from_str(&secs)
                    .map(|v| vec![(header::RETRY_AFTER, v)])
                    .unwrap_or_default()
            }
            WardenError::UpstreamCircuitOpen { retry_after, .. } => retry_headers(*retry_after),
            _ => Vec::new(),
        }
    }

    /// The whole HTTP answer: status, OpenAI envelope, and the request id for support.
    pub fn to_response(&self, request_id: &str) -> Response<Bytes> {
        let mut message = self.message();
        if self.status().is_server_error() {
            message = format!("{message} (request id {request_id})");
        }
        let mut body = json!({
            "error": {
                "message": message,
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        });
        if let WardenError::ContentFiltered(block) = self {
            body["error"]["innererror"] = block.inner_error();
        }
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers() {
            headers.insert(name, value);
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(WARDEN_REQUEST_ID, id);
        }
        if matches!(self, WardenError::MethodNotAllowed { .. }) {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        // The SDKs retry 5xx by default; a missing upstream key will not fix itself.
        if matches!(self, WardenError::NoUpstreamKey) {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelope_has_all_four_keys() {
        let response = WardenError::InvalidApiKey.to_response("req_1");
        assert_eq!(response.status(), 401);
        let v: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        let error = v["error"].as_object().unwrap();
        for key in ["message", "type", "param", "code"] {
            assert!(error.contains_key(key), "missing {key}");
        }
        assert_eq!(error["code"], "invalid_api_key");
        assert!(error["param"].is_null());
    }

    #[test]
    fn server_errors_name_the_request_id_and_nothing_else() {
        let response = WardenError::UpstreamUnavailable.to_response("req_abc");
        let v: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(response.status(), 502);
        assert!(v["error"]["message"].as_str().unwrap().contains("req_abc"));
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn wrong_type_names_the_param() {
        let err = WardenError::InvalidType {
            param: "messages",
            expected: "an array",
            got: "a string",
        };
        let v: serde_json::Value = serde_json::from_slice(err.to_response("r").body()).unwrap();
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(err.status(), 400);
    }
}
