//! Bad input on purpose: each gets a clear OpenAI-shaped error and never reaches upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_post(w: &Warden, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let w = Warden::start();
    let none = client()
        .post(w.url("/v1/chat/completions"))
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(none, 401).await["code"], "invalid_api_key");
    let wrong = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth("wk-not-a-key")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(wrong, 401).await["code"], "invalid_api_key");
    // The upstream key itself is not a Warden key.
    let upstream = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(UPSTREAM_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    expect_error(upstream, 401).await;
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn missing_end_user_is_400() {
    let w = Warden::start();
    let error = expect_error(
        post(&w, "/v1/chat/completions", None, &chat_body()).await,
        400,
    )
    .await;
    assert_eq!(error["code"], "missing_end_user");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn malformed_json_says_where() {
    let w = Warden::start();
    let error = expect_error(
        raw_post(&w, "{\"model\": \"m\",\n \"messages\": [}").await,
        400,
    )
    .await;
    assert_eq!(error["code"], "invalid_json");
    assert!(
        error["message"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn invalid_utf8_and_empty_bodies_are_400() {
    let w = Warden::start();
    let bad =
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec();
    expect_error(raw_post(&w, bad).await, 400).await;
    expect_error(raw_post(&w, "").await, 400).await;
    expect_error(raw_post(&w, "[1,2,3]").await, 400).await;
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn wrong_types_name_the_param() {
    let w = Warden::start();
    let error = expect_error(
        raw_post(&w, r#"{"model":"m","messages":"hello"}"#).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "messages");
    assert_eq!(error["code"], "invalid_type");
    let error = expect_error(raw_post(&w, r#"{"model":5,"messages":[]}"#).await, 400).await;
    assert_eq!(error["param"], "model");
    let error = expect_error(
        raw_post(&w, r#"{"model":"m","messages":[],"stream":"yes"}"#).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "stream");
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn huge_bodies_are_413_declared_or_streamed() {
    let w = Warden::start();
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(100_000)
    );
    let error = expect_error(raw_post(&w, big.clone()).await, 413).await;
    assert!(error["message"].as_str().unwrap().contains("65536"));
    // Chunked, with no Content-Length to check up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    expect_error(raw_post(&w, streamed).await, 413).await;
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let w = Warden::start();
    let response = client()
        .post(w.url("/v1/nope"))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 404).await["code"],
        "path_not_proxied"
    );
    let response = client()
        .get(w.url("/v1/embeddings"))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    expect_error(response, 405).await;
    let response = client().get(w.url("/")).send().await.unwrap();
    assert_eq!(expect_error(response, 404).await["code"], "unknown_url");
}

#[tokio::test]
async fn compressed_request_bodies_are_refused_clearly() {
    let w = Warden::start();
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .header("content-encoding", "gzip")
        .body(vec![0x1f_u8, 0x8b])
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 415).await["code"],
        "unsupported_content_encoding"
    );
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    let w = Warden::start();
    let addr = w.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {APP_KEY}\r\nx-warden-user: a\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered within the body timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"));
    assert!(w.standin.requests().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_502_without_internals() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let w = Warden::start_with(Options {
        upstream_url: Some(format!("http://127.0.0.1:{port}/v1")),
        ..Options::default()
    });
    let error = expect_error(
        post(&w, "/v1/chat/completions", Some("alice"), &chat_body()).await,
        502,
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("wrq_"), "names the request id: {message}");
    assert!(!message.contains("127.0.0.1") && !message.contains(&port.to_string()));
    assert!(!message.contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let w = Warden::start_with(Options {
        upstream_timeout_secs: 1,
        ..Options::default()
    });
    let response = chat_with_fault(&w, "delay_ms=3000").await;
    assert_eq!(
        expect_error(response, 504).await["code"],
        "upstream_timeout"
    );
}
