//! `POST /v1/chat/completions`: a `chat.completion`, or data-only SSE chunks ending `data: [DONE]`.

use crate::errors::{check_range, parse, ApiError};
use crate::faults::Fault;
use crate::routes::{json, served};
use crate::state::App;
use crate::{sse, text};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct Request {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    safety_identifier: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: Option<String>,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// `usage` of a chat completion.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: &'static [Value],
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent without `include_usage`; `null` on every chunk but the last with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
}

/// Answers one chat completion request.
pub(crate) fn create(
    app: &App,
    body: &[u8],
    fault: Fault,
    scripted: Option<&str>,
) -> Result<Response, ApiError> {
    let request: Request = parse(body)?;
    let model = request
        .model
        .ok_or_else(|| ApiError::invalid_request("you must provide a model parameter"))?;
    let messages = request
        .messages
        .ok_or_else(|| ApiError::missing("messages"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        )
        .param("messages")
        .code("empty_array"));
    }
    let n = request.n.unwrap_or(1);
    check_range("n", n, 1, 128)?;
    let n = usize::try_from(n).unwrap_or(1);

    let user_text = messages
        .iter()
        .rev()
        .find(|message| message.role.as_deref() == Some("user"))
        .map(|message| text::content_text(&message.content))
        .unwrap_or_default();
    if let Some(refusal) = text::refuse_user(&user_text, request.safety_identifier.as_deref()) {
        return Err(refusal);
    }
    let reply = text::reply_to(scripted, &user_text);
    let prompt_tokens: u64 = messages
        .iter()
        .map(|message| text::tokens(&text::content_text(&message.content)) + 3)
        .sum();
    let completion_tokens = text::tokens(&reply) * n as u64;
    let usage = Usage::new(prompt_tokens, completion_tokens);
    let id = text::id("chatcmpl-");
    let created = text::now();

    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let events = stream_events(
            &id,
            created,
            &model,
            &reply,
            n,
            include_usage.then_some(usage),
            fault.chunk_chars,
        );
        let stream = sse::response(events, fault, app.recorder.clone());
        return Ok(served(
            stream,
            crate::org::UsageKind::Completions,
            &model,
            prompt_tokens,
            completion_tokens,
        ));
    }

    let choices = (0..n)
        .map(|index| Choice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content: &reply,
                refusal: None,
                annotations: &[],
            },
            logprobs: None,
            finish_reason: "stop",
        })
        .collect();
    let completion = Completion {
        id: &id,
        object: "chat.completion",
        created,
        model: &model,
        choices,
        usage,
        service_tier: "default",
        system_fingerprint: "fp_standin",
    };
    // `store: true` keeps it for the stored-completions API.
    let raw: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if raw.get("store").and_then(serde_json::Value::as_bool) == Some(true) {
        if let Ok(value) = serde_json::to_value(&completion) {
            app.objects.put_completion(&value, &raw["messages"]);
        }
    }
    Ok(served(
        json(&completion),
        crate::org::UsageKind::Completions,
        &model,
        prompt_tokens,
        completion_tokens,
    ))
}

fn one<'a>(index: usize, delta: Delta<'a>, finish_reason: Option<&'static str>) -> ChunkChoice<'a> {
    ChunkChoice {
        index,
        delta,
        logprobs: None,
        finish_reason,
    }
}

/// The chunks of a streamed reply: a role chunk per choice, one content chunk per word and
/// choice, a finish chunk per choice, the usage chunk if asked for, then `[DONE]`.
fn stream_events(
    id: &str,
    created: u64,
    model: &str,
    reply: &str,
    n: usize,
    usage: Option<Usage>,
    chunk_chars: Option<usize>,
) -> Vec<bytes::Bytes> {
    let usage_field = usage.map(|_| None);
    let chunk = |choices: Vec<ChunkChoice<'_>>, usage: Option<Option<Usage>>| {
        sse::data(&Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            service_tier: "default",
            system_fingerprint: "fp_standin",
            choices,
            usage,
        })
    };
    let pieces = text::stream_pieces(reply, chunk_chars);
    let mut events = Vec::with_capacity(n * (pieces.len() + 2) + 2);
    for index in 0..n {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            refusal: Some(None),
        };
        events.push(chunk(vec![one(index, delta, None)], usage_field));
    }
    for piece in &pieces {
        for index in 0..n {
            let delta = Delta {
                content: Some(piece),
                ..Delta::default()
            };
            events.push(chunk(vec![one(index, delta, None)], usage_field));
        }
    }
    for index in 0..n {
        events.push(chunk(
            vec![one(index, Delta::default(), Some("stop"))],
            usage_field,
        ));
    }
    if let Some(usage) = usage {
        events.push(chunk(Vec::new(), Some(Some(usage))));
    }
    events.push(bytes::Bytes::from_static(sse::DONE));
    events
}
