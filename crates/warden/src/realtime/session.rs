//! One relayed Realtime session: frames both ways, checks on text, sanctions and timeouts.
//!
//! Nothing is buffered beyond one frame per direction plus the held output window: a
//! client that stops reading stalls the relay (TCP backpressure reaches upstream), and
//! after `send_stall` the session is closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::accounting::{charge, over_budget, record_output, record_refusal, usage_of};
use super::checks::{ClientDecision, InputChecks, OutputStep, OutputWindows};
use super::upstream::UpstreamSocket;
use crate::enforcement::Rung;
use crate::error::WardenError;
use crate::gateway::Gateway;
use crate::pipeline::RequestContext;
use crate::proxy::recorder::{Outcome, Recorder};
use crate::reload::Snapshot;

/// How often the end user's standing, idle time and session age are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Server events whose text is held and moderated (see `checks::OutputWindows`).
const MODERATED_OUTPUT: &[&str] = &[
    "response.output_text.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.done",
    "response.output_audio_transcript.done",
    "conversation.item.input_audio_transcription.completed",
];

/// Totals for the session event.
#[derive(Default)]
struct Totals {
    client_frames: u64,
    upstream_frames: u64,
    input_tokens: u64,
    output_tokens: u64,
    audio_in_bytes: u64,
    audio_out_bytes: u64,
    responses: u64,
    refusals: u64,
    output_blocks: u64,
}

/// The fields of a server event Warden reads; the rest is relayed as it came.
#[derive(Deserialize)]
struct ServerEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    delta: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    response_id: Option<&'a str>,
    #[serde(default, borrow)]
    item_id: Option<&'a str>,
    #[serde(default)]
    content_index: Option<u64>,
    #[serde(default)]
    response: Option<serde_json::Value>,
}

type ClientSocket = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

pub struct Session {
    pub gateway: Arc<Gateway>,
    pub snapshot: Arc<Snapshot>,
    pub ctx: RequestContext,
    pub recorder: Recorder,
    pub slot: Option<super::OpenSlot>,
}

