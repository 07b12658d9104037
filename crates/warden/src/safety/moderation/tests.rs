//! Moderator tests against a fake endpoint: mapping results back to fields, the cache,
//! fail-open/closed, the breaker, and the 20-turn conversation measurement.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::config::moderation::validate;
use crate::config::Problems;

/// Flags `FLAG:<category>` like the stand-in; fails while `failing` is set.
#[derive(Default)]
pub struct Fake {
    pub calls: AtomicUsize,
    pub failing: AtomicBool,
    pub bodies: Mutex<Vec<Value>>,
    /// Answer this many milliseconds late (0: at once, without yielding).
    pub delay_ms: AtomicU64,
}

impl Backend for Fake {
    fn moderate<'a>(
        &'a self,
        _key: Option<&'a VirtualKey>,
        body: Bytes,
    ) -> client::BoxFuture<'a, Result<Vec<Scores>, Failure>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let body: Value = serde_json::from_slice(&body).unwrap();
            self.bodies.lock().unwrap().push(body.clone());
            if self.failing.load(Ordering::SeqCst) {
                return Err(Failure::Status);
            }
            Ok(fake_results(&body["input"]))
        })
    }
}

pub fn fake_scores(text: &str) -> Scores {
    let mut s = Scores::default();
    for (i, name) in categories::CATEGORIES.iter().enumerate() {
        s.scores[i] = 0.0001;
        if text.contains(&format!("FLAG:{name}")) {
            s.scores[i] = 0.97;
            s.flagged.insert(i);
        }
    }
    s
}

fn fake_results(input: &Value) -> Vec<Scores> {
    match input {
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|t| fake_scores(t.as_str().unwrap()))
            .collect(),
        Value::Array(parts) => vec![fake_scores(
            &parts.iter().map(|p| p.to_string()).collect::<String>(),
        )],
        other => vec![fake_scores(other.as_str().unwrap_or(""))],
    }
}

pub fn config(toml: &str) -> ModerationConfig {
    let mut problems = Problems::default();
    let value: toml::Value = toml.parse::<toml::Table>().unwrap().into();
    let config = validate(Some(&value), &[], &mut problems);
    assert!(problems.is_empty(), "{problems}");
    config
}

fn moderator(toml: &str) -> (Moderator, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    (Moderator::new(config(toml), fake.clone()), fake)
}

