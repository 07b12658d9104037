//! Requests that pass: what reaches upstream, what comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn chat_passes_with_warden_credentials_and_a_hashed_user() {
    let w = Warden::start();
    let response = post(&w, "/v1/chat/completions", Some("alice"), &chat_body()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-warden-request-id"));
    assert!(response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    assert!(response
        .headers()
        .contains_key("x-ratelimit-remaining-requests"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    let seen = w.standin.requests();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(
        upstream.headers["authorization"],
        format!("Bearer {UPSTREAM_KEY}")
    );
    assert!(!upstream.headers.contains_key("x-warden-user"));
    assert!(!upstream.body_text.contains(APP_KEY));
    let id = upstream.body["safety_identifier"].as_str().unwrap();
    assert!(id.len() <= 64);
    assert!(!id.contains("alice"));
}

#[tokio::test]
async fn safety_identifier_is_stable_per_user_and_bound_to_the_key() {
    let w = Warden::start();
    for user in ["alice", "alice", "bob"] {
        assert_eq!(
            post(&w, "/v1/chat/completions", Some(user), &chat_body())
                .await
                .status(),
            200
        );
    }
    // The same user id presented on another key is another identity.
    let other = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(OPTIONAL_KEY)
        .header("x-warden-user", "alice")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    let ids: Vec<String> = w
        .standin
        .requests()
        .iter()
        .map(|r| r.body["safety_identifier"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[3]);
}

#[tokio::test]
async fn unknown_fields_pass_through_byte_for_byte() {
    let w = Warden::start();
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"moderation":{"model":"omni-moderation-latest","policy":{"input":{"mode":"score"}}},"prompt_cache_key":"pk-1","service_tier":"flex","metadata":{"a":"b"},"temperature":0.70,"future_param":[1, {"x": null}]}"#;
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = &w.standin.requests()[0].body_text;
    for fragment in [
        r#""moderation":{"model":"omni-moderation-latest","policy":{"input":{"mode":"score"}}}"#,
        r#""prompt_cache_key":"pk-1""#,
        r#""service_tier":"flex""#,
        r#""metadata":{"a":"b"}"#,
        r#""temperature":0.70"#,
        r#""future_param":[1, {"x": null}]"#,
    ] {
        assert!(
            seen.contains(fragment),
            "{fragment} not forwarded verbatim in {seen}"
        );
    }
}

#[tokio::test]
async fn client_identity_fields_are_replaced_not_forwarded() {
    let w = Warden::start();
    let mut body = chat_body();
    body["user"] = json!("alice@example.com");
    body["safety_identifier"] = json!("client-chosen");
    assert_eq!(
        post(&w, "/v1/chat/completions", Some("alice"), &body)
            .await
            .status(),
        200
    );
    let seen = &w.standin.requests()[0];
    assert!(!seen.body_text.contains("alice@example.com"));
    assert!(!seen.body_text.contains("client-chosen"));
    assert_eq!(seen.body["user"], seen.body["safety_identifier"]);
}

#[tokio::test]
async fn every_endpoint_is_served_and_user_endpoints_get_the_hash() {
    let w = Warden::start();
    let cases = [
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "hi", "instructions": "be brief"}),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        ),
        ("/v1/moderations", json!({"input": "hello"})),
        (
            "/v1/images/generations",
            json!({"model": "gpt-image-1", "prompt": "a cat", "n": 1}),
        ),
    ];
    for (path, body) in &cases {
        let response = post(&w, path, Some("alice"), body).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    for path in ["/v1/models", "/v1/models/gpt-4o-mini"] {
        let response = client()
            .get(w.url(path))
            .bearer_auth(APP_KEY)
            .header("x-warden-user", "alice")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let seen = w.standin.requests();
    let by_path = |p: &str| seen.iter().find(|r| r.path == p).unwrap();
    let responses_id = by_path("/v1/responses").body["safety_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/v1/completions",
        "/v1/embeddings",
        "/v1/images/generations",
    ] {
        assert_eq!(by_path(path).body["user"], json!(responses_id), "{path}");
    }
    assert!(by_path("/v1/moderations").body.get("user").is_none());
    assert_eq!(by_path("/v1/models/gpt-4o-mini").method, "GET");
}

#[tokio::test]
async fn trusted_key_takes_the_user_from_the_body() {
    let w = Warden::start();
    let mut body = chat_body();
    body["user"] = json!("carol");
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(TRUSTED_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = &w.standin.requests()[0];
    let id = seen.body["safety_identifier"].as_str().unwrap();
    assert!(!id.contains("carol"));
    assert_eq!(seen.body["user"], json!(id));
}

#[tokio::test]
async fn browser_token_alone_authenticates_and_names_the_user() {
    let w = Warden::start();
    let token = hs256_token("user-42", "test-app", JWT_SECRET);
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .header("x-warden-user-token", &token)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(w.standin.requests()[0].body["safety_identifier"].is_string());

    let forged = hs256_token("user-42", "test-app", "not-the-app-secret-0123456789");
    let refused = client()
        .post(w.url("/v1/chat/completions"))
        .header("x-warden-user-token", &forged)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    let error = expect_error(refused, 401).await;
    assert_eq!(error["code"], "invalid_user_token");

    // A token key never takes a plain user header: that would let anyone name anyone.
    let spoof = client()
        .post(w.url("/v1/chat/completions"))
        .header("x-warden-user-token", &token)
        .header("x-warden-user", "someone-else")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    expect_error(spoof, 400).await;
    assert_eq!(w.standin.requests().len(), 1);
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let w = Warden::start();
    let response = chat_with_fault(&w, "status=429").await;
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    assert!(headers.contains_key("retry-after"));
    assert!(headers.contains_key("x-ratelimit-reset-requests"));
    assert!(headers.contains_key("x-warden-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}
