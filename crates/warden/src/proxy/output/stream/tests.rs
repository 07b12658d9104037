//! The hold-back relay against a fake Moderation endpoint.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;

use http_body::Frame;
use http_body_util::StreamBody;

use super::*;
use crate::safety::moderation::tests::{config, Fake};

fn chat_event(text: &str, finish: Option<&str>) -> String {
    let v = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{"content":text},"finish_reason":finish}]});
    format!("data: {v}\n\n")
}

async fn relay(endpoint: Endpoint, toml: &str, events: Vec<String>) -> String {
    relay_with(endpoint, toml, events, None, Arc::new(Fake::default())).await
}

async fn relay_with(
    endpoint: Endpoint,
    toml: &str,
    events: Vec<String>,
    guard: Option<Guard>,
    fake: Arc<Fake>,
) -> String {
    let moderator = Arc::new(Moderator::new(config(toml), fake));
    // Frames cut mid-event, as a network would.
    let joined = events.concat();
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = joined
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let relay = Relay {
        moderator,
        moderate: true,
        guard,
        key: None,
        endpoint,
        recorder: None,
        observers: Vec::new(),
    };
    let mut rx = relay.spawn(body);
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.extend_from_slice(&b);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn clean_streams_pass_byte_for_byte() {
    let mut events: Vec<String> = ["Hello ", "there, ", "friend."]
        .iter()
        .map(|t| chat_event(t, None))
        .collect();
    events.push(chat_event("", Some("stop")));
    events.push("data: [DONE]\n\n".into());
    let out = relay(
        Endpoint::ChatCompletions,
        "[output]\nwindow_chars = 5",
        events.clone(),
    )
    .await;
    assert_eq!(out, events.concat());
}

#[tokio::test]
async fn flagged_text_never_reaches_the_client() {
    // A marker split across deltas is judged with the text before it (the overlap).
    let words = ["Fine start. ", "then FL", "AG:violence here ", "and more"];
    let mut events: Vec<String> = words.iter().map(|t| chat_event(t, None)).collect();
    events.push(chat_event("", Some("stop")));
    events.push("data: [DONE]\n\n".into());
    let out = relay(
        Endpoint::ChatCompletions,
        "[output]\nwindow_chars = 10",
        events,
    )
    .await;
    assert!(
        out.contains("Fine start."),
        "passed text is released: {out}"
    );
    assert!(!out.contains("AG:violence"), "{out}");
    assert!(!out.contains("and more"), "{out}");
    assert!(out.contains(r#""finish_reason":"content_filter""#), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert!(!out.contains(r#""finish_reason":"stop""#));
}

#[tokio::test]
async fn responses_end_with_response_incomplete() {
    let created = json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[]}});
    let delta = |seq: u64, d: &str| {
        let v = json!({"type":"response.output_text.delta","sequence_number":seq,"output_index":0,"content_index":0,"item_id":"m","delta":d});
        format!("event: response.output_text.delta\ndata: {v}\n\n")
    };
    let events = vec![
        format!("event: response.created\ndata: {created}\n\n"),
        delta(1, "ok so "),
        delta(2, "FLAG:hate words"),
    ];
    let out = relay(Endpoint::Responses, "", events).await;
    assert!(out.contains("response.created"));
    assert!(!out.contains("FLAG"), "{out}");
    assert!(out.contains("event: response.incomplete"));
    assert!(out.contains(r#""reason":"content_filter""#));
    assert!(out.contains(r#""sequence_number":3"#), "{out}");
}

#[tokio::test]
async fn moderation_gets_the_secret_masked_once_it_is_recognisable() {
    use crate::safety::filters::{FilterPolicy, Scanner};
    let key = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LmNbVcXz";
    let mut events: Vec<String> = ["Your key: ", &key[..12], &key[12..], " is here."]
        .iter()
        .map(|t| chat_event(t, None))
        .collect();
    events.push(chat_event("", Some("stop")));
    events.push("data: [DONE]\n\n".into());
    let scanner = Arc::new(Scanner::new(&FilterPolicy::default()).unwrap());
    let fake = Arc::new(Fake::default());
    let out = relay_with(
        Endpoint::ChatCompletions,
        "[output]\nwindow_chars = 8",
        events,
        Some(Guard::new(scanner, "choices")),
        fake.clone(),
    )
    .await;
    assert!(!out.contains("Zx9Qw8") && !out.contains("Ui5Op4"), "{out}");
    assert!(out.contains("[REDACTED:openai-api-key]"), "{out}");
    // A window may end inside the key: its first characters, too few for the rule to
    // match yet, can reach the endpoint; the key as a whole never does.
    let sent = format!("{:?}", fake.bodies.lock().unwrap());
    assert!(!sent.contains("Zx9Qw8Er7Ty6Ui5"), "{sent}");
    assert!(sent.contains("[REDACTED:openai-api-key]"), "{sent}");
}

#[tokio::test]
async fn a_smaller_first_window_releases_the_first_words_early() {
    let words = [
        "Hello ", "there, ", "my good ", "friend, ", "how are ", "you?",
    ];
    let mut events: Vec<String> = words.iter().map(|t| chat_event(t, None)).collect();
    events.push(chat_event("", Some("stop")));
    events.push("data: [DONE]\n\n".into());
    let first_check = |first_window: &'static str| {
        let events = events.clone();
        async move {
            let fake = Arc::new(Fake::default());
            let toml = format!("[output]\nwindow_chars = 30\n{first_window}");
            let out = relay_with(
                Endpoint::ChatCompletions,
                &toml,
                events.clone(),
                None,
                fake.clone(),
            )
            .await;
            assert_eq!(out, events.concat(), "clean text passes unchanged");
            let bodies = fake.bodies.lock().unwrap();
            (bodies.len(), bodies[0].to_string())
        }
    };
    let (calls, first) = first_check("first_window_chars = 5").await;
    assert!(
        first.contains("Hello") && !first.contains("there"),
        "{first}"
    );
    assert_eq!(calls, 3, "the small first window, then two of 30");
    let (calls, first) = first_check("").await;
    assert!(first.contains("friend"), "one window of 30: {first}");
    assert_eq!(calls, 2);
}
