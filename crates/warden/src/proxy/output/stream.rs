//! Streaming output checks: reads the upstream SSE stream in a task, holds events back
//! until the text they carry has passed moderation (every `window_chars`, at each
//! choice's end, and at the end of the stream) and the local filters (`guard`: no secret
//! cut in two), and releases them byte for byte (events whose text had a secret redacted
//! are re-encoded). On a block nothing held is sent: a final `content_filter` chunk
//! (responses: `response.incomplete`) ends the stream as OpenAI would.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::filters::{self, FILTER_STAGE};
use super::guard::{Guard, Plan, Segment};
use super::OUTPUT_STAGE;
use crate::endpoint::Endpoint;
use crate::events::flags::{self, Flag};
use crate::keys::VirtualKey;
use crate::openai::response_text::{deltas, visit_deltas_mut};
use crate::openai::sse::{self, data_json, next_event, reencode};
use crate::pipeline::Finding;
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
    /// Output moderation is on (otherwise only the local filters run).
    pub moderate: bool,
    /// The local filters' hold-back, when filters are on for this key.
    pub guard: Option<Guard>,
    pub key: Option<Arc<VirtualKey>>,
    pub endpoint: Endpoint,
    pub recorder: Option<Recorder>,
    pub observers: Vec<Box<dyn ResponseObserver>>,
}