/// Why the session ended, for its event.
enum End {
    ClientClosed,
    UpstreamClosed,
    Sanctioned(&'static str),
    Idle,
    TooLong,
    ClientNotReading,
    FrameTooBig,
}

impl Session {
    pub async fn run(mut self, client: ClientSocket, upstream: UpstreamSocket) {
        let started = Instant::now();
        let config = self.gateway.realtime.config().clone();
        let moderator = self.snapshot.moderator.clone();
        let moderate_output = config.moderate_output
            && moderator.config().enabled
            && moderator.config().output.enabled;
        let mut inputs = InputChecks::new(
            self.snapshot.filters.clone(),
            moderator.clone(),
            config.unknown_events,
        );
        let mut windows = OutputWindows::default();
        let mut totals = Totals::default();
        let (mut to_client, mut from_client) = client.split();
        let (mut to_upstream, mut from_upstream) = upstream.split();
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_activity = Instant::now();
        let mut flag_events = 0u64;
        // A client that takes longer than this to accept one frame is not reading.
        let send_stall = config.client_send_timeout;

        macro_rules! to_client {
            ($msg:expr) => {
                match tokio::time::timeout(send_stall, to_client.send($msg)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break End::ClientClosed,
                    Err(_) => break End::ClientNotReading,
                }
            };
        }
        macro_rules! to_upstream {
            ($msg:expr) => {
                if to_upstream.send($msg).await.is_err() {
                    break End::UpstreamClosed;
                }
            };
        }

        let end = loop {
            tokio::select! {
                frame = from_client.next() => {
                    last_activity = Instant::now();
                    let text = match frame {
                        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => break End::FrameTooBig,
                        None | Some(Err(_)) => break End::ClientClosed,
                        Some(Ok(Message::Close(_))) => break End::ClientClosed,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Binary(_))) => {
                            let err = super::RealtimeRefusal::error(http::StatusCode::BAD_REQUEST, "invalid_frame", "Realtime client events are JSON text frames; binary frames are not relayed.");
                            totals.refusals += 1;
                            to_client!(error_message(&err, &self.ctx.request_id, None));
                            continue;
                        }
                        Some(Ok(Message::Text(text))) => text,
                    };
                    totals.client_frames += 1;
                    if text.as_str().contains("\"input_audio_buffer.append\"") {
                        totals.audio_in_bytes += text.len() as u64;
                    }
                    let decision = match over_budget(&self.gateway, &self.ctx, text.as_str()) {
                        Some(error) => ClientDecision::Refuse { error, event_id: None, ctx: None },
                        None => inputs.client_event(&self.ctx, text.as_str()).await,
                    };
                    match decision {
                        ClientDecision::Forward(bytes) => {
                            let frame = if bytes.len() == text.len() {
                                Message::Text(text)
                            } else {
                                match Utf8Bytes::try_from(bytes) {
                                    Ok(t) => Message::Text(t),
                                    Err(_) => continue,
                                }
                            };
                            to_upstream!(frame);
                        }
                        ClientDecision::Refuse { error, event_id, ctx } => {
                            totals.refusals += 1;
                            if let Some(ctx) = ctx {
                                record_refusal(&self.gateway, &ctx, &error).await;
                            }
                            to_client!(error_message(&error, &self.ctx.request_id, event_id.as_deref()));
                        }
                    }
                }
                frame = from_upstream.next() => {
                    last_activity = Instant::now();
                    let text = match frame {
                        None | Some(Err(_)) => break End::UpstreamClosed,
                        Some(Ok(Message::Close(close))) => {
                            let _ = to_client.send(Message::Close(close)).await;
                            break End::UpstreamClosed;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Binary(bytes))) => {
                            to_client!(Message::Binary(bytes));
                            continue;
                        }
                        Some(Ok(Message::Text(text))) => text,
                    };
                    totals.upstream_frames += 1;
                    let Ok(event) = serde_json::from_str::<ServerEvent>(text.as_str()) else {
                        to_client!(Message::Text(text));
                        continue;
                    };
                    if event.kind == "response.output_audio.delta" {
                        totals.audio_out_bytes += event.delta.as_ref().map_or(0, |d| d.len()) as u64;
                    }
                    let response_id = event.response_id.map(str::to_owned).or_else(|| {
                        event.response.as_ref().and_then(|r| r.get("id")).and_then(|v| v.as_str()).map(str::to_owned)
                    });
                    if event.kind == "response.done" {
                        totals.responses += 1;
                        if let Some(usage) = event.response.as_ref().and_then(|r| r.get("usage")) {
                            let usage = usage_of(usage);
                            totals.input_tokens += usage.input;
                            totals.output_tokens += usage.output;
                            charge(&self.gateway, &self.ctx, usage);
                        }
                    }
                    if let Some(id) = response_id.as_deref().filter(|id| windows.is_blocked(id)) {
                        // The rest of a blocked response is never relayed; its end is, emptied.
                        if event.kind == "response.done" {
                            let done = emptied_done(event.response.clone());
                            windows.forget(id);
                            to_client!(Message::Text(done.into()));
                        }
                        continue;
                    }
                    if !moderate_output {
                        to_client!(Message::Text(text));
                        continue;
                    }
                    if event.kind == "response.done" {
                        // A part cut before its `.done` (a cancelled response): what is still
                        // held was never judged, so it is dropped, not released.
                        if let Some(id) = response_id.as_deref() {
                            windows.forget(id);
                        }
                    }
                    if !MODERATED_OUTPUT.contains(&event.kind) {
                        // Audio, lifecycle and everything else: relayed as it came, no copy.
                        to_client!(Message::Text(text));
                        continue;
                    }
                    let part = |ev: &ServerEvent| format!("{}/{}/{}", ev.response_id.unwrap_or(""), ev.item_id.unwrap_or(""), ev.content_index.unwrap_or(0));
                    let step = match event.kind {
                        "response.output_text.delta" | "response.output_audio_transcript.delta" => {
                            let delta = event.delta.as_deref().unwrap_or("");
                            windows.delta(part(&event), delta, Bytes::copy_from_slice(text.as_bytes()))
                        }
                        "response.output_text.done" | "response.output_audio_transcript.done" => {
                            windows.done(part(&event), Bytes::copy_from_slice(text.as_bytes()))
                        }
                        "conversation.item.input_audio_transcription.completed" => {
                            // The user's own speech, as text: judged before it is shown.
                            let transcript = serde_json::from_str::<serde_json::Value>(text.as_str()).ok()
                                .and_then(|v| v.get("transcript").and_then(|t| t.as_str()).map(str::to_owned))
                                .unwrap_or_default();
                            OutputStep::Check { part: format!("transcription/{}", event.item_id.unwrap_or("")), text: transcript }
                        }
                        _ => OutputStep::Drop,
                    };
                    let frames = match step {
                        OutputStep::Release(frames) => frames,
                        OutputStep::Drop => Vec::new(),
                        OutputStep::Check { part, text: window } => {
                            let ended = event.kind.ends_with(".done") || event.kind.ends_with(".completed");
                            let judged = super::checks::moderate_output(&moderator, &self.ctx, "response.output", window).await;
                            let passed = match &judged {
                                Ok(checked) => checked.blocked.is_empty(),
                                // Fail-closed output moderation: nothing unjudged is shown.
                                Err(_) => false,
                            };
                            flag_events += 1;
                            record_output(&self.gateway, &self.ctx, flag_events, &judged).await;
                            if part.starts_with("transcription/") {
                                if passed {
                                    vec![Bytes::copy_from_slice(text.as_bytes())]
                                } else {
                                    totals.output_blocks += 1;
                                    let err = output_blocked(&judged);
                                    to_client!(error_message(&err, &self.ctx.request_id, None));
                                    Vec::new()
                                }
                            } else {
                                let id = response_id.clone().unwrap_or_default();
                                let released = windows.judged(&part, &id, passed, ended);
                                if !passed {
                                    totals.output_blocks += 1;
                                    let cancel = serde_json::json!({"type": "response.cancel", "response_id": id}).to_string();
                                    to_upstream!(Message::Text(cancel.into()));
                                    let err = output_blocked(&judged);
                                    to_client!(error_message(&err, &self.ctx.request_id, None));
                                }
                                released
                            }
                        }
                    };
                    let mut failed = None;
                    for frame in frames {
                        let Ok(t) = Utf8Bytes::try_from(frame) else { continue };
                        match tokio::time::timeout(send_stall, to_client.send(Message::Text(t))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => { failed = Some(End::ClientClosed); break; }
                            Err(_) => { failed = Some(End::ClientNotReading); break; }
                        }
                    }
                    if let Some(end) = failed {
                        break end;
                    }
                }
                _ = watch.tick() => {
                    if let Some(why) = sanctioned(&self.gateway, &self.ctx) {
                        let err = why;
                        let _ = tokio::time::timeout(send_stall, to_client.send(error_message(&err, &self.ctx.request_id, None))).await;
                        break End::Sanctioned(err.code());
                    }
                    if last_activity.elapsed() >= config.idle_timeout {
                        break End::Idle;
                    }
                    if started.elapsed() >= config.max_session {
                        break End::TooLong;
                    }
                }
            }
        };

        let (code, reason): (CloseCode, &str) = match &end {
            End::ClientClosed | End::UpstreamClosed => (CloseCode::Normal, ""),
            End::Sanctioned(_) => (CloseCode::Policy, "end user sanctioned"),
            End::Idle => (CloseCode::Normal, "idle timeout"),
            End::TooLong => (CloseCode::Normal, "session too long"),
            End::ClientNotReading => (CloseCode::Policy, "client not reading"),
            End::FrameTooBig => (CloseCode::Size, "frame too big"),
        };
        let close = |code: CloseCode, reason: &str| {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.to_owned().into(),
            }))
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            to_upstream.send(close(CloseCode::Normal, "")),
        )
        .await;
        if !matches!(end, End::ClientClosed | End::ClientNotReading) {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), to_client.send(close(code, reason)))
                    .await;
        }
        drop(self.slot.take());
        // The session's tokens replace the handshake's zero estimate in the token limits.
        if let Some(ticket) = &self.ctx.limit_ticket {
            ticket.settle(Some(totals.input_tokens + totals.output_tokens));
        }
        let (outcome, label) = match end {
            End::ClientClosed => (Outcome::Allowed, "client_closed"),
            End::UpstreamClosed => (Outcome::Allowed, "upstream_closed"),
            End::Sanctioned(code) => (Outcome::Blocked, code),
            End::Idle => (Outcome::Allowed, "idle_timeout"),
            End::TooLong => (Outcome::Allowed, "max_session"),
            End::ClientNotReading => (Outcome::Cancelled, "client_not_reading"),
            End::FrameTooBig => (Outcome::Blocked, "frame_too_big"),
        };
        self.recorder.detail(
            "realtime",
            serde_json::json!({
                "duration_ms": started.elapsed().as_millis() as u64,
                "ended": label,
                "input_tokens": totals.input_tokens,
                "output_tokens": totals.output_tokens,
                // PCM16 at 24 kHz is 48,000 bytes a second; base64 adds a third.
                "audio_in_seconds": (totals.audio_in_bytes as f64 * 0.75 / 48_000.0 * 10.0).round() / 10.0,
                "audio_out_seconds": (totals.audio_out_bytes as f64 * 0.75 / 48_000.0 * 10.0).round() / 10.0,
                "client_frames": totals.client_frames,
                "upstream_frames": totals.upstream_frames,
                "responses": totals.responses,
                "refused_events": totals.refusals,
                "blocked_outputs": totals.output_blocks,
            }),
        );
        self.recorder.finish(outcome, Some(label));
    }
}

