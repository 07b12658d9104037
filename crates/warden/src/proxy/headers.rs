//! Which headers cross Warden in each direction. The client's credentials and Warden's own
//! headers never reach OpenAI; hop-by-hop headers never cross at all.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub use crate::error::WARDEN_REQUEST_ID;

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Client headers that must not be forwarded upstream.
fn withheld_from_upstream(name: &HeaderName) -> bool {
    hop_by_hop(name)
        || name == header::AUTHORIZATION
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::COOKIE
        // Warden reads the bodies it relays, so it asks for them uncompressed.
        || name == header::ACCEPT_ENCODING
        // Billing is chosen by Warden's configuration, not by the client.
        || name.as_str() == "openai-organization"
        || name.as_str() == "openai-project"
        || name.as_str().starts_with("x-warden-")
        // Where the client is, or claims to be, stays with Warden: OpenAI sees one egress.
        || name == header::FORWARDED
        || name.as_str().starts_with("x-forwarded-")
        || name.as_str() == "x-real-ip"
        || name.as_str() == "x-client-ip"
        || name.as_str() == "true-client-ip"
        || name.as_str() == "cf-connecting-ip"
}

/// `OpenAI-Beta` switches an endpoint into beta behaviour: forwarded only when every
/// feature it names is one the operator allowed (`[upstream] openai_beta`).
fn beta_allowed(value: &HeaderValue, allowed: &[String]) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    text.split(',')
        .map(str::trim)
        .all(|feature| allowed.iter().any(|a| a == feature))
}

/// A header no OpenAI request needs this much of; dropped rather than forwarded.
const MAX_FORWARDED_HEADER_BYTES: usize = 8 * 1024;

/// What goes upstream: the client's headers less the withheld ones, plus Warden's own.
pub fn to_upstream(
    client: &HeaderMap,
    upstream_key: &HeaderValue,
    organization: Option<&HeaderValue>,
    project: Option<&HeaderValue>,
    body_len: Option<usize>,
    openai_beta: &[String],
) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 4);
    for (name, value) in client {
        let beta = name.as_str() == "openai-beta";
        if !withheld_from_upstream(name)
            && value.len() <= MAX_FORWARDED_HEADER_BYTES
            && (!beta || beta_allowed(value, openai_beta))
        {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(header::AUTHORIZATION, upstream_key.clone());
    if let Some(org) = organization {
        out.insert(HeaderName::from_static("openai-organization"), org.clone());
    }
    if let Some(project) = project {
        out.insert(HeaderName::from_static("openai-project"), project.clone());
    }
    if let Some(len) = body_len {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if !out.contains_key(header::CONTENT_TYPE) {
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    out
}

/// What goes back to the client: upstream headers (x-request-id, x-ratelimit-* and the
/// rest) less hop-by-hop ones, plus Warden's request id.
pub fn to_client(upstream: &HeaderMap, request_id: &HeaderValue) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len() + 1);
    for (name, value) in upstream {
        if !hop_by_hop(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(WARDEN_REQUEST_ID, request_id.clone());
    out
}

/// The upstream key as an Authorization value, marked sensitive so it is never logged.
pub fn bearer(key: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn client_credentials_and_warden_headers_stay_behind() {
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, "Bearer wk-client".parse().unwrap());
        client.insert("x-warden-user", "alice".parse().unwrap());
        client.insert("x-stainless-retry-count", "1".parse().unwrap());
        client.insert("idempotency-key", "abc".parse().unwrap());
        client.insert("openai-organization", "org-client".parse().unwrap());
        client.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        for name in ["forwarded", "x-forwarded-host", "x-real-ip", "openai-beta"] {
            client.insert(HeaderName::from_static(name), "x".parse().unwrap());
        }
        client.insert("x-huge", "a".repeat(9000).parse().unwrap());
        let key = bearer("sk-upstream").unwrap();
        let out = to_upstream(
            &client,
            &key,
            None,
            Some(&"proj_1".parse().unwrap()),
            Some(10),
            &[],
        );
        assert_eq!(out[header::AUTHORIZATION], "Bearer sk-upstream");
        let allowed = to_upstream(&client, &key, None, None, None, &["x".to_owned()]);
        assert_eq!(
            allowed["openai-beta"], "x",
            "an allowed beta feature passes"
        );
        assert!(out[header::AUTHORIZATION].is_sensitive());
        assert!(out.get("x-warden-user").is_none());
        assert!(out.get("openai-organization").is_none());
        assert_eq!(out["openai-project"], "proj_1");
        assert_eq!(out["x-stainless-retry-count"], "1");
        assert_eq!(out["idempotency-key"], "abc");
        assert_eq!(out[header::CONTENT_LENGTH], "10");
        assert!(out.get(header::CONNECTION).is_none());
        for name in [
            "forwarded",
            "x-forwarded-host",
            "x-real-ip",
            "openai-beta",
            "x-huge",
        ] {
            assert!(out.get(name).is_none(), "{name}");
        }
    }

    #[test]
    fn upstream_headers_pass_back_with_the_request_id() {
        let mut upstream = HeaderMap::new();
        upstream.insert("x-request-id", "req_up".parse().unwrap());
        upstream.insert("x-ratelimit-remaining-requests", "99".parse().unwrap());
        upstream.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        let out = to_client(&upstream, &"req_w".parse().unwrap());
        assert_eq!(out["x-request-id"], "req_up");
        assert_eq!(out["x-ratelimit-remaining-requests"], "99");
        assert_eq!(out[WARDEN_REQUEST_ID], "req_w");
        assert!(out.get(header::TRANSFER_ENCODING).is_none());
    }
}