#[tokio::test]
async fn one_call_maps_results_back_to_fields() {
    let (m, fake) = moderator("");
    let pieces = vec![
        Piece::text("messages[0].content", "hello"),
        Piece::text("messages[1].content", "I will FLAG:violence you"),
    ];
    let checked = m.check(Side::Input, &pieces, None).await.unwrap();
    let hit = checked.blocked.into_iter().next().unwrap();
    assert_eq!(hit.param, "messages[1].content");
    assert_eq!(hit.categories.names(), vec!["violence"]);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    let body = &fake.bodies.lock().unwrap()[0];
    assert_eq!(body["model"], "omni-moderation-latest");
    assert_eq!(body["input"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn images_go_in_a_second_parts_call_and_long_text_is_chunked() {
    let (m, fake) = moderator("chunk_chars = 10");
    let pieces = vec![
        Piece::text("prompt", "abcdefghij klmnopqrst uvwxyz"),
        Piece {
            param: "messages[0].content[1].image_url.url".into(),
            content: Content::Image("https://img/FLAG:sexual".into()),
        },
    ];
    let checked = m.check(Side::Input, &pieces, None).await.unwrap();
    assert_eq!(
        checked.blocked.into_iter().next().unwrap().param,
        "messages[0].content[1].image_url.url"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    let bodies = fake.bodies.lock().unwrap();
    let texts = bodies.iter().find(|b| b["input"][0].is_string()).unwrap();
    assert_eq!(texts["input"].as_array().unwrap().len(), 3, "{texts}");
    let images = bodies.iter().find(|b| b["input"][0].is_object()).unwrap();
    assert_eq!(images["input"][0]["type"], "image_url");
}

#[tokio::test]
async fn cached_text_is_not_sent_again() {
    let (m, fake) = moderator("");
    let a = vec![Piece::text("input", "same words")];
    m.check(Side::Input, &a, None).await.unwrap();
    m.check(Side::Input, &a, None).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.totals.cache_hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn flag_action_records_without_blocking() {
    let (m, _) = moderator("[categories.hate]\naction = \"flag\"");
    let checked = m
        .check(Side::Input, &[Piece::text("input", "FLAG:hate")], None)
        .await
        .unwrap();
    assert!(checked.blocked.is_empty());
    assert_eq!(checked.flagged[0].categories.names(), vec!["hate"]);
}

#[tokio::test]
async fn failures_block_by_default_and_fail_open_is_marked() {
    let (m, fake) = moderator("");
    fake.failing.store(true, Ordering::SeqCst);
    let pieces = [Piece::text("input", "x")];
    assert_eq!(
        m.check(Side::Input, &pieces, None).await.unwrap_err(),
        Unavailable(Failure::Status)
    );
    let (m, fake) = moderator("on_error = \"allow\"");
    fake.failing.store(true, Ordering::SeqCst);
    let checked = m.check(Side::Input, &pieces, None).await.unwrap();
    assert_eq!(checked.failed_open, Some(Failure::Status));
    assert!(checked.blocked.is_empty());
}

#[tokio::test]
async fn a_cached_block_wins_over_a_failure() {
    let (m, fake) = moderator("");
    m.check(Side::Input, &[Piece::text("a", "FLAG:hate")], None)
        .await
        .unwrap();
    fake.failing.store(true, Ordering::SeqCst);
    let checked = m
        .check(
            Side::Input,
            &[Piece::text("a", "FLAG:hate"), Piece::text("b", "new")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(checked.blocked.into_iter().next().unwrap().param, "a");
}

#[tokio::test]
async fn the_breaker_stops_calls_then_probes() {
    let (m, fake) = moderator("breaker_failures = 2\nbreaker_cooldown_ms = 50");
    fake.failing.store(true, Ordering::SeqCst);
    for i in 0..5 {
        let piece = [Piece::text("input", format!("text {i}"))];
        assert!(m.check(Side::Input, &piece, None).await.is_err());
    }
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        2,
        "open after two failures"
    );
    let err = m
        .check(Side::Input, &[Piece::text("input", "more")], None)
        .await
        .unwrap_err();
    assert_eq!(err, Unavailable(Failure::CircuitOpen));
    tokio::time::sleep(Duration::from_millis(60)).await;
    fake.failing.store(false, Ordering::SeqCst);
    assert!(m
        .check(Side::Input, &[Piece::text("input", "probe")], None)
        .await
        .is_ok());
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    struct Slow;
    impl Backend for Slow {
        fn moderate<'a>(
            &'a self,
            _key: Option<&'a VirtualKey>,
            _body: Bytes,
        ) -> client::BoxFuture<'a, Result<Vec<Scores>, Failure>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Vec::new())
            })
        }
    }
    let m = Moderator::new(config("timeout_ms = 20"), Arc::new(Slow));
    let err = m
        .check(Side::Input, &[Piece::text("input", "x")], None)
        .await
        .unwrap_err();
    assert_eq!(err, Unavailable(Failure::Timeout));
}

/// The measurement: a 20-turn chat, each turn re-sending the whole history.
/// Prints the moderated inputs and bytes with the cache against re-moderating it all.
#[tokio::test]
async fn twenty_turn_conversation_sends_only_new_messages() {
    async fn replay(m: &Moderator, moderate_output: bool) -> (u64, u64) {
        let mut history = vec![Piece::text(
            "messages[0].content",
            "You are a helpful assistant for a travel agency.",
        )];
        for turn in 0..20 {
            history.push(Piece::text(
                format!("messages[{}].content", history.len()),
                format!(
                    "Turn {turn}: what should I see in city number {turn}? Please be detailed."
                ),
            ));
            m.check(Side::Input, &history, None).await.unwrap();
            let reply = format!(
                "In city {turn} you should see the old town, the river walk and the museum of modern art. {}",
                "Plan a full day. ".repeat(10)
            );
            let reply = Piece::text(format!("messages[{}].content", history.len()), reply);
            if moderate_output {
                m.check(Side::Output, std::slice::from_ref(&reply), None)
                    .await
                    .unwrap();
            }
            history.push(reply);
        }
        (
            m.totals.inputs.load(Ordering::Relaxed),
            m.totals.bytes.load(Ordering::Relaxed),
        )
    }
    let (cached, _) = moderator("");
    let (naive, _) = moderator("cache_entries = 0");
    let (with_output, _) = moderator("");
    let (c_inputs, c_bytes) = replay(&cached, false).await;
    let (n_inputs, n_bytes) = replay(&naive, false).await;
    let (o_inputs, o_bytes) = replay(&with_output, true).await;
    println!(
        "20-turn chat: cached {c_inputs} inputs / {c_bytes} B; re-moderate all {n_inputs} inputs / {n_bytes} B; \
         ratio inputs {:.3}, bytes {:.3}; with output moderation (input+output) {o_inputs} inputs / {o_bytes} B",
        c_inputs as f64 / n_inputs as f64,
        c_bytes as f64 / n_bytes as f64
    );
    // Without output moderation each turn adds the new user message and the previous
    // reply: 2 inputs (the first turn: system + user).
    assert_eq!(c_inputs, 40);
    // sum over turns of (2 * turn + 2) messages.
    assert_eq!(n_inputs, (0..20).map(|t| 2 * t + 2).sum::<u64>());
    // With output moderation the reply was cached as output: one input per new message.
    assert_eq!(o_inputs, 41);
}