/// The user's standing now: banned or suspended ends the session.
fn sanctioned(gateway: &Gateway, ctx: &RequestContext) -> Option<WardenError> {
    let (key, user) = (ctx.key.as_deref()?, ctx.end_user.as_ref()?);
    if !gateway.enforcement.config().enabled {
        return None;
    }
    match gateway.enforcement.rung(&key.name, &user.id) {
        (Rung::Banned, standing) => Some(WardenError::UserBanned {
            reason: standing
                .and_then(|s| s.reason)
                .unwrap_or_else(|| "repeated usage policy violations".into()),
        }),
        (Rung::Suspended { until_ms }, standing) => Some(WardenError::UserSuspended {
            until_ms,
            reason: standing
                .and_then(|s| s.reason)
                .unwrap_or_else(|| "repeated usage policy violations".into()),
        }),
        _ => None,
    }
}

fn error_message(err: &WardenError, request_id: &str, event_id: Option<&str>) -> Message {
    Message::Text(super::error_event(err, request_id, event_id).into())
}

/// A blocked response's `response.done`, without its output and marked as cut by Warden.
fn emptied_done(response: Option<serde_json::Value>) -> String {
    let mut response = response.unwrap_or_else(|| serde_json::json!({}));
    response["output"] = serde_json::json!([]);
    response["status"] = "cancelled".into();
    response["status_details"] =
        serde_json::json!({"type": "cancelled", "reason": "content_filter"});
    serde_json::json!({
        "type": "response.done",
        "event_id": format!("event_warden_{:016x}", fastrand::u64(..)),
        "response": response,
    })
    .to_string()
}

fn output_blocked(judged: &Result<crate::safety::moderation::Checked, WardenError>) -> WardenError {
    match judged {
        Ok(checked) => match checked.blocked.first() {
            Some(hit) => {
                let mut block = crate::error::ContentFilter::from(hit.clone());
                block.param = "response.output".into();
                WardenError::ContentFiltered(Box::new(block))
            }
            None => WardenError::Internal,
        },
        Err(err) => err.clone(),
    }
}