/// What the hold-back buffer knows.
#[derive(Default)]
struct State {
    buf: BytesMut,
    held: Vec<Held>,
    held_bytes: usize,
    /// Unmoderated text per choice / output index.
    pending: Vec<(usize, String)>,
    pending_chars: usize,
    /// Whether a window has passed moderation yet (the first may be smaller).
    first_passed: bool,
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

/// An event waiting for release, with its parsed JSON and its text's place in the guard.
struct Held {
    bytes: Bytes,
    json: Option<Value>,
    segments: Vec<Segment>,
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
            self.hold(
                &mut state,
                Held {
                    bytes: rest,
                    json: None,
                    segments: Vec::new(),
                },
            );
        }
        if let Some(guard) = self.guard.as_mut() {
            guard.finish_all();
        }
        if let Step::Go = self.check(&mut state, &tx).await {
            self.finish(RelayEnd::Complete, Outcome::Allowed, None);
        }
    }

    fn hold(&self, state: &mut State, held: Held) {
        state.held_bytes += held.bytes.len();
        state.held.push(held);
    }

    async fn event(&mut self, state: &mut State, event: Bytes, tx: &mpsc::Sender<Bytes>) -> Step {
        let json = data_json(&event);
        let done = json.is_none() && event.windows(6).any(|w| w == b"[DONE]");
        let mut boundary = done;
        let mut segments = Vec::new();
        if let Some(v) = &json {
            self.learn(state, v);
            let mut found = Vec::new();
            deltas(self.endpoint, v, &mut found);
            for (i, text) in found {
                if let Some(guard) = self.guard.as_mut() {
                    segments.push(guard.push(i, &text));
                }
                if !self.moderate {
                    continue;
                }
                state.pending_chars += text.chars().count();
                match state.pending.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, pending)) => pending.push_str(&text),
                    None => state.pending.push((i, text)),
                }
            }
            boundary |= is_boundary(self.endpoint, v);
            if let Some(guard) = self.guard.as_mut() {
                for i in finished(self.endpoint, v) {
                    guard.finish(i);
                }
            }
        }
        if done {
            if let Some(guard) = self.guard.as_mut() {
                guard.finish_all();
            }
        }
        // The JSON is kept only where the guard may have to rewrite the event.
        let keep =
            self.guard.is_some() && (!segments.is_empty() || self.endpoint == Endpoint::Responses);
        self.hold(
            state,
            Held {
                bytes: event,
                json: json.filter(|_| keep),
                segments,
            },
        );
        let output = &self.moderator.config().output;
        let window = if state.first_passed {
            output.window_chars
        } else {
            output.first_window_chars
        };
        let filters_due = self.guard.as_ref().is_none_or(Guard::due);
        let due = (!self.moderate && filters_due)
            || state.pending_chars >= window
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
        if self.moderate && state.pending_chars > 0 {
            let pieces: Vec<Piece> = state
                .pending
                .iter()
                .map(|(i, text)| {
                    let tail = state
                        .passed_tail
                        .iter()
                        .find(|(j, _)| j == i)
                        .map_or("", |(_, t)| t.as_str());
                    let text = format!("{tail}{text}");
                    // Secrets the filters will redact are not sent to be moderated either.
                    let text = match self.guard.as_ref() {
                        Some(guard) => filters::masked(guard.scanner(), text),
                        None => text,
                    };
                    Piece::text(format!("choices[{i}]"), text)
                })
                .collect();
            match self
                .moderator
                .check(Side::Output, &pieces, self.key.as_deref())
                .await
            {
                Ok(checked) if !checked.blocked.is_empty() => {
                    let categories = checked.blocked[0].categories.names().join(",");
                    let by_moderation = true;
                    let found = checked
                        .blocked
                        .iter()
                        .map(|hit| flags::of_hit(OUTPUT_STAGE, flags::BLOCK, hit))
                        .collect();
                    return self
                        .block(state, tx, by_moderation, &categories, found)
                        .await;
                }
                Ok(checked) => {
                    if let Some(why) = checked.failed_open {
                        self.note(Finding::FailOpen {
                            side: Side::Output,
                            reason: why.label(),
                        });
                        self.flag(Flag::new(OUTPUT_STAGE, flags::FAIL_OPEN).rule(why.label()));
                    }
                    for hit in &checked.flagged {
                        self.note(Finding::OutputFlag {
                            categories: hit.categories.owned_names(),
                        });
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
                    state.first_passed = true;
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
        self.release(state, tx).await
    }

    /// Sends what the local filters let go of the held events (all of them without
    /// filters), secrets redacted.
    async fn release(&mut self, state: &mut State, tx: &mpsc::Sender<Bytes>) -> Step {
        let mut out: Vec<Bytes> = Vec::new();
        if let Some(guard) = self.guard.as_mut() {
            let segments: Vec<&[Segment]> = state.held.iter().map(|h| &h.segments[..]).collect();
            let release = match guard.plan(&segments) {
                Plan::Release(release) => release,
                Plan::Block { categories, flags } => {
                    return self.block(state, tx, false, &categories, flags).await;
                }
            };
            let mut snapshot_block = None;
            for mut held in state.held.drain(..release.events) {
                let mut texts = held
                    .segments
                    .iter()
                    .map(|s| guard.rewrite(&release, s))
                    .collect::<Vec<_>>();
                let mut changed = texts.iter().any(Option::is_some);
                if let Some(json) = held.json.as_mut() {
                    if changed {
                        let mut next = texts.iter_mut();
                        visit_deltas_mut(self.endpoint, json, |t| {
                            if let Some(Some(new)) = next.next().map(Option::take) {
                                *t = new;
                            }
                        });
                    } else if held.segments.is_empty() {
                        // Full-text events (`response.output_text.done`, …) repeat the
                        // deltas: redact them the same way.
                        let (redacted, blocked) = filters::snapshot(guard.scanner(), json);
                        changed = redacted;
                        snapshot_block = snapshot_block.or(blocked);
                    }
                    if changed {
                        held.bytes = reencode(&held.bytes, json);
                    }
                }
                out.push(held.bytes);
                if snapshot_block.is_some() {
                    break;
                }
            }
            guard.commit(&release);
            for flag in release.flags {
                self.note(Finding::FilterRule {
                    category: flag.categories.join(","),
                    rule: flag.rule.clone().unwrap_or_else(|| "-".into()),
                    action: flag.action.clone(),
                    param: flag.param.clone().unwrap_or_else(|| "-".into()),
                    output: true,
                });
                self.flag(flag);
            }
            if let Some(categories) = snapshot_block {
                let flag = Flag::new(FILTER_STAGE, flags::BLOCK).categories([categories.as_str()]);
                return self.block(state, tx, false, &categories, vec![flag]).await;
            }
            if self
                .recorder
                .as_ref()
                .is_some_and(Recorder::has_pending_flags)
            {
                if let Some(recorder) = self.recorder.as_mut() {
                    recorder.persist_flags().await;
                }
            }
        } else {
            out = state.held.drain(..).map(|h| h.bytes).collect();
        }
        state.held_bytes = state.held.iter().map(|h| h.bytes.len()).sum();
        for bytes in out {
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

    /// Ends the stream for a block: nothing held is sent, the block is on record before
    /// the client sees it, then the closing `content_filter` event(s).
    async fn block(
        &mut self,
        state: &mut State,
        tx: &mpsc::Sender<Bytes>,
        by_moderation: bool,
        categories: &str,
        found: Vec<Flag>,
    ) -> Step {
        // Debug: the request's own line (its event) reports the block at info.
        tracing::debug!(categories, by_moderation, "output blocked mid-stream");
        state.held.clear();
        self.note(Finding::OutputBlock {
            categories: categories.split(',').map(str::to_owned).collect(),
            by_moderation,
        });
        for flag in found {
            self.flag(flag);
        }
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
        Step::Stop
    }

    fn note(&mut self, finding: Finding) {
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.note(finding);
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

/// The choices / outputs whose text ends with this event.
fn finished(endpoint: Endpoint, v: &Value) -> Vec<usize> {
    match endpoint {
        Endpoint::Responses => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with(".done") {
                let i = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                vec![i as usize]
            } else {
                Vec::new()
            }
        }
        _ => v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
            .map(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize)
            .collect(),
    }
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
    sse::error_event(endpoint, code, message, state.seq + 1)
}

#[cfg(test)]
mod tests;
