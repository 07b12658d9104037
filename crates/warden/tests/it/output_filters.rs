//! The local filters on what the model writes back, against the real binary: the
//! stand-in answers a scripted text (`x-standin-reply`), cut into chunks of a chosen size
//! when streamed (`x-standin-fault: chunk_chars=N`). A secret in the answer never reaches
//! the client: the raw bytes it receives are searched for any piece of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The part of the key that must never show (no 4-character piece of it).
const KEY_BODY: &str = "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LmNbVcXz";

fn key() -> String {
    format!("sk-proj-{KEY_BODY}")
}

fn reply() -> String {
    format!("Sure. Your key is {} - keep it safe.", key())
}

fn gateway(extra: &str) -> Warden {
    Warden::start_with(Options {
        extra_toml: extra.into(),
        ..Default::default()
    })
}

/// A call whose answer is `reply`, streamed in `chunk_chars` pieces when given.
async fn ask(
    w: &Warden,
    path: &str,
    body: Value,
    reply: &str,
    chunk_chars: Option<u32>,
) -> Vec<u8> {
    let mut request = client()
        .post(w.url(path))
        .bearer_auth(APP_KEY)
        .header("x-warden-user", "u1")
        .header("x-standin-reply", reply)
        .json(&body);
    if let Some(n) = chunk_chars {
        request = request.header("x-standin-fault", format!("chunk_chars={n}"));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut raw = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        raw.extend_from_slice(&chunk.unwrap());
    }
    raw
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": "what is my key?"}]})
}

fn responses(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "input": "what is my key?"})
}

/// Whether any 4-character piece of the key's body is in `raw`, or in the text its
/// stream deltas spell when joined (a key cut into 3-character chunks shows only there).
fn leaks(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let joined = deltas_joined(&text);
    let body: Vec<char> = KEY_BODY.chars().collect();
    body.windows(4).any(|w| {
        let piece: String = w.iter().collect();
        text.contains(&piece) || joined.contains(&piece)
    })
}

/// Every text delta of a chat or responses stream, joined.
fn deltas_joined(raw: &str) -> String {
    let mut out = String::new();
    for data in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if v["type"].as_str().is_some_and(|t| t.ends_with(".delta")) {
            out.push_str(v["delta"].as_str().unwrap_or(""));
        }
        for choice in v["choices"].as_array().into_iter().flatten() {
            out.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    out
}

/// The content deltas of a chat stream, joined; every `data:` line must be JSON.
fn chat_text(raw: &[u8]) -> (String, Vec<Value>) {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let mut out = String::new();
    let mut finishes = Vec::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        for choice in v["choices"].as_array().unwrap() {
            out.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if !choice["finish_reason"].is_null() {
                finishes.push(choice["finish_reason"].clone());
            }
        }
    }
    (out, finishes)
}

#[tokio::test]
async fn an_echoed_key_is_redacted_in_chat_answers_streamed_or_not() {
    let w = gateway("");
    let raw = ask(&w, "/v1/chat/completions", chat(false), &reply(), None).await;
    assert!(!leaks(&raw), "{}", String::from_utf8_lossy(&raw));
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Sure. Your key is [REDACTED:openai-api-key] - keep it safe."
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    // Word by word (the key in one chunk), then cut into 3- and 7-character chunks so
    // the key spans many events.
    for chunk in [None, Some(3), Some(7)] {
        let raw = ask(&w, "/v1/chat/completions", chat(true), &reply(), chunk).await;
        assert!(
            !leaks(&raw),
            "chunk {chunk:?}: {}",
            String::from_utf8_lossy(&raw)
        );
        let (text, finishes) = chat_text(&raw);
        assert_eq!(
            text, "Sure. Your key is [REDACTED:openai-api-key] - keep it safe.",
            "chunk {chunk:?}"
        );
        assert_eq!(finishes, vec![json!("stop")]);
        assert!(raw.ends_with(b"data: [DONE]\n\n"));
    }
}

