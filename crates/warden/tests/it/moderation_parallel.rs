//! `parallel` moderation mode end to end: the upstream call overlaps input moderation,
//! nothing reaches the client before the verdict, and a block cancels the upstream call.
//! Delays come from the stand-in (`delay_ms` queued for `/v1/moderations`, and on the
//! chat call itself through `x-standin-fault`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const FAST_KEY: &str = "wk-test-fast-0123456789abcdef";

/// Key `app` keeps the default `strict` mode; key `fast` is `parallel`.
fn gateway() -> Warden {
    Warden::start_with(Options {
        moderation: true,
        extra_toml: r#"
[[keys]]
name = "fast"
secret_env = "T_FAST_KEY"
end_user = "optional"
moderation_mode = "parallel"
"#
        .into(),
        extra_env: vec![("T_FAST_KEY".into(), FAST_KEY.into())],
        ..Default::default()
    })
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

/// One chat call with `key`, the upstream answering `upstream_delay_ms` late.
async fn call(w: &Warden, key: &str, body: &Value, upstream_delay_ms: u64) -> reqwest::Response {
    client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-warden-user", "u1")
        .header("x-standin-fault", format!("delay_ms={upstream_delay_ms}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn delay_moderation(w: &Warden, ms: u64) {
    w.standin
        .queue_fault_for("/v1/moderations", &format!("delay_ms={ms}"), 1)
        .unwrap();
}

#[tokio::test]
async fn parallel_overlaps_moderation_and_upstream_where_strict_adds_them() {
    let w = gateway();

    delay_moderation(&w, 400);
    let started = Instant::now();
    let response = call(&w, APP_KEY, &chat("strict and slow", false), 400).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let strict = started.elapsed();

    delay_moderation(&w, 400);
    let started = Instant::now();
    let response = call(&w, FAST_KEY, &chat("parallel and quick", false), 400).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let parallel = started.elapsed();

    eprintln!("strict {strict:?}, parallel {parallel:?}");
    assert!(
        strict >= Duration::from_millis(800),
        "strict took {strict:?}"
    );
    assert!(
        parallel < Duration::from_millis(700),
        "parallel took {parallel:?}"
    );
    assert!(parallel >= Duration::from_millis(400), "{parallel:?}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello from the stand-in. You said: parallel and quick"
    );
}

#[tokio::test]
async fn a_parallel_block_is_a_400_and_cancels_the_upstream_call() {
    let w = gateway();
    delay_moderation(&w, 150);
    let started = Instant::now();
    let response = call(
        &w,
        FAST_KEY,
        &chat("I will FLAG:violence them", false),
        2_000,
    )
    .await;
    let error = expect_error(response, 400).await;
    assert_eq!(error["code"], "content_filter");
    assert_eq!(error["param"], "messages[0].content");
    // Refused as soon as the verdict came, not after upstream's 2 s.
    assert!(started.elapsed() < Duration::from_millis(1_500));
    // Upstream did get the call (that is the point of parallel), and lost it.
    assert!(w
        .standin
        .requests()
        .iter()
        .any(|r| r.path == "/v1/chat/completions"));
    eventually(
        "the stand-in sees the chat call cancelled",
        Duration::from_secs(5),
        || w.standin.stats().cancelled_requests >= 1,
    )
    .await;
    // On record as a moderation block, like strict mode's.
    let events = client()
        .get(format!("{}/admin/v1/events?kind=request&limit=5", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("moderation:block"), "{events}");
    assert!(events.contains(r#""outcome":"blocked""#), "{events}");
}

#[tokio::test]
async fn a_parallel_stream_releases_nothing_before_the_verdict() {
    let w = gateway();
    delay_moderation(&w, 500);
    let started = Instant::now();
    let response = call(&w, FAST_KEY, &chat("stream me something", true), 0).await;
    // The head itself waits for the verdict.
    let head = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(head >= Duration::from_millis(480), "head after {head:?}");
    let mut body = response.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    // A flagged streamed input: no stream at all, the same 400.
    delay_moderation(&w, 200);
    let response = call(&w, FAST_KEY, &chat("FLAG:hate in a stream", true), 0).await;
    let error = expect_error(response, 400).await;
    assert_eq!(error["code"], "content_filter");
}

#[tokio::test]
async fn a_cached_verdict_needs_no_wait_and_failures_follow_on_error() {
    let w = gateway();
    let body = chat("asked twice", false);
    let response = call(&w, FAST_KEY, &body, 0).await;
    assert_eq!(response.status(), 200);
    // The second time the verdict comes from the cache: a delayed endpoint is not asked.
    delay_moderation(&w, 1_000);
    let started = Instant::now();
    let response = call(&w, FAST_KEY, &body, 0).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(600));

    // The endpoint failing: on_error = block (the default) refuses with 503.
    w.standin
        .queue_fault_for("/v1/moderations", "status=500", 10)
        .unwrap();
    let response = call(&w, FAST_KEY, &chat("while it is down", false), 0).await;
    let error = expect_error(response, 503).await;
    assert_eq!(error["code"], "moderation_unavailable");
}
