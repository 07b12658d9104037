//! The prompt a request is "about", for template detection: the last user message (chat,
//! responses) or the prompt (completions). System prompts are left out on purpose: an
//! application sends the same one every time, which is not harvesting.

use serde_json::Value;

use crate::endpoint::Endpoint;

/// Text beyond this many bytes adds nothing to a fingerprint.
const MAX_TEXT: usize = 4096;

pub fn last_user_text(endpoint: Endpoint, body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = match endpoint {
        Endpoint::ChatCompletions => last_user(value.get("messages")?)?,
        Endpoint::Responses => match value.get("input")? {
            Value::String(s) => s.clone(),
            items => last_user(items)?,
        },
        Endpoint::Completions | Endpoint::ImagesGenerations => match value.get("prompt")? {
            Value::String(s) => s.clone(),
            Value::Array(items) => items.last()?.as_str()?.to_owned(),
            _ => return None,
        },
        _ => return None,
    };
    let mut text = text;
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Some(text)
}

/// The text parts of the last item whose role is `user`.
fn last_user(items: &Value) -> Option<String> {
    let message = items
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_user_message_without_the_system_prompt() {
        let chat = br#"{"messages":[{"role":"system","content":"be nice"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"second"}]}]}"#;
        assert_eq!(
            last_user_text(Endpoint::ChatCompletions, chat).as_deref(),
            Some("second")
        );
        let responses = br#"{"input":"hello","instructions":"sys"}"#;
        assert_eq!(
            last_user_text(Endpoint::Responses, responses).as_deref(),
            Some("hello")
        );
        assert_eq!(
            last_user_text(Endpoint::Embeddings, b"{\"input\":\"x\"}"),
            None
        );
    }
}
