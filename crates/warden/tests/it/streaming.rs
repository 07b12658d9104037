//! Streams are relayed as they arrive, end as OpenAI ends them, and cancel upstream when
//! the client leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

async fn stream_request(
    w: &Warden,
    path: &str,
    body: serde_json::Value,
    fault: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(w.url(path))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "alice")
        .json(&body);
    if let Some(fault) = fault {
        request = request.header("x-standin-fault", fault);
    }
    request.send().await.unwrap()
}

fn chat_stream() -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "tell me a long story about the sea please"}]})
}

#[tokio::test]
async fn chat_stream_arrives_chunk_by_chunk_and_ends_with_done() {
    let w = Warden::start();
    let started = Instant::now();
    let response = stream_request(
        &w,
        "/v1/chat/completions",
        chat_stream(),
        Some("chunk_delay_ms=150"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = chunks.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let total = started.elapsed();
    // Several 150 ms gaps upstream: the first chunk must not wait for the last.
    assert!(
        total > first_at + Duration::from_millis(300),
        "first {first_at:?} total {total:?}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"usage\""));
}

#[tokio::test]
async fn responses_stream_keeps_its_event_lines() {
    let w = Warden::start();
    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": "hello"});
    let response = stream_request(&w, "/v1/responses", body, None).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("event: response.created\ndata: "),
        "{text}"
    );
    assert!(text.contains("event: response.output_text.delta"));
    assert!(text.contains("event: response.completed"));
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn a_stream_cut_upstream_ends_with_an_error_event() {
    let w = Warden::start();
    let response = stream_request(
        &w,
        "/v1/chat/completions",
        chat_stream(),
        Some("cut_after=2"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("[DONE]"));
    let last = text.trim_end().lines().last().unwrap();
    let event: serde_json::Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(event["error"]["code"], "upstream_stream_broken");

    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": "hello"});
    let text = stream_request(&w, "/v1/responses", body, Some("cut_after=2"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: error\n"), "{text}");
    assert!(!text.contains("response.completed"));
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_stream() {
    let w = Warden::start();
    let response = stream_request(
        &w,
        "/v1/chat/completions",
        chat_stream(),
        Some("chunk_delay_ms=200"),
    )
    .await;
    let mut chunks = response.bytes_stream();
    chunks.next().await.unwrap().unwrap();
    drop(chunks);
    eventually(
        "the stand-in sees the stream cancelled",
        Duration::from_secs(5),
        || w.standin.stats().cancelled_streams >= 1,
    )
    .await;
}
