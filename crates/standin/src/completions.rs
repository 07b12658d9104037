//! `POST /v1/completions` (legacy): a `text_completion`, or data-only SSE chunks ending `data: [DONE]`.

use crate::errors::{check_range, parse, ApiError};
use crate::faults::Fault;
use crate::routes::{json, served};
use crate::state::App;
use crate::{sse, text};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct Request {
    model: Option<String>,
    prompt: Option<Value>,
    n: Option<i64>,
    echo: Option<bool>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Answers one legacy completion request: `n` choices per prompt.
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
    let prompts = prompts(request.prompt.as_ref())?;
    let n = request.n.unwrap_or(1);
    check_range("n", n, 1, 128)?;
    let n = usize::try_from(n).unwrap_or(1);
    let echo = request.echo.unwrap_or(false);

    // One text per choice, in choice-index order.
    let texts: Vec<String> = prompts
        .iter()
        .flat_map(|prompt| {
            let reply = text::reply_to(scripted, prompt);
            let full = if echo {
                format!("{prompt}{reply}")
            } else {
                reply
            };
            std::iter::repeat_n(full, n)
        })
        .collect();
    let prompt_tokens: u64 = prompts.iter().map(|prompt| text::tokens(prompt)).sum();
    let completion_tokens: u64 = texts.iter().map(|text| text::tokens(text)).sum();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = text::id("cmpl-");
    let created = text::now();
    let object = |choices: Value| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_standin",
            "choices": choices,
        })
    };
    let choice = |index: usize, text: &str, finish_reason: Option<&str>| json!({"text": text, "index": index, "logprobs": null, "finish_reason": finish_reason});

    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let with_usage = |mut chunk: Value, usage: Value| {
            if include_usage {
                if let Value::Object(fields) = &mut chunk {
                    fields.insert("usage".into(), usage);
                }
            }
            chunk
        };
        let mut events = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            for piece in text::stream_pieces(text, fault.chunk_chars) {
                let chunk = object(json!([choice(index, piece, None)]));
                events.push(sse::data(&with_usage(chunk, Value::Null)));
            }
            let last = object(json!([choice(index, "", Some("stop"))]));
            events.push(sse::data(&with_usage(last, Value::Null)));
        }
        if include_usage {
            events.push(sse::data(&with_usage(object(json!([])), usage)));
        }
        events.push(Bytes::from_static(sse::DONE));
        let stream = sse::response(events, fault, app.recorder.clone());
        return Ok(served(
            stream,
            crate::org::UsageKind::Completions,
            &model,
            prompt_tokens,
            completion_tokens,
        ));
    }

    let choices: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| choice(index, text, Some("stop")))
        .collect();
    let mut completion = object(Value::Array(choices));
    if let Value::Object(fields) = &mut completion {
        fields.insert("usage".into(), usage);
    }
    let answer = json(&completion);
    Ok(served(
        answer,
        crate::org::UsageKind::Completions,
        &model,
        prompt_tokens,
        completion_tokens,
    ))
}

/// The prompts of a request: a string, strings, a token array, or token arrays.
fn prompts(prompt: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::invalid_request(
            "Invalid 'prompt': expected a string, an array of strings, an array of tokens, or an array of token arrays.",
        )
        .param("prompt")
    };
    let tokens = |items: &[Value]| -> Option<String> {
        items
            .iter()
            .map(|item| item.as_i64().map(|token| token.to_string()))
            .collect::<Option<Vec<_>>>()
            .map(|tokens| tokens.join(" "))
    };
    match prompt {
        None | Some(Value::Null) => Ok(vec![String::new()]),
        Some(Value::String(prompt)) => Ok(vec![prompt.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            tokens(items).map(|prompt| vec![prompt]).ok_or_else(invalid)
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(prompt) => Some(prompt.clone()),
                Value::Array(inner) => tokens(inner),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_every_prompt_shape() {
        assert_eq!(prompts(Some(&json!("a"))).unwrap(), vec!["a"]);
        assert_eq!(prompts(Some(&json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        assert_eq!(prompts(Some(&json!([1, 2]))).unwrap(), vec!["1 2"]);
        assert_eq!(
            prompts(Some(&json!([[1], [2, 3]]))).unwrap(),
            vec!["1", "2 3"]
        );
        assert_eq!(prompts(None).unwrap(), vec![""]);
        assert!(prompts(Some(&json!([]))).is_err());
        assert!(prompts(Some(&json!({"x": 1}))).is_err());
    }
}
