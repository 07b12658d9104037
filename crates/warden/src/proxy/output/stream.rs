//! Streaming output moderation: reads the upstream SSE stream in a task, holds events
//! back until the text they carry has passed moderation (every `window_chars`, at each
//! choice's end, and at the end of the stream), and releases them byte for byte. On a
//! block nothing held is sent: a final `content_filter` chunk (responses:
//! `response.incomplete`) ends the stream as OpenAI would.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::text::deltas;
use super::OUTPUT_STAGE;
use crate::endpoint::Endpoint;
use crate::events::flags::{self, Flag};
use crate::keys::VirtualKey;
use crate::proxy::observe::{RelayEnd, ResponseObserver};
use crate::proxy::recorder::{Outcome, Recorder};
use crate::safety::moderation::pieces::Piece;
use crate::safety::moderation::{Moderator, Side};

/// Released frames waiting for the client; small, so a slow client slows the relay.
const CHANNEL_FRAMES: usize = 16;
/// Passed text kept as context for the next window, so a phrase split across two
/// windows is still seen whole.
const OVERLAP_CHARS: usize = 200;
/// Held event bytes that force a check even before `window_chars` of text (events
/// with little text but large bodies must not grow the hold-back without bound).
const MAX_HELD_BYTES: usize = 1024 * 1024;
/// An SSE event larger than this is refused as broken.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

pub struct Relay {
    pub moderator: Arc<Moderator>,
    pub key: Option<Arc<VirtualKey>>,
    pub endpoint: Endpoint,
    pub recorder: Option<Recorder>,
    pub observers: Vec<Box<dyn ResponseObserver>>,
}

/// What the hold-back buffer knows.
#[derive(Default)]
struct State {
    buf: BytesMut,
    held: Vec<Bytes>,
    held_bytes: usize,
    /// Unmoderated text per choice / output index.
    pending: Vec<(usize, String)>,
    pending_chars: usize,
    /// The end of already-passed text per index, for context.
    passed_tail: Vec<(usize, String)>,
    /// Chat/completions: the chunk identity for the final chunk. Responses: the response
    /// object from `response.created` and the last sequence number.
    meta: Value,
    seq: u64,
    choices: Vec<usize>,
}

enum Step {
    Go,
    Stop,
}