#[tokio::test]
async fn choices_interleaved_in_one_stream_are_held_apart() {
    let w = gateway("");
    let mut body = chat(true);
    body["n"] = json!(2);
    let raw = ask(&w, "/v1/chat/completions", body, &reply(), Some(3)).await;
    assert!(!leaks(&raw), "{}", String::from_utf8_lossy(&raw));
    let text = String::from_utf8(raw).unwrap();
    let mut per_choice = [String::new(), String::new()];
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        for choice in v["choices"].as_array().into_iter().flatten() {
            let i = choice["index"].as_u64().unwrap() as usize;
            per_choice[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    for text in per_choice {
        assert_eq!(
            text,
            "Sure. Your key is [REDACTED:openai-api-key] - keep it safe."
        );
    }
}

#[tokio::test]
async fn the_responses_api_is_redacted_too() {
    let w = gateway("");
    let raw = ask(&w, "/v1/responses", responses(false), &reply(), None).await;
    assert!(!leaks(&raw), "{}", String::from_utf8_lossy(&raw));
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "Sure. Your key is [REDACTED:openai-api-key] - keep it safe."
    );
    // The stream repeats the text in its `.done` and `response.completed` events.
    let raw = ask(&w, "/v1/responses", responses(true), &reply(), Some(5)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(!leaks(&raw), "{text}");
    assert!(text.contains("response.completed"), "{text}");
    assert!(text.contains("[REDACTED:openai-api-key]"), "{text}");
}

#[tokio::test]
async fn findings_are_recorded_as_output_filters() {
    let w = gateway("");
    let reply = format!("{} or mail bob@example.com", key());
    let raw = ask(&w, "/v1/chat/completions", chat(false), &reply, None).await;
    assert!(!leaks(&raw));
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.contains("bob@example.com"),
        "PII is only flagged: {raw}"
    );
    let events = || async {
        client()
            .get(format!("{}/admin/v1/events?kind=request&limit=10", w.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut seen = String::new();
    for _ in 0..50 {
        seen = events().await;
        if seen.contains("output_filters") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains(r#"\"stage\":\"output_filters\""#), "{seen}");
    assert!(seen.contains("openai-api-key"), "{seen}");
    assert!(seen.contains(r#"\"categories\":[\"pii\"]"#), "{seen}");
}

#[tokio::test]
async fn without_the_filters_the_key_goes_through() {
    // Proves the tests above can fail.
    let w = gateway("[safety.filters]\nenabled = false\n");
    let raw = ask(&w, "/v1/chat/completions", chat(false), &reply(), None).await;
    assert!(leaks(&raw), "{}", String::from_utf8_lossy(&raw));
    let raw = ask(&w, "/v1/chat/completions", chat(true), &reply(), Some(3)).await;
    assert!(leaks(&raw));
    assert_eq!(chat_text(&raw).0, reply());
    let raw = ask(&w, "/v1/responses", responses(true), &reply(), Some(5)).await;
    assert!(leaks(&raw));
}

#[tokio::test]
async fn with_secrets_block_the_answer_ends_with_content_filter() {
    let w = gateway("[safety.filters]\nsecrets = \"block\"\n");
    let raw = ask(&w, "/v1/chat/completions", chat(false), &reply(), None).await;
    assert!(!leaks(&raw));
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "content_filter");
    assert!(answer["choices"][0]["message"]["content"].is_null());

    let raw = ask(&w, "/v1/chat/completions", chat(true), &reply(), Some(4)).await;
    assert!(!leaks(&raw), "{}", String::from_utf8_lossy(&raw));
    let (text, finishes) = chat_text(&raw);
    assert_eq!(finishes, vec![json!("content_filter")]);
    assert!(!text.contains("sk-proj"), "{text}");

    let raw = ask(&w, "/v1/responses", responses(true), &reply(), Some(6)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(!leaks(&raw), "{text}");
    assert!(
        text.contains("response.incomplete") && text.contains("content_filter"),
        "{text}"
    );
}

#[tokio::test]
async fn filters_and_output_moderation_work_together() {
    let w = Warden::start_with(Options {
        moderation: true,
        extra_toml: "[safety.moderation.output]\nwindow_chars = 10\n".into(),
        ..Default::default()
    });
    let raw = ask(&w, "/v1/chat/completions", chat(true), &reply(), Some(3)).await;
    assert!(!leaks(&raw), "{}", String::from_utf8_lossy(&raw));
    assert_eq!(
        chat_text(&raw).0,
        "Sure. Your key is [REDACTED:openai-api-key] - keep it safe."
    );
}
