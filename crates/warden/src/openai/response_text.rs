//! Where the model's words live in each answer shape: the completion text and tool-call
//! arguments of a whole JSON answer, and the text deltas of each SSE event.

use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::safety::moderation::pieces::Piece;

/// The output pieces of a non-streamed answer, named by path (`choices[0].message.content`).
pub fn of_answer(endpoint: Endpoint, answer: &Value) -> Vec<Piece> {
    let mut out = Vec::new();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match endpoint {
        Endpoint::ChatCompletions => {
            for (i, choice) in array(answer.get("choices")).iter().enumerate() {
                let message = choice.get("message");
                for field in ["content", "refusal"] {
                    if let Some(t) = text(message.and_then(|m| m.get(field))) {
                        out.push(Piece::text(format!("choices[{i}].message.{field}"), t));
                    }
                }
                let calls = message.and_then(|m| m.get("tool_calls"));
                for (j, call) in array(calls).iter().enumerate() {
                    if let Some(t) = text(call.pointer("/function/arguments")) {
                        out.push(Piece::text(
                            format!("choices[{i}].message.tool_calls[{j}].function.arguments"),
                            t,
                        ));
                    }
                }
            }
        }
        Endpoint::Completions => {
            for (i, choice) in array(answer.get("choices")).iter().enumerate() {
                if let Some(t) = text(choice.get("text")) {
                    out.push(Piece::text(format!("choices[{i}].text"), t));
                }
            }
        }
        Endpoint::Responses => {
            for (k, item) in array(answer.get("output")).iter().enumerate() {
                if let Some(t) = text(item.get("arguments")) {
                    out.push(Piece::text(format!("output[{k}].arguments"), t));
                }
                for (j, part) in array(item.get("content")).iter().enumerate() {
                    for field in ["text", "refusal"] {
                        if let Some(t) = text(part.get(field)) {
                            out.push(Piece::text(format!("output[{k}].content[{j}].{field}"), t));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    out.retain(|p| !matches!(&p.content, crate::safety::moderation::pieces::Content::Text(t) if t.trim().is_empty()));
    out
}

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The index in `choices[3].…` / `output[3].…`.
pub fn leading_index(param: &str) -> Option<usize> {
    let open = param.find('[')?;
    let close = param[open..].find(']')? + open;
    param[open + 1..close].parse().ok()
}

/// Rewrites a blocked answer the way OpenAI reports filtered output: the offending
/// choices lose their text (`finish_reason: "content_filter"`); a response becomes
/// `status: "incomplete"` with `incomplete_details.reason: "content_filter"` and loses
/// the offending output items.
pub fn withhold(endpoint: Endpoint, answer: &mut Value, blocked: &[usize]) {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => {
            let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) else {
                return;
            };
            for (i, choice) in choices.iter_mut().enumerate() {
                if !blocked.contains(&i) {
                    continue;
                }
                if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) {
                    message.insert("content".into(), Value::Null);
                    message.remove("tool_calls");
                    message.remove("refusal");
                }
                if choice.get("text").is_some() {
                    choice["text"] = Value::String(String::new());
                }
                choice["finish_reason"] = Value::String("content_filter".into());
            }
        }
        Endpoint::Responses => {
            if let Some(output) = answer.get_mut("output").and_then(Value::as_array_mut) {
                let mut k = 0;
                output.retain(|_| {
                    k += 1;
                    !blocked.contains(&(k - 1))
                });
            }
            answer["status"] = Value::String("incomplete".into());
            answer["incomplete_details"] = serde_json::json!({"reason": "content_filter"});
        }
        _ => {}
    }
}

/// Visits every model-written string of a non-streamed answer in place, with its choice
/// / output index and `param` path (the fields [`of_answer`] reads).
pub fn visit_answer_mut(
    endpoint: Endpoint,
    answer: &mut Value,
    mut visit: impl FnMut(usize, &str, &mut String),
) {
    fn items(value: Option<&mut Value>) -> impl Iterator<Item = (usize, &mut Value)> {
        value
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .enumerate()
    }
    let mut text = |v: Option<&mut Value>, i: usize, param: String| {
        if let Some(Value::String(t)) = v {
            visit(i, &param, t);
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            for (i, choice) in items(answer.get_mut("choices")) {
                let Some(message) = choice.get_mut("message") else {
                    continue;
                };
                for field in ["content", "refusal"] {
                    let param = format!("choices[{i}].message.{field}");
                    text(message.get_mut(field), i, param);
                }
                for (j, call) in items(message.get_mut("tool_calls")) {
                    let param = format!("choices[{i}].message.tool_calls[{j}].function.arguments");
                    text(call.pointer_mut("/function/arguments"), i, param);
                }
            }
        }
        Endpoint::Completions => {
            for (i, choice) in items(answer.get_mut("choices")) {
                text(choice.get_mut("text"), i, format!("choices[{i}].text"));
            }
        }
        Endpoint::Responses => {
            for (k, item) in items(answer.get_mut("output")) {
                text(
                    item.get_mut("arguments"),
                    k,
                    format!("output[{k}].arguments"),
                );
                for (j, part) in items(item.get_mut("content")) {
                    for field in ["text", "refusal"] {
                        let param = format!("output[{k}].content[{j}].{field}");
                        text(part.get_mut(field), k, param);
                    }
                }
            }
        }
        _ => {}
    }
}

/// [`deltas`] in place: the same strings, in the same order, for rewriting an event.
pub fn visit_deltas_mut(endpoint: Endpoint, event: &mut Value, mut visit: impl FnMut(&mut String)) {
    let mut text = |v: Option<&mut Value>| {
        if let Some(Value::String(t)) = v {
            if !t.is_empty() {
                visit(t);
            }
        }
    };
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => {
            let choices = event.get_mut("choices").and_then(Value::as_array_mut);
            for choice in choices.into_iter().flatten() {
                if let Some(delta) = choice.get_mut("delta") {
                    text(delta.get_mut("content"));
                    text(delta.get_mut("refusal"));
                }
                text(choice.get_mut("text"));
                let calls = choice
                    .get_mut("delta")
                    .and_then(|d| d.get_mut("tool_calls"))
                    .and_then(Value::as_array_mut);
                for call in calls.into_iter().flatten() {
                    text(call.pointer_mut("/function/arguments"));
                }
            }
        }
        Endpoint::Responses => {
            let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
            if is_delta_event(kind) {
                text(event.get_mut("delta"));
            }
        }
        _ => {}
    }
}

/// Responses events that carry a piece of new text in `delta`.
fn is_delta_event(kind: &str) -> bool {
    matches!(
        kind,
        "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
    )
}

/// Text deltas of one SSE event's JSON, keyed by choice / output index.
pub fn deltas(endpoint: Endpoint, event: &Value, out: &mut Vec<(usize, String)>) {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|t| !t.is_empty())
    }
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => {
            for choice in array(event.get("choices")) {
                let i = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let delta = choice.get("delta");
                for t in [
                    text(delta.and_then(|d| d.get("content"))),
                    text(delta.and_then(|d| d.get("refusal"))),
                    text(choice.get("text")),
                ]
                .into_iter()
                .flatten()
                {
                    out.push((i, t.to_owned()));
                }
                for call in array(delta.and_then(|d| d.get("tool_calls"))) {
                    if let Some(t) = text(call.pointer("/function/arguments")) {
                        out.push((i, t.to_owned()));
                    }
                }
            }
        }
        Endpoint::Responses => {
            let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
            if is_delta_event(kind) {
                if let Some(t) = text(event.get("delta")) {
                    let i = event
                        .get("output_index")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    out.push((i as usize, t.to_owned()));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_answer_pieces_and_withholding() {
        let mut answer = json!({"choices":[
            {"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"},
            {"index":1,"message":{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f","arguments":"{\"x\":\"bad\"}"}}]},"finish_reason":"tool_calls"}
        ]});
        let pieces = of_answer(Endpoint::ChatCompletions, &answer);
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[1].param,
            "choices[1].message.tool_calls[0].function.arguments"
        );
        assert_eq!(leading_index(&pieces[1].param), Some(1));
        withhold(Endpoint::ChatCompletions, &mut answer, &[1]);
        assert_eq!(answer["choices"][1]["finish_reason"], "content_filter");
        assert!(answer["choices"][1]["message"]["tool_calls"].is_null());
        assert_eq!(answer["choices"][0]["message"]["content"], "fine");
    }

    #[test]
    fn response_answer_becomes_incomplete() {
        let mut answer = json!({"status":"completed","output":[
            {"type":"message","content":[{"type":"output_text","text":"bad words"}]}
        ]});
        let pieces = of_answer(Endpoint::Responses, &answer);
        assert_eq!(pieces[0].param, "output[0].content[0].text");
        withhold(Endpoint::Responses, &mut answer, &[0]);
        assert_eq!(answer["status"], "incomplete");
        assert_eq!(answer["incomplete_details"]["reason"], "content_filter");
        assert_eq!(answer["output"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn in_place_visits_match_what_is_read() {
        let mut event = json!({"choices":[{"index":2,"delta":{"content":"a","tool_calls":[{"function":{"arguments":"b"}}]}}]});
        let mut read = Vec::new();
        deltas(Endpoint::ChatCompletions, &event, &mut read);
        let mut visited = Vec::new();
        visit_deltas_mut(Endpoint::ChatCompletions, &mut event, |t| {
            visited.push(t.clone());
            t.push('!');
        });
        let read: Vec<String> = read.into_iter().map(|(_, t)| t).collect();
        assert_eq!(read, visited);
        assert_eq!(event["choices"][0]["delta"]["content"], "a!");

        let mut answer =
            json!({"output":[{"type":"message","content":[{"type":"output_text","text":"x"}]}]});
        let params: Vec<String> = of_answer(Endpoint::Responses, &answer)
            .into_iter()
            .map(|p| p.param)
            .collect();
        let mut seen = Vec::new();
        visit_answer_mut(Endpoint::Responses, &mut answer, |k, param, t| {
            seen.push(param.to_owned());
            assert_eq!(k, 0);
            t.clear();
        });
        assert_eq!(params, seen);
        assert_eq!(answer["output"][0]["content"][0]["text"], "");
    }

    #[test]
    fn stream_deltas() {
        let mut out = Vec::new();
        deltas(
            Endpoint::ChatCompletions,
            &json!({"choices":[{"index":1,"delta":{"content":"Hi"}}]}),
            &mut out,
        );
        deltas(
            Endpoint::Responses,
            &json!({"type":"response.output_text.delta","output_index":0,"delta":"yo"}),
            &mut out,
        );
        deltas(
            Endpoint::Responses,
            &json!({"type":"response.output_text.done","output_index":0,"text":"yo"}),
            &mut out,
        );
        assert_eq!(out, vec![(1, "Hi".to_owned()), (0, "yo".to_owned())]);
    }
}
