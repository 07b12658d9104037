//! What a Realtime session checks, in both directions.
//!
//! Client events that carry text the model will read (`session.update` instructions and
//! tools, `conversation.item.create` items, `response.create` overrides) run through the
//! same `local_filters` and `moderation` stages as an HTTP request, on a context built for
//! that one event; a redaction is forwarded, a block is not. Other known events (audio
//! appends, cancels, truncation…) pass untouched, audio unbuffered. Unknown types follow
//! `[realtime] unknown_events`.
//!
//! Model text and transcripts (`response.output_text.delta`,
//! `response.output_audio_transcript.delta`, input transcription deltas) are held per
//! response until a window of text has passed output moderation, then released; a
//! blocked window is never released (see `OutputWindows`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;

use crate::config::realtime::UnknownEvents;
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::json_body::JsonBody;
use crate::pipeline::{deferred, Pipeline, RequestContext};
use crate::safety::moderation::pieces::Piece;
use crate::safety::moderation::{Checked, Moderator, Side};
use crate::stages;

/// Client events that carry model-readable text: checked before they go up.
const CHECKED: &[&str] = &[
    "session.update",
    "conversation.item.create",
    "response.create",
];

/// Client events relayed untouched: audio, control, and reads of the conversation.
const PASSED: &[&str] = &[
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.cancel",
];

/// What to do with one client frame.
pub enum ClientDecision {
    /// Send this frame upstream (the original, or with a redaction applied).
    Forward(Bytes),
    /// Do not forward; tell the client. The context is there for the event log (`None`
    /// when the frame never became a checked event, e.g. not JSON).
    Refuse {
        error: WardenError,
        event_id: Option<String>,
        ctx: Option<Box<RequestContext>>,
    },
}

/// The input side: one small pipeline, and the session's identity to check under.
pub struct InputChecks {
    pipeline: Pipeline,
    unknown: UnknownEvents,
    checked: u64,
}

impl InputChecks {
    pub fn new(
        filters: Arc<crate::safety::profiles::KeyFilters>,
        moderator: Arc<Moderator>,
        unknown: UnknownEvents,
    ) -> Self {
        Self {
            pipeline: Pipeline::new(vec![
                Box::new(stages::local_filters::LocalFilters::new(filters)),
                Box::new(stages::moderation::Moderate::new(moderator)),
            ]),
            unknown,
            checked: 0,
        }
    }

    /// Decides about one text frame from the client.
    pub async fn client_event(&mut self, session: &RequestContext, frame: &str) -> ClientDecision {
        let refuse = |error, event_id| ClientDecision::Refuse {
            error,
            event_id,
            ctx: None,
        };
        let body = match JsonBody::parse(frame.as_bytes()) {
            Ok(body) => body,
            Err(error) => return refuse(error, None),
        };
        let event_id = body.str_field("event_id").ok().flatten();
        let kind = match body.str_field("type") {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                return refuse(
                    super::RealtimeRefusal::error(
                        http::StatusCode::BAD_REQUEST,
                        "missing_required_parameter",
                        "Missing required parameter: 'type'.",
                    ),
                    event_id,
                )
            }
            Err(error) => return refuse(error, event_id),
        };
        if PASSED.contains(&kind.as_str()) {
            return ClientDecision::Forward(Bytes::copy_from_slice(frame.as_bytes()));
        }
        if !CHECKED.contains(&kind.as_str()) {
            return match self.unknown {
                UnknownEvents::Relay => {
                    ClientDecision::Forward(Bytes::copy_from_slice(frame.as_bytes()))
                }
                UnknownEvents::Refuse => refuse(
                    super::RealtimeRefusal::error(
                        http::StatusCode::BAD_REQUEST,
                        "unknown_event_type",
                        format!("Warden does not relay client events of type '{kind}' (policy: [realtime] unknown_events = \"refuse\")."),
                    ),
                    event_id,
                ),
            };
        }
        self.checked += 1;
        let mut ctx = event_context(session, self.checked);
        ctx.texts = match crate::openai::extract(Endpoint::Realtime, &body, ctx.model.as_deref()) {
            Ok(texts) => texts,
            Err(error) => return refuse(error, event_id),
        };
        ctx.raw_body = Bytes::copy_from_slice(frame.as_bytes());
        ctx.body = Some(body);
        let mut ran = self.pipeline.run(&mut ctx).await;
        // `parallel` moderation leaves its verdict pending; a socket has nothing to race
        // it with, so it is awaited here.
        if let (Ok(()), Some(verdict)) = (&ran, ctx.deferred.take()) {
            let (stage, settled, _) = deferred::race(verdict, async {}).await;
            ran = deferred::settle(&mut ctx, stage, settled);
        }
        match ran {
            Ok(()) => ClientDecision::Forward(ctx.outgoing_body()),
            Err(error) => ClientDecision::Refuse {
                error,
                event_id,
                ctx: Some(Box::new(ctx)),
            },
        }
    }
}

