//! Builders for stage unit tests.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::EndUserPolicy;
use crate::endpoint::Endpoint;
use crate::json_body::JsonBody;
use crate::keys::{KeyOrigin, VirtualKey};
use crate::pipeline::RequestContext;

pub fn key(name: &str, end_user: EndUserPolicy, trusted_user_field: bool) -> Arc<VirtualKey> {
    Arc::new(VirtualKey {
        name: name.into(),
        origin: KeyOrigin::Config,
        end_user,
        trusted_user_field,
        jwt: None,
        upstream_key: None,
        openai_project: None,
        scope: None,
        shared_objects: false,
    })
}

/// A chat-completions context that already passed authentication and body parsing.
pub fn context(key: Arc<VirtualKey>, body: &[u8]) -> RequestContext {
    RequestContext {
        request_id: "req_test".into(),
        started: Instant::now(),
        endpoint: Endpoint::ChatCompletions,
        method: http::Method::POST,
        path_and_query: "/v1/chat/completions".into(),
        headers: http::HeaderMap::new(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        incoming: None,
        raw_body: Bytes::copy_from_slice(body),
        texts: JsonBody::parse(body)
            .ok()
            .and_then(|b| crate::openai::extract(Endpoint::ChatCompletions, &b, None).ok())
            .unwrap_or_default(),
        body: JsonBody::parse(body).ok(),
        form: None,
        form_file: None,
        streamed: std::sync::Mutex::new(None),
        model: None,
        stream: false,
        key: Some(key),
        user_claims: None,
        end_user: None,
        safety_identifier: None,
        limit_ticket: None,
        trail: Vec::new(),
        findings: Vec::new(),
        tier: None,
        tier_override: None,
        response_headers: Vec::new(),
        country: None,
        audit: Default::default(),
        deferred: None,
    }
}