impl Relay {
    /// Starts relaying; the returned receiver is the client's body.
    pub fn spawn<B>(self, upstream: B) -> mpsc::Receiver<Bytes>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        tokio::spawn(self.run(upstream, tx));
        rx
    }

    async fn run<B>(mut self, mut upstream: B, tx: mpsc::Sender<Bytes>)
    where
        B: Body<Data = Bytes> + Send + Unpin,
        B::Error: std::fmt::Display + Send,
    {
        let mut state = State::default();
        loop {
            match upstream.frame().await {
                None => break,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "upstream body broke mid-response");
                    // Whatever passed is released; the rest is withheld.
                    if let Step::Go = self.check(&mut state, &tx).await {
                        let _ = tx
                            .send(error_event(self.endpoint, "upstream_stream_broken", &state))
                            .await;
                        self.finish(
                            RelayEnd::UpstreamBroke,
                            Outcome::Failed,
                            Some("upstream_stream_broken"),
                        );
                    }
                    return;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    for observer in &mut self.observers {
                        observer.frame(&data);
                    }
                    state.buf.extend_from_slice(&data);
                    while let Some(event) = next_event(&mut state.buf) {
                        if let Step::Stop = self.event(&mut state, event, &tx).await {
                            return;
                        }
                    }
                    if state.buf.len() > MAX_EVENT_BYTES {
                        let _ = tx
                            .send(error_event(self.endpoint, "upstream_stream_broken", &state))
                            .await;
                        self.finish(
                            RelayEnd::UpstreamBroke,
                            Outcome::Failed,
                            Some("sse_event_too_large"),
                        );
                        return;
                    }
                }
            }
        }
        if !state.buf.is_empty() {
            let rest = state.buf.split().freeze();
            self.hold(&mut state, rest);
        }
        if let Step::Go = self.check(&mut state, &tx).await {
            self.finish(RelayEnd::Complete, Outcome::Allowed, None);
        }
    }

    fn hold(&self, state: &mut State, event: Bytes) {
        state.held_bytes += event.len();
        state.held.push(event);
    }

    async fn event(&mut self, state: &mut State, event: Bytes, tx: &mpsc::Sender<Bytes>) -> Step {
        let json = data_json(&event);
        let mut boundary = json.is_none() && event.windows(6).any(|w| w == b"[DONE]");
        if let Some(v) = &json {
            self.learn(state, v);
            let mut found = Vec::new();
            deltas(self.endpoint, v, &mut found);
            for (i, text) in found {
                state.pending_chars += text.chars().count();
                match state.pending.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, pending)) => pending.push_str(&text),
                    None => state.pending.push((i, text)),
                }
            }
            boundary |= is_boundary(self.endpoint, v);
        }
        self.hold(state, event);
        let window = self.moderator.config().output.window_chars;
        let due = state.pending_chars >= window
            || state.held_bytes >= MAX_HELD_BYTES
            || (boundary && state.pending_chars > 0)
            || state.pending_chars == 0;
        if due {
            return self.check(state, tx).await;
        }
        Step::Go
    }

    /// Remembers what a final chunk / `response.incomplete` event needs.
    fn learn(&self, state: &mut State, v: &Value) {
        if let Some(seq) = v.get("sequence_number").and_then(Value::as_u64) {
            state.seq = seq;
        }
        match self.endpoint {
            Endpoint::Responses => {
                if let Some(response) = v.get("response") {
                    state.meta = response.clone();
                }
            }
            _ => {
                if state.meta.is_null() {
                    state.meta = json!({
                        "id": v.get("id"), "object": v.get("object"),
                        "created": v.get("created"), "model": v.get("model"),
                    });
                }
                for choice in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let i = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                    if !state.choices.contains(&i) {
                        state.choices.push(i);
                    }
                }
            }
        }
    }

    /// Moderates pending text (if any) and releases the held events when it passes.
    async fn check(&mut self, state: &mut State, tx: &mpsc::Sender<Bytes>) -> Step {
        if state.pending_chars > 0 {
            let pieces: Vec<Piece> = state
                .pending
                .iter()
                .map(|(i, text)| {
                    let tail = state
                        .passed_tail
                        .iter()
                        .find(|(j, _)| j == i)
                        .map_or("", |(_, t)| t.as_str());
                    Piece::text(format!("choices[{i}]"), format!("{tail}{text}"))
                })
                .collect();
            match self
                .moderator
                .check(Side::Output, &pieces, self.key.as_deref())
                .await
            {
                Ok(checked) if !checked.blocked.is_empty() => {
                    let categories = checked.blocked[0].categories.names().join(",");
                    // Debug: the request's own line (its event) reports the block at info.
                    tracing::debug!(categories, "output blocked mid-stream");
                    state.held.clear();
                    self.note(&format!("output_block:{categories}"));
                    for hit in &checked.blocked {
                        self.flag(flags::of_hit(OUTPUT_STAGE, flags::BLOCK, hit));
                    }
                    // On record before the client sees the block.
                    for observer in &mut self.observers {
                        observer.end(RelayEnd::Complete);
                    }
                    self.observers.clear();
                    if let Some(recorder) = self.recorder.take() {
                        recorder
                            .close_durable(Outcome::Blocked, Some("output_content_filter"))
                            .await;
                    }
                    for bytes in block_events(self.endpoint, state) {
                        if tx.send(bytes).await.is_err() {
                            break;
                        }
                    }
                    return Step::Stop;
                }
                Ok(checked) => {
                    if let Some(why) = checked.failed_open {
                        self.note(&format!("output_fail_open:{}", why.label()));
                        self.flag(Flag::new(OUTPUT_STAGE, flags::FAIL_OPEN).rule(why.label()));
                    }
                    for hit in &checked.flagged {
                        self.note(&format!("output_flag:{}", hit.categories.names().join(",")));
                        self.flag(flags::of_hit(OUTPUT_STAGE, flags::FLAG, hit));
                    }
                    // A flagged window is on record before it is released.
                    if let Some(recorder) = self.recorder.as_mut() {
                        recorder.persist_flags().await;
                    }
                    for (i, text) in std::mem::take(&mut state.pending) {
                        let tail = match state.passed_tail.iter_mut().find(|(j, _)| *j == i) {
                            Some((_, t)) => t,
                            None => {
                                state.passed_tail.push((i, String::new()));
                                let last = state.passed_tail.len() - 1;
                                &mut state.passed_tail[last].1
                            }
                        };
                        tail.push_str(&text);
                        let excess = tail.chars().count().saturating_sub(OVERLAP_CHARS);
                        if let Some((cut, _)) = tail.char_indices().nth(excess) {
                            tail.drain(..cut);
                        }
                    }
                    state.pending_chars = 0;
                }
                Err(unavailable) => {
                    let label = unavailable.0.label();
                    tracing::warn!(
                        reason = label,
                        "output moderation unavailable; stream withheld (on_error = block)"
                    );
                    state.held.clear();
                    let _ = tx
                        .send(error_event(self.endpoint, "moderation_unavailable", state))
                        .await;
                    self.finish(
                        RelayEnd::Complete,
                        Outcome::Failed,
                        Some("moderation_unavailable"),
                    );
                    return Step::Stop;
                }
            }
        }
        state.held_bytes = 0;
        for bytes in std::mem::take(&mut state.held) {
            if tx.send(bytes).await.is_err() {
                self.finish(
                    RelayEnd::ClientLeft,
                    Outcome::Cancelled,
                    Some("client_disconnected"),
                );
                return Step::Stop;
            }
        }
        Step::Go
    }

    fn note(&mut self, note: &str) {
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.note("moderation", note);
        }
    }

    fn flag(&mut self, flag: Flag) {
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.flag(flag);
        }
    }

    fn finish(&mut self, how: RelayEnd, outcome: Outcome, reason: Option<&str>) {
        for observer in &mut self.observers {
            observer.end(how);
        }
        self.observers.clear();
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(outcome, reason);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.recorder.is_some() {
            self.finish(
                RelayEnd::ClientLeft,
                Outcome::Cancelled,
                Some("client_disconnected"),
            );
        }
    }
}

