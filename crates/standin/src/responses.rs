//! `POST /v1/responses`: a `response` object, or `event:`/`data:` SSE with `sequence_number` (no `[DONE]`).

use crate::errors::{parse, ApiError};
use crate::faults::Fault;
use crate::routes::{json, served};
use crate::state::App;
use crate::{sse, text};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Builds the value of a field the request left out.
type Fallback = fn() -> Value;

/// Request fields a response echoes back, with the value used when the request leaves them out.
const ECHOED: &[(&str, Fallback)] = &[
    ("instructions", || Value::Null),
    ("max_output_tokens", || Value::Null),
    ("max_tool_calls", || Value::Null),
    ("metadata", || json!({})),
    ("parallel_tool_calls", || json!(true)),
    ("previous_response_id", || Value::Null),
    ("prompt_cache_key", || Value::Null),
    ("reasoning", || json!({"effort": null, "summary": null})),
    ("safety_identifier", || Value::Null),
    ("store", || json!(true)),
    ("temperature", || json!(1.0)),
    (
        "text",
        || json!({"format": {"type": "text"}, "verbosity": "medium"}),
    ),
    ("tool_choice", || json!("auto")),
    ("tools", || json!([])),
    ("top_logprobs", || json!(0)),
    ("top_p", || json!(1.0)),
    ("truncation", || json!("disabled")),
    ("user", || Value::Null),
];

/// Answers one Responses API request.
pub(crate) fn create(
    app: &App,
    body: &[u8],
    fault: Fault,
    scripted: Option<&str>,
) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse(body)?;
    let model = match request.get("model") {
        Some(Value::String(model)) => model.clone(),
        Some(_) => {
            return Err(
                ApiError::invalid_request("Invalid type for 'model': expected a string.")
                    .param("model")
                    .code("invalid_type"),
            )
        }
        None => return Err(ApiError::missing("model")),
    };
    let input = request.get("input").cloned().unwrap_or(Value::Null);
    let input = &input;
    let reply = text::reply_to(scripted, &last_user_text(input));
    let input_tokens = text::tokens(&input_text(input))
        + request
            .get("instructions")
            .and_then(Value::as_str)
            .map_or(0, text::tokens);
    let output_tokens = text::tokens(&reply);
    let billed = model.clone();

    let draft = Draft {
        id: text::id("resp_"),
        message_id: text::id("msg_"),
        created_at: text::now(),
        model,
        request,
    };
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let completed = draft.response("completed", vec![draft.message("completed", &reply)], usage);

    if draft.request.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = stream_events(&draft, &reply, completed, fault.chunk_chars);
        let stream = sse::response(events, fault, app.recorder.clone());
        return Ok(served(
            stream,
            crate::org::UsageKind::Completions,
            &billed,
            input_tokens,
            output_tokens,
        ));
    }
    let stored = draft.request.get("store").and_then(Value::as_bool) != Some(false);
    if draft.request.get("background").and_then(Value::as_bool) == Some(true) {
        // Queued now; each retrieve moves it on (`rest`), and it can be cancelled meanwhile.
        let mut queued = completed.clone();
        queued["status"] = json!("queued");
        queued["background"] = json!(true);
        queued["_final_output"] = queued["output"].take();
        queued["output"] = json!([]);
        app.objects.put_response(&queued, input);
        return Ok(json(&crate::rest::public(&queued)));
    }
    if stored {
        app.objects.put_response(&completed, input);
    }
    Ok(served(
        json(&completed),
        crate::org::UsageKind::Completions,
        &billed,
        input_tokens,
        output_tokens,
    ))
}

/// What every object of one response shares.
struct Draft {
    id: String,
    message_id: String,
    created_at: u64,
    model: String,
    request: Map<String, Value>,
}

impl Draft {
    /// The `response` object in the given state.
    fn response(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), json!(self.id));
        object.insert("object".into(), json!("response"));
        object.insert("created_at".into(), json!(self.created_at));
        object.insert("status".into(), json!(status));
        object.insert("background".into(), json!(false));
        object.insert("error".into(), Value::Null);
        object.insert("incomplete_details".into(), Value::Null);
        object.insert("model".into(), json!(self.model));
        object.insert("output".into(), Value::Array(output));
        object.insert("service_tier".into(), json!("default"));
        object.insert("usage".into(), usage);
        for (key, default) in ECHOED {
            let value = self
                .request
                .get(*key)
                .filter(|value| !value.is_null())
                .cloned()
                .unwrap_or_else(default);
            object.insert((*key).into(), value);
        }
        Value::Object(object)
    }

    /// The assistant message output item.
    fn message(&self, status: &str, reply: &str) -> Value {
        let content = if status == "completed" {
            json!([part(reply)])
        } else {
            json!([])
        };
        json!({
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": content,
        })
    }
}

/// An `output_text` content part.
fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The event sequence of a streamed response, numbered from 0.
fn stream_events(
    draft: &Draft,
    reply: &str,
    completed: Value,
    chunk_chars: Option<usize>,
) -> Vec<Bytes> {
    let item_id = draft.message_id.as_str();
    let in_progress = draft.response("in_progress", Vec::new(), Value::Null);
    let mut bodies: Vec<(&str, Value)> = vec![
        ("response.created", json!({"response": in_progress})),
        ("response.in_progress", json!({"response": in_progress})),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": draft.message("in_progress", reply)}),
        ),
        (
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part("")}),
        ),
    ];
    for piece in text::stream_pieces(reply, chunk_chars) {
        bodies.push((
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
        ));
    }
    bodies.push((
        "response.output_text.done",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": reply, "logprobs": []}),
    ));
    bodies.push((
        "response.content_part.done",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(reply)}),
    ));
    bodies.push((
        "response.output_item.done",
        json!({"output_index": 0, "item": draft.message("completed", reply)}),
    ));
    bodies.push(("response.completed", json!({"response": completed})));

    bodies
        .into_iter()
        .enumerate()
        .map(|(sequence_number, (kind, mut body))| {
            if let Value::Object(fields) = &mut body {
                fields.insert("type".into(), json!(kind));
                fields.insert("sequence_number".into(), json!(sequence_number));
            }
            sse::event(kind, &body)
        })
        .collect()
}

/// The text of the last user message in `input` (a string, or an array of items).
fn last_user_text(input: &Value) -> String {
    match input {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|item| item.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|item| item.get("content"))
            .map(text::content_text)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// All the text in `input`, for the token estimate.
fn input_text(input: &Value) -> String {
    match input {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.get("content"))
            .map(text::content_text)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_last_user_text_in_items() {
        let input = json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ]);
        assert_eq!(last_user_text(&input), "second");
        assert_eq!(last_user_text(&json!("plain")), "plain");
        assert_eq!(input_text(&input), "first ok second");
    }
}
