//! `GET /v1/realtime` (WebSocket): a Realtime session speaking OpenAI's GA event schema.
//!
//! On connect the server sends `session.created`. Client events it answers:
//! - `session.update` → `session.updated` (the given fields merged into the session);
//! - `conversation.item.create` → `conversation.item.added` then `conversation.item.done`;
//! - `response.create` → `response.created`, output item and content part events, then
//!   the reply as `response.output_text.delta` (when `output_modalities` has `text`) or
//!   `response.output_audio.delta` + `response.output_audio_transcript.delta` (audio, the
//!   default), their `.done` events and `response.done` with `usage`;
//! - `response.cancel` → the running response stops and ends with `response.done`
//!   `status: "cancelled"`;
//! - `input_audio_buffer.append` / `.commit` / `.clear` → counted; commit answers
//!   `input_audio_buffer.committed` and adds a user audio item;
//! - anything else, or a frame that is not a JSON object → an `error` event (the session
//!   stays open, as OpenAI's does).
//!
//! The reply is the echo of the last user text (`text::reply`). Cues in that text:
//! `SAY_FLAG=<category>` makes the reply carry `FLAG:<category>` after a dozen harmless
//! words (a transcript the stand-in's moderation flags mid-response);
//! `SLOW_REPLY` paces deltas 20 ms apart instead of 1 ms; `REPEAT=<n>` says the reply n
//! times (at most 100,000) as fast as the socket takes it (a flood for slow-reader tests).
//! Every client frame is kept in the realtime log (`GET /_standin/realtime`).

use crate::state::App;
use crate::text;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest client frame read (OpenAI caps audio appends at 15 MiB).
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Server events waiting for the socket; a reply is produced no faster than it is sent.
const OUTBOX: usize = 256;
/// Delta spacing, normal and with `SLOW_REPLY`.
const DELTA_GAP: Duration = Duration::from_millis(1);
const SLOW_GAP: Duration = Duration::from_millis(20);
/// Model used when the URL names none.
const DEFAULT_MODEL: &str = "gpt-realtime";
/// Harmless words around a `SAY_FLAG` marker.
const FILLER: &str = "Here is a calm and friendly answer that talks about the weather, gardens and the afternoon light before it says";
const FILLER_AFTER: &str =
    "and then it goes on about tea, books and quiet walks by the river for a little while longer.";

/// Upgrades the request and runs one session on the socket.
pub(crate) async fn upgrade(app: Arc<App>, mut parts: http::request::Parts) -> Response {
    let model = query_value(parts.uri.query(), "model").unwrap_or_else(|| DEFAULT_MODEL.into());
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // Browsers name the `realtime` subprotocol; answer it when asked.
    let offered_realtime = parts
        .headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "realtime"));
    let ws = if offered_realtime {
        ws.protocols(["realtime"])
    } else {
        ws
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(app, socket, model))
}

/// The `name` parameter of a query string, percent-decoding `%2D`-style escapes.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.replace("%2D", "-").replace("%2d", "-"))
    })
}

/// One session's state.
struct Session {
    config: Map<String, Value>,
    last_user_text: String,
    items: usize,
    audio_bytes: usize,
}