/// Splits one complete SSE event (through its blank line) off the front of `buf`.
fn next_event(buf: &mut BytesMut) -> Option<Bytes> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let end = match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(buf.split_to(end).freeze())
}

/// The JSON of an event's `data:` line(s), if it has any.
fn data_json(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// Events after which no more text of a choice follows: check before releasing them.
fn is_boundary(endpoint: Endpoint, v: &Value) -> bool {
    match endpoint {
        Endpoint::Responses => v
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(".done") || t == "response.completed"),
        _ => v.get("choices").and_then(Value::as_array).is_some_and(|c| {
            c.iter()
                .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
        }),
    }
}

/// How a blocked stream ends.
fn block_events(endpoint: Endpoint, state: &State) -> Vec<Bytes> {
    match endpoint {
        Endpoint::Responses => {
            let mut response = state.meta.clone();
            if !response.is_object() {
                response = json!({});
            }
            response["status"] = json!("incomplete");
            response["incomplete_details"] = json!({"reason": "content_filter"});
            response["output"] = json!([]);
            let event = json!({
                "type": "response.incomplete",
                "sequence_number": state.seq + 1,
                "response": response,
            });
            vec![Bytes::from(format!(
                "event: response.incomplete\ndata: {event}\n\n"
            ))]
        }
        _ => {
            let completions = endpoint == Endpoint::Completions;
            let choices: Vec<Value> = state
                .choices
                .iter()
                .map(|i| {
                    if completions {
                        json!({"index": i, "text": "", "logprobs": null, "finish_reason": "content_filter"})
                    } else {
                        json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": "content_filter"})
                    }
                })
                .collect();
            let mut chunk = state.meta.clone();
            if !chunk.is_object() {
                chunk = json!({});
            }
            chunk["choices"] = Value::Array(choices);
            vec![
                Bytes::from(format!("data: {chunk}\n\n")),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ]
        }
    }
}

/// An SSE error the SDKs raise as `APIError`.
fn error_event(endpoint: Endpoint, code: &str, state: &State) -> Bytes {
    let message = match code {
        "moderation_unavailable" => "Output moderation is unavailable, so the rest of the answer was withheld. Please retry.",
        _ => "The upstream stream ended unexpectedly. Please retry.",
    };
    let error = json!({"message": message, "type": "server_error", "param": null, "code": code});
    match endpoint {
        Endpoint::Responses => {
            let event = json!({
                "type": "error", "code": code, "message": message, "param": null,
                "sequence_number": state.seq + 1, "error": error,
            });
            Bytes::from(format!("event: error\ndata: {event}\n\n"))
        }
        _ => Bytes::from(format!("data: {}\n\n", json!({ "error": error }))),
    }
}

#[cfg(test)]
mod tests;
