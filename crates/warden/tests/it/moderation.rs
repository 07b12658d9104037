//! Input and output moderation end to end: the real binary against the stand-in, whose
//! Moderation endpoint flags `FLAG:<category>` and whose replies echo the user's text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Input lets `violence` through; output blocks it: the echo of the prompt is flagged.
const ECHO_BLOCKED: &str = r#"
[safety.moderation.categories.violence]
action = "allow"
[safety.moderation.output]
window_chars = 20
[safety.moderation.output.categories.violence]
action = "block"
"#;

fn paths(w: &Warden) -> Vec<String> {
    w.standin.requests().into_iter().map(|r| r.path).collect()
}

fn with(extra: &str) -> Warden {
    Warden::start_with(Options {
        extra_toml: extra.into(),
        moderation: true,
        ..Default::default()
    })
}

async fn stream_text(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn blocked_input_never_reaches_the_generation_endpoint() {
    let w = with("");
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "I will FLAG:violence them"}]});
    let error = expect_error(
        post(&w, "/v1/chat/completions", Some("u1"), &body).await,
        400,
    )
    .await;
    assert_eq!(error["code"], "content_filter");
    assert_eq!(error["param"], "messages[1].content");
    assert!(error["message"].as_str().unwrap().contains("violence"));
    assert!(!error["message"].as_str().unwrap().contains("them"));
    assert_eq!(
        error["innererror"]["content_filter_result"]["violence"]["filtered"],
        true
    );
    assert_eq!(paths(&w), vec!["/v1/moderations"]);

    let responses = json!({"model": "gpt-4o-mini", "input": "FLAG:sexual/minors"});
    let error = expect_error(post(&w, "/v1/responses", Some("u1"), &responses).await, 400).await;
    assert_eq!(error["param"], "input");
    assert!(!paths(&w).iter().any(|p| p == "/v1/responses"));
}

#[tokio::test]
async fn clean_input_is_moderated_once_then_cached() {
    let w = with("");
    let response = post(&w, "/v1/chat/completions", Some("u1"), &chat_body()).await;
    assert_eq!(response.status(), 200);
    let response = post(&w, "/v1/chat/completions", Some("u1"), &chat_body()).await;
    assert_eq!(response.status(), 200);
    let seen = w.standin.requests();
    let moderations: Vec<_> = seen
        .iter()
        .filter(|r| r.path == "/v1/moderations")
        .collect();
    // The prompt once; the reply once (output); then both come from the cache.
    assert_eq!(moderations.len(), 2, "{:?}", paths(&w));
    assert_eq!(moderations[0].body["model"], "omni-moderation-latest");
    assert_eq!(moderations[0].body["input"], json!(["Hello there"]));
    // Moderations requests themselves are not moderated.
    let m = post(
        &w,
        "/v1/moderations",
        Some("u1"),
        &json!({"input": "FLAG:hate"}),
    )
    .await;
    assert_eq!(m.status(), 200);
}

#[tokio::test]
async fn moderation_outage_fails_closed_with_503() {
    let w = with("[safety.moderation]\nbreaker_failures = 100");
    let control = format!("http://{}/_standin/faults", w.standin.addr());
    client()
        .post(&control)
        .json(&json!({"fault": "status=503", "count": 10, "path": "/v1/moderations"}))
        .send()
        .await
        .unwrap();
    let response = post(&w, "/v1/chat/completions", Some("u1"), &chat_body()).await;
    let error = expect_error(response, 503).await;
    assert_eq!(error["code"], "moderation_unavailable");
    assert!(!paths(&w).iter().any(|p| p == "/v1/chat/completions"));
}

#[tokio::test]
async fn flagged_output_is_withheld_without_streaming() {
    let w = with(ECHO_BLOCKED);
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say FLAG:violence"}]});
    let response = post(&w, "/v1/chat/completions", Some("u1"), &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("FLAG:violence"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert!(v["choices"][0]["message"]["content"].is_null());

    let body = json!({"model": "gpt-4o-mini", "input": "say FLAG:violence"});
    let response = post(&w, "/v1/responses", Some("u1"), &body).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("FLAG:violence"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "content_filter");
}

#[tokio::test]
async fn flagged_output_is_withheld_while_streaming() {
    let w = with(ECHO_BLOCKED);
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "say FLAG:violence"}]});
    let text = stream_text(post(&w, "/v1/chat/completions", Some("u1"), &body).await).await;
    assert!(!text.contains("FLAG"), "{text}");
    assert!(
        text.contains(r#""finish_reason":"content_filter""#),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": "say FLAG:violence"});
    let text = stream_text(post(&w, "/v1/responses", Some("u1"), &body).await).await;
    assert!(!text.contains("FLAG"), "{text}");
    assert!(text.contains("event: response.incomplete"), "{text}");
    assert!(!text.contains("response.completed"), "{text}");
}

#[tokio::test]
async fn clean_streams_arrive_whole() {
    let w = with("");
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Hello there"}]});
    let text = stream_text(post(&w, "/v1/chat/completions", Some("u1"), &body).await).await;
    assert!(text.contains("stand-in"), "{text}");
    assert!(text.contains(r#""finish_reason":"stop""#));
    assert!(text.trim_end().ends_with("data: [DONE]"));
}