async fn run(app: Arc<App>, socket: WebSocket, model: String) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outbox) = mpsc::channel::<Value>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(event) = outbox.recv().await {
            let frame = Message::Text(event.to_string().into());
            if sink.send(frame).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut session = Session {
        config: new_session(&model),
        last_user_text: String::new(),
        items: 0,
        audio_bytes: 0,
    };
    let _ = out
        .send(json!({"type": "session.created", "event_id": text::id("event_"), "session": session.config}))
        .await;
    let mut running: Option<Arc<AtomicBool>> = None;
    while let Some(Ok(message)) = stream.next().await {
        let raw = match message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let event: Option<Map<String, Value>> = serde_json::from_str(&raw).ok();
        app.realtime_log(event.clone().map_or(Value::String(raw), Value::Object));
        let Some(event) = event else {
            send_error(
                &out,
                "invalid_json",
                "The server could not parse your event as JSON.",
                None,
            )
            .await;
            continue;
        };
        let event_id = event
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match event.get("type").and_then(Value::as_str).unwrap_or("") {
            "session.update" => {
                if let Some(Value::Object(fields)) = event.get("session") {
                    for (k, v) in fields {
                        session.config.insert(k.clone(), v.clone());
                    }
                }
                let _ = out
                    .send(json!({"type": "session.updated", "event_id": text::id("event_"), "session": session.config}))
                    .await;
            }
            "conversation.item.create" => {
                let mut item = match event.get("item") {
                    Some(Value::Object(item)) => item.clone(),
                    _ => {
                        send_error(
                            &out,
                            "missing_required_parameter",
                            "Missing required parameter: 'item'.",
                            event_id,
                        )
                        .await;
                        continue;
                    }
                };
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| text::id("item_"), str::to_owned);
                item.insert("id".into(), json!(id));
                item.insert("object".into(), json!("realtime.item"));
                item.insert("status".into(), json!("completed"));
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    session.last_user_text = item
                        .get("content")
                        .map(text::content_text)
                        .unwrap_or_default();
                }
                session.items += 1;
                for kind in ["conversation.item.added", "conversation.item.done"] {
                    let _ = out
                        .send(json!({"type": kind, "event_id": text::id("event_"), "previous_item_id": null, "item": item}))
                        .await;
                }
            }
            "response.create" => {
                if running.as_ref().is_some_and(|r| !r.load(Ordering::Acquire)) {
                    send_error(
                        &out,
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress.",
                        event_id,
                    )
                    .await;
                    continue;
                }
                let cancelled = Arc::new(AtomicBool::new(false));
                running = Some(cancelled.clone());
                let plan = Reply::plan(&session, event.get("response"));
                tokio::spawn(respond(out.clone(), plan, cancelled));
            }
            "response.cancel" => match running.take() {
                Some(flag) => flag.store(true, Ordering::Release),
                None => {
                    send_error(
                        &out,
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        event_id,
                    )
                    .await
                }
            },
            "input_audio_buffer.append" => {
                session.audio_bytes += event
                    .get("audio")
                    .and_then(Value::as_str)
                    .map_or(0, str::len);
            }
            "input_audio_buffer.clear" => {
                session.audio_bytes = 0;
                let _ = out.send(json!({"type": "input_audio_buffer.cleared", "event_id": text::id("event_")})).await;
            }
            "input_audio_buffer.commit" => {
                let item_id = text::id("item_");
                session.audio_bytes = 0;
                let _ = out
                    .send(json!({"type": "input_audio_buffer.committed", "event_id": text::id("event_"), "previous_item_id": null, "item_id": item_id}))
                    .await;
            }
            other => {
                let message = format!("Invalid value: '{other}'. Supported values are: 'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', 'response.create', 'response.cancel'.");
                send_error(&out, "invalid_value", &message, event_id).await;
            }
        }
        // A finished response frees the slot for the next `response.create`.
        if running.as_ref().is_some_and(|r| r.load(Ordering::Acquire)) {
            running = None;
        }
    }
    drop(out);
    let _ = writer.await;
}

fn new_session(model: &str) -> Map<String, Value> {
    let session = json!({
        "type": "realtime",
        "object": "realtime.session",
        "id": text::id("sess_"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": null,
        "prompt": null,
        "expires_at": text::now() + 3600,
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": null, "noise_reduction": null, "turn_detection": null},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0}
        },
        "include": null
    });
    match session {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

async fn send_error(
    out: &mpsc::Sender<Value>,
    code: &str,
    message: &str,
    event_id: Option<String>,
) {
    let _ = out
        .send(json!({
            "type": "error",
            "event_id": text::id("event_"),
            "error": {"type": "invalid_request_error", "code": code, "message": message, "param": null, "event_id": event_id}
        }))
        .await;
}

/// What one `response.create` will say, decided when it is asked for.
struct Reply {
    text: String,
    repeat: usize,
    audio: bool,
    gap: Duration,
    input_tokens: u64,
}

impl Reply {
    fn plan(session: &Session, overrides: Option<&Value>) -> Reply {
        let modalities = overrides
            .and_then(|r| r.get("output_modalities"))
            .or_else(|| session.config.get("output_modalities"));
        let audio = !modalities
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v == "text"));
        let user = &session.last_user_text;
        let text = match user.split_once("SAY_FLAG=") {
            Some((_, rest)) => {
                let category: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                format!("{FILLER} FLAG:{category} {FILLER_AFTER}")
            }
            None => text::reply(user),
        };
        let instructions = session
            .config
            .get("instructions")
            .and_then(Value::as_str)
            .unwrap_or("");
        let repeat = user
            .split_once("REPEAT=")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<usize>().ok())
            .map_or(1, |n| n.clamp(1, 100_000));
        Reply {
            repeat,
            gap: if repeat > 1 {
                Duration::ZERO
            } else if user.contains("SLOW_REPLY") {
                SLOW_GAP
            } else {
                DELTA_GAP
            },
            input_tokens: text::tokens(user)
                + text::tokens(instructions)
                + 4 * session.items as u64,
            text,
            audio,
        }
    }
}

