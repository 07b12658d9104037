//! The stand-in's record of the `/v1` calls it received (`GET /_standin/requests`), reduced
//! to what the content-safety run counts: Moderation calls with their text inputs, and
//! chat completions.

use anyhow::Context as _;
use serde_json::Value;
use std::net::SocketAddr;

use crate::pool;

/// One recorded upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `POST /v1/moderations` and the text items of its `input`.
    Moderation(Vec<String>),
    /// `POST /v1/chat/completions`.
    Chat,
    Other,
}

/// Every call the stand-in has recorded so far, oldest first.
pub async fn fetch(standin: SocketAddr) -> anyhow::Result<Vec<Call>> {
    let text = pool::get_text(standin, "/_standin/requests").await?;
    let value: Value = serde_json::from_str(&text).context("parsing /_standin/requests")?;
    let list = value
        .as_array()
        .context("/_standin/requests is not a JSON array")?;
    Ok(list.iter().map(call).collect())
}

fn call(record: &Value) -> Call {
    match record["path"].as_str() {
        Some("/v1/moderations") => Call::Moderation(text_inputs(&record["body"]["input"])),
        Some("/v1/chat/completions") => Call::Chat,
        _ => Call::Other,
    }
}

/// `input` is a string, an array of strings, or an array of typed parts (`{"type": "text",
/// "text": …}` beside image parts, which carry no text and are not counted).
fn text_inputs(input: &Value) -> Vec<String> {
    match input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|item| {
                item.as_str()
                    .or_else(|| item.get("text").and_then(Value::as_str))
            })
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn moderation_inputs_of_every_shape_are_read_and_images_skipped() {
        let calls: Vec<Call> = [
            json!({"path": "/v1/moderations", "body": {"input": "one"}}),
            json!({"path": "/v1/moderations", "body": {"input": ["a", "b"]}}),
            json!({"path": "/v1/moderations", "body": {"input": [
                {"type": "text", "text": "t"},
                {"type": "image_url", "image_url": {"url": "https://x"}}
            ]}}),
            json!({"path": "/v1/chat/completions", "body": {}}),
            json!({"path": "/v1/models", "body": null}),
        ]
        .iter()
        .map(call)
        .collect();
        let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            calls,
            vec![
                Call::Moderation(owned(&["one"])),
                Call::Moderation(owned(&["a", "b"])),
                Call::Moderation(owned(&["t"])),
                Call::Chat,
                Call::Other,
            ]
        );
    }
}