/// A context for one checked client event, carrying the session's key, user and model.
pub fn event_context(session: &RequestContext, n: u64) -> RequestContext {
    let mut ctx = RequestContext::detached(
        format!("{}.{n}", session.request_id),
        Endpoint::Realtime,
        Method::GET,
        session.path_and_query.clone(),
        session.headers.clone(),
        session.client_ip,
    );
    ctx.key = session.key.clone();
    ctx.end_user = session.end_user.clone();
    ctx.safety_identifier = session.safety_identifier.clone();
    ctx.model = session.model.clone();
    ctx.country = session.country;
    ctx
}

/// Model text below this is held until the response part ends.
pub const WINDOW_CHARS: usize = 160;
/// The tail of the last checked window checked again with the next one, so a phrase cut
/// by a window edge is still seen whole.
const OVERLAP_CHARS: usize = 60;

/// Held output of one response part (one item, one content index).
#[derive(Default)]
struct Held {
    /// Frames not yet released, in order.
    frames: Vec<Bytes>,
    /// Their text.
    text: String,
    /// The end of what was already checked and released (for the overlap).
    tail: String,
}

/// The output side: per-part hold-back windows.
#[derive(Default)]
pub struct OutputWindows {
    held: HashMap<String, Held>,
    /// Responses whose output was blocked: nothing more of them is relayed.
    blocked: Vec<String>,
}

/// What to do after an output frame.
pub enum OutputStep {
    /// Relay these frames now (possibly none: held).
    Release(Vec<Bytes>),
    /// Moderate `text` (of part `part`), then call `OutputWindows::judged`.
    Check { part: String, text: String },
    /// Drop the frame (its response was blocked).
    Drop,
}

impl OutputWindows {
    pub fn is_blocked(&self, response_id: &str) -> bool {
        self.blocked.iter().any(|r| r == response_id)
    }

    /// A text delta of `part`: held; a full window asks for a check.
    pub fn delta(&mut self, part: String, delta: &str, frame: Bytes) -> OutputStep {
        let held = self.held.entry(part.clone()).or_default();
        held.frames.push(frame);
        held.text.push_str(delta);
        if held.text.len() >= WINDOW_CHARS {
            let text = format!("{}{}", held.tail, held.text);
            return OutputStep::Check { part, text };
        }
        OutputStep::Release(Vec::new())
    }

    /// The part ended (its `.done` frame): the rest is checked, then released.
    pub fn done(&mut self, part: String, frame: Bytes) -> OutputStep {
        let held = self.held.entry(part.clone()).or_default();
        held.frames.push(frame);
        let text = format!("{}{}", held.tail, held.text);
        if held.text.is_empty() {
            let frames = std::mem::take(&mut held.frames);
            self.held.remove(&part);
            return OutputStep::Release(frames);
        }
        OutputStep::Check { part, text }
    }

    /// The verdict on a window: released, or the whole response blocked.
    pub fn judged(
        &mut self,
        part: &str,
        response_id: &str,
        passed: bool,
        ended: bool,
    ) -> Vec<Bytes> {
        if !passed {
            self.held.retain(|p, _| !p.starts_with(response_id));
            self.blocked.push(response_id.to_owned());
            return Vec::new();
        }
        let Some(held) = self.held.get_mut(part) else {
            return Vec::new();
        };
        let released = std::mem::take(&mut held.frames);
        let mut tail = std::mem::take(&mut held.text);
        if tail.len() > OVERLAP_CHARS {
            let mut cut = tail.len() - OVERLAP_CHARS;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = tail.split_off(cut);
        }
        held.tail = tail;
        if ended {
            self.held.remove(part);
        }
        released
    }

    /// Drops whatever is still held for a response, and its blocked mark (its end came).
    pub fn forget(&mut self, response_id: &str) {
        self.held.retain(|p, _| !p.starts_with(response_id));
        self.blocked.retain(|r| r != response_id);
    }
}

/// Moderates one window of model output.
pub async fn moderate_output(
    moderator: &Moderator,
    session: &RequestContext,
    param: &str,
    text: String,
) -> Result<Checked, WardenError> {
    moderator
        .check(
            Side::Output,
            &[Piece::text(param, text)],
            session.key.as_deref(),
        )
        .await
        .map_err(|u| WardenError::ModerationUnavailable(u.0.label()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn windows_hold_until_checked_and_block_the_response() {
        let mut w = OutputWindows::default();
        let part = "resp_1/item_1/0".to_owned();
        match w.delta(part.clone(), "short", Bytes::from_static(b"a")) {
            OutputStep::Release(frames) => assert!(frames.is_empty()),
            _ => unreachable!(),
        }
        let long = "x".repeat(WINDOW_CHARS);
        let OutputStep::Check { text, .. } = w.delta(part.clone(), &long, Bytes::from_static(b"b"))
        else {
            unreachable!()
        };
        assert!(text.starts_with("short"));
        let released = w.judged(&part, "resp_1", true, false);
        assert_eq!(released.len(), 2);
        // The next window repeats the tail of this one.
        assert!(
            matches!(w.delta(part.clone(), "more", Bytes::from_static(b"c")), OutputStep::Release(f) if f.is_empty())
        );
        let OutputStep::Check { text, .. } = w.done(part.clone(), Bytes::from_static(b"d")) else {
            unreachable!()
        };
        assert_eq!(text.len(), OVERLAP_CHARS + 4);
        assert!(w.judged(&part, "resp_1", false, true).is_empty());
        assert!(w.is_blocked("resp_1"));
    }
}