/// Streams one response; stops early (status `cancelled`) once `cancelled` is set.
async fn respond(out: mpsc::Sender<Value>, reply: Reply, cancelled: Arc<AtomicBool>) {
    let response_id = text::id("resp_");
    let item_id = text::id("item_");
    let modality = if reply.audio { "audio" } else { "text" };
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "object": "realtime.response", "id": response_id, "status": status,
            "status_details": null, "output": output, "conversation_id": "conv_standin",
            "output_modalities": [modality], "max_output_tokens": "inf", "audio": null,
            "usage": usage, "metadata": null
        })
    };
    let ev = |kind: &str, mut fields: Value| {
        if let Value::Object(map) = &mut fields {
            map.insert("type".into(), json!(kind));
            map.insert("event_id".into(), json!(text::id("event_")));
        }
        fields
    };
    let part_type = if reply.audio {
        "output_audio"
    } else {
        "output_text"
    };
    let (delta_kind, done_kind) = if reply.audio {
        (
            "response.output_audio_transcript.delta",
            "response.output_audio_transcript.done",
        )
    } else {
        ("response.output_text.delta", "response.output_text.done")
    };
    let place = json!({"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0});
    let with_place = |extra: Value| {
        let mut base = place.clone();
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
            base.extend(extra);
        }
        base
    };
    let start = [
        ev(
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.output_item.added",
            json!({"response_id": response_id, "output_index": 0, "item": {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        ev(
            "response.content_part.added",
            with_place(json!({"part": {"type": part_type}})),
        ),
    ];
    for event in start {
        if out.send(event).await.is_err() {
            return;
        }
    }
    let mut said = String::new();
    let mut was_cancelled = false;
    let pieces = text::pieces(&reply.text);
    for piece in std::iter::repeat_n(pieces.iter(), reply.repeat).flatten() {
        if reply.gap.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(reply.gap).await;
        }
        if cancelled.load(Ordering::Acquire) {
            was_cancelled = true;
            break;
        }
        if reply.audio {
            // 10 ms of silent 24 kHz PCM16 per word: enough to be an audio stream.
            let audio = base64_silence(480);
            if out
                .send(ev(
                    "response.output_audio.delta",
                    with_place(json!({"delta": audio})),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
        if out
            .send(ev(delta_kind, with_place(json!({"delta": piece}))))
            .await
            .is_err()
        {
            return;
        }
        said.push_str(piece);
    }
    let output_tokens = text::tokens(&said);
    let usage = json!({
        "total_tokens": reply.input_tokens + output_tokens,
        "input_tokens": reply.input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"text_tokens": reply.input_tokens, "audio_tokens": 0, "cached_tokens": 0, "image_tokens": 0, "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
        "output_token_details": {"text_tokens": output_tokens, "audio_tokens": if reply.audio { output_tokens } else { 0 }}
    });
    let content = if reply.audio {
        json!([{"type": "output_audio", "transcript": said}])
    } else {
        json!([{"type": "output_text", "text": said}])
    };
    let status = if was_cancelled {
        "cancelled"
    } else {
        "completed"
    };
    let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": if was_cancelled { "incomplete" } else { "completed" }, "role": "assistant", "content": content});
    let mut end = Vec::new();
    if !was_cancelled {
        let done_field = if reply.audio { "transcript" } else { "text" };
        end.push(ev(done_kind, with_place(json!({ done_field: said }))));
        if reply.audio {
            end.push(ev("response.output_audio.done", with_place(json!({}))));
        }
        end.push(ev(
            "response.content_part.done",
            with_place(json!({"part": content[0]})),
        ));
        end.push(ev(
            "response.output_item.done",
            json!({"response_id": response_id, "output_index": 0, "item": item}),
        ));
    }
    let mut done = response(status, json!([item]), usage);
    if was_cancelled {
        done["status_details"] = json!({"type": "cancelled", "reason": "client_cancelled"});
    }
    end.push(ev("response.done", json!({"response": done})));
    for event in end {
        if out.send(event).await.is_err() {
            return;
        }
    }
    cancelled.store(true, Ordering::Release);
}

fn base64_silence(bytes: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![0u8; bytes])
}

/// `POST /v1/realtime/client_secrets`: an ephemeral `ek_` key and the session it opens.
pub(crate) fn client_secret(body: &[u8]) -> Result<Response, crate::errors::ApiError> {
    let request: Map<String, Value> = crate::errors::parse(body)?;
    let seconds = match request.get("expires_after").and_then(|e| e.get("seconds")) {
        None => 600,
        Some(value) => {
            let seconds = value.as_i64().ok_or_else(|| {
                crate::errors::ApiError::invalid_request("expires_after.seconds must be an integer")
                    .param("expires_after.seconds")
            })?;
            crate::errors::check_range("expires_after.seconds", seconds, 10, 7200)?;
            seconds as u64
        }
    };
    let requested = request.get("session").and_then(Value::as_object);
    let model = requested
        .and_then(|s| s.get("model"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL);
    let mut session = new_session(model);
    if let Some(fields) = requested {
        for (k, v) in fields {
            session.insert(k.clone(), v.clone());
        }
    }
    let expires_at = text::now() + seconds;
    session.insert("expires_at".into(), json!(expires_at));
    Ok(crate::routes::json(&json!({
        "value": text::id("ek_"),
        "expires_at": expires_at,
        "session": session,
    })))
}
